"""`lima-lite eval select-epoch`: score a run's epoch adapters with a pairwise judge and name the best,
as LIMA picked a checkpoint by hand between epochs 5 and 10 on 50 dev prompts.

    >>> judge = get_judge("gpt-4o@https://api.openai.com/v1")
    >>> select_epoch("runs/llama-7b", "embedded:dev.jsonl", judge, epochs=range(5, 11))["best"]
    'epoch-07'
    $ lima-lite eval select-epoch runs/llama-7b --judge gpt-4o@https://api.openai.com/v1 --epochs 5-10

The steps: answer the dev prompts with each epoch (and, against="base", with the base model: the
first epoch's load with its adapter switched off); judge the pairs in both orders; score each epoch by
its share of points over its readable comparisons (win 1, tie 0.5, loss 0); rank; write
`select-epoch.md` and `select-epoch.json` (`best` and `top_two`, which the UI's Compare tab can load).
Answers and judgments are resumable files in `out`, so a rerun asks nothing twice.
"""

from itertools import combinations
from pathlib import Path

from lima_lite import LimaError
from lima_lite.conversations import read_prompts
from lima_lite.evaluate.answers import LocalModel, answerer_source, generate_answers, get_answerer
from lima_lite.evaluate.protocols import win_tie_loss
from lima_lite.evaluate.steps import pairwise_file
from lima_lite.files import check_output_dir, write_json, write_text
from lima_lite.layout import epoch_adapters, epoch_name

AGAINST = ("base", "each-other")
OUTCOMES = ("win", "tie", "loss", "unparsed")
MIRRORED = {"win": "loss", "tie": "tie", "loss": "win", "unparsed": "unparsed"}  # the other side's view


def select_epoch(run: str | Path, prompts: str, judge, epochs=range(5, 11), against: str = "base",
                 out: str | Path | None = None, **sampling) -> dict:
    """Answer, judge, rank and write (see the module docstring); returns what select-epoch.json holds.

    against="base": each epoch against the base model (the adapter switched off);
    against="each-other": every pair of epochs."""
    run = Path(run)
    adapters = chosen_epochs(run, epochs, against)
    out = Path(out) if out else run / "select-epoch"
    own = ("select-epoch.json", "prompts.jsonl", "answers-base.jsonl", *(f"answers-{name}.jsonl" for name in adapters))
    check_output_dir(out, inputs=adapters.values(), own=own, overwrite=False)
    items = read_prompts(prompts)
    answers = answer_epochs(adapters, items, out, with_base=against == "base", **sampling)
    names = list(adapters)
    pairs = [(name, "base") for name in names] if against == "base" else list(combinations(names, 2))
    table = score_table(names, judge_pairs(judge, answers, pairs, out))
    ranking = ranked(table)
    result = {"run": str(run), "judge": judge.name, "against": against, "prompts": len(items),
              "best": ranking[0]["epoch"] if ranking[0]["score"] is not None else None,
              "top_two": [r["epoch"] for r in ranking[:2] if r["score"] is not None],
              "adapters": {name: str(folder) for name, folder in adapters.items()}, "table": table}
    write_selection(result, ranking, prompts, out)
    return result


def chosen_epochs(run: Path, epochs, against: str) -> dict[str, Path]:
    """{"epoch-05": folder, ...}: the requested epochs the run has adapters for, in order."""
    if against not in AGAINST:
        raise LimaError(f"--against: expected 'base' or 'each-other', got {against!r}")
    found = epoch_adapters(run)
    chosen = {epoch_name(e): folder for e, folder in found.items() if e in set(epochs)}
    if not chosen:
        names = [epoch_name(e) for e in found]
        raise LimaError(f"{run}: no epoch adapters among epochs {list(epochs)}; found {names or 'none'} "
                        "(train more epochs, or choose them with --epochs)")
    if against == "each-other" and len(chosen) < 2:
        raise LimaError(f"{run}: only {next(iter(chosen))} found; --against each-other needs two epochs")
    return chosen


def answer_epochs(adapters: dict[str, Path], items: list[dict], out: Path, with_base: bool,
                  **sampling) -> dict[str, Path]:
    """{"epoch-05": answers file, ..., "base": answers file}: every prompt answered by each epoch, one
    model loaded at a time; the base model is the first epoch's load with the adapter switched off."""
    answers = {}
    for name, folder in adapters.items():
        model = get_answerer(str(folder), name=name)
        answers[name] = out / f"answers-{name}.jsonl"
        generate_answers(model, items, answers[name], source=answerer_source(str(folder)), **sampling)
        if with_base and "base" not in answers:
            answers["base"] = out / "answers-base.jsonl"
            generate_answers(LocalModel(engine=model.engine, name="base", use_adapter=False), items, answers["base"],
                             source=f"the base of {folder.parent.resolve()}", **sampling)
        del model  # the next epoch's load replaces this one
    return answers


def judge_pairs(judge, answers: dict[str, Path], pairs: list[tuple[str, str]], out: Path) -> dict[str, dict]:
    """{epoch: {win, tie, loss, unparsed}} summed over the pairs it is in, each pair judged in both orders."""
    points = {}
    for a, b in pairs:
        counts = win_tie_loss(pairwise_file(judge, answers[a], answers[b], out / f"pairwise-{a}-vs-{b}.jsonl"))
        mine = points.setdefault(a, dict.fromkeys(OUTCOMES, 0))
        for outcome in OUTCOMES:
            mine[outcome] += counts[outcome]
        if b != "base":  # b's view of the same comparisons
            theirs = points.setdefault(b, dict.fromkeys(OUTCOMES, 0))
            for outcome in OUTCOMES:
                theirs[MIRRORED[outcome]] += counts[outcome]
    return points


def score_table(names: list[str], points: dict[str, dict]) -> list[dict]:
    """One row per epoch: its counts and score = (wins + ties / 2) / readable comparisons (None if none)."""
    table = []
    for name in names:
        c = points[name]
        readable = c["win"] + c["tie"] + c["loss"]
        table.append({"epoch": name, **c, "score": (c["win"] + c["tie"] / 2) / readable if readable else None})
    return table


def ranked(table: list[dict]) -> list[dict]:
    """Best score first; an unscorable epoch last; equal scores keep the earlier epoch (less training) first."""
    return sorted(table, key=lambda r: (r["score"] is None, -(r["score"] or 0)))


def write_selection(result: dict, ranking: list[dict], prompts: str, out: Path) -> None:
    """select-epoch.json (the result) and select-epoch.md (the ranking as a table) in `out`."""
    write_json(out / "select-epoch.json", result)
    against = "the base model" if result["against"] == "base" else "every other epoch"
    lines = [f"# Epoch selection for {result['run']}", "",
             f"Judge: {result['judge']}; {result['prompts']} prompts from {prompts}; each epoch against {against}, "
             "both orders per prompt. score = (wins + ties/2) / readable comparisons.", "",
             "| epoch | win | tie | loss | unparsed | score |", "|---|---|---|---|---|---|"]
    for r in ranking:
        score = "-" if r["score"] is None else f"{r['score']:.2f}"
        lines.append(f"| {r['epoch']} | {r['win']} | {r['tie']} | {r['loss']} | {r['unparsed']} | {score} |")
    lines += ["", f"Best: **{result['best'] or 'none (no readable verdicts)'}**"]
    write_text(out / "select-epoch.md", "\n".join(lines) + "\n")
