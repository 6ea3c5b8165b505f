"""`lima-lite data overlap`: planted exact and near duplicates are found, a clean split gives none."""

import json

import pytest

from helpers import write_run
from lima_lite import LimaError
from lima_lite.conversations import read_prompts, resolve_data_path
from lima_lite.data.overlap import find_overlap, overlapping_pairs, run_overlap_warning, train_prompts

LONG = ("I have a small vegetable garden behind my house and the tomato plants keep getting yellow leaves "
        "at the bottom every summer, what am I doing wrong and how can I fix it?")
# three words changed: "small" -> "little", "keep getting" -> "keep showing", "fix" -> "stop"
REWORDED = ("I have a little vegetable garden behind my house and the tomato plants keep showing yellow leaves "
            "at the bottom every summer, what am I doing wrong and how can I stop it?")
DIALOGUE_TURN = ("Could you explain in simple words how a refrigerator keeps the food inside cold when the "
                 "kitchen around it is warm?")


def conversation(cid, *users):
    messages = []
    for text in users:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "An answer."}]
    return {"id": cid, "messages": messages}


@pytest.fixture
def split(tmp_path):
    """The embedded training samples plus three planted prompts; eval: the dev prompts plus their copies."""
    train = tmp_path / "train.jsonl"
    rows = [json.loads(line) for line in resolve_data_path("embedded:train.jsonl").read_text().splitlines()]
    rows += [conversation("garden", LONG), conversation("chat", "Hello there!", DIALOGUE_TURN)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evals = tmp_path / "eval.jsonl"
    prompts = [{"id": p["id"], "prompt": p["prompt"]} for p in read_prompts("embedded:dev.jsonl")]
    first_train = rows[0]["messages"][0]["content"]
    prompts += [{"id": "exact-copy", "prompt": "  " + first_train.upper().replace("?", " ?!") + "  "},
                {"id": "reworded", "prompt": REWORDED},
                {"id": "from-turn-2", "prompt": DIALOGUE_TURN.replace("simple", "plain")}]
    evals.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    return train, evals, rows


def test_planted_duplicates_are_found_and_nothing_else(split, tmp_path):
    train, evals, rows = split
    pairs, summary = find_overlap(str(train), str(evals), tmp_path / "pairs.jsonl")
    found = {(p["eval_id"], p["kind"], p["train_id"]) for p in pairs}
    assert found == {("exact-copy", "exact", rows[0]["id"]), ("reworded", "near", "garden"),
                     ("from-turn-2", "near", "chat#2")}
    near = {p["eval_id"]: p["similarity"] for p in pairs if p["kind"] == "near"}
    assert 0.5 <= near["reworded"] < 1 and near["from-turn-2"] > 0.8  # one word changed out of 22
    assert summary.startswith("3 of 15 eval prompts overlap the training data (1 exact, 2 near)")
    saved = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [(p["eval_id"], p["train_prompt"]) for p in saved] == [(p["eval_id"], p["train_prompt"]) for p in pairs]


def test_clean_split_has_no_overlap():
    # the embedded training and dev samples were written apart; several share a template
    # ("What's the difference between ...", "Write a short poem about ...") and must not count
    assert overlapping_pairs(train_prompts("embedded:train.jsonl"), read_prompts("embedded:dev.jsonl")) == []


def test_data_overlap_command_prints_the_count(split, tmp_path, capsys):
    from lima_lite.data import main

    train, evals, _ = split
    out = tmp_path / "found.jsonl"
    assert main(["overlap", str(train), str(evals), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 of 15 eval prompts overlap" in printed and f"3 pair(s) in {out}" in printed
    assert len(out.read_text().splitlines()) == 3
    with pytest.raises(LimaError, match="threshold"):
        main(["overlap", str(train), str(evals), "--threshold", "0"])


def test_eval_generate_warns_when_the_run_trained_on_eval_prompts(split, tmp_path, capsys):
    from lima_lite.evaluate.cli import main

    train, evals, _ = split
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    write_run(run, data={"dataset_name": str(train)})
    warning = run_overlap_warning(str(run / "adapter"), str(evals))
    assert warning.startswith("warning: 3 of 15 eval prompts overlap the training data")
    assert run_overlap_warning(str(run / "adapter"), "embedded:dev.jsonl") is None  # clean: silent
    # the command prints it before it loads the model (this fake adapter then fails to load)
    with pytest.raises(Exception):  # noqa: B017 (whatever loading the fake adapter raises: the warning came first)
        main(["generate", "--model", str(run / "adapter"), "--prompts", str(evals), "--out", str(tmp_path / "a.jsonl")])
    assert capsys.readouterr().out.startswith("warning: 3 of 15 eval prompts overlap")


def test_the_warning_counts_only_the_prompts_generate_will_answer(split, tmp_path):
    train, evals, _ = split
    run = tmp_path / "run"
    (run / "epoch-01").mkdir(parents=True)
    (run / "epoch-01" / "adapter_config.json").write_text("{}")
    write_run(run, data={"dataset_name": str(train)})
    rows = read_prompts(str(evals))
    assert run_overlap_warning(str(run / "epoch-01"), str(evals), rows[:12]) is None  # --limit 12: the dev prompts
    assert run_overlap_warning(str(run / "epoch-01"), str(evals), rows[:14]).startswith(
        "warning: 2 of 14 eval prompts overlap")
