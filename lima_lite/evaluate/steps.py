"""One function per evaluation step, files in and files out, each resumable: what `lima-lite eval` runs.

    >>> judge = get_judge("runs/quickstart/adapter", max_new_tokens=64)
    >>> pairwise_file(judge, "evals/answers-adapter.jsonl", "evals/answers-base.jsonl", "evals/pairwise.jsonl")
    >>> knowledge_file("runs/quickstart/adapter", "embedded:knowledge.jsonl", "evals/knowledge.jsonl")

(select-epoch, which runs several of these, is lima_lite/evaluate/select_epoch.py.)

A judgment file holds one JSONL record per prompt (and per model and judge), in prompt order; rerunning a
step skips the records already there, so an interrupted evaluation, or one extended with more prompts,
resumes. `concurrency` > 1 judges that many prompts at once (endpoint judges: the time goes to waiting).
"""

from pathlib import Path

from lima_lite import LimaError
from lima_lite.conversations import local_data_file
from lima_lite.evaluate.answers import LocalModel, answers_by_id, get_answerer, read_records, resolve_spec, resume
from lima_lite.evaluate.protocols import (
    absolute_judge,
    check_human_vote,
    human_records,
    knowledge_score,
    length_penalised_label,
    likert_judge,
    load_prompt,
    pairwise_judge,
    render,
)
from lima_lite.files import read_jsonl, write_jsonl
from lima_lite.layout import is_adapter

KNOWLEDGE_SAMPLING = {"temperature": 0, "max_new_tokens": 32}  # greedy: a fact is either there or not


JUDGE_PROMPTS = {"default": "pairwise", "length-penalised": "pairwise-length-penalised"}


def pairwise_file(judge, ours: str | Path, theirs: str | Path, out: str | Path,
                  judge_prompt: str = "default", concurrency: int = 1) -> list[dict]:
    """Judge the first answer of every prompt in `ours` against `theirs` in both orders, with the default
    judging prompt or the length-penalising one (Long Is More's check of the judge's length bias)."""
    mine, other = answers_by_id(ours), answers_by_id(theirs)
    missing = [pid for pid in mine if pid not in other]
    if missing:
        raise LimaError(f"{theirs}: no answer for {len(missing)} prompt id(s) of {ours}: {', '.join(missing[:5])}"
                        " (answer the same prompts file with both models)")
    protocol = JUDGE_PROMPTS[judge_prompt]
    template = load_prompt(protocol)
    name = judge.name if judge_prompt == "default" else length_penalised_label(judge.name)
    todo = [((name, pid, mine[pid][0]["model"], other[pid][0]["model"]),
             lambda pid=pid: pairwise_judge(judge, mine[pid][0], other[pid][0], template, protocol)) for pid in mine]
    return resume(out, lambda r: (r["judge"], r["id"], r["model_a"], r["model_b"]), todo, desc="pairwise",
                  concurrency=concurrency)


def likert_file(judge, answers: str | Path, out: str | Path, concurrency: int = 1) -> list[dict]:
    """Helpfulness 1-6 for every answer; several samples of a prompt are averaged into its score."""
    grouped, template = answers_by_id(answers), load_prompt("likert")
    todo = [((judge.name, rows[0]["model"], pid), lambda rows=rows: likert_judge(judge, rows, template))
            for pid, rows in grouped.items()]
    return resume(out, lambda r: (r["judge"], r["model"], r["id"]), todo, desc="likert", concurrency=concurrency)


def absolute_file(judge, answers: str | Path, out: str | Path, concurrency: int = 1) -> list[dict]:
    """Fail / Pass / Excellent for the first answer of every prompt."""
    grouped, template = answers_by_id(answers), load_prompt("absolute")
    todo = [((judge.name, rows[0]["model"], pid), lambda rows=rows: absolute_judge(judge, rows[0], template))
            for pid, rows in grouped.items()]
    return resume(out, lambda r: (r["judge"], r["model"], r["id"]), todo, desc="absolute", concurrency=concurrency)


def read_questions(name: str) -> list[dict]:
    """A factual QA file: JSONL `{"id", "question", "answers": [...]}`; errors name file:line and field."""
    path = local_data_file(name, "questions")
    rows = read_records(path)
    for number, row in rows:
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise LimaError(f"{path}:{number}: question: missing or not a non-empty string")
        answers = row.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise LimaError(f"{path}:{number}: answers: must be a non-empty list of strings")
        row.setdefault("id", f"{path.stem}-{number}")
    if not rows:
        raise LimaError(f"{path}: no questions")
    return [row for _, row in rows]


def knowledge_file(spec: str, questions: str, out: str | Path, with_base: bool = True, limit: int | None = None,
                   **sampling) -> list[dict]:
    """Exact-match and contains accuracy of a model on factual questions; for an adapter, also of its base
    (the adapter switched off, same load), since fine-tuning on ~1,000 examples should not add facts."""
    rows = read_questions(questions)[:limit]
    model = get_answerer(spec)
    models = [model]
    if with_base and isinstance(model, LocalModel) and is_adapter(resolve_spec(spec)):
        models.append(LocalModel(engine=model.engine, name=f"base of {model.name}", use_adapter=False))
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
    rows = read_jsonl(votes)
    if not rows:
        raise LimaError(f"{votes}: no votes")
    for number, row in rows:
        check_human_vote(row, f"{votes}:{number}")
    records = human_records([row for _, row in rows], ours)
    write_jsonl(records, out)
    return records

