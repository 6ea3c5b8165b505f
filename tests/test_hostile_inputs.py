"""Bad input, third table: symlinks out of an upload, outputs that would replace inputs or foreign folders,
answers that belong to another prompt or model, values that are not plain data or out of range, and the
inputs that used to be accepted silently. Same runner and rules as tests/bad_input.py: exit status 2,
one line naming the file (and line, field), no traceback, every file in the case's folder byte-identical.
Below the table: what a table cannot show (escaped text in reports and cards, damaged checkpoints on resume,
normalised matching, the reworded prompts file).

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_inputs.py -q
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from bad_input import QA, Case, check_case, jsonl
from helpers import snapshot, tiny_settings, truncate
from lima_lite import LimaError

CASES: list[Case] = []

# Each case's class in docs/hostile-cases.md: unsafe, losses, tracebacks, silent.
CLASS: dict[str, str] = {}


def case(kind: str, *args, **kwargs) -> None:
    CASES.append(Case(*args, **kwargs))
    CLASS[CASES[-1].name] = kind


DIALOGUE = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."},
                         {"role": "user", "content": "And?"}, {"role": "assistant", "content": "Then."}]}
SECRET = "-----BEGIN PRIVATE KEY----- not for upload"


# ---------------------------------------------------------------- unsafe: an upload holds the folder's own files


def adapter_with_link(name: str, target: str = "secret.pem"):
    def prepare(tmp: Path, fixtures: dict) -> None:
        shutil.copytree(fixtures["adapter"], tmp / "adapter")
        (tmp / target).write_text(SECRET)
        (tmp / "adapter" / name).symlink_to(tmp / target)
    return prepare


def weights_elsewhere(tmp: Path, fixtures: dict) -> None:
    """The adapter's weights moved out of its folder, a symlink left in their place."""
    shutil.copytree(fixtures["adapter"], tmp / "adapter")
    os.replace(tmp / "adapter" / "adapter_model.safetensors", tmp / "elsewhere.safetensors")
    (tmp / "adapter" / "adapter_model.safetensors").symlink_to(tmp / "elsewhere.safetensors")


PUSH = ["push", "{tmp}/adapter", "--repo", "me/x", "--base-model", "me/base", "--dry-run", "--out", "{tmp}/hub"]
case("unsafe", "push-symlink-out-of-adapter", PUSH, ("{tmp}/adapter/key.pem", "outside"),
     prepare=adapter_with_link("key.pem"), needs=("adapter",))
case("unsafe", "push-weights-are-a-symlink-out", PUSH, ("{tmp}/adapter/adapter_model.safetensors", "outside"),
     prepare=lambda tmp, fixtures: weights_elsewhere(tmp, fixtures), needs=("adapter",))


def report_with_linked_chart(tmp: Path, fixtures: dict) -> None:
    shutil.copytree(fixtures["adapter"], tmp / "adapter")
    (tmp / "rep").mkdir()
    (tmp / "rep" / "report.md").write_text("# report\n\n![chart](chart.png)\n")
    (tmp / "secret.pem").write_text(SECRET)
    (tmp / "rep" / "chart.png").symlink_to(tmp / "secret.pem")


case("unsafe", "push-eval-chart-symlink-out", [*PUSH, "--eval", "{tmp}/rep"], ("{tmp}/rep/chart.png", "outside"),
     prepare=report_with_linked_chart, needs=("adapter",))

# ---------------------------------------------------------------- losses: the output guard

OVERLAP = {"d.jsonl": jsonl(QA, QA), "p.jsonl": jsonl({"id": "a", "prompt": "How?"}), "old.jsonl": "mine\n"}
case("losses", "overlap-out-is-the-training-file", ["data", "overlap", "{tmp}/d.jsonl", "{tmp}/p.jsonl", "--out",
                                                    "{tmp}/d.jsonl"], ("{tmp}/d.jsonl", "input"), files=OVERLAP)
case("losses", "overlap-out-is-the-training-file-overwrite", ["data", "overlap", "{tmp}/d.jsonl", "{tmp}/p.jsonl", "--out",
                                                              "{tmp}/./d.jsonl", "--overwrite"], ("d.jsonl", "input"),
     files=OVERLAP)
case("losses", "overlap-out-exists", ["data", "overlap", "{tmp}/d.jsonl", "{tmp}/p.jsonl", "--out", "{tmp}/old.jsonl"],
     ("{tmp}/old.jsonl", "exists", "--overwrite"), files=OVERLAP)
case("losses", "overlap-out-under-a-file", ["data", "overlap", "{tmp}/d.jsonl", "{tmp}/p.jsonl", "--out",
                                            "{tmp}/old.jsonl/pairs.jsonl"], ("{tmp}/old.jsonl", "file"), files=OVERLAP)
TRAIN = ["train", "quickstart", "model_name_or_path={base}", "dataset_name={tmp}/d.jsonl", "chat_format=lima"]
case("losses", "train-into-a-folder-with-the-users-readme", [*TRAIN, "output_dir={tmp}/mine"],
     ("{tmp}/mine", "did not write"), files={"d.jsonl": jsonl(QA), "mine/README.md": "my notes\n"}, needs=("base",))
case("losses", "train-into-the-base-folder", [*TRAIN, "output_dir={base}"], ("{base}", "base model"),
     files={"d.jsonl": jsonl(QA)}, needs=("base",))
case("losses", "train-into-a-folder-under-the-base", [*TRAIN, "output_dir={base}/run"], ("{base}", "base model"),
     files={"d.jsonl": jsonl(QA)}, needs=("base",))
case("losses", "merge-out-under-a-file", ["merge", "{adapter}", "--out", "{tmp}/notes.txt/merged"],
     ("{tmp}/notes.txt", "file"), files={"notes.txt": "mine\n"}, needs=("adapter",))
case("losses", "merge-out-inside-the-adapter", ["merge", "{tmp}/adapter", "--out", "{tmp}/adapter/merged"],
     ("{tmp}/adapter", "input"), prepare=lambda tmp, fixtures: shutil.copytree(fixtures["adapter"], tmp / "adapter"),
     needs=("adapter",))

# ---------------------------------------------------------------- silent before: now refused in one line

case("silent", "eot-token-is-a-period", ["inspect", "quickstart", "model_name_or_path={base}", "dataset_name={tmp}/d.jsonl",
                                         "eot_token=."], ("eot_token", "'.'"), files={"d.jsonl": jsonl(QA)}, needs=("base",))
case("silent", "data-mix-the-same-file-twice", ["data", "mix", "--single", "{tmp}/d.jsonl", "{tmp}/./d.jsonl", "--dialogues",
                                                "{tmp}/dd.jsonl", "--out", "{tmp}/o.jsonl"], ("d.jsonl", "twice"),
     files={"d.jsonl": jsonl(QA), "dd.jsonl": jsonl(DIALOGUE)})
case("silent", "select-negative-k", ["select", "--strategy", "longest", "--k", "-1", "{tmp}/d.jsonl", "{tmp}/o.jsonl"],
     ("--k", ">= 1"), files={"d.jsonl": jsonl(QA)})
case("silent", "curate-negative-tau", ["curate", "stackexchange", "--dump", "{tmp}/dump", "--out", "{tmp}/o.jsonl",
                                       "--tau", "-1"], ("--tau", "> 0"))
case("silent", "curate-negative-pool", ["curate", "stackexchange", "--dump", "{tmp}/dump", "--out", "{tmp}/o.jsonl",
                                        "--pool", "-5"], ("--pool", ">= 1"))
case("silent", "push-repo-dot-dot", ["push", "{adapter}", "--repo", "me/..", "--dry-run", "--out", "{tmp}/hub"],
     ("--repo", "me/..", "Hub id"), needs=("adapter",))
ANSWERS = {"p.jsonl": jsonl({"id": "a", "prompt": "What is new?"})}
case("silent", "eval-generate-prompt-text-changed", ["eval", "generate", "--model", "{adapter}", "--name", "{adapter}",
                                                     "--prompts", "{tmp}/p.jsonl", "--out", "{tmp}/answers.jsonl"],
     ("{tmp}/answers.jsonl:1", "another prompt text"),
     files={**ANSWERS, "answers.jsonl": jsonl({"id": "a", "prompt": "What was old?", "answer": "Old.", "model": "{adapter}",
                                               "finish_reason": "eot", "sample": 0})}, needs=("adapter",))
case("silent", "eval-generate-into-another-models-file", ["eval", "generate", "--model", "{adapter}", "--prompts",
                                                          "{tmp}/p.jsonl", "--out", "{tmp}/answers.jsonl"],
     ("{tmp}/answers.jsonl:1", "several models"),
     files={**ANSWERS, "answers.jsonl": jsonl({"id": "a", "prompt": "What is new?", "answer": "A.", "model": "someone-else",
                                               "finish_reason": "eot", "sample": 0})}, needs=("adapter",))

# ---------------------------------------------------------------- tracebacks before: now one line


def recipe(text: str) -> dict:
    return {"r.yaml": f"model_name_or_path: {{base}}\ndataset_name: {{tmp}}/d.jsonl\nchat_format: lima\n{text}",
            "d.jsonl": jsonl(QA)}


for name, text, expect in [("date", "seed: 2024-01-01\n", ("r.yaml:4", "seed", "date")),
                           ("binary", "run_name: !!binary aGk=\n", ("r.yaml:4", "run_name", "binary")),
                           ("python-tag", "run_name: !!python/object/apply:os.system [echo hi]\n",
                            ("r.yaml:4", "run_name", "!!python/object/apply:os.system")),
                           ("date-in-a-mapping", "lr_scheduler_kwargs: {min_lr: 2024-01-01}\n",
                            ("r.yaml:4", "lr_scheduler_kwargs", "date")),
                           ("set", "lora_target_modules: !!set {q_proj: null}\n", ("r.yaml:4", "lora_target_modules", "set"))]:
    case("tracebacks", f"recipe-{name}", ["inspect", "{tmp}/r.yaml"], expect, files=recipe(text), needs=("base",))
for name, value, expect in [("date", "lr_scheduler_kwargs={min_lr: 2024-01-01}", ("override lr_scheduler_kwargs", "date")),
                            ("python-tag", "run_name=!!python/name:os.system", ("override run_name", "!!python/name"))]:
    case("tracebacks", f"override-{name}", ["inspect", "{tmp}/r.yaml", value], expect, files=recipe(""), needs=("base",))
for key, value, expect in [("lora_r", "10000000000000000000", "2**53"), ("learning_rate", "inf", "finite"),
                           ("learning_rate", "1e309", "finite"), ("max_grad_norm", "nan", "finite"),
                           ("num_train_epochs", "1e300", "<= 10000"), ("max_length", "99999999999999999999", "2**53")]:
    case("tracebacks", f"range-{key}-{value[:6]}", ["inspect", "{tmp}/r.yaml", f"{key}={value}"],
         ("command line", key, expect), files=recipe(""), needs=("base",))
for flag, value in [("--temperature", "1e-45"), ("--temperature", "1e-300"), ("--repetition-penalty", "1e-300"),
                    ("--temperature", "inf")]:
    case("tracebacks", f"chat{flag}-{value}", ["chat", "--adapter", "{adapter}", flag, value, "--prompt", "hi"],
         (flag, "between"), needs=("adapter",))
for name, value in [("list", ["human"]), ("object", {"role": "human"}), ("number", 1)]:
    case("tracebacks", f"sharegpt-from-{name}", ["inspect", "quickstart", "model_name_or_path={base}",
                                                 "dataset_name={tmp}/d.jsonl", "chat_format=lima"],
         ("{tmp}/d.jsonl:1", "conversations[0].from"),
         files={"d.jsonl": jsonl({"conversations": [{"from": value, "value": "q"}, {"from": "gpt", "value": "a"}]})},
         needs=("base",))


def run_with_metrics(line: str):
    def prepare(tmp: Path, fixtures: dict) -> None:
        shutil.copytree(Path(fixtures["adapter"]).parent, tmp / "run")
        with (tmp / "run" / "metrics.jsonl").open("a") as metrics:
            metrics.write(line + "\n")
    return prepare


for name, line, expect in [("list", "[1, 2]", "not a JSON object"), ("step-text", '{"step": "two", "loss": 1.0}', "step"),
                           ("loss-object", '{"step": 3, "loss": {"v": 1}}', "loss")]:
    case("tracebacks", f"push-metrics-line-{name}", ["push", "{tmp}/run", "--repo", "me/x", "--base-model", "me/base",
                                                     "--dry-run", "--out", "{tmp}/hub"],
         ("{tmp}/run/metrics.jsonl:", expect), prepare=run_with_metrics(line), needs=("adapter",))


# ---------------------------------------------------------------- the runner (tests/bad_input.py)


def test_cases_are_named_once_across_the_tables(request):
    """docs/hostile-cases.md names each case once: no two tables collected with this one share a name (the
    whole suite collects all three)."""
    names = [item.callspec.id for item in request.session.items if item.originalname == "test_bad_input"]
    assert len(set(names)) == len(names) and set(names) >= {c.name for c in CASES}


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input(c: Case, tmp_path, request):
    check_case(c, tmp_path, request)


# ---------------------------------------------------------------- user text in Markdown: escaped


HOSTILE = '<img src=x onerror="alert(1)"> *bold* [link](http://evil) | cell'


def test_eval_report_escapes_rater_model_and_judge_names(tmp_path):
    from lima_lite.evaluate.protocols import human_vote_record
    from lima_lite.evaluate.report import build_report
    from lima_lite.evaluate.steps import human_file
    from lima_lite.files import write_jsonl

    votes = [human_vote_record("How?", HOSTILE, "base", "a", "b", choice, HOSTILE) for choice in ("a", "b", "tie")]
    votes += [human_vote_record("How?", HOSTILE, "base", "a", "b", "a", "human:second") for _ in range(2)]
    write_jsonl([{**v, "id": f"p{i}"} for i, v in enumerate(votes)], tmp_path / "votes.jsonl")
    human_file(tmp_path / "votes.jsonl", tmp_path / "human.jsonl")
    report = build_report([tmp_path / "human.jsonl"], tmp_path / "out", title=HOSTILE).read_text()
    assert "<img" not in report and "&lt;img" in report and "[link](" not in report
    assert "[link]\\(http://evil)" in report and "\\| cell" in report


def outside_code(markdown: str) -> str:
    """The Markdown without its code blocks and inline code spans, where text is shown as it is, never rendered."""
    import re

    literal = markdown.replace("\\`", "")  # an escaped backquote is text, not a span's end
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", literal, flags=re.S))


def test_model_card_escapes_what_the_run_and_its_report_recorded(tiny_adapter, tmp_path):
    from lima_lite.evaluate.protocols import human_vote_record
    from lima_lite.evaluate.report import build_report
    from lima_lite.evaluate.steps import human_file
    from lima_lite.files import write_jsonl
    from lima_lite.push import build_upload_folder

    run = tmp_path / "run"
    shutil.copytree(tiny_adapter.parent, run)
    record = json.loads((run / "run.json").read_text())
    record["data"]["dataset_name"] = HOSTILE + " `<script>alert(1)</script>`"  # a backquote ends a code span
    (run / "run.json").write_text(json.dumps(record))
    votes = [human_vote_record("How?", "ours", "base", "a", "b", choice, HOSTILE) for choice in ("a", "b", "tie")]
    write_jsonl([{**v, "id": f"p{i}"} for i, v in enumerate(votes)], tmp_path / "votes.jsonl")
    human_file(tmp_path / "votes.jsonl", tmp_path / "human.jsonl")
    build_report([tmp_path / "human.jsonl"], tmp_path / "report")
    card = (build_upload_folder(run, "me/x", tmp_path / "hub", base_model="me/base", eval_report=tmp_path / "report")
            / "README.md").read_text()
    shown = outside_code(card)
    assert "<img" not in shown and "<script" not in shown and "&lt;img" in shown and "&lt;script&gt;" in shown


# ---------------------------------------------------------------- resume: damaged checkpoints, one line


@pytest.fixture(scope="module")
def two_checkpoints(tiny_llama_tied, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, data) of a tiny run stopped after its second checkpoint (steps 2 and 4), no adapter yet."""
    from helpers import qa
    from lima_lite.train import train

    folder = tmp_path_factory.mktemp("two-checkpoints")
    data = folder / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": qa(i)}) + "\n" for i in range(4)))
    run = train(None, tiny_settings(tiny_llama_tied, data, folder / "run", max_steps=6, num_train_epochs=3))
    for name in ("adapter", "epoch-03", "checkpoint-6"):
        shutil.rmtree(run / name)
    assert (run / "checkpoint-4" / "trainer_state.json").is_file()
    return run, data


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage\xff" * 10)


def state_with(**changes):
    def change(path: Path) -> None:
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return change


DAMAGE = {
    "optimizer-truncated": ("optimizer.pt", truncate),
    "scheduler-truncated": ("scheduler.pt", truncate),
    "adapter-truncated": ("adapter_model.safetensors", truncate),
    "rng-garbage": ("rng_state.pth", garbage),
    "state-step-is-text": ("trainer_state.json", state_with(global_step="four")),
    "state-log-is-object": ("trainer_state.json", state_with(log_history={"loss": 1})),
    "state-epoch-is-list": ("trainer_state.json", state_with(epoch=[1])),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_a_damaged_checkpoint_is_named_with_the_way_to_resume(two_checkpoints, tiny_llama_tied, tmp_path, name):
    from lima_lite.train import train

    file, change = DAMAGE[name]
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints[0], run)
    change(run / "checkpoint-4" / file)
    before = snapshot(run)
    with pytest.raises(LimaError) as error:
        train(None, tiny_settings(tiny_llama_tied, two_checkpoints[1], run, max_steps=6, num_train_epochs=3))
    message = str(error.value)
    assert "checkpoint-4 is damaged" in message and file in message and "resume from checkpoint-2" in message, message
    assert "\n" not in message and snapshot(run) == before


# ---------------------------------------------------------------- matching on normalised text


def test_overlap_sees_through_fullwidth_invisible_and_look_alike_letters():
    from lima_lite.data.overlap import overlapping_pairs

    train = [{"id": "t", "prompt": "How do I reset my password on the router?"}]
    disguised = {"fullwidth": "Ｈｏｗ ｄｏ Ｉ reset my password on the router?",
                 "zero-width": "How do I re\u200bset my pass\u200dword on the router?",
                 "soft-hyphen": "How do I re\u00adset my pass\u00adword on the router?",
                 "cyrillic": "Hоw dо I rеsеt my pаsswоrd оn thе rоutеr?",  # о, е, а are Cyrillic
                 "please": "Please, how do I reset my password on the router?"}
    for name, text in disguised.items():
        pairs = overlapping_pairs(train, [{"id": name, "prompt": text}])
        assert [p["kind"] for p in pairs] == ["exact"], name


def test_curation_drops_a_duplicate_written_in_look_alike_letters():
    from lima_lite.curate.report import Funnel, dedupe

    plain = {"id": "a", "messages": [{"role": "user", "content": "Why is the sky blue?"},
                                     {"role": "assistant", "content": "Rayleigh scattering of sunlight."}]}
    disguised = {"id": "b", "messages": [{"role": "user", "content": "Why is the skу blue?"},  # у is Cyrillic
                                         {"role": "assistant", "content": "Rayleigh sсattering of sunlight\u200b."}]}
    assert [e["id"] for e in dedupe([plain, disguised], Funnel(0))] == ["a"]


def test_a_prompts_file_splits_at_line_ends_only(tmp_path):
    from lima_lite.conversations import read_prompts

    (tmp_path / "p.txt").write_text("first\u2028still the first\nsecond\x0cwith a form feed\r\nthird\n", encoding="utf-8")
    assert [p["prompt"] for p in read_prompts(str(tmp_path / "p.txt"))] == [
        "first\u2028still the first", "second\x0cwith a form feed", "third"]


@pytest.mark.parametrize("value", ["wandb", "[wandb]", "tensorboard,wandb"])
def test_report_to_a_package_that_is_not_installed_is_refused_by_key(monkeypatch, value):
    import importlib.util

    from lima_lite.config import load_recipe

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(LimaError, match=r"^command line: report_to: wandb is not installed \(pip install wandb\)"):
        load_recipe(Path(__file__).parents[1] / "recipes" / "quickstart.yaml", [f"report_to={value}"])
