"""Length bias next to every preference result: lengths, raw vs length-controlled win rate, and a
length-penalising judge prompt whose agreement with the default one is printed."""

import json
import math
import random

import pytest

from lima_lite.evaluate import steps
from lima_lite.evaluate.protocols import length_controlled, length_summary, outcome_agreement


def judgments(n: int, preference, seed: int = 0) -> list[dict]:
    """n pairwise records whose first answer is usually longer; P(first preferred) = preference(difference),
    a tie taking the 20% band around it, so the expected score (tie = half) is exactly that probability."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        b = rng.randint(80, 120)
        a = max(1, b + round(rng.gauss(60, 80)))
        p, u = preference(a - b), rng.random()
        outcome = "win" if u < p - 0.1 else "tie" if u < p + 0.1 else "loss"
        records.append({"protocol": "pairwise", "judge": "j", "id": str(i), "prompt": "q", "model_a": "ours",
                        "model_b": "base", "answer_a": "word " * a, "answer_b": "word " * b, "outcome": outcome,
                        "winner": outcome})
    return records


def test_preference_that_follows_length_only_is_about_even_once_length_is_controlled():
    records = judgments(600, lambda d: 1 / (1 + math.exp(-4 * math.tanh(d / 80))))
    rates = length_controlled(records)
    assert rates["raw"] > 0.7  # the longer answer usually wins, and ours is usually longer
    assert abs(rates["lc"] - 0.5) < 0.06 and rates["low"] < 0.5 < rates["high"]
    assert rates["slope"] > 2


def test_preference_independent_of_length_is_unchanged_by_the_control():
    records = judgments(600, lambda d: 0.7, seed=1)
    rates = length_controlled(records)
    assert abs(rates["raw"] - 0.7) < 0.05
    assert abs(rates["lc"] - rates["raw"]) < 0.04 and rates["low"] < rates["raw"] < rates["high"]
    assert abs(rates["slope"]) < 0.5


def test_degenerate_judgments_give_no_controlled_rate_rather_than_a_wrong_one():
    records = judgments(20, lambda d: 1.0)
    for r in records:
        r["outcome"] = "win"
    assert length_controlled(records)["lc"] is None and length_controlled(records)["raw"] == 1.0
    assert length_controlled([])["raw"] is None
    separated = judgments(30, lambda d: 1.0 if d > 0 else 0.0, seed=3)
    for r in separated:  # the longer answer always wins: the fit runs off to infinity
        r["outcome"] = "win" if len(r["answer_a"]) > len(r["answer_b"]) else "loss"
    assert {r["outcome"] for r in separated} == {"win", "loss"} and length_controlled(separated)["lc"] is None
    same_length = judgments(40, lambda d: 0.6, seed=2)
    for r in same_length:
        r["answer_a"] = r["answer_b"]
    rates = length_controlled(same_length)  # no length difference: the controlled rate is the raw one
    assert rates["lc"] == pytest.approx(rates["raw"], abs=1e-6)


def test_length_summary_counts_words():
    records = [{"answer_a": "a b c", "answer_b": "a"}, {"answer_a": "a b c d e f g", "answer_b": "a b"},
               {"answer_a": "a", "answer_b": "a b c"}]
    assert length_summary(records) == {"n": 3, "mean_a": 11 / 3, "median_a": 3, "mean_b": 2, "median_b": 2}


class LengthJudge:
    """Prefers the longer answer; under the length-penalising prompt, the shorter one."""
    name = "fake-judge"

    def complete(self, prompt: str) -> str:
        a = prompt.split("[Answer A]\n", 1)[1].split("\n\n[Answer B]", 1)[0]
        b = prompt.split("[Answer B]\n", 1)[1].split("\n\nWhich answer", 1)[0]
        longer = "A" if len(a.split()) > len(b.split()) else "B"
        if "Length is not a merit" in prompt:
            return {"A": "B", "B": "A"}[longer]
        return longer


def answers(path, model, lengths):
    path.write_text("".join(json.dumps({"id": str(i), "prompt": f"question {i}", "answer": "word " * n,
                                        "model": model}) + "\n" for i, n in enumerate(lengths)))
    return str(path)


def test_both_judge_prompts_print_agreement_and_the_report_shows_lengths(tmp_path, monkeypatch, capsys):
    import lima_lite.judges
    from lima_lite.evaluate.cli import main
    from lima_lite.evaluate.report import build_report

    monkeypatch.setattr(lima_lite.judges, "get_judge", lambda spec, max_new_tokens: LengthJudge())
    ours = answers(tmp_path / "ours.jsonl", "ours", [30, 40, 5, 50, 60])
    base = answers(tmp_path / "base.jsonl", "base", [10, 10, 10, 10, 10])
    out = tmp_path / "judged" / "pairwise.jsonl"
    assert main(["pairwise", "--judge", "x", "--ours", ours, "--baseline", base, "--out", str(out),
                 "--judge-prompt", "both"]) == 0
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    default = [r for r in records if r["judge"] == "fake-judge"]
    penalised = [r for r in records if r["judge"] == "fake-judge [length-penalised]"]
    assert [r["outcome"] for r in default] == ["win", "win", "loss", "win", "win"]
    assert [r["outcome"] for r in penalised] == ["loss", "loss", "win", "loss", "loss"]
    assert "the two prompts agree on 0.0% of 5 outcomes" in printed
    assert "words (mean / median): ours 37 / 40, baseline 10 / 10; win rate raw 80.0%" in printed
    assert outcome_agreement(default, default)["same"] == 1.0

    report = build_report([out.parent], tmp_path / "report").read_text()
    assert "### Length bias" in report
    assert "| ours vs base | fake-judge | 37 / 40 | 10 / 10 | 80.0% | - |" in report  # length decides all
    assert "| ours vs base | fake-judge [length-penalised] | 37 / 40 | 10 / 10 | 20.0% | - |" in report
    assert "fake-judge [length-penalised]" in report.split("## Agreement between raters")[1]


def test_judge_prompt_files_exist_for_every_choice():
    from lima_lite.evaluate.protocols import load_prompt

    for protocol in steps.JUDGE_PROMPTS.values():
        assert "{answer_a}" in load_prompt(protocol) and "{answer_b}" in load_prompt(protocol)
