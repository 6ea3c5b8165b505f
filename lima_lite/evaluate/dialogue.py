"""Multi-turn evaluation (LIMA §6): conversations with each model, every assistant turn graded in context.

    $ lima-lite eval dialogue --model runs/lima-1k --model runs/lima-1030 --judge JUDGE --out evals/dialogue.jsonl
    $ lima-lite eval dialogue --model runs/lima-1k --simulator USER_MODEL --turns 5 --judge JUDGE --out evals/sim.jsonl
    >>> records = dialogue_file(models, judge, read_dialogues("embedded:dialogues.jsonl"), "evals/dialogue.jsonl")
    >>> dialogue_summary([r for r in records if r["model"] == "lima-1030"])["first_fail"]

A dialogues file is JSONL `{"id", "turns": [user turn, ...]}`: each conversation starts from the scripted
opening; the user's later turns come from the script or, with a simulator, from a user-simulator model
(seeded per dialogue and turn, so a rerun asks it the same way). Every assistant turn is graded Fail /
Pass / Excellent by the judge with the whole conversation before it in view (prompts/dialogue.txt).

One record per (judge, model, dialogue, turn), holding the conversation up to that turn: an interrupted
run resumes, and a second judge on the same file grades the stored conversations, user turns of the
simulator included, without generating anything again. LIMA: zero-shot, LIMA failed within 3 turns in 6
of 10 conversations; with 30 dialogue chains in training, excellent answers rose from 45.2% to 76.1%.
"""

import zlib
from pathlib import Path

from lima_lite import LimaError
from lima_lite.conversations import claim_id, local_data_file
from lima_lite.evaluate.answers import read_records
from lima_lite.evaluate.protocols import ABSOLUTE_CHOICES, ask, load_prompt, render
from lima_lite.files import write_jsonl

SIMULATOR_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 128}  # a user's turn is short


def read_dialogues(name: str) -> list[dict]:
    """[{"id", "turns"}] from a dialogues file; errors name file:line and field."""
    path = local_data_file(name, "dialogues")
    dialogues, seen = [], {}
    for number, row in read_records(path):
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise LimaError(f"{path}:{number}: turns: must be a non-empty list of non-empty strings (the user's turns)")
        did = str(row.get("id", f"{path.stem}-{number}"))
        claim_id(seen, did, path, number)
        dialogues.append({"id": did, "turns": turns})
    if not dialogues:
        raise LimaError(f"{path}: no dialogues")
    return dialogues


def history_text(messages: list[dict]) -> str:
    """The conversation as the judge and the simulator read it: `[User]` / `[Assistant]` blocks."""
    return "\n\n".join(f"[{m['role'].capitalize()}]\n{m['content']}" for m in messages)


def turn_seed(did: str, turn: int, who: str) -> int:
    return zlib.crc32(f"{did}:{turn}:{who}".encode())


def simulated_turn(simulator, messages: list[dict], did: str, turn: int, template: str) -> str:
    """The user's next turn, written by the simulator from the conversation so far (seeded)."""
    text, _ = simulator.answer(render(template, history=history_text(messages)),
                               seed=turn_seed(did, turn, "user"), **SIMULATOR_SAMPLING)
    if not text.strip():
        raise LimaError(f"{simulator.name}: the user simulator wrote an empty turn {turn} of dialogue {did}; "
                        "try another simulator model")
    return text.strip()


def stored_conversations(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(model, dialogue id) -> the longest conversation stored by any judge, to grade again without generating."""
    longest: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        key = (record["model"], record["id"])
        if len(record["messages"]) > len(longest.get(key, [])):
            longest[key] = record["messages"]
    return longest


def dialogue_file(models, judge, dialogues: list[dict], out: str | Path, turns: int | None = None, simulator=None,
                  **sampling) -> list[dict]:
    """Converse with each model (loaded one at a time through `models`: (name, load) pairs), grade every
    assistant turn, and save one record per turn; resumable, and reusing stored conversations."""
    records = [row for _, row in read_records(out)]
    judged = {(r["judge"], r["model"], r["id"], r["turn"]) for r in records}
    grade_template, user_template = load_prompt("dialogue"), load_prompt("dialogue-user")
    for name, load in models:
        stored = stored_conversations(records)
        wanted = [(d, turns or len(d["turns"])) for d in dialogues]
        if all((judge.name, name, d["id"], t) in judged for d, n in wanted for t in range(1, n + 1)):
            continue
        needs_generation = any(len(stored.get((name, d["id"]), [])) < 2 * n for d, n in wanted)
        answerer = load() if needs_generation else None
        for dialogue, n_turns in wanted:
            if n_turns > len(dialogue["turns"]) and simulator is None:
                raise LimaError(f"dialogue {dialogue['id']}: {len(dialogue['turns'])} scripted user turns, "
                                f"{n_turns} asked for; give a --simulator to write the rest")
            messages = list(stored.get((name, dialogue["id"]), []))
            for turn in range(1, n_turns + 1):
                if len(messages) < 2 * turn:
                    messages = messages[: 2 * (turn - 1)]
                    user = (dialogue["turns"][turn - 1] if turn <= len(dialogue["turns"])
                            else simulated_turn(simulator, messages, dialogue["id"], turn, user_template))
                    messages.append({"role": "user", "content": user})
                    reply, _ = answerer.chat(messages, seed=turn_seed(dialogue["id"], turn, "assistant"), **sampling)
                    messages.append({"role": "assistant", "content": reply})
                if (judge.name, name, dialogue["id"], turn) in judged:
                    continue
                history = messages[: 2 * turn]
                verdict, replies = ask(judge, render(grade_template, history=history_text(history[:-1]),
                                                     answer=history[-1]["content"]), ABSOLUTE_CHOICES)
                records.append({"protocol": "dialogue", "judge": judge.name, "model": name, "id": dialogue["id"],
                                "turn": turn, "messages": history,
                                "user": "script" if turn <= len(dialogue["turns"]) else f"simulator:{simulator.name}",
                                "grade": verdict, "raw": replies})
                judged.add((judge.name, name, dialogue["id"], turn))
                write_jsonl(records, out)
        print(f"{name}: {sum(r['model'] == name and r['judge'] == judge.name for r in records)} turns graded")
    return records


def dialogue_summary(records: list[dict]) -> dict:
    """Fail / Pass / Excellent per turn and overall, and when conversations first fail (one model, one judge)."""
    counts = {grade: 0 for grade in ABSOLUTE_CHOICES} | {"unparsed": 0}
    per_turn: dict[int, dict] = {}
    for record in records:
        grade = record["grade"] or "unparsed"
        per_turn.setdefault(record["turn"], dict(counts))[grade] += 1
    overall = dict(counts)
    for turn in per_turn.values():
        for grade, count in turn.items():
            overall[grade] += count
    first_fail: dict[str, int | None] = {}
    for record in sorted(records, key=lambda r: r["turn"]):
        first_fail.setdefault(record["id"], None)
        if record["grade"] == "Fail" and first_fail[record["id"]] is None:
            first_fail[record["id"]] = record["turn"]
    add_n = lambda c: {**c, "n": sum(c.values())}  # noqa: E731
    return {"per_turn": {t: add_n(c) for t, c in sorted(per_turn.items())}, "overall": add_n(overall),
            "first_fail": first_fail, "conversations": len(first_fail),
            "failed_within_3": sum(t is not None and t <= 3 for t in first_fail.values())}
