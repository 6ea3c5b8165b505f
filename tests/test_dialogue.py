"""`lima-lite eval dialogue`: tiny local models converse, a fake judge on 127.0.0.1 grades every turn with
the whole history in view; scripted and simulated user turns; resuming and re-judging stored conversations."""

import json
from pathlib import Path

import pytest

from lima_lite import LimaError
from lima_lite.evaluate.dialogue import dialogue_file, dialogue_summary, read_dialogues, turn_seed
from oracles.endpoint import FakeEndpoint, completion

# what the fake judge says about turn t of each dialogue, whoever the model is
VERDICTS = {"d1": ["Excellent", "Pass", "Fail", "Fail"], "d2": ["Pass", "Pass", "Pass", "Excellent"],
            "d3": ["Fail", "Excellent", "Pass", "Pass"]}


def scripted_dialogues(tmp_path, turns: int = 4) -> Path:
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps({"id": d, "turns": [f"Opening of {d}?"] + [f"{d} follow-up {t}?" for t in
                                                                                 range(2, turns + 1)]}) + "\n"
                            for d in VERDICTS))
    return path


def grading_judge(body, number):
    """Reads which dialogue and turn it grades from the conversation it is shown."""
    prompt = body["messages"][-1]["content"]
    history = prompt.split("[Conversation so far]\n", 1)[1].split("\n\n[Assistant's reply to grade]", 1)[0]
    dialogue = next(d for d in VERDICTS if f"Opening of {d}?" in history)
    turn = history.count("[User]\n")
    return completion(f"The reply is what it is.\n{VERDICTS[dialogue][turn - 1]}")


def test_scripted_dialogues_for_two_models_grade_every_turn_as_the_judge_said(tiny_llama, tiny_llama_tied, tmp_path,
                                                                             capsys):
    from lima_lite.cli import main
    from lima_lite.evaluate.report import build_report

    out = tmp_path / "evals" / "dialogue.jsonl"
    with FakeEndpoint(grading_judge) as judge:
        argv = ["eval", "dialogue", "--model", str(tiny_llama), "--model", str(tiny_llama_tied), "--name", "untied",
                "--name", "tied", "--judge", f"judge@{judge.url}", "--dialogues", str(scripted_dialogues(tmp_path)),
                "--out", str(out), "--max-new-tokens", "4"]
        assert main(argv) == 0
        assert len(judge.requests) == 24
        assert main(argv) == 0 and len(judge.requests) == 24  # resumed: nothing graded twice
        shown = [r["messages"][-1]["content"] for r in judge.requests]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 24 and {r["model"] for r in records} == {"untied", "tied"}
    for model in ("untied", "tied"):
        mine = [r for r in records if r["model"] == model]
        summary = dialogue_summary(mine)
        for turn in range(1, 5):
            said = [VERDICTS[d][turn - 1] for d in VERDICTS]
            assert {g: summary["per_turn"][turn][g] for g in ("Fail", "Pass", "Excellent")} == \
                   {g: said.count(g) for g in ("Fail", "Pass", "Excellent")}
        assert summary["first_fail"] == {"d1": 3, "d2": None, "d3": 1} and summary["failed_within_3"] == 2
        # turn 4 was graded with the three earlier exchanges in view, the model's own replies included
        last = next(r for r in mine if r["id"] == "d1" and r["turn"] == 4)
        assert [m["role"] for m in last["messages"]] == ["user", "assistant"] * 4
        assert any(all(m["content"] in prompt for m in last["messages"][:-1]) for prompt in shown)
    printed = capsys.readouterr().out
    assert "untied: turn 1: Fail 1 Pass 1 Excellent 1; turn 2:" in printed
    assert "failed within 3 turns: 2 of 3" in printed

    report = build_report([out.parent], tmp_path / "report").read_text()
    assert "## Multi-turn dialogue" in report and (tmp_path / "report" / "dialogue.png").is_file()
    assert "| tied | judge | 3 | 1 (33%) | 2 (67%) | 0 (0%) | 0 | 3 |" in report
    assert "| untied | judge | all | 3 (25%) | 6 (50%) | 3 (25%) | 0 | 12 |" in report
    assert "| tied | judge | 2 of 3 | 2 | 2.0 |" in report

    # a second judge grades the stored conversations: no model is loaded, nothing is generated again
    def no_loading():
        raise AssertionError("a model was loaded to re-judge stored conversations")

    with FakeEndpoint(lambda body, number: completion("Pass")) as second:
        from lima_lite.judges import get_judge

        again = dialogue_file([("untied", no_loading), ("tied", no_loading)], get_judge(f"other@{second.url}"),
                              read_dialogues(str(tmp_path / "dialogues.jsonl")), out)
        assert len(second.requests) == 24
    regraded = [r for r in again if r["judge"].startswith("other@")]
    assert len(regraded) == 24 and all(r["grade"] == "Pass" for r in regraded)
    first = {(r["model"], r["id"], r["turn"]): r["messages"] for r in records}
    assert all(first[(r["model"], r["id"], r["turn"])] == r["messages"] for r in regraded)


def simulated_user(body, number):
    return completion(f"Tell me more (seed {body['seed']}).")


def test_the_simulator_writes_seeded_user_turns_that_are_stored(tiny_llama, tmp_path):
    from lima_lite.evaluate.answers import get_answerer
    from lima_lite.judges import get_judge

    dialogues = read_dialogues(str(scripted_dialogues(tmp_path, turns=1)))
    out = tmp_path / "sim.jsonl"
    with FakeEndpoint(grading_judge) as judge, FakeEndpoint(simulated_user) as simulator:
        records = dialogue_file([("tiny", lambda: get_answerer(str(tiny_llama)))], get_judge(f"judge@{judge.url}"),
                                dialogues, out, turns=3, simulator=get_answerer(f"user-sim@{simulator.url}"),
                                max_new_tokens=4)
        assert len(simulator.requests) == 3 * 2  # turns 2 and 3 of each dialogue
        # the simulator saw the conversation so far, the model's reply included
        assert all("[Assistant]\n" in r["messages"][-1]["content"] for r in simulator.requests)
    assert len(records) == 9
    for record in records:
        users = [m["content"] for m in record["messages"] if m["role"] == "user"]
        assert users[0] == f"Opening of {record['id']}?"
        assert users[1:] == [f"Tell me more (seed {turn_seed(record['id'], t, 'user')})."
                             for t in range(2, record["turn"] + 1)]
        assert record["user"] == ("script" if record["turn"] == 1 else "simulator:user-sim")
        assert record["grade"] == VERDICTS[record["id"]][record["turn"] - 1]


def test_more_turns_than_scripted_need_a_simulator(tmp_path):
    dialogues = read_dialogues(str(scripted_dialogues(tmp_path, turns=2)))
    with pytest.raises(LimaError, match="2 scripted user turns, 3 asked for; give a --simulator"):
        dialogue_file([("m", lambda: None)], type("J", (), {"name": "j"})(), dialogues, tmp_path / "o.jsonl", turns=3)


def test_dialogue_files_are_checked_and_the_embedded_ones_read():
    embedded = read_dialogues("embedded:dialogues.jsonl")
    assert len(embedded) >= 10 and all(len(d["turns"]) >= 3 for d in embedded)


def test_a_bad_dialogue_line_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "turns": ["Hi?"]}) + "\n" + json.dumps({"id": "b", "turns": "Hi?"}) + "\n")
    with pytest.raises(LimaError, match=r"bad.jsonl:2: turns: must be a non-empty list"):
        read_dialogues(str(bad))
    twice = tmp_path / "twice.jsonl"
    twice.write_text(json.dumps({"id": "a", "turns": ["Hi?"]}) + "\n" + json.dumps({"id": "a", "turns": ["Yo?"]}) + "\n")
    with pytest.raises(LimaError, match=r"twice.jsonl:2: id: 'a' already used on line 1"):
        read_dialogues(str(twice))
