"""End to end on the real embedded SmolLM2: a one-epoch quick-start run, 5 dev prompts, the local SmolLM2
judge, every `lima-lite eval` step as a user types it, then the report and its charts."""

import json
import re

import pytest

from lima_lite.cli import main
from lima_lite.evaluate.answers import read_records
from lima_lite.evaluate.protocols import human_vote_record

pytestmark = pytest.mark.slow
JUDGE = "embedded:SmolLM2-135M-Instruct"
SHORT = ["--max-new-tokens", "48"]  # keeps the whole test to minutes on 2 cores


def eval_(*args) -> None:
    assert main(["eval", *map(str, args)]) == 0, args


def test_quickstart_run_answers_judgments_epoch_and_report(quickstart_run, tmp_path):
    evals = tmp_path / "evals"
    adapter, base = evals / "answers-adapter.jsonl", evals / "answers-base.jsonl"
    eval_("generate", "--model", quickstart_run, "--prompts", "embedded:dev.jsonl", "--limit", 5, "--out", adapter, *SHORT)
    eval_("generate", "--model", quickstart_run / "adapter", "--no-adapter", "--name", "base",
          "--prompts", "embedded:dev.jsonl", "--limit", 5, "--out", base, *SHORT)
    tuned_rows, base_rows = read_records(adapter), read_records(base)
    assert [r["id"] for r in tuned_rows] == [r["id"] for r in base_rows] == [f"dev-00{i}" for i in range(1, 6)]
    assert {r["model"] for r in tuned_rows} == {"run/adapter"} and {r["model"] for r in base_rows} == {"base"}
    assert all(r["finish_reason"] in ("eot", "length") for r in tuned_rows + base_rows)
    assert [r["answer"] for r in tuned_rows] != [r["answer"] for r in base_rows]  # the adapter changed something

    judge = ["--judge", JUDGE, "--judge-max-new-tokens", 16]
    eval_("pairwise", *judge, "--ours", adapter, "--baseline", base, "--out", evals / "pairwise.jsonl")
    eval_("likert", *judge, "--answers", adapter, "--out", evals / "likert.jsonl")
    eval_("absolute", *judge, "--answers", adapter, "--out", evals / "absolute.jsonl")
    eval_("knowledge", "--model", quickstart_run, "--limit", 5, "--out", evals / "knowledge.jsonl")
    pairwise = read_records(evals / "pairwise.jsonl")
    assert len(pairwise) == 5 and all(len(r["verdicts"]) == 2 and r["judge"] == JUDGE for r in pairwise)
    assert all(r["outcome"] in ("win", "tie", "loss", None) for r in pairwise)
    assert all(len(replies) == (1 if v else 2) for r in pairwise for v, replies in zip(r["verdicts"], r["raw"]))
    knowledge = read_records(evals / "knowledge.jsonl")
    assert sorted({r["model"] for r in knowledge}) == ["base of run/adapter", "run/adapter"] and len(knowledge) == 10

    # two people voted in the Judge tab on the same answers
    votes = [human_vote_record(t["prompt"], "run/adapter", "base", t["answer"], b["answer"], vote, rater)
             for rater, pattern in (("ann", "aabt" "a"), ("bob", "abtt" "b"))
             for t, b, vote in zip(tuned_rows, base_rows, [{"a": "a", "b": "b", "t": "tie"}[c] for c in pattern])]
    (tmp_path / "votes.jsonl").write_text("".join(json.dumps(v) + "\n" for v in votes))
    eval_("human", tmp_path / "votes.jsonl", "--ours", "run/adapter", "--out", evals / "human.jsonl")

    eval_("select-epoch", quickstart_run, "--prompts", "embedded:dev.jsonl", "--limit", 3, "--epochs", 1,
          *judge, *SHORT, "--out", tmp_path / "select")
    chosen = json.loads((tmp_path / "select" / "select-epoch.json").read_text())
    table = chosen["table"][0]
    assert table["epoch"] == "epoch-01" and table["win"] + table["tie"] + table["loss"] + table["unparsed"] == 3
    assert chosen["best"] == ("epoch-01" if table["unparsed"] < 3 else None)

    eval_("report", evals, "--out", evals / "report")
    text = (evals / "report" / "report.md").read_text()
    for section in ("## Pairwise preference", "## Helpfulness 1-6", "## Absolute rating", "## Agreement between raters",
                    "## Knowledge check"):
        assert section in text
    assert "| run/adapter vs base | human:ann | 3 (60%) | 1 (20%) | 1 (20%) | 0 | 5 |" in text
    # ann vs bob: a/a 1, a/b 0, b/tie 0.5, tie/tie 1, a/b 0 -> 2.5 / 5
    assert re.search(r"\| human:ann \|( [^|]+ \|)? 100% \(5\) \| 50% \(5\) \|", text)
    charts = ["pairwise", "absolute", "agreement", "knowledge"]
    if any(r["score"] is not None for r in read_records(evals / "likert.jsonl")):
        charts.append("likert")
    for chart in charts:
        assert (evals / "report" / f"{chart}.png").read_bytes()[:4] == b"\x89PNG", chart
