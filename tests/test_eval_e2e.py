"""End to end on the real embedded SmolLM2: a one-epoch quick-start run, 5 dev prompts, the local SmolLM2
judge, every `lima-lite eval` step as a user types it, then the report and its charts.

What the judge says is not known in advance, so the expected counts are worked out here from the judge's
raw replies saved in the judgment files, by this file's own reading of a verdict (`bare_verdict`), and
compared with what the steps counted; the human votes' figures are worked out from the votes we wrote."""

import json
import re
from pathlib import Path

import pytest

from lima_lite.cli import main
from lima_lite.evaluate.protocols import human_vote_record

pytestmark = pytest.mark.slow
JUDGE = "embedded:SmolLM2-135M-Instruct"
SHORT = ["--max-new-tokens", "48"]  # keeps the whole test to minutes on 2 cores


def eval_(*args) -> None:
    assert main(["eval", *map(str, args)]) == 0, args


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def bare_verdict(replies: list[str], choices: tuple[str, ...]) -> str | None:
    """The choice the judge's last reply ends with (the retry, when there is one): its last non-empty line,
    without markdown, quotes, a final full stop or a `Verdict:`-style label; None if it is no choice."""
    lines = [line for line in replies[-1].splitlines() if line.strip()]
    last = lines[-1].strip("*_`\"' \t") if lines else ""
    last = re.sub(r"^(final verdict|verdict|final answer|answer|rating|grade|score)\s*[:=]\s*", "", last, flags=re.I)
    last = last.strip("*_`\"' \t").rstrip(".").strip("*_`\"' \t")
    return next((choice for choice in choices if choice.lower() == last.lower()), None)


def expected_counts(pairwise: list[dict]) -> dict:
    """win / tie / loss / unparsed of the first model, from each record's raw replies in both orders."""
    counts = {"win": 0, "tie": 0, "loss": 0, "unparsed": 0}
    for record in pairwise:
        shown_first, shown_second = (bare_verdict(replies, ("A", "B", "tie")) for replies in record["raw"])
        if shown_first is None or shown_second is None:
            counts["unparsed"] += 1
        elif (shown_first, shown_second) == ("A", "B"):  # ours preferred when shown first and when shown second
            counts["win"] += 1
        elif (shown_first, shown_second) == ("B", "A"):
            counts["loss"] += 1
        else:
            counts["tie"] += 1
    return counts


def pct(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%"


def test_quickstart_run_answers_judgments_epoch_and_report(quickstart_run, tmp_path):
    evals = tmp_path / "evals"
    adapter, base = evals / "answers-adapter.jsonl", evals / "answers-base.jsonl"
    eval_("generate", "--model", quickstart_run, "--prompts", "embedded:dev.jsonl", "--limit", 5, "--out", adapter,
          *SHORT)
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
    assert [r["id"] for r in pairwise] == [f"dev-00{i}" for i in range(1, 6)]
    assert {r["judge"] for r in pairwise} == {JUDGE}
    for record in pairwise:  # a readable first reply is used; an unreadable one is asked again once
        assert [bare_verdict(replies, ("A", "B", "tie")) for replies in record["raw"]] == record["verdicts"]
        assert all(len(replies) == (1 if bare_verdict(replies[:1], ("A", "B", "tie")) else 2)
                   for replies in record["raw"])
    judged = expected_counts(pairwise)
    likert = read_records(evals / "likert.jsonl")
    likert_readable = [bare_verdict(replies, tuple("123456")) for r in likert for replies in r["raw"]]
    assert [s for r in likert for s in r["scores"]] == [int(v) if v else None for v in likert_readable]
    knowledge = read_records(evals / "knowledge.jsonl")
    assert sorted({r["model"] for r in knowledge}) == ["base of run/adapter", "run/adapter"] and len(knowledge) == 10

    # two people voted in the Judge tab on the same answers
    votes = [human_vote_record(t["prompt"], "run/adapter", "base", t["answer"], b["answer"], vote, rater)
             for rater, pattern in (("ann", "aabt" "a"), ("bob", "abtt" "b"))
             for t, b, vote in zip(tuned_rows, base_rows, [{"a": "a", "b": "b", "t": "tie"}[c] for c in pattern],
                                     strict=True)]
    (tmp_path / "votes.jsonl").write_text("".join(json.dumps(v) + "\n" for v in votes))
    eval_("human", tmp_path / "votes.jsonl", "--ours", "run/adapter", "--out", evals / "human.jsonl")

    eval_("select-epoch", quickstart_run, "--prompts", "embedded:dev.jsonl", "--limit", 3, "--epochs", 1,
          *judge, *SHORT, "--out", tmp_path / "select")
    chosen = json.loads((tmp_path / "select" / "select-epoch.json").read_text())
    epoch_judged = expected_counts(read_records(tmp_path / "select" / "pairwise-epoch-01-vs-base.jsonl"))
    assert sum(epoch_judged.values()) == 3  # the three prompts of --limit 3
    readable = epoch_judged["win"] + epoch_judged["tie"] + epoch_judged["loss"]
    score = (epoch_judged["win"] + epoch_judged["tie"] / 2) / readable if readable else None
    assert chosen["table"] == [{"epoch": "epoch-01", **epoch_judged, "score": score}]
    assert chosen["best"] == ("epoch-01" if readable else None)

    eval_("report", evals, "--out", evals / "report")
    text = (evals / "report" / "report.md").read_text()
    for section in ("## Pairwise preference", "## Helpfulness 1-6", "## Absolute rating", "## Agreement between raters",
                    "## Knowledge check"):
        assert section in text
    assert "| run/adapter vs base | human:ann | 3 (60%) | 1 (20%) | 1 (20%) | 0 | 5 |" in text
    win, tie, loss, unparsed = (judged[k] for k in ("win", "tie", "loss", "unparsed"))
    assert (f"| run/adapter vs base | {JUDGE} | {win} ({pct(win, 5)}) | {tie} ({pct(tie, 5)}) "
            f"| {loss} ({pct(loss, 5)}) | {unparsed} | 5 |" in text)
    # ann vs bob: a/a 1, a/b 0, b/tie 0.5, tie/tie 1, a/b 0 -> 2.5 / 5
    assert re.search(r"\| human:ann \|( [^|]+ \|)? 100% \(5\) \| 50% \(5\) \|", text)
    charts = ["pairwise", "absolute", "agreement", "knowledge"]
    if any(likert_readable):  # a mean to draw only when some rating could be read
        charts.append("likert")
    for chart in charts:
        assert (evals / "report" / f"{chart}.png").read_bytes()[:4] == b"\x89PNG", chart
