"""Bad input, second table: outputs that would replace inputs, resumes that would change a run, two runs in
one folder, a run that diverges, damaged bases and adapters, hostile data. Same runner and rules as
tests/bad_input.py: exit status 2, one line naming the file (and line, field), no traceback, every
file that was in the case's folder before byte-identical after.

    $ PYTHONPATH=$PWD python -m pytest tests/test_bad_runs_and_outputs.py -q --tb=short
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from bad_input import (
    ANSWER,
    ARTICLE,
    COMMENT,
    JUDGE,
    PROMPTS,
    QA,
    SUBMISSION,
    WIKIHOW_HEADER,
    Case,
    check_case,
    jsonl,
)
from helpers import snapshot, tiny_settings, truncate
from lima_lite import LimaError

CASES: list[Case] = []


def case(*args, **kwargs) -> None:
    CASES.append(Case(*args, **kwargs))


# ---------------------------------------------------------------- outputs never replace inputs or existing files

POOL = {"pool.jsonl": jsonl(QA, QA)}
SELECT = ["select", "--strategy", "longest", "--k", "1"]
MIX = {"s.jsonl": jsonl(QA), "d.jsonl": jsonl({"conversations": ["q", "a", "q2", "a2"]})}


def hard_link(source: str, name: str):
    def prepare(tmp: Path, fixtures: dict) -> None:
        os.link(tmp / source, tmp / name)
    return prepare


case("select-out-is-input", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/pool.jsonl"], ("{tmp}/pool.jsonl", "input"),
     files=POOL)
case("select-out-is-input-overwrite", [*SELECT, "--overwrite", "{tmp}/pool.jsonl", "{tmp}/./pool.jsonl"],
     ("{tmp}/pool.jsonl", "input"), files=POOL)
case("select-out-is-input-hard-link", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/link.jsonl", "--overwrite"],
     ("{tmp}/link.jsonl", "input"), files=POOL, prepare=hard_link("pool.jsonl", "link.jsonl"))
case("select-out-exists", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/out.jsonl"], ("{tmp}/out.jsonl", "exists", "--overwrite"),
     files={**POOL, "out.jsonl": "mine\n"})
case("select-report-exists", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/out.jsonl"], ("{tmp}/out.report.md", "exists"),
     files={**POOL, "out.report.md": "my notes\n"})
case("select-out-folder", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/outdir", "--overwrite"], ("{tmp}/outdir", "folder"),
     files={**POOL, "outdir/keep.txt": "mine\n"})
case("mix-out-is-single", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl", "--out",
                           "{tmp}/s.jsonl"], ("{tmp}/s.jsonl", "input"), files=MIX)
case("mix-out-is-dialogues", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl", "--out",
                              "{tmp}/d.jsonl", "--overwrite"], ("{tmp}/d.jsonl", "input"), files=MIX)
case("mix-out-exists", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl", "--out",
                        "{tmp}/m.jsonl"], ("{tmp}/m.jsonl", "exists"), files={**MIX, "m.jsonl": "mine\n"})
case("mix-out-folder", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl", "--out",
                        "{tmp}/m"], ("{tmp}/m", "folder"), files={**MIX, "m/keep.txt": "mine\n"})
WIKIHOW = {"w.csv": WIKIHOW_HEADER + ARTICLE}
case("wikihow-out-is-csv", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/w.csv"],
     ("{tmp}/w.csv", "input"), files=WIKIHOW)
case("wikihow-out-exists", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out.jsonl"],
     ("{tmp}/out.jsonl", "exists"), files={**WIKIHOW, "out.jsonl": "mine\n"})
case("wikihow-out-folder", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out"],
     ("{tmp}/out", "folder"), files={**WIKIHOW, "out/keep.txt": "mine\n"})
case("wikihow-keeps-nothing", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out.jsonl"],
     ("{tmp}/w.csv", "no example was kept", "answer_too_short"),
     files={"w.csv": WIKIHOW_HEADER + '"Step.","How to Sell Art","Too short."\n'})
REDDIT = {"rs.jsonl": jsonl(SUBMISSION), "rc.jsonl": jsonl(COMMENT)}
case("reddit-out-is-comments", ["curate", "reddit", "--submissions", "{tmp}/rs.jsonl", "--comments", "{tmp}/rc.jsonl",
                                "--out", "{tmp}/rc.jsonl"], ("{tmp}/rc.jsonl", "input"), files=REDDIT)
case("reddit-test-out-is-out", ["curate", "reddit", "--submissions", "{tmp}/rs.jsonl", "--comments", "{tmp}/rc.jsonl",
                                "--out", "{tmp}/o.jsonl", "--test-out", "{tmp}/o.jsonl"], ("{tmp}/o.jsonl", "two"),
     files=REDDIT)
case("reddit-keeps-nothing", ["curate", "reddit", "--submissions", "{tmp}/rs.jsonl", "--comments", "{tmp}/rc.jsonl",
                              "--out", "{tmp}/o.jsonl", "--min-score", "1000"], ("{tmp}/rs.jsonl", "no example was kept"),
     files=REDDIT)
case("stackexchange-out-exists", ["curate", "stackexchange", "--dump", "{tmp}/dump", "--out", "{tmp}/o.jsonl"],
     ("{tmp}/o.jsonl", "exists"), files={"dump/keep.txt": "x", "o.jsonl": "mine\n"})

# eval: the resumable steps (generate, pairwise, likert, absolute, knowledge, dialogue) take up an existing --out
# and never write into an input; human and report replace an existing output only with --overwrite. The model
# named does not exist: the outputs are checked before anything is loaded.
ANSWERS = {"a.jsonl": jsonl(ANSWER), "b.jsonl": jsonl(ANSWER)}
VOTE = {"prompt": "p", "model_a": "x", "model_b": "y", "answer_a": "1", "answer_b": "2", "vote": "a", "winner": "x",
        "rater": "r", "time": "t"}
case("eval-generate-out-is-prompts", ["eval", "generate", "--model", "{tmp}/no-model", "--prompts", "{tmp}/p.jsonl",
                                      "--out", "{tmp}/p.jsonl"], ("{tmp}/p.jsonl", "input"), files=PROMPTS)
case("eval-pairwise-out-is-baseline", ["eval", "pairwise", "--judge", JUDGE, "--ours", "{tmp}/a.jsonl", "--baseline",
                                       "{tmp}/b.jsonl", "--out", "{tmp}/./b.jsonl"], ("{tmp}/b.jsonl", "input"),
     files=ANSWERS)
case("eval-likert-out-is-answers-hard-link", ["eval", "likert", "--judge", JUDGE, "--answers", "{tmp}/a.jsonl", "--out",
                                              "{tmp}/link.jsonl"], ("{tmp}/link.jsonl", "input"), files=ANSWERS,
     prepare=hard_link("a.jsonl", "link.jsonl"))
case("eval-absolute-out-is-answers", ["eval", "absolute", "--judge", JUDGE, "--answers", "{tmp}/a.jsonl", "--out",
                                      "{tmp}/a.jsonl"], ("{tmp}/a.jsonl", "input"), files=ANSWERS)
case("eval-knowledge-out-is-questions", ["eval", "knowledge", "--model", "{tmp}/no-model", "--questions", "{tmp}/q.jsonl",
                                         "--out", "{tmp}/q.jsonl"], ("{tmp}/q.jsonl", "input"),
     files={"q.jsonl": jsonl({"id": "q", "question": "Capital of France?", "answers": ["Paris"]})})
case("eval-dialogue-out-is-dialogues", ["eval", "dialogue", "--model", "{tmp}/no-model", "--judge", JUDGE,
                                        "--dialogues", "{tmp}/d.jsonl", "--out", "{tmp}/d.jsonl"],
     ("{tmp}/d.jsonl", "input"), files={"d.jsonl": jsonl({"id": "d", "turns": ["Hi", "And?"]})})
case("eval-human-out-exists", ["eval", "human", "{tmp}/v.jsonl", "--out", "{tmp}/h.jsonl"],
     ("{tmp}/h.jsonl", "exists", "--overwrite"), files={"v.jsonl": jsonl(VOTE), "h.jsonl": "mine\n"})
case("eval-human-out-is-votes", ["eval", "human", "{tmp}/v.jsonl", "--out", "{tmp}/v.jsonl", "--overwrite"],
     ("{tmp}/v.jsonl", "input"), files={"v.jsonl": jsonl(VOTE)})
case("eval-report-exists", ["eval", "report", "{tmp}/h.jsonl", "--out", "{tmp}/rep"], ("{tmp}/rep/report.md", "exists"),
     files={"h.jsonl": jsonl({"protocol": "human"}), "rep/report.md": "my notes\n"})
case("eval-report-out-is-file", ["eval", "report", "{tmp}/h.jsonl", "--out", "{tmp}/h.jsonl", "--overwrite"],
     ("{tmp}/h.jsonl", "is a file"), files={"h.jsonl": jsonl({"protocol": "human"})})


# ---------------------------------------------------------------- recipes, data and tokens

RECIPE = "model_name_or_path: {base}\ndataset_name: {tmp}/d.jsonl\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)) + "lora_target_modules: *i\n"
for command in ("inspect", "train"):
    case(f"{command}-recipe-empty", [command, "{tmp}/r.yaml"], ("{tmp}/r.yaml", "empty"), files={"r.yaml": ""})
    case(f"{command}-recipe-only-comments", [command, "{tmp}/r.yaml"], ("{tmp}/r.yaml", "empty"),
         files={"r.yaml": "# learning_rate: 1e-4\n\n"})
case("inspect-recipe-alias-bomb", ["inspect", "{tmp}/r.yaml"], ("{tmp}/r.yaml", ":2", "alias"),
     files={"r.yaml": BOMB, "d.jsonl": jsonl(QA)})


def data_case(name: str, line: str, expect: tuple) -> None:
    case(f"inspect-{name}", ["inspect", "quickstart", "dataset_name={tmp}/d.jsonl", "model_name_or_path={base}",
                             "chat_format=lima"],
         ("{tmp}/d.jsonl", *expect), files={"d.jsonl": jsonl(QA, line)}, needs=("base",))


MESSAGES = json.dumps(QA["messages"])
data_case("duplicate-key", '{"messages": %s, "messages": %s}' % (MESSAGES, json.dumps(QA["messages"][:1])),
          (":2", "messages", "twice"))
data_case("duplicate-key-nested", '{"messages": [{"role": "user", "content": "a", "content": "b"}, '
          '{"role": "assistant", "content": "c"}]}', (":2", "content", "twice"))
data_case("lone-surrogate", '{"messages": [{"role": "user", "content": "x\\ud800y"}, '
          '{"role": "assistant", "content": "c"}]}', (":2", "messages[0].content", "surrogate"))
data_case("huge-integer", '{"messages": %s, "id": %s}' % (MESSAGES, "9" * 5000), (":2", "digits"))
case("select-duplicate-key", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/out.jsonl"], ("{tmp}/pool.jsonl:1", "twice"),
     files={"pool.jsonl": '{"messages": %s, "messages": %s}\n' % (MESSAGES, MESSAGES)})
case("select-clusters-zero", ["select", "--strategy", "diversity", "--clusters", "0", "{tmp}/pool.jsonl",
                              "{tmp}/out.jsonl"], ("--clusters",), files=POOL)
for token in ("<unk>", "<s>"):
    case(f"inspect-eot-{token.strip('<>')}", ["inspect", "quickstart", "dataset_name={tmp}/d.jsonl",
                                              "model_name_or_path={base}", "chat_format=lima", f"eot_token={token}"],
         ("eot_token", token), files={"d.jsonl": jsonl(QA)}, needs=("base",))
for value in ("-5", "nan", "0", "inf"):
    case(f"plan-gpu-gib-{value}", ["plan", "quickstart", "model_name_or_path={base}", "chat_format=lima", "--gpu-gib", value],
         ("--gpu-gib",), needs=("base",))


# ---------------------------------------------------------------- train: base, settings and output folder


def train_case(name: str, overrides: list, expect: tuple, prepare=None, files=None) -> None:
    argv = ["train", "quickstart", "dataset_name={tmp}/d.jsonl", "model_name_or_path={base}",
            "output_dir={tmp}/run", "chat_format=lima", "load_in_4bit=false", "dtype=float32", "bf16=false", *overrides]
    case(f"train-{name}", argv, expect, files={"d.jsonl": jsonl(QA, QA), "run/notes.txt": "mine\n", **(files or {})},
         prepare=prepare, needs=("base",))


def base_copy(change):
    """prepare(): the tiny base copied to {tmp}/base, then change(folder)."""
    def prepare(tmp: Path, fixtures: dict) -> None:
        shutil.copytree(fixtures["base"], tmp / "base")
        change(tmp / "base")
    return prepare


BASE = "model_name_or_path={tmp}/base"
train_case("base-truncated", [BASE], ("{tmp}/base/model.safetensors",),
           base_copy(lambda f: truncate(f / "model.safetensors")))
train_case("base-config-invalid", [BASE], ("{tmp}/base/config.json",),
           base_copy(lambda f: (f / "config.json").write_text("{not json")))
train_case("base-config-no-type", [BASE], ("{tmp}/base", "model_type"),
           base_copy(lambda f: (f / "config.json").write_text("{}")))
train_case("base-no-tokenizer", [BASE], ("{tmp}/base", "tokenizer"),
           base_copy(lambda f: [p.unlink() for p in f.glob("tokenizer*")]))
train_case("lora-targets-nothing", ["lora_target_modules=[nothing_proj]"], ("lora_target_modules", "nothing_proj"))
train_case("seed-negative", ["seed=-1"], ("command line", "seed"))
train_case("output-dir-empty", ["output_dir="], ("output_dir",))
case("train-output-dir-is-file", ["train", "quickstart", "dataset_name={tmp}/d.jsonl", "model_name_or_path={base}",
                                  "output_dir={tmp}/runfile", "chat_format=lima"], ("{tmp}/runfile", "file"),
     files={"d.jsonl": jsonl(QA), "runfile": "mine\n"}, needs=("base",))


# ---------------------------------------------------------------- adapters: damaged, or for another base


def damage(name: str, change):
    def prepare(tmp: Path, fixtures: dict) -> None:
        shutil.copytree(fixtures["adapter"], tmp / "adapter")
        change(tmp / "adapter" / name)
    return prepare


def other_base(tmp: Path, fixtures: dict) -> None:
    """A base of the same family and vocabulary with another hidden size than the adapter was trained on."""
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(fixtures["base"])
    config.hidden_size, config.intermediate_size = 32, 64
    LlamaForCausalLM(config).save_pretrained(tmp / "other")
    for file in Path(fixtures["base"]).glob("tokenizer*"):
        shutil.copy(file, tmp / "other" / file.name)


COPY = "{tmp}/adapter"
case("push-adapter-truncated", ["push", COPY, "--repo", "me/x", "--dry-run", "--out", "{tmp}/hub"],
     (f"{COPY}/adapter_model.safetensors",), prepare=damage("adapter_model.safetensors", truncate), needs=("adapter",))
for tool, argv in {"push": ["push", COPY, "--repo", "me/x", "--dry-run", "--out", "{tmp}/hub"],
                   "merge": ["merge", COPY, "--out", "{tmp}/merged"],
                   "chat": ["chat", "--adapter", COPY, "--prompt", "hi"]}.items():
    case(f"{tool}-template-invalid", argv, (f"{COPY}/lima_template.json",),
         prepare=damage("lima_template.json", lambda p: p.write_text("{oops")), needs=("adapter",))
    case(f"{tool}-template-list", argv, (f"{COPY}/lima_template.json",),
         prepare=damage("lima_template.json", lambda p: p.write_text("[1]")), needs=("adapter",))
    case(f"{tool}-template-no-eot", argv, (f"{COPY}/lima_template.json", "eot_token"),
         prepare=damage("lima_template.json", lambda p: p.write_text("{}")), needs=("adapter",))
for tool, argv in {"merge": ["merge", "{adapter}", "--base", "{tmp}/other", "--out", "{tmp}/merged"],
                   "chat": ["chat", "--adapter", "{adapter}", "--base", "{tmp}/other", "--prompt", "hi"]}.items():
    case(f"{tool}-adapter-for-another-base", argv, ("{adapter}", "{tmp}/other", "base"), prepare=other_base,
         needs=("base", "adapter"))


def pointed_at_other_base(tmp: Path, fixtures: dict) -> None:
    """The adapter copied to {tmp}/adapter, its adapter_config.json naming a base of other layer sizes."""
    other_base(tmp, fixtures)
    shutil.copytree(fixtures["adapter"], tmp / "adapter")
    config = json.loads((tmp / "adapter" / "adapter_config.json").read_text())
    (tmp / "adapter" / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(tmp / "other")}))


case("eval-generate-adapter-for-another-base", ["eval", "generate", "--model", COPY, "--prompts", "{tmp}/p.jsonl",
                                                "--out", "{tmp}/answers.jsonl"], (COPY, "{tmp}/other", "base"),
     files={"p.jsonl": jsonl({"id": "a", "prompt": "How?"})}, prepare=pointed_at_other_base, needs=("base", "adapter"))
case("chat-adapter-names-another-base", ["chat", "--adapter", COPY, "--prompt", "hi"], (COPY, "{tmp}/other", "base"),
     prepare=pointed_at_other_base, needs=("base", "adapter"))

# ---------------------------------------------------------------- the runner (tests/bad_input.py)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input(c: Case, tmp_path, request):
    check_case(c, tmp_path, request)


def test_overwrite_replaces_an_output_and_its_report(tmp_path):
    from lima_lite.cli import main

    (tmp_path / "pool.jsonl").write_text(jsonl(QA, {"messages": [QA["messages"][0], {"role": "assistant",
                                                                                     "content": "A longer answer."}]}))
    (tmp_path / "out.jsonl").write_text("old\n")
    (tmp_path / "out.report.md").write_text("old\n")
    argv = [*SELECT, str(tmp_path / "pool.jsonl"), str(tmp_path / "out.jsonl")]
    assert main(argv) == 2 and (tmp_path / "out.jsonl").read_text() == "old\n"
    assert main([*argv, "--overwrite"]) == 0
    assert "A longer answer." in (tmp_path / "out.jsonl").read_text()
    assert (tmp_path / "out.report.md").read_text() != "old\n"


# ---------------------------------------------------------------- train: resume, lock, divergence


@pytest.fixture(scope="module")
def interrupted_run(tiny_llama_tied, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, data) of a 2-epoch tiny run killed after its first epoch's checkpoint: what a rerun resumes."""
    from helpers import qa
    from lima_lite.train import train

    folder = tmp_path_factory.mktemp("interrupted")
    data = folder / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": qa(i)}) + "\n" for i in range(4)))
    run = train(None, tiny_settings(tiny_llama_tied, data, folder / "run"))
    for name in ("adapter", "epoch-02", "checkpoint-4"):
        shutil.rmtree(run / name)
    assert (run / "checkpoint-2" / "trainer_state.json").is_file()
    return run, data


def copy_run(interrupted_run, tmp_path: Path) -> Path:
    shutil.copytree(interrupted_run[0], tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("key, value, shown", [
    ("learning_rate", 1e-3, ("learning_rate", "2e-05", "0.001")),
    ("lr_scheduler_type", "constant", ("lr_scheduler_type", "polynomial", "constant")),
    ("per_device_train_batch_size", 1, ("per_device_train_batch_size", "2", "1")),
    ("lora_r", 8, ("lora_r", "16", "8")),
    ("num_train_epochs", 3, ("num_train_epochs",)),
    ("residual_dropout", 0.1, ("residual_dropout", "0.2", "0.1")),
])
def test_resume_refuses_a_recipe_change_that_alters_the_run(interrupted_run, tiny_llama_tied, tmp_path, key, value, shown):
    from lima_lite.train import train

    run = copy_run(interrupted_run, tmp_path)
    before = snapshot(run)
    with pytest.raises(LimaError) as error:
        train(None, tiny_settings(tiny_llama_tied, interrupted_run[1], run, **{key: value}))
    assert str(error.value).startswith(f"{run}: resuming would change") and "\n" not in str(error.value)
    assert all(text in str(error.value) for text in shown), str(error.value)
    assert snapshot(run) == before


def test_resume_refuses_other_data_in_the_same_file(interrupted_run, tiny_llama_tied, tmp_path):
    from lima_lite.train import train

    run = copy_run(interrupted_run, tmp_path)
    data = tmp_path / "d.jsonl"
    shutil.copy(interrupted_run[1], data)
    recorded = json.loads((run / "run.json").read_text())
    recorded["script"]["dataset_name"] = recorded["data"]["dataset_name"] = str(data)
    (run / "run.json").write_text(json.dumps(recorded))
    with data.open("a") as more:
        more.write(jsonl(QA))
    with pytest.raises(LimaError, match=r"resuming would change data file \(sha256\) from '[0-9a-f]{64}' to '[0-9a-f]{64}'"):
        train(None, tiny_settings(tiny_llama_tied, data, run))


def test_a_second_train_on_a_locked_run_is_refused_and_a_dead_lock_taken_over(interrupted_run, tiny_llama_tied,
                                                                               tmp_path, capsys):
    import socket
    import subprocess
    import sys

    from lima_lite.train import train

    run = copy_run(interrupted_run, tmp_path)
    lock = run / "train.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))  # a live process holds it
    before = snapshot(run)
    with pytest.raises(LimaError, match=rf"another `lima-lite train` \(pid {os.getpid()} on "):
        train(None, tiny_settings(tiny_llama_tied, interrupted_run[1], run))
    assert snapshot(run) == before
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(ended.stdout)}))  # a killed run's lock
    # a recipe change that does not alter the run (logging) is allowed on resume
    train(None, tiny_settings(tiny_llama_tied, interrupted_run[1], run, logging_steps=2))
    assert "Taking over" in capsys.readouterr().out
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "epoch-02").is_dir()
    assert not lock.exists()
    assert json.loads((run / "run.json").read_text())["resumed_from"].endswith("checkpoint-2")


def test_two_processes_that_find_one_dead_lock_do_not_both_take_it_over(tmp_path, monkeypatch):
    """Both read the dead lock before either replaces it (a barrier holds each read until the other's is done, or
    3 s), and one of them acts 0.3 s after the other, once the other's new lock is in place: exactly one takes it
    over; the other is refused, naming the one that won."""
    import multiprocessing
    import socket
    import subprocess
    import sys
    import threading
    import time

    from lima_lite import layout

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "train.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(ended.stdout)}))
    context = multiprocessing.get_context("fork")  # the children keep the patched reader
    both_read, results, read = context.Barrier(2), context.Queue(), layout._lock_holder

    def read_then_wait(lock):
        holder = read(lock)
        try:
            if both_read.wait(timeout=3) == 0:
                time.sleep(0.3)
        except threading.BrokenBarrierError:  # the other process cannot read now: it waits for its turn
            pass
        return holder

    def contend():
        try:
            with layout.run_lock(tmp_path):
                results.put(("won", os.getpid()))
                time.sleep(1)  # still training while the other one decides
        except LimaError as error:
            results.put(("refused", str(error)))

    monkeypatch.setattr(layout, "_lock_holder", read_then_wait)
    processes = [context.Process(target=contend) for _ in range(2)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert [kind for kind, _ in outcomes] == ["refused", "won"], outcomes
    assert f"pid {outcomes[1][1]} on" in outcomes[0][1]
    assert not (tmp_path / "train.lock").exists()  # the winner's lock went with it


def test_a_diverging_run_stops_at_the_first_non_finite_loss_and_writes_no_adapter(tiny_llama_tied, tmp_path):
    from safetensors.torch import load_file

    from helpers import qa
    from lima_lite.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": qa(i)}) + "\n" for i in range(4)))
    settings = tiny_settings(tiny_llama_tied, data, tmp_path / "run", learning_rate="1.0e+30", max_steps=6)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("".join(f"{key}: {value}\n" for key, value in settings.items()))
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["train", str(recipe)]) == 2
    lines = [line[line.index("error:"):] for line in err.getvalue().splitlines() if "error:" in line]
    assert len(lines) == 1 and "diverged" in lines[0] and ("loss is nan" in lines[0] or "grad_norm is nan" in lines[0]
                                                          or " is inf" in lines[0]), err.getvalue()[-500:]
    assert not (tmp_path / "run" / "adapter").exists()
    import torch

    for weights in (tmp_path / "run").rglob("adapter_model.safetensors"):  # what was saved before is finite
        assert all(torch.isfinite(t).all() for t in load_file(weights).values()), weights
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"


def test_an_adapter_with_nan_weights_is_never_written(tiny_llama_tied, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lima_lite.adapters import check_finite

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_tied), LoraConfig(r=2, target_modules=["q_proj"]))
    check_finite(model, None, tmp_path / "adapter")  # finite: no error
    name, weight = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        weight[0, 0] = float("nan")
    with pytest.raises(LimaError, match=rf"adapter: not written: {name.replace('.', '[.]')} holds inf or NaN"):
        check_finite(model, None, tmp_path / "adapter")


# ---------------------------------------------------------------- terminal chat: /set and Ctrl-C


@pytest.mark.parametrize("key, value", [("repetition_penalty", "0"), ("repetition_penalty", "-1"), ("temperature", "-1"),
                                        ("top_p", "7"), ("top_p", "0"), ("max_new_tokens", "0"), ("temperature", "nan"),
                                        ("max_new_tokens", "2.5"), ("top_p", "high")])
def test_set_refuses_what_the_flag_refuses_with_the_same_words(key, value, capsys):
    import io

    from lima_lite.chat import Session, parser

    session = Session(None, out=io.StringIO())
    before = dict(session.settings)
    session.set(f"{key}={value}")
    said = session.out.getvalue()
    assert session.settings == before and said.startswith(f"cannot set {key}: ")
    with pytest.raises(SystemExit):
        parser().parse_args([f"--{key.replace('_', '-')}", value])
    flag_error = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.strip().removeprefix(f"cannot set {key}: ") in flag_error, (said, flag_error)


def test_set_takes_a_value_in_range():
    import io

    from lima_lite.chat import Session

    session = Session(None, out=io.StringIO())
    session.set("repetition_penalty=0.5 top_p=1 temperature=0")
    assert (session.settings["repetition_penalty"], session.settings["top_p"], session.settings["temperature"]) == (0.5, 1, 0)


def default_ctrl_c() -> None:
    """In a child before it runs: SIGINT at its default, as a person's shell starts a program; tests started
    from a background job (`pytest ... &` in a script) have it ignored, and a child would inherit that."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_a_reply_keeps_the_history_and_at_the_prompt_quits(tiny_adapter, tmp_path):
    """A real terminal (a pty): Ctrl-C while the reply streams, then go on talking, then Ctrl-C at the prompt."""
    import sys

    import pexpect

    root = Path(__file__).resolve().parents[1]
    # 20 ms a token, and no turn end before max_new_tokens, so that the Ctrl-C sent on the reply's first
    # characters lands while it streams, however fast this CPU samples the tiny model and wherever its random
    # weights happen to sample the turn end (test-only: a sitecustomize in the child's path)
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import time\nfrom transformers.generation import streamers, utils\n"
        "put = streamers.TextIteratorStreamer.put\n"
        "def slow_put(self, value):\n    time.sleep(0.02)\n    return put(self, value)\n"
        "streamers.TextIteratorStreamer.put = slow_put\n"
        "generate = utils.GenerationMixin.generate\n"
        "def whole_generate(self, *args, **kwargs):\n"
        "    return generate(self, *args, min_new_tokens=kwargs.get('max_new_tokens'), **kwargs)\n"
        "utils.GenerationMixin.generate = whole_generate\n")
    child = pexpect.spawn(sys.executable, ["-m", "lima_lite.chat", "--adapter", str(tiny_adapter), "--no-load-in-4bit",
                                           "--dtype", "float32", "--temperature", "2", "--top-p", "1", "--seed", "0",
                                           "--max-new-tokens", "900"],
                          cwd=str(root), env={**os.environ, "PYTHONPATH": f"{slow}{os.pathsep}{root}", "OMP_NUM_THREADS": "1"},
                          encoding="utf-8", timeout=120, preexec_fn=default_ctrl_c)
    try:
        child.expect_exact(">>> ")
        child.sendline("How do I water plant number 3?")
        child.expect_exact("plant number 3?\r\n")  # the terminal's echo; the reply follows it
        child.expect(r"\S{3}")  # the reply is streaming
        child.sendintr()
        child.expect_exact("(stopped; the reply so far is kept")
        child.expect_exact(">>> ")
        child.sendline("/set max_new_tokens=4")
        child.expect_exact(">>> ")
        child.sendline("And plant 4?")
        child.expect_exact("plant 4?\r\n")
        child.expect_exact("stopped at max_new_tokens=4")  # no turn end before it: the child's sitecustomize works
        child.expect_exact(">>> ")  # a whole reply: the stopped one no longer holds the model
        child.sendline(f"/save {tmp_path / 'chat.jsonl'}")
        child.expect_exact("(saved 4 turns")
        child.expect_exact(">>> ")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    messages = json.loads((tmp_path / "chat.jsonl").read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "How do I water plant number 3?" and messages[2]["content"] == "And plant 4?"
    from transformers import AutoTokenizer

    tokens = len(AutoTokenizer.from_pretrained(tiny_adapter)(messages[1]["content"])["input_ids"])
    assert 0 < tokens < 900  # stopped part-way
