"""The app's Train tab (lima_lite/app/train_tab.py): the form's overrides and command line, the data check with the
CLI's own messages, the first example with its trained tokens marked, one run at a time, progress read from
metrics.jsonl, new epoch adapters in the model lists with their dev loss, `report_to: tensorboard`, and the
whole tab driven in a real headless Chromium: start the quick-start recipe on a tiny model, watch the loss
curve grow, chat meanwhile, stop, resume, then chat with the new epoch adapter.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    EOT,
    browser_tools,
    console_errors,
    free_port,
    qa,
    served_page,
    train_tiny,
    write_run,
)
from lima_lite import LimaError
from lima_lite.app.train_tab import (
    Training,
    check_form,
    command_line,
    finishing,
    form_handler,
    form_overrides,
    progress,
    progress_text,
    recipe_values,
    start_form,
)
from lima_lite.app.ui import Models, build_app
from lima_lite.precision import Hardware

# What turns the quick-start recipe into a few seconds on the tiny base (full precision, LIMA's format: the
# tiny tokenizer has no chat template of its own); one epoch of 12 examples is 12 steps.
TINY = (f"load_in_4bit=false dtype=float32 bf16=false chat_format=lima eot_token={EOT} max_length=256 "
        "per_device_train_batch_size=1 gradient_accumulation_steps=1 gradient_checkpointing=false max_steps=12")


def data_file(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"messages": qa(i)}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def form(tiny_llama_tied, tmp_path):
    """The Train tab's fields for the quick-start recipe on the tiny base, as the page sends them."""
    runs = tmp_path / "runs"
    values = {**recipe_values("quickstart", runs), "model_name_or_path": str(tiny_llama_tied),
              "dataset_name": str(data_file(tmp_path / "train.jsonl", 12)),
              "dev_dataset": str(data_file(tmp_path / "dev.jsonl", 2)), "num_train_epochs": "1",
              "max_length": "256", "output_dir": str(runs / "quick")}
    return runs, values


def test_the_form_becomes_the_recipe_plus_what_was_changed(form):
    runs, values = form
    assert recipe_values("quickstart", runs)["output_dir"] == str(runs / "quickstart")  # under --runs
    overrides = form_overrides("quickstart", runs, {**values, "learning_rate": "5e-4"}, "max_steps=3 seed='4'")
    # 5e-4 is the recipe's own learning rate: not repeated; the output folder always is
    assert overrides == [f"model_name_or_path={values['model_name_or_path']}", f"dataset_name={values['dataset_name']}",
                         f"dev_dataset={values['dev_dataset']}", "num_train_epochs=1", "max_length=256",
                         f"output_dir={runs / 'quick'}", "max_steps=3", "seed=4"]
    assert command_line("quickstart", ["output_dir=my runs/x"]) == "lima-lite train quickstart 'output_dir=my runs/x'"
    with pytest.raises(LimaError, match="more settings: expected key=value, found 'max_steps'"):
        form_overrides("quickstart", runs, values, "max_steps 3")


def test_check_shows_the_first_example_as_trained_and_the_command(form):
    runs, values = form
    training = Training(runs)
    status, example, plan, command = check_form(training, "quickstart", *values.values(), TINY)
    assert status.startswith("data OK: 12 conversations read, 12 kept") and "dev set 2" in status
    # LIMA's format: the user's turn and its EOT untrained, the reply and its EOT trained (highlighted)
    assert ("How do I water plant number 0?&lt;|im_end|&gt;<mark>Water plant 0 once a week, in the morning."
            "&lt;|im_end|&gt;</mark>") in example
    assert command.startswith("lima-lite train quickstart model_name_or_path=") and command.endswith("max_steps=12")
    # the settings as `lima-lite inspect --resolved` gives them, each with its reason, then this CPU's estimate
    assert plan.startswith("Resolved settings: float32, unquantized base, 1 epoch(s) of 1 x 1 examples per step")
    assert re.search(r"\ndtype = 'float32' +# set at command line\n", plan), plan
    assert "Estimate for this machine (CPU with" in plan and "GPU plan" not in plan and "GiB (" not in plan
    assert re.search(r"host memory  about \d+\.\d GiB of tensors at the peak, of [\d.]+ GiB available now", plan), plan
    assert re.search(r"about [\d.]+ s per step of 1 x 1 examples \(~\d+ tokens; rough: ", plan), plan
    assert "per epoch of 12 steps" in plan and "for 12 steps" in plan


def test_a_taken_output_folder_gets_a_free_name_and_start_refuses_a_finished_run(form):
    """After the quick start runs/quickstart holds a finished run: the tab proposes quickstart-2 (then -3), and a
    Start into a finished run is refused at once, with train's own message, before any process starts."""
    runs, values = form
    (runs / "quickstart" / "adapter").mkdir(parents=True)
    write_run(runs / "quickstart", status="finished")
    assert recipe_values("quickstart", runs)["output_dir"] == str(runs / "quickstart-2")
    (runs / "quickstart-2").mkdir()  # empty: free
    assert recipe_values("quickstart", runs)["output_dir"] == str(runs / "quickstart-2")
    (runs / "quickstart-2" / "notes.txt").write_text("mine")
    assert recipe_values("quickstart", runs)["output_dir"] == str(runs / "quickstart-3")
    training = Training(runs)
    status, *_ = form_handler(training, start_form)("quickstart", *{**values, "output_dir": str(runs / "quickstart")}.values(),
                                                   TINY)
    assert status == (f"error: {runs / 'quickstart'}: holds a finished run (adapter/ exists); choose another output_dir "
                      "or delete it")
    assert training.process is None


def test_more_settings_never_silently_override_a_field(form):
    runs, values = form
    training = Training(runs)
    status, *rest = form_handler(training, check_form)("quickstart", *values.values(), f"{TINY} max_length=1024")
    assert status == ('error: more settings: max_length=1024 conflicts with the field "max length (tokens)" (256); '
                      "change the field, or take max_length out of more settings")
    assert training.process is None
    status, *_ = check_form(training, "quickstart", *values.values(), f"{TINY} learning_rate=0.0005 lora_r=16")
    assert status.startswith("data OK")  # the same values as the fields (5e-4, 16): no conflict


@pytest.mark.parametrize("kind", [Hardware("cpu", "AVX2", False), Hardware("cpu", "AVX512", True)], ids=["avx2", "bf16"])
def test_the_tab_resolves_the_quick_start_as_the_cli_does(form, monkeypatch, kind):
    """The quick-start recipe as the tab shows it, on a CPU without and with native bf16: the settings and reasons
    of lima_lite.resolve, as `lima-lite quickstart` gets them (without bf16: unquantized, one epoch)."""
    from lima_lite import precision
    from lima_lite.config import load_recipe
    from lima_lite.machine import detect_machine
    from lima_lite.recipe_yaml import resolve_recipe
    from lima_lite.resolve import resolve

    monkeypatch.setattr(precision, "detect_hardware", lambda: kind)
    runs, values = form
    # the field shows the epochs a run gets here: the recipe's 2, one on a CPU without native bf16
    assert recipe_values("quickstart", runs)["num_train_epochs"] == ("2" if kind.bf16 else "1")
    values = {**values, "num_train_epochs": recipe_values("quickstart", runs)["num_train_epochs"]}
    more = f"chat_format=lima eot_token={EOT} max_steps=12"
    _, _, shown, command = check_form(Training(runs), "quickstart", *values.values(), more)
    overrides = form_overrides("quickstart", runs, values, more)
    cli = resolve(load_recipe(resolve_recipe("quickstart"), overrides), detect_machine())
    assert shown.splitlines()[0] == cli.summary()
    for key in ("load_in_4bit", "num_train_epochs", "dtype", "bf16"):
        if key in cli.reasons:
            assert f"  # {cli.reasons[key]}" in shown
    expected = ("float32, unquantized base, 1 epoch(s)" if not kind.bf16 else "bfloat16, 4-bit NF4 base, 2 epoch(s)")
    assert shown.startswith(f"Resolved settings: {expected}"), shown.splitlines()[0]
    if not kind.bf16:
        assert re.search(r"\nload_in_4bit = False +# slow_cpu_fallback on a CPU without native bf16 \(AVX2\)\n", shown)
    assert f"Estimate for this machine ({kind.label}, no GPU)" in shown and "Memory plan" not in shown
    assert "num_train_epochs" not in command  # left as shown: `lima-lite train quickstart` decides it here too
    # a value typed in the field is the run's, as on the command line: the recipe's 2 too, where one is shown
    typed = "3" if kind.bf16 else "2"
    _, _, shown, command = check_form(Training(runs), "quickstart", *{**values, "num_train_epochs": typed}.values(), more)
    assert f", {typed} epoch(s) of" in shown.splitlines()[0] and f"num_train_epochs={typed}" in command


def test_on_a_gpu_the_box_shows_the_memory_plan_of_the_resolved_settings(form, monkeypatch):
    """The GPU branch of the box, its machine said to have a 24 GiB GPU: the memory plan of the settings as
    resolved (4-bit), instead of the CPU's host memory and time (a real GPU run is checked where there is one)."""
    from dataclasses import replace

    from lima_lite.app import train_tab
    from lima_lite.recipe_yaml import resolve_recipe
    from lima_lite.train import prepare

    runs, values = form
    overrides = form_overrides("quickstart", runs, values, TINY.replace("load_in_4bit=false ", ""))
    setup = prepare(resolve_recipe("quickstart"), overrides)
    on_gpu = replace(setup, resolved=replace(setup.resolved, machine=replace(setup.resolved.machine, cuda=True)))
    monkeypatch.setattr(train_tab, "detected_gpu_gib", lambda: 24.0)
    shown = train_tab.machine_text(on_gpu, runs)
    assert shown.startswith(setup.resolved.summary()) and "\nMemory plan: hidden 64, 2 layers" in shown
    assert "GiB of 24.000 GiB (this GPU): fits" in shown and "Estimate for this machine" not in shown


def cli_error(capsys, overrides: list[str]) -> str:
    """What `lima-lite inspect quickstart OVERRIDES` prints on stderr."""
    from lima_lite.entry import run

    capsys.readouterr()
    assert run("lima_lite.inspection:main", ["quickstart", *overrides]) == 2
    return capsys.readouterr().err.strip()


def test_bad_input_gives_the_clis_message(form, tmp_path, capsys):
    runs, values = form
    training = Training(runs)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": qa(0)}) + "\n{not json\n")
    cases = [({"dataset_name": str(tmp_path / "missing.jsonl")}, "", "missing.jsonl: data file not found"),
             ({"dataset_name": str(bad)}, "", "bad.jsonl:2: invalid JSON"),
             ({}, "bogus_key=1", "unknown key 'bogus_key'")]
    for changed, more, words in cases:
        fields = {**values, **changed}
        status, *rest = form_handler(training, check_form)("quickstart", *fields.values(), f"{TINY} {more}")
        overrides = form_overrides("quickstart", runs, fields, f"{TINY} {more}")
        assert status == cli_error(capsys, overrides) and words in status, status
        assert status.startswith("error: ")
    assert not (runs / "quick").exists()  # nothing started


def test_the_status_ends_on_the_form_as_it_is_whatever_check_was_running_in_a_real_browser(form, tmp_path,
                                                                                             monkeypatch):
    """A check that takes a while (a big data file) runs when the data field is left and when Check is clicked;
    the person changes "more settings" and clicks Check again meanwhile. That click is not lost, and no older
    check ends after it: the status line ends on what the form says now."""
    from lima_lite.app import train_tab

    runs, values = form
    slow = data_file(tmp_path / "slow.jsonl", 12)
    checks = []  # (more settings, the status it returned, when it ended: None while it runs)

    def timed_check(training, recipe, *values_and_more):
        checks.append([values_and_more[-1], None, None])
        try:
            result = check_form(training, recipe, *values_and_more)
            if values_and_more[1] == str(slow):
                time.sleep(4)
            checks[-1][1] = result[0]
            return result
        except LimaError as error:
            checks[-1][1] = f"error: {error}"
            raise
        finally:
            checks[-1][2] = time.monotonic()

    monkeypatch.setattr(train_tab, "check_form", timed_check)
    runs.mkdir()
    app = build_app(Models.discover(runs), [{"id": "p", "prompt": "Hi?"}], tmp_path / "votes.jsonl",
                    training=Training(runs))
    with served_page(app, height=1400) as (page, errors):
        page.get_by_role("tab", name="Train").click()
        page.locator("#train-output_dir input, #train-output_dir textarea").first.wait_for(timeout=30_000)
        fill(page, {**values, "dataset_name": str(slow)}, TINY)  # leaving the data field checks it (slow)
        page.locator("#train-check").click()
        page.locator("#train-more textarea, #train-more input").first.fill(f"{TINY} bogus_key=1")
        page.locator("#train-check").click()  # while the slow checks run
        page.locator("#train-status").get_by_text("unknown key 'bogus_key'").wait_for(timeout=60_000)
        deadline = time.time() + 60
        while any(ended is None for *_, ended in checks) and time.time() < deadline:
            page.wait_for_timeout(200)
        last = max(checks, key=lambda check: check[2])
        assert "bogus_key" in last[0] and "unknown key 'bogus_key'" in last[1], checks
        assert len(checks) >= 2 and sum("bogus_key" in more for more, *_ in checks) == 1, checks
        assert "unknown key 'bogus_key'" in status_text(page)
    assert errors == [], errors


def test_one_training_at_a_time_and_none_from_a_public_page_without_login(form):
    runs, values = form
    training = Training(runs)
    training.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    training.output_dir = runs / "other"
    try:
        status, *_ = form_handler(training, start_form)("quickstart", *values.values(), TINY)
        assert status == (f"error: a training is already running ({runs / 'other'}, pid {training.process.pid}); "
                          "one at a time: stop it first")
    finally:
        training.process.kill()
        training.process.wait()
    with pytest.raises(LimaError, match="restart it with --auth"):
        Training(runs, allowed=False).start("quickstart", [], runs / "quick")


def test_progress_reads_step_eta_and_tokens_per_second(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_run(run, steps_per_epoch=10, training={"max_steps": -1, "num_train_epochs": 2})
    metrics, pace = run / "metrics.jsonl", {}
    rows = [{"step": 0, "epoch": 0, "eval_loss": 3.0}]
    for step, moment in ((1, 100.0), (3, 104.0)):  # 2 steps in 4 s, 100 tokens a step
        rows.append({"step": step, "epoch": step / 10, "loss": 3 - step / 10, "num_tokens": 100.0 * step})
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.utime(metrics, (moment, moment))
        found = progress(run, pace)
    assert found["step"] == 3 and found["total"] == 20 and found["epoch"] == 0.3
    assert found["eta_s"] == pytest.approx(17 * 2.0) and found["tokens_per_s"] == pytest.approx(50.0)
    assert found["train"] == [(1, 2.9), (3, 2.7)] and found["dev"] == [(0, 3.0)]


def test_progress_keeps_its_pace_through_slow_steps_and_a_pause(tmp_path):
    """Steps of 235 s still give the step time, ETA and tokens/s; a stop and resume (a 300 s gap) does not
    count in the step time; Stop's line names the step it waits for and its time left."""
    run = tmp_path / "run"
    run.mkdir()
    write_run(run, steps_per_epoch=10, training={"max_steps": -1, "num_train_epochs": 1})
    metrics, pace, rows = run / "metrics.jsonl", {}, []
    for step, moment in ((1, 1000.0), (2, 1235.0), (3, 1470.0), (4, 2005.0), (5, 2240.0)):  # 4: after a 300 s pause
        rows.append({"step": step, "epoch": step / 10, "loss": 3 - step / 10, "num_tokens": 940.0 * step})
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.utime(metrics, (moment, moment))
        found = progress(run, pace)
        if step == 2:
            assert found["step_s"] == 235.0 and found["eta_s"] == 8 * 235.0 and found["tokens_per_s"] == 4.0
    assert found["step_s"] == 235.0 and found["eta_s"] == 5 * 235.0 and found["tokens_per_s"] == 4.0
    assert "235.0 s/step · ETA 00:19:35 · 4 tokens/s" in progress_text("running", run, found)
    found["last_logged"] = time.time() - 35
    assert re.fullmatch(r"finishing step 6 \(about 20\d s\)", finishing(found)), finishing(found)
    found["last_logged"] = time.time() - 300
    assert finishing(found) == "finishing step 6 (any moment: steps take about 235 s)"
    assert finishing({**found, "step_s": None}) == "finishing step 6 (its time is measured from the second logged step on)"
    rows = rows[:1]  # trained again from the start in the same folder: the pace starts over
    metrics.write_text(json.dumps(rows[0]) + "\n")
    os.utime(metrics, (3000.0, 3000.0))
    assert progress(run, pace)["step_s"] is None and pace[str(run)] == [(3000.0, 1, 940.0)]


def test_a_new_epoch_adapter_joins_the_model_lists_with_its_dev_loss(tiny_llama_tied, tmp_path):
    runs = tmp_path / "runs"
    models = Models.discover(runs)
    assert models.choices() == []
    runs.mkdir()
    train_tiny(tiny_llama_tied, runs / "r", [qa(i) for i in range(4)], dev_dataset=str(data_file(tmp_path / "d.jsonl", 2)))
    models.refresh()
    dev = {round(r["epoch"]): r["eval_loss"] for r in map(json.loads, (runs / "r" / "metrics.jsonl").read_text().splitlines())
           if "eval_loss" in r}
    assert models.choices() == [(f"r/epoch-01 · dev loss {dev[1]:.3f}", "r/epoch-01"),
                                (f"r/adapter · dev loss {dev[1]:.3f}", "r/adapter"), ("r/base", "r/base")]


def test_report_to_tensorboard_logs_the_train_and_dev_loss(tiny_llama_tied, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_tiny(tiny_llama_tied, tmp_path / "run", [qa(i) for i in range(4)], report_to="tensorboard",
                     dev_dataset=str(data_file(tmp_path / "d.jsonl", 2)))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {tag: [(e.step, pytest.approx(e.value, rel=1e-5)) for e in events.Scalars(tag)]
              for tag in ("train/loss", "eval/loss")}
    assert logged["train/loss"] == [(r["step"], r["loss"]) for r in rows if "loss" in r] and len(logged["train/loss"]) == 2
    assert logged["eval/loss"] == [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    assert len(logged["eval/loss"]) == 2  # the base's, at step 0, and the epoch's


# ---------------------------------------------------------------- in a real browser

# Each optimizer step of the child process made to last a second, so that the page sees the run going.
SLOW_STEPS = textwrap.dedent("""
    import importlib.abc, os, sys, time

    class SlowSteps(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "lima_lite.train":
                sys.meta_path.remove(self)
                from transformers import Trainer
                step = Trainer.training_step
                def slow(self, *args, **kwargs):
                    time.sleep(float(os.environ["LIMA_TEST_STEP_SECONDS"]))
                    return step(self, *args, **kwargs)
                Trainer.training_step = slow
            return None

    sys.meta_path.insert(0, SlowSteps())
""")


def slow_steps(tmp_path: Path, monkeypatch, seconds: float) -> None:
    """Training children started from here take `seconds` longer per step (SLOW_STEPS, a sitecustomize in their
    path) and one thread."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_STEPS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LIMA_TEST_STEP_SECONDS", str(seconds))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def served(tiny_llama_tied, tmp_path, monkeypatch):
    """The app with its Train tab over a runs folder that holds one tiny run (to chat with during training)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    train_tiny(tiny_llama_tied, runs / "tiny", [qa(i) for i in range(4)])
    slow_steps(tmp_path, monkeypatch, seconds=1)
    models = Models.discover(runs, load_in_4bit=False)
    training = Training(runs)
    app = build_app(models, [{"id": "p", "prompt": "Hi?"}], tmp_path / "votes.jsonl", max_input_chars=500,
                    sampling={"max_new_tokens": 8}, training=training)
    app.queue(max_size=16, default_concurrency_limit=1)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False)
    yield f"http://127.0.0.1:{port}", runs, training
    if training.running():
        training.process.kill()
    app.close()


def fill(page, values: dict, more: str):
    for key, value in values.items():
        page.locator(f"#train-{key} textarea, #train-{key} input").first.fill(value)
    page.locator("#train-more textarea, #train-more input").first.fill(more)


def status_text(page) -> str:
    return page.locator("#train-status").inner_text().strip()


def chat_one_turn(page, model: str, message: str) -> str:
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-model input").click()
    page.get_by_role("option", name=model).first.click()
    page.locator("#chat-input textarea").fill(message)
    page.locator("#chat-input textarea").press("Enter")
    page.wait_for_function("() => { const bots = document.querySelectorAll('#chat-history [data-testid=\"bot\"]');"
                           " const note = document.querySelector('#chat-note');"
                           " return bots.length && bots[bots.length - 1].innerText.trim() && note &&"
                           " !note.innerText.includes('writing'); }", timeout=60_000)
    return page.locator("#chat-history [data-testid='bot']").last.inner_text().strip()


def curve_on(page) -> dict:
    """The loss curves as the page draws them: each polyline's points (data-points, "step:loss") and colour,
    and whether each legend entry lies inside the drawn box."""
    return page.evaluate("""() => {
        const svg = document.querySelector('#train-loss svg');
        if (!svg) return null;
        const box = svg.getBoundingClientRect();
        const curves = {};
        for (const line of svg.querySelectorAll('polyline')) {
            const points = line.dataset.points.trim();
            curves[line.getAttribute('class')] = {color: line.getAttribute('stroke'),
                points: points ? points.split(' ').map(p => Number(p.split(':')[0])) : []};
        }
        const legend = [...svg.querySelectorAll('g.legend')].map(g => {
            const r = g.getBoundingClientRect();
            return {text: g.textContent, color: g.querySelector('line').getAttribute('stroke'),
                    inside: r.width > 0 && r.top >= box.top && r.bottom <= box.bottom && r.left >= box.left
                            && r.right <= box.right};
        });
        return {curves, legend, height: box.height};
    }""")


LEGEND = [{"text": "train loss", "color": "#1f77b4", "inside": True}, {"text": "dev loss", "color": "#ff7f0e", "inside": True}]


@pytest.mark.slow  # a training in a child process
def test_a_second_stop_ends_the_run_now_even_in_an_app_that_ignores_ctrl_c(form, tmp_path, monkeypatch):
    """The second Stop (SIGINT: now, without waiting for the step to end) ends the run, also when the app was
    started with SIGINT ignored, as `nohup lima-lite ui ... &` starts it and its child inherits."""
    import signal

    runs, values = form
    slow_steps(tmp_path, monkeypatch, seconds=60)  # the first step would take a minute
    training = Training(runs)
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        status, *_ = form_handler(training, start_form)("quickstart", *values.values(), TINY)
    finally:
        signal.signal(signal.SIGINT, ignored)
    try:
        assert status.startswith("started (pid"), status
        metrics = Path(values["output_dir"]) / "metrics.jsonl"
        deadline = time.time() + 120
        while not (metrics.exists() and "eval_loss" in metrics.read_text()) and time.time() < deadline:
            time.sleep(0.5)  # the dev loss at step 0: the run is in its first (one-minute) step
        assert training.running() and "eval_loss" in metrics.read_text()
        assert training.stop().startswith("stopping: ")
        assert training.stop() == "stopping now (no checkpoint of this step)"
        training.process.wait(timeout=30)  # well before the step would end
        assert training.state() == "stopped: Resume continues from its last checkpoint"
    finally:
        if training.running():
            training.process.kill()


@pytest.mark.slow  # a whole training in a child process, stopped and resumed from the page
def test_train_tab_in_a_real_browser(served, form, tmp_path):
    """A person's path through the Train tab, on the page that starts the run, never reloaded: bad input, Check,
    the quick-start folder taken (a free name proposed; Start into the taken one refused at once), Start, the
    curve drawn on this page as the run goes (both curves, legend in the box, fixed colours), ETA and tokens/s,
    chat meanwhile, Stop (the step it waits for), Resume, the end, the new epoch in Chat; no console error."""
    playwright = browser_tools()
    url, runs, training = served
    _, values = form
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": qa(0)}) + "\n{not json\n")
    finished = runs / "quickstart"  # the quick start's finished run, where the recipe trains by default
    finished.mkdir()
    (finished / "adapter").mkdir()
    write_run(finished, status="finished")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors = console_errors(page)
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        output = page.locator("#train-output_dir input, #train-output_dir textarea").first
        page.wait_for_function("(name) => [...document.querySelectorAll('#train-output_dir input, #train-output_dir "
                               "textarea')].some(e => e.value.endsWith(name))", arg="/quickstart-2", timeout=30_000)
        assert output.input_value() == str(runs / "quickstart-2")  # the recipe's folder holds a finished run
        values["output_dir"] = output.input_value()

        # Bad input: the CLI's one-line messages in the page.
        for changed, more, words in [({"dataset_name": str(tmp_path / "missing.jsonl")}, "", "data file not found"),
                                     ({"dataset_name": str(bad)}, "", "bad.jsonl:2: invalid JSON at column 2"),
                                     ({}, "bogus_key=1", "error: command line: unknown key 'bogus_key'"),
                                     ({"output_dir": str(finished)}, "", "holds a finished run (adapter/ exists)")]:
            fill(page, {**values, **changed}, f"{TINY} {more}")
            page.locator("#train-start" if "output_dir" in changed else "#train-check").click()
            page.locator("#train-status").get_by_text(words).wait_for(timeout=30_000)
        assert training.process is None  # the refused Start started nothing

        fill(page, values, TINY)
        page.locator("#train-check").click()
        page.locator("#train-status").get_by_text("data OK: 12 conversations read").wait_for(timeout=30_000)
        assert page.locator("#train-example mark").first.inner_text().startswith("Water plant 0")
        assert page.locator("#train-command input, #train-command textarea").first.input_value().endswith("max_steps=12")
        shown = page.locator("#train-plan textarea").input_value()
        assert shown.startswith("Resolved settings: float32, unquantized base") and "Estimate for this machine" in shown

        page.locator("#train-start").click()
        page.locator("#train-status").get_by_text("started (pid").wait_for(timeout=60_000)
        page.locator("#train-start").click()  # a second Start while it runs
        page.locator("#train-status").get_by_text("a training is already running").wait_for(timeout=30_000)

        # The curve grows on this very page: the train curve's points seen at three counts, the dev curve's
        # first point (the base's, at step 0) with it, the legend inside the box, the colours fixed.
        seen, deadline = set(), time.time() + 120
        while len(seen) < 3 and time.time() < deadline:
            drawn = curve_on(page)
            if drawn and drawn["curves"].get("train-loss", {}).get("points"):
                seen.add(len(drawn["curves"]["train-loss"]["points"]))
                assert drawn["curves"]["dev-loss"]["points"][:1] == [0], drawn
            page.wait_for_timeout(300)
        assert len(seen) >= 3 and min(seen) <= 4, seen
        drawn = curve_on(page)
        assert drawn["legend"] == LEGEND and drawn["height"] > 150, drawn
        assert (drawn["curves"]["train-loss"]["color"], drawn["curves"]["dev-loss"]["color"]) == ("#1f77b4", "#ff7f0e")
        page.locator("#train-progress").get_by_text(re.compile(r"s/step · ETA \d\d:\d\d:\d\d · [\d,]+ tokens/s")).wait_for(
            timeout=30_000)
        page.screenshot(path=str(tmp_path / "train-tab.png"), full_page=True)

        # Chat is served during the training.
        assert chat_one_turn(page, "tiny/adapter", "Still there?")
        assert training.running()

        page.get_by_role("tab", name="Train").click()
        page.locator("#train-stop").click()
        # Stop's own line, or the same words from the next tick ("stopping (pid N): finishing step ...")
        page.locator("#train-status").get_by_text(re.compile(
            r"stopping( \(pid \d+\))?: finishing step \d+ \((about \d+ s|any moment: steps take about \d+ s)\)")
        ).wait_for(timeout=30_000)
        page.locator("#train-progress").get_by_text("stopped: Resume continues").wait_for(timeout=60_000)
        # the status line follows: it says what the progress line says, not "stopping"
        page.locator("#train-status").get_by_text("stopped: Resume continues").wait_for(timeout=10_000)
        stopped_at = max(int(p.name.split("-")[1]) for p in Path(values["output_dir"]).glob("checkpoint-*"))
        assert 0 < stopped_at < 12 and not (Path(values["output_dir"]) / "epoch-01").exists()

        page.locator("#train-resume").click()
        page.locator("#train-progress").get_by_text("finished:").wait_for(timeout=180_000)
        page.locator("#train-status").get_by_text("finished:").wait_for(timeout=10_000)
        log = (Path(values["output_dir"]) / "train.log").read_text()
        assert f"Resuming from {Path(values['output_dir']) / f'checkpoint-{stopped_at}'}" in log
        steps = [json.loads(line)["step"] for line in (Path(values["output_dir"]) / "metrics.jsonl").read_text().splitlines()
                 if "loss" in json.loads(line)]
        assert steps == list(range(1, 13))  # each step once: the resumed run went on from the checkpoint

        # At the end, on the same page: every train point and both dev points (the base's and the epoch's);
        # a page opened now draws the same curves in the same colours.
        page.wait_for_function("() => document.querySelector('#train-loss polyline.dev-loss').dataset.points"
                               ".trim().split(' ').length === 2", timeout=10_000)
        drawn = curve_on(page)
        assert drawn["curves"]["train-loss"]["points"] == list(range(1, 13)) and drawn["legend"] == LEGEND
        assert drawn["curves"]["dev-loss"]["points"] == [0, 12]
        other = browser.new_page(viewport={"width": 1280, "height": 1400})
        other.goto(url)
        other.get_by_role("tab", name="Train").click()
        other.wait_for_function("() => document.querySelectorAll('#train-loss polyline.dev-loss circle, "
                                "#train-loss circle.dev-loss').length === 2", timeout=10_000)
        assert curve_on(other) == drawn
        other.close()

        # The new epoch adapter is in the Chat tab's list, with its dev loss; one turn with it.
        name = Path(values["output_dir"]).name
        page.get_by_role("tab", name="Chat").click()
        listed, deadline = 0, time.time() + 30  # the lists refresh every 3 s, not while the list is open
        while not listed and time.time() < deadline:
            page.locator("#chat-model input").click()
            page.get_by_role("option").first.wait_for(timeout=10_000)
            listed = page.get_by_role("option", name=re.compile(rf"{name}\/epoch-01 · dev loss \d")).count()
            page.keyboard.press("Escape")
            page.locator("#chat-model input").blur()
            page.wait_for_timeout(0 if listed else 1000)
        assert listed == 1
        page.locator("#chat-new").click()
        assert chat_one_turn(page, f"{name}/epoch-01", "How do I water plant number 3?")
        browser.close()
    assert errors == [], errors
    print(f"screenshot: {tmp_path / 'train-tab.png'}")


def test_the_status_line_follows_the_run_once_it_stops_running(tmp_path):
    """A start that fails in the child: the next tick puts the failure in the status line too (it never keeps
    saying "started" while the progress line says "failed"), once; a running run leaves the status line alone."""
    from lima_lite.app.train_tab import tick

    runs = tmp_path / "runs"
    (runs / "r").mkdir(parents=True)
    (runs / "r" / "train.log").write_text("$ lima-lite train quickstart\nerror: r: something the child refused\n")
    training = Training(runs)
    training.output_dir = runs / "r"
    training.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        *_, status, said = tick(training, str(runs / "r"), None)
        assert status == {"__type__": "update"}, status  # gr.skip(): running, the status line is left alone
        assert said == f"running (pid {training.process.pid})"
    finally:
        training.process.kill()
        training.process.wait()
    training.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    training.process.wait()
    line, *_, status, said = tick(training, str(runs / "r"), said)
    assert status == said == "failed: error: r: something the child refused" and said in line
    *_, status, _ = tick(training, str(runs / "r"), said)
    assert status == {"__type__": "update"}, status  # said once


def test_runs_started_from_a_terminal_are_listed(tmp_path):
    from lima_lite.app.train_tab import runs_text

    runs = tmp_path / "runs"
    for name, status in (("ours", "running"), ("theirs", "running"), ("old", "finished")):
        (runs / name).mkdir(parents=True)
        write_run(runs / name, status=status)
    training = Training(runs)
    training.output_dir = runs / "ours"
    assert runs_text(runs, training).splitlines()[1:] == [
        "- `old`: finished", "- `ours`: running", "- `theirs`: running (not started from this page)"]


def test_export_merges_and_writes_the_hub_folder_of_the_chosen_epoch(tiny_llama_tied, tmp_path):
    from lima_lite.app.train_tab import export_adapter

    runs = tmp_path / "runs"
    runs.mkdir()
    train_tiny(tiny_llama_tied, runs / "r", [qa(i) for i in range(4)])
    models = Models.discover(runs)
    *_, merged = export_adapter(models, "merge", "r/epoch-01", str(runs / "merged"), "", "")
    assert merged.startswith(f"done: lima-lite merge {runs / 'r' / 'epoch-01'} --out {runs / 'merged'}")
    assert (runs / "merged" / "config.json").is_file() and (runs / "merged" / "lima_template.json").is_file()
    *_, refused = export_adapter(models, "push", "r/epoch-01", str(runs / "hub"), "me/tiny", "")
    assert refused.startswith("error: the base model was a local folder")  # the CLI's own message
    first, *_, pushed = export_adapter(models, "push", "r/epoch-01", str(runs / "hub"), "me/tiny", "you/base")
    assert first == (f"running: lima-lite push {runs / 'r' / 'epoch-01'} --repo me/tiny --dry-run --out "
                     f"{runs / 'hub'} --base-model you/base")
    assert pushed.startswith("done:") and "you/base" in (runs / "hub" / "README.md").read_text()
    with pytest.raises(LimaError, match="r/base: choose an adapter"):
        next(export_adapter(models, "merge", "r/base", str(runs / "m2"), "", ""))
    with pytest.raises(LimaError, match="gguf: give an output folder"):
        next(export_adapter(models, "gguf", "r/adapter", " ", "", ""))
