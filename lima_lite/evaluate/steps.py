"""One function per evaluation step, files in and files out, each resumable: what `lima-lite eval` runs.

    >>> judge = get_judge("runs/quickstart/adapter", max_new_tokens=64)
    >>> pairwise_file(judge, "evals/answers-adapter.jsonl", "evals/answers-base.jsonl", "evals/pairwise.jsonl")
    >>> knowledge_file("runs/quickstart/adapter", "embedded:knowledge.jsonl", "evals/knowledge.jsonl")
    >>> select_epoch("runs/llama-7b", "embedded:dev.jsonl", judge, epochs=range(5, 11))["best"]
    'epoch-07'

A judgment file holds one JSONL record per prompt (and per model and judge); rerunning a step skips the
records already there, so an interrupted evaluation, or one extended with more prompts, resumes.
"""

import json
from pathlib import Path

from lima_lite import LimaError
from lima_lite.evaluate.answers import answers_by_id, generate_answers, get_answerer, read_records, resume
from lima_lite.evaluate.protocols import (absolute_judge, check_human_vote, human_records, knowledge_score,
                                          likert_judge, load_prompt, pairwise_judge, render, win_tie_loss)

KNOWLEDGE_SAMPLING = {"temperature": 0, "max_new_tokens": 32}  # greedy: a fact is either there or not


def pairwise_file(judge, ours: str | Path, theirs: str | Path, out: str | Path) -> list[dict]:
    """Judge the first answer of every prompt in `ours` against `theirs` in both orders."""
    mine, other = answers_by_id(ours), answers_by_id(theirs)
    missing = [pid for pid in mine if pid not in other]
    if missing:
        raise LimaError(f"{theirs}: no answer for {len(missing)} prompt id(s) of {ours}: {', '.join(missing[:5])}"
                        " (answer the same prompts file with both models)")
    template = load_prompt("pairwise")
    todo = [((judge.name, pid, mine[pid][0]["model"], other[pid][0]["model"]),
             lambda pid=pid: pairwise_judge(judge, mine[pid][0], other[pid][0], template)) for pid in mine]
    return resume(out, lambda r: (r["judge"], r["id"], r["model_a"], r["model_b"]), todo, desc="pairwise")


def likert_file(judge, answers: str | Path, out: str | Path) -> list[dict]:
    """Helpfulness 1-6 for every answer; several samples of a prompt are averaged into its score."""
    grouped, template = answers_by_id(answers), load_prompt("likert")
    todo = [((judge.name, rows[0]["model"], pid), lambda rows=rows: likert_judge(judge, rows, template))
            for pid, rows in grouped.items()]
    return resume(out, lambda r: (r["judge"], r["model"], r["id"]), todo, desc="likert")


def absolute_file(judge, answers: str | Path, out: str | Path) -> list[dict]:
    """Fail / Pass / Excellent for the first answer of every prompt."""
    grouped, template = answers_by_id(answers), load_prompt("absolute")
    todo = [((judge.name, rows[0]["model"], pid), lambda rows=rows: absolute_judge(judge, rows[0], template))
            for pid, rows in grouped.items()]
    return resume(out, lambda r: (r["judge"], r["model"], r["id"]), todo, desc="absolute")


def read_questions(name: str) -> list[dict]:
    """A factual QA file: JSONL `{"id", "question", "answers": [...]}`; errors name file:line and field."""
    from lima_lite.data import resolve_data_path

    path = resolve_data_path(name) or Path(name)
    rows = read_records(path) if path.is_file() else None
    if rows is None:
        raise LimaError(f"{path}: questions file not found")
    for number, row in enumerate(rows, 1):
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise LimaError(f"{path}:{number}: question: missing or not a non-empty string")
        answers = row.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise LimaError(f"{path}:{number}: answers: must be a non-empty list of strings")
        row.setdefault("id", f"{path.stem}-{number}")
    if not rows:
        raise LimaError(f"{path}: no questions")
    return rows


def knowledge_file(spec: str, questions: str, out: str | Path, with_base: bool = True, limit: int | None = None,
                   **sampling) -> list[dict]:
    """Exact-match and contains accuracy of a model on factual questions; for an adapter, also of its base
    (the adapter switched off, same load), since fine-tuning on ~1,000 examples should not add facts."""
    from lima_lite.evaluate.answers import LocalModel, resolve_spec
    from lima_lite.generate import is_adapter

    rows = read_questions(questions)[:limit]
    model = get_answerer(spec)
    models = [model]
    if with_base and isinstance(model, LocalModel) and is_adapter(resolve_spec(spec)):
        models.append(LocalModel(engine=model.engine, name=f"base of {model.name}", adapter=False))
    template, settings = load_prompt("knowledge"), {**KNOWLEDGE_SAMPLING, **sampling}

    def make(answerer, row):
        def run():
            text, finish = answerer.answer(render(template, question=row["question"]), **settings)
            return {"protocol": "knowledge", "model": answerer.name, "id": row["id"], "question": row["question"],
                    "answers": row["answers"], "answer": text, "finish_reason": finish,
                    **knowledge_score(text, row["answers"])}
        return run

    todo = [((m.name, row["id"]), make(m, row)) for m in models for row in rows]
    return resume(out, lambda r: (r["model"], r["id"]), todo, desc="knowledge")


def human_file(votes: str | Path, out: str | Path, ours: str | None = None) -> list[dict]:
    """Import the Judge tab's votes (see protocols.HUMAN_VOTE_FIELDS) as records the report reads."""
    from lima_lite.io import write_jsonl

    rows = read_records(votes)
    if not rows:
        raise LimaError(f"{votes}: no votes")
    for number, row in enumerate(rows, 1):
        check_human_vote(row, f"{votes}:{number}")
    records = human_records(rows, ours)
    write_jsonl(records, out)
    return records


def epoch_name(epoch: int) -> str:
    return f"epoch-{epoch:02d}"  # the folder name train.py gives each epoch's adapter


def select_epoch(run: str | Path, prompts: str, judge, epochs=range(5, 11), against: str = "base",
                 out: str | Path | None = None, **sampling) -> dict:
    """Score a run's epoch adapters with a pairwise judge and name the best, as LIMA picked by hand
    between epochs 5 and 10 on 50 dev prompts.

    against="base": each epoch against the base model (the adapter switched off);
    against="each-other": every pair of epochs. An epoch's score is its share of points over its
    readable comparisons (win 1, tie 0.5, loss 0). Writes answers, judgments, `select-epoch.md` and
    `select-epoch.json` (`best` and `top_two`, which the UI's Compare tab can load) into `out`."""
    from itertools import combinations

    from lima_lite.evaluate.answers import LocalModel, read_prompts
    from lima_lite.evaluate.report import write_text

    run = Path(run)
    if against not in ("base", "each-other"):
        raise LimaError(f"--against: expected 'base' or 'each-other', got {against!r}")
    present = [e for e in epochs if (run / epoch_name(e) / "adapter_config.json").is_file()]
    if not present:
        found = sorted(p.name for p in run.glob("epoch-*"))
        raise LimaError(f"{run}: no epoch adapters among epochs {list(epochs)}; found {found or 'none'} "
                        "(train more epochs, or choose them with --epochs)")
    if against == "each-other" and len(present) < 2:
        raise LimaError(f"{run}: only {epoch_name(present[0])} found; --against each-other needs two epochs")
    out = Path(out) if out else run / "select-epoch"
    items = read_prompts(prompts)
    answers = {}
    for epoch in present:
        model = get_answerer(str(run / epoch_name(epoch)), name=epoch_name(epoch))
        answers[epoch_name(epoch)] = out / f"answers-{epoch_name(epoch)}.jsonl"
        generate_answers(model, items, answers[epoch_name(epoch)], **sampling)
        if against == "base" and "base" not in answers:
            answers["base"] = out / "answers-base.jsonl"
            generate_answers(LocalModel(engine=model.engine, name="base", adapter=False), items, answers["base"],
                             **sampling)
        del model
    names = [epoch_name(e) for e in present]
    pairs = [(name, "base") for name in names] if against == "base" else list(combinations(names, 2))
    points = {name: {"win": 0, "tie": 0, "loss": 0, "unparsed": 0} for name in names}
    for a, b in pairs:
        counts = win_tie_loss(pairwise_file(judge, answers[a], answers[b], out / f"pairwise-{a}-vs-{b}.jsonl"))
        for outcome in ("win", "tie", "loss", "unparsed"):
            points[a][outcome] += counts[outcome]
        if b != "base":  # b's view of the same comparisons
            for outcome, mirrored in (("win", "loss"), ("tie", "tie"), ("loss", "win"), ("unparsed", "unparsed")):
                points[b][mirrored] += counts[outcome]
    table = []
    for name in names:
        c = points[name]
        readable = c["win"] + c["tie"] + c["loss"]
        table.append({"epoch": name, **c, "score": (c["win"] + c["tie"] / 2) / readable if readable else None})
    # best score first; an unscorable epoch last; equal scores keep the earlier epoch (less training) first
    ranking = sorted(table, key=lambda r: (r["score"] is None, -(r["score"] or 0)))
    result = {"run": str(run), "judge": judge.name, "against": against, "prompts": len(items),
              "best": ranking[0]["epoch"] if ranking[0]["score"] is not None else None,
              "top_two": [r["epoch"] for r in ranking[:2] if r["score"] is not None],
              "adapters": {r["epoch"]: str(run / r["epoch"]) for r in table}, "table": table}
    write_text(out / "select-epoch.json", json.dumps(result, indent=2) + "\n")
    lines = [f"# Epoch selection for {run}", "",
             f"Judge: {judge.name}; {len(items)} prompts from {prompts}; each epoch against "
             f"{'the base model' if against == 'base' else 'every other epoch'}, both orders per prompt. "
             "score = (wins + ties/2) / readable comparisons.", "",
             "| epoch | win | tie | loss | unparsed | score |", "|---|---|---|---|---|---|"]
    for r in ranking:
        score = "-" if r["score"] is None else f"{r['score']:.2f}"
        lines.append(f"| {r['epoch']} | {r['win']} | {r['tie']} | {r['loss']} | {r['unparsed']} | {score} |")
    lines += ["", f"Best: **{result['best'] or 'none (no readable verdicts)'}**"]
    write_text(out / "select-epoch.md", "\n".join(lines) + "\n")
    return result
