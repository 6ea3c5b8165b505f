"""Evaluation protocols, agreement, resume and the report, with fake judges and fake models (seconds)."""

import json
import re
from pathlib import Path

import pytest

from lima_lite import LimaError
from lima_lite.conversations import read_prompts
from lima_lite.evaluate import select_epoch, steps
from lima_lite.evaluate.answers import generate_answers
from lima_lite.evaluate.protocols import (
    LIKERT_CHOICES,
    PAIRWISE_CHOICES,
    agreement,
    agreement_matrix,
    check_human_vote,
    human_vote_record,
    knowledge_score,
    likert_summary,
    mean_ci95,
    pairwise_judge,
    parse_verdict,
    preferences,
    render,
    tie_discounted,
    win_tie_loss,
)
from lima_lite.evaluate.report import build_report
from lima_lite.flags import LIMA_SAMPLING


class Scripted:
    """A judge that answers every prompt with `reply(prompt)` and remembers what it was asked."""

    def __init__(self, reply, name="fake-judge"):
        self.reply, self.name, self.prompts = reply, name, []

    def complete(self, prompt):
        self.prompts.append(prompt)
        return self.reply(prompt)


def prefers_good(prompt):
    """Picks the answer containing GOOD, wherever it is shown; tie when neither or both do."""
    a, b = re.search(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*?)\n\n", prompt, re.S).groups()
    return "B" if "GOOD" in b and "GOOD" not in a else "A" if "GOOD" in a and "GOOD" not in b else "tie"


def row(pid, answer, model, prompt=None, sample=0):
    return {"id": pid, "prompt": prompt or f"question {pid}?", "answer": answer, "model": model,
            "finish_reason": "eot", "sample": sample}


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ verdict parsing and retries


@pytest.mark.parametrize("text, expected", [
    ("A", "A"), ("b", "B"), ("**Tie**", "tie"), ("Verdict: B.", "B"), ("Answer A is clearer.\nA", "A"),
    ("A is better", None), ("A or B", None), ("", None), ("Answer A\n", None), ("B\nactually A is better", None),
])
def test_pairwise_verdicts_are_read_strictly_from_the_last_line(text, expected):
    assert parse_verdict(text, PAIRWISE_CHOICES) == expected


@pytest.mark.parametrize("text, expected", [("5", "5"), ("Rating: 6", "6"), ("4.", "4"), ("7", None),
                                            ("5/6", None), ("4 or 5", None), ("five", None)])
def test_likert_verdicts(text, expected):
    assert parse_verdict(text, LIKERT_CHOICES) == expected


def test_render_fills_slots_once_and_leaves_braces_in_answers_alone():
    text = render("{prompt}|{answer_a}|{answer_b}", prompt="p {answer_b}", answer_a="{x}", answer_b="B")
    assert text == "p {answer_b}|{x}|B"


# ------------------------------------------------------------------ pairwise: both orders


def test_a_judge_that_always_prefers_the_first_answer_yields_only_ties():
    judge = Scripted(lambda prompt: "A")
    records = [pairwise_judge(judge, row(i, f"ours {i}", "ours"), row(i, f"theirs {i}", "theirs")) for i in "123"]
    assert win_tie_loss(records) == {"win": 0, "tie": 3, "loss": 0, "unparsed": 0, "n": 3}
    assert [r["verdicts"] for r in records] == [["A", "A"]] * 3
    # both orders were really shown: ours first, then theirs first
    assert judge.prompts[0].index("ours 1") < judge.prompts[0].index("theirs 1")
    assert judge.prompts[1].index("theirs 1") < judge.prompts[1].index("ours 1")


def test_a_consistent_judge_gives_wins_losses_and_ties():
    judge = Scripted(prefers_good)
    records = [pairwise_judge(judge, row("1", "GOOD", "ours"), row("1", "meh", "theirs")),
               pairwise_judge(judge, row("2", "meh", "ours"), row("2", "GOOD", "theirs")),
               pairwise_judge(judge, row("3", "meh", "ours"), row("3", "meh", "theirs"))]
    assert [r["outcome"] for r in records] == ["win", "loss", "tie"]
    assert [r["winner"] for r in records] == ["ours", "theirs", "tie"]


def test_unparseable_verdicts_are_retried_once_then_counted_not_guessed():
    judge = Scripted(lambda prompt: "Both answers have merits.")
    records = [pairwise_judge(judge, row(i, "x", "ours"), row(i, "y", "theirs")) for i in "12"]
    assert len(judge.prompts) == 2 * 2 * 2  # 2 prompts x 2 orders x (first try + one retry)
    assert "could not be read" in judge.prompts[1] and "could not be read" not in judge.prompts[0]
    assert win_tie_loss(records) == {"win": 0, "tie": 0, "loss": 0, "unparsed": 2, "n": 2}
    assert all(r["outcome"] is None and r["winner"] is None for r in records)


def test_a_retry_that_can_be_read_is_used():
    replies = iter(["Hmm, hard to say.", "B", "A"])
    judge = Scripted(lambda prompt: next(replies))
    record = pairwise_judge(judge, row("1", "x", "ours"), row("1", "y", "theirs"))
    assert record["verdicts"] == ["B", "A"] and record["outcome"] == "loss"
    assert record["raw"] == [["Hmm, hard to say.", "B"], ["A"]]


def test_pairwise_file_resumes_and_requires_the_same_prompts(tmp_path):
    ours = write(tmp_path / "ours.jsonl", [row(i, "GOOD", "ours") for i in "123"])
    theirs = write(tmp_path / "theirs.jsonl", [row(i, "meh", "theirs") for i in "123"])
    judge = Scripted(prefers_good)
    out = tmp_path / "pairwise.jsonl"
    steps.pairwise_file(judge, ours, theirs, out)
    calls = len(judge.prompts)
    records = steps.pairwise_file(judge, ours, theirs, out)
    assert len(judge.prompts) == calls == 6 and len(read_records(out)) == 3
    assert win_tie_loss(records)["win"] == 3
    write(tmp_path / "short.jsonl", [row("1", "meh", "theirs")])
    with pytest.raises(LimaError, match=r"short.jsonl: no answer for 2 prompt id\(s\).*2, 3"):
        steps.pairwise_file(judge, ours, tmp_path / "short.jsonl", tmp_path / "other.jsonl")
    # errors name the file's own line, blank lines counted
    (tmp_path / "gap.jsonl").write_text(json.dumps(row("1", "x", "m")) + "\n\n" + json.dumps({"id": "2"}) + "\n")
    with pytest.raises(LimaError, match=r"gap.jsonl:3: prompt: missing or not a string"):
        steps.pairwise_file(judge, tmp_path / "gap.jsonl", theirs, tmp_path / "other.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(LimaError, match=r"list.jsonl:1: expected a JSON object, got list"):
        steps.pairwise_file(judge, tmp_path / "list.jsonl", theirs, tmp_path / "other.jsonl")


# ------------------------------------------------------------------ likert, absolute, knowledge


def test_likert_averages_samples_per_prompt_then_gives_a_t_interval(tmp_path):
    scores = iter(["4", "6", "garbage", "garbage", "3", "6"])  # prompt 2: sample 0 unreadable twice
    judge = Scripted(lambda prompt: next(scores))
    answers = write(tmp_path / "a.jsonl", [row("1", "x", "m", sample=0), row("1", "y", "m", sample=1),
                                           row("2", "x", "m", sample=0), row("2", "y", "m", sample=1),
                                           row("3", "x", "m", sample=0)])
    records = steps.likert_file(judge, answers, tmp_path / "likert.jsonl")
    assert [r["scores"] for r in records] == [[4, 6], [None, 3], [6]]
    assert [r["score"] for r in records] == [5.0, 3.0, 6.0]
    summary = likert_summary(records)
    # mean of 5, 3, 6 = 4.667; sd = 1.528; t(2) = 4.303 -> half width 4.303 * 1.528 / sqrt(3) = 3.795
    assert summary["mean"] == pytest.approx(14 / 3)
    assert summary["high"] - summary["mean"] == pytest.approx(3.795, abs=1e-3)
    assert summary["unparsed"] == 1 and summary["ratings"] == 5 and summary["prompts"] == 3


def test_mean_ci95_by_hand():
    mean, low, high = mean_ci95([4, 5, 6])  # sd 1, t(2) 4.303 -> 4.303 / sqrt(3) = 2.484
    assert (mean, round(low, 3), round(high, 3)) == (5, 2.516, 7.484)
    assert mean_ci95([]) is None and mean_ci95([3]) == (3, 3, 3)
    # 41 values: mean 1, sd 1 (squares sum to 40 over 40 degrees of freedom); t(40) = 2.021 from a printed
    # table (not the normal 1.96) -> 2.021 / sqrt(41) = 0.3156
    mean, low, high = mean_ci95([0, 2] * 20 + [1])
    assert mean == 1
    assert high - mean == pytest.approx(0.3156, abs=1e-4) and mean - low == pytest.approx(0.3156, abs=1e-4)


def test_absolute_grades_and_unparsed(tmp_path):
    grades = iter(["Excellent", "pass", "great", "really great"])
    judge = Scripted(lambda prompt: next(grades))
    answers = write(tmp_path / "a.jsonl", [row(i, "x", "m") for i in "123"])
    records = steps.absolute_file(judge, answers, tmp_path / "abs.jsonl")
    assert [r["grade"] for r in records] == ["Excellent", "Pass", None]


@pytest.mark.parametrize("answer, gold, exact, contains", [
    ("Paris.", ["Paris"], True, True), ("The capital of France is Paris.", ["Paris"], False, True),
    ("Parisian food", ["Paris"], False, False), ("au", ["Au"], True, True),
    ("It is 100 degrees Celsius", ["100", "100 °C"], False, True), ("Lyon", ["Paris"], False, False),
])
def test_knowledge_score(answer, gold, exact, contains):
    assert knowledge_score(answer, gold) == {"exact": exact, "contains": contains}


def test_questions_file_errors_name_the_line_and_field(tmp_path):
    bad = write(tmp_path / "q.jsonl", [{"question": "Capital of Peru?", "answers": ["Lima"]},
                                       {"question": "x", "answers": "y"}])
    with pytest.raises(LimaError, match=r"q.jsonl:2: answers: must be a non-empty list"):
        steps.read_questions(str(bad))
    assert len(steps.read_questions("embedded:knowledge.jsonl")) == 40


# ------------------------------------------------------------------ people and agreement


@pytest.mark.parametrize("x, y, score", [("m1", "m1", 1.0), ("tie", "tie", 1.0), ("m1", "tie", 0.5),
                                         ("tie", "m2", 0.5), ("m1", "m2", 0.0)])
def test_tie_discounted_accuracy(x, y, score):
    assert tie_discounted(x, y) == score


def test_agreement_hand_computed():
    first = {"p1": "m1", "p2": "m2", "p3": "tie", "p4": "m1", "only-first": "m1"}
    second = {"p1": "m1", "p2": "tie", "p3": "tie", "p4": "m2", "only-second": "m2"}
    # p1 agree 1, p2 one tie 0.5, p3 both tie 1, p4 disagree 0 -> 2.5 / 4
    assert agreement(first, second) == (0.625, 4)
    assert agreement(first, {"other": "m1"}) == (None, 0)


def test_human_votes_and_judges_agree_in_one_matrix(tmp_path):
    votes = [human_vote_record("p1", "base", "tuned", "a1", "b1", "b", "ann", "2024-01-01T00:00:00"),
             human_vote_record("p2", "tuned", "base", "a2", "b2", "a", "ann", "2024-01-01T00:00:01"),
             human_vote_record("p3", "base", "tuned", "a3", "b3", "tie", "ann", "2024-01-01T00:00:02"),
             human_vote_record("p1", "tuned", "base", "b1", "a1", "tie", "bob", "2024-01-01T00:00:03")]
    assert votes[0]["winner"] == "tuned" and set(votes[0]) == {"prompt", "model_a", "model_b", "answer_a",
                                                                "answer_b", "vote", "winner", "rater", "time"}
    path = write(tmp_path / "votes.jsonl", votes)
    records = steps.human_file(path, tmp_path / "human.jsonl", ours="tuned")
    assert [r["outcome"] for r in records] == ["win", "win", "tie", "tie"]
    assert all(r["model_a"] == "tuned" for r in records)
    assert records[0]["answer_a"] == "b1"  # the answers follow the models when the order is flipped
    judge = [{"protocol": "pairwise", "judge": "gpt", "prompt": p, "model_a": "tuned", "model_b": "base", "winner": w}
             for p, w in (("p1", "tuned"), ("p2", "base"), ("p3", None))]  # p3 unparsed: left out
    raters, matrix = agreement_matrix(records + judge)
    assert raters == ["gpt", "human:ann", "human:bob"]
    assert matrix[("human:ann", "gpt")] == (0.5, 2)  # p1 agree (1), p2 disagree (0)
    assert matrix[("human:ann", "human:bob")] == (0.5, 1)  # p1: tuned vs tie
    assert matrix[("gpt", "human:bob")] == (0.5, 1)
    assert preferences(judge)["gpt"][("p1", "base", "tuned")] == "tuned"


def test_bad_votes_are_reported_with_line_and_field(tmp_path):
    good = human_vote_record("p", "x", "y", "a", "b", "a", "ann")
    with pytest.raises(LimaError, match=r"votes.jsonl:2: vote: expected one of"):
        steps.human_file(write(tmp_path / "votes.jsonl", [good, {**good, "vote": "A"}]), tmp_path / "h.jsonl")
    with pytest.raises(LimaError, match=r"votes.jsonl:1: winner: vote 'a' means winner 'x'"):
        steps.human_file(write(tmp_path / "votes.jsonl", [{**good, "winner": "y"}]), tmp_path / "h.jsonl")
    with pytest.raises(LimaError, match=r"votes.jsonl:1: rater: missing"):
        check_human_vote({k: v for k, v in good.items() if k != "rater"}, f"{tmp_path}/votes.jsonl:1")
    with pytest.raises(LimaError, match="vote"):
        human_vote_record("p", "x", "y", "a", "b", "A", "ann")


def test_endpoint_specs_are_parsed_in_one_place():
    from lima_lite.judges import parse_endpoint

    assert parse_endpoint("gpt-4o@https://api.openai.com/v1") == ("gpt-4o", "https://api.openai.com/v1")
    assert parse_endpoint("me@example.org/model@http://127.0.0.1:8000/v1") == ("me@example.org/model",
                                                                                "http://127.0.0.1:8000/v1")
    assert parse_endpoint("runs/quickstart/adapter") is None and parse_endpoint("someone/llama@v2") is None
    with pytest.raises(LimaError, match="an endpoint is MODEL@URL"):
        parse_endpoint("@http://127.0.0.1:8000/v1")


# ------------------------------------------------------------------ prompts and resumable generation


class FakeModel:
    def __init__(self, name="fake", fail_after=None):
        self.name, self.calls, self.fail_after = name, [], fail_after

    def answer(self, prompt, seed=0, **sampling):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append((prompt, seed, sampling))
        return f"answer to {prompt}", "eot"


def test_prompts_in_three_forms(tmp_path):
    jsonl = write(tmp_path / "p.jsonl", [{"prompt": "one", "id": "x"}, {"prompt": "two"},
                                         {"messages": [{"role": "user", "content": "three"},
                                                       {"role": "assistant", "content": "3"}], "id": "c"}])
    assert read_prompts(str(jsonl)) == [{"id": "x", "prompt": "one"}, {"id": "p-2", "prompt": "two"},
                                        {"id": "c", "prompt": "three"}]
    text = tmp_path / "p.txt"
    text.write_text("first\n\nsecond\n")
    assert read_prompts(str(text)) == [{"id": "p-1", "prompt": "first"}, {"id": "p-3", "prompt": "second"}]
    dev = read_prompts("embedded:dev.jsonl")
    assert len(dev) == 12 and dev[0]["id"] == "dev-001" and dev[0]["prompt"].startswith("How do I change")
    write(tmp_path / "bad.jsonl", [{"prompt": "one"}, {"prompt": ""}])
    with pytest.raises(LimaError, match=r"bad.jsonl:2: prompt: must be a non-empty string"):
        read_prompts(str(tmp_path / "bad.jsonl"))
    write(tmp_path / "dup.jsonl", [{"prompt": "one", "id": "a"}, {"prompt": "two", "id": "a"}])
    with pytest.raises(LimaError, match=r"dup.jsonl:2: id: 'a' already used on line 1"):
        read_prompts(str(tmp_path / "dup.jsonl"))


def test_generate_resumes_after_an_interruption_and_skips_answered_prompts(tmp_path):
    prompts = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(5)]
    out = tmp_path / "answers.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_answers(FakeModel(fail_after=2), prompts, out, max_new_tokens=8)
    assert [r["id"] for r in read_records(out)] == ["p0", "p1"]  # what was finished is on disk
    model = FakeModel()
    rows = generate_answers(model, prompts, out, max_new_tokens=8)
    assert [c[0] for c in model.calls] == ["prompt 2", "prompt 3", "prompt 4"]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(5)]
    assert set(rows[0]) == {"id", "prompt", "answer", "model", "finish_reason", "sample", "sampling"}
    assert model.calls[0][2] == rows[0]["sampling"] == {**LIMA_SAMPLING, "max_new_tokens": 8}
    again = FakeModel()  # no flags: the file's own settings, so nothing is left to do
    generate_answers(again, prompts, out)
    assert again.calls == [] and len(read_records(out)) == 5
    # seeds depend on the prompt and sample only, so a resumed run samples what a fresh one would
    fresh = FakeModel()
    generate_answers(fresh, prompts, tmp_path / "fresh.jsonl", samples=2)
    assert [c[1] for c in fresh.calls[::2]][2:] == [c[1] for c in model.calls]
    assert len({c[1] for c in fresh.calls}) == 10


def test_one_answers_file_holds_one_model(tmp_path):
    out = tmp_path / "answers.jsonl"
    generate_answers(FakeModel("m1"), [{"id": "1", "prompt": "a"}], out)
    with pytest.raises(LimaError, match="several models"):
        generate_answers(FakeModel("m2"), [{"id": "2", "prompt": "b"}], out)


# ------------------------------------------------------------------ select-epoch with fake models


class FakeEngine:
    """Answers 'quality N' where N is the epoch's quality; the base (adapter off) says 'quality 4'."""

    def __init__(self, quality):
        self.quality, self.model = quality, object()

    def reply(self, messages, use_adapter=True, seed=None, **sampling):
        from lima_lite.generate import Reply

        return Reply(text=f"quality {self.quality if use_adapter else 4}", finish_reason="eot")


def prefers_quality(prompt):
    a, b = (int(q) for q in re.findall(r"quality (\d+)", prompt))
    return "A" if a > b else "B" if b > a else "tie"


@pytest.mark.parametrize("against", ["base", "each-other"])
def test_select_epoch_names_the_best_epoch(tmp_path, monkeypatch, against):
    from lima_lite.evaluate.answers import LocalModel

    run = tmp_path / "run"
    quality = {5: 2, 6: 7, 7: 4}  # vs the base (4): loss, win, tie; epoch 8 is missing and skipped
    for epoch in quality:
        (run / f"epoch-{epoch:02d}").mkdir(parents=True)
        (run / f"epoch-{epoch:02d}" / "adapter_config.json").write_text("{}")
    loads = []

    def fake_answerer(spec, name=None, use_adapter=True):
        loads.append(spec)
        return LocalModel(engine=FakeEngine(quality[int(spec[-2:])]), name=name, use_adapter=use_adapter)

    monkeypatch.setattr(select_epoch, "get_answerer", fake_answerer)
    prompts = write(tmp_path / "dev.jsonl", [{"prompt": f"p{i}"} for i in range(3)])
    judge = Scripted(prefers_quality)
    result = select_epoch.select_epoch(run, str(prompts), judge, epochs=range(5, 9), against=against)
    assert result["best"] == "epoch-06" and result["top_two"] == ["epoch-06", "epoch-07"]
    assert len(loads) == 3
    table = {r["epoch"]: r for r in result["table"]}
    if against == "base":
        assert [(table[e]["win"], table[e]["tie"], table[e]["loss"]) for e in ("epoch-05", "epoch-06", "epoch-07")] \
            == [(0, 0, 3), (3, 0, 0), (0, 3, 0)]
        assert (run / "select-epoch" / "answers-base.jsonl").is_file()
    else:
        assert table["epoch-06"] == {"epoch": "epoch-06", "win": 6, "tie": 0, "loss": 0, "unparsed": 0, "score": 1.0}
        assert table["epoch-05"]["score"] == 0.0 and table["epoch-07"]["score"] == 0.5
    saved = json.loads((run / "select-epoch" / "select-epoch.json").read_text())
    assert saved["best"] == "epoch-06" and saved["adapters"]["epoch-05"] == str(run / "epoch-05")
    rows = [line for line in (run / "select-epoch" / "select-epoch.md").read_text().splitlines()
            if line.startswith("| epoch-")]
    assert [line.split(" | ")[0] for line in rows] == ["| epoch-06", "| epoch-07", "| epoch-05"]  # best first
    with pytest.raises(LimaError, match=r"no epoch adapters among epochs \[1, 2\]; found \['epoch-05'"):
        select_epoch.select_epoch(run, str(prompts), judge, epochs=[1, 2])


def test_ranking_puts_unscorable_epochs_last_and_keeps_the_earlier_of_equals():
    table = [{"epoch": "epoch-05", "score": 0.5}, {"epoch": "epoch-06", "score": None},
             {"epoch": "epoch-07", "score": 0.5}, {"epoch": "epoch-08", "score": 0.75}]
    assert [r["epoch"] for r in select_epoch.ranked(table)] == ["epoch-08", "epoch-05", "epoch-07", "epoch-06"]
    points = {"epoch-05": {"win": 1, "tie": 2, "loss": 1, "unparsed": 3}, "epoch-06": dict.fromkeys(
        ("win", "tie", "loss"), 0) | {"unparsed": 4}}
    scored = select_epoch.score_table(["epoch-05", "epoch-06"], points)
    assert [r["score"] for r in scored] == [0.5, None]  # (1 + 2/2) / 4 readable; no readable verdict


# ------------------------------------------------------------------ the report


def test_report_writes_tables_and_charts(tmp_path):
    judgments = tmp_path / "judgments"
    judgments.mkdir()
    good = Scripted(prefers_good, name="judge-1")
    first = Scripted(lambda prompt: "A", name="judge-2")
    ours = [row(str(i), "GOOD" if i < 3 else "meh", "tuned") for i in range(4)]
    theirs = [row(str(i), "meh", "base") for i in range(4)]
    write(judgments / "pairwise-1.jsonl", [pairwise_judge(good, o, t) for o, t in zip(ours, theirs, strict=True)])
    write(judgments / "pairwise-2.jsonl", [pairwise_judge(first, o, t) for o, t in zip(ours, theirs, strict=True)])
    scores = iter("4563" * 2)
    likert = Scripted(lambda prompt: next(scores))
    write(tmp_path / "a.jsonl", ours)
    write(tmp_path / "b.jsonl", theirs)
    steps.likert_file(likert, tmp_path / "a.jsonl", judgments / "likert.jsonl")
    steps.likert_file(likert, tmp_path / "b.jsonl", judgments / "likert.jsonl")
    grades = iter(["Excellent", "Pass", "Fail", "nonsense", "nonsense"])
    steps.absolute_file(Scripted(lambda prompt: next(grades)), tmp_path / "a.jsonl", judgments / "absolute.jsonl")
    write(judgments / "knowledge.jsonl", [
        {"protocol": "knowledge", "model": m, "id": str(i), "question": "q", "answers": ["x"], "answer": "x",
         "exact": i < k, "contains": i < k + 1, "finish_reason": "eot"} for m, k in (("tuned", 1), ("base", 2))
        for i in range(4)])
    write(judgments / "answers-tuned.jsonl", ours)  # an answers file in the folder is skipped

    report = build_report([judgments], tmp_path / "report")
    text = report.read_text()
    for chart in ("pairwise", "likert", "absolute", "agreement", "knowledge"):
        png = tmp_path / "report" / f"{chart}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, chart
        assert f"![{chart}]({chart}.png)" in text
    assert "| tuned vs base | judge-1 | 3 (75%) | 1 (25%) | 0 (0%) | 0 | 4 |" in text
    assert "| tuned vs base | judge-2 | 0 (0%) | 4 (100%) | 0 (0%) | 0 | 4 |" in text
    # judge-1 says tuned 3 times and tie once; judge-2 always tie: 3 x 0.5 + 1 = 2.5 / 4
    assert "| judge-1 | 100% (4) | 62% (4) |" in text
    assert re.search(r"\| tuned \| fake-judge \| 4\.50 \| 2\.\d\d to 6\.\d\d \| 4 \| 4 \| 0 \|", text)
    assert "| tuned | fake-judge | 1 (25%) | 1 (25%) | 1 (25%) | 1 | 4 |" in text
    assert "| base | 2 (50%) | 3 (75%) | 4 |" in text
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["records"]["pairwise"] == 8
    with pytest.raises(LimaError, match=r"bad.jsonl:1: protocol: expected one of"):
        build_report([write(tmp_path / "bad.jsonl", [{"protocol": "elo"}])], tmp_path / "r2")


def test_eval_cli_is_dispatched_and_input_errors_exit_2(tmp_path, capsys):
    from lima_lite.cli import main

    assert main(["eval", "report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "likert", "--help"])
    assert "Reply with the number only" in capsys.readouterr().out  # the judging prompt is shown


def test_every_step_runs_on_a_tiny_local_model_as_model_and_judge(tiny_llama, tmp_path, capsys):
    """The real code path (load_engine, LocalJudge, the CLI) in seconds; a random model's verdicts are noise."""
    from lima_lite.cli import main

    a, b, evals = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "evals"
    common = ["--prompts", "embedded:dev.jsonl", "--limit", "2", "--max-new-tokens", "4"]
    assert main(["eval", "generate", "--model", str(tiny_llama), "--out", str(a), "--name", "sampled", *common]) == 0
    assert main(["eval", "generate", "--model", str(tiny_llama), "--out", str(b), "--name", "greedy",
                 "--temperature", "0", *common]) == 0
    assert [(r["model"], r["finish_reason"]) for r in read_records(a)] == [("sampled", "length")] * 2
    judge = ["--judge", str(tiny_llama), "--judge-max-new-tokens", "3"]
    assert main(["eval", "pairwise", *judge, "--ours", str(a), "--baseline", str(b),
                 "--out", str(evals / "pairwise.jsonl")]) == 0
    assert "'n': 2" in capsys.readouterr().out
    assert main(["eval", "knowledge", "--model", str(tiny_llama), "--limit", "2", "--max-new-tokens", "3",
                 "--out", str(evals / "knowledge.jsonl")]) == 0
    assert len(read_records(evals / "knowledge.jsonl")) == 2  # a base model: no "base of" rows
    assert main(["eval", "report", str(evals), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "pairwise.png").is_file() and (tmp_path / "report" / "knowledge.png").is_file()
    # judgments resume: a rerun takes the existing --out up, with nothing left to ask
    judged = (evals / "pairwise.jsonl").read_text()
    assert main(["eval", "pairwise", *judge, "--ours", str(a), "--baseline", str(b),
                 "--out", str(evals / "pairwise.jsonl")]) == 0
    assert (evals / "pairwise.jsonl").read_text() == judged
    # a report does not resume: it is replaced only with --overwrite
    capsys.readouterr()
    assert main(["eval", "report", str(evals), "--out", str(tmp_path / "report")]) == 2
    assert "report.md: already exists" in capsys.readouterr().err
    (tmp_path / "report" / "report.md").write_text("old")
    assert main(["eval", "report", str(evals), "--out", str(tmp_path / "report"), "--overwrite"]) == 0
    assert (tmp_path / "report" / "report.md").read_text() != "old"
    assert main(["eval", "generate", "--model", str(tiny_llama), "--no-adapter", "--out", str(a), *common]) == 2
    assert "--no-adapter needs an adapter" in capsys.readouterr().err
