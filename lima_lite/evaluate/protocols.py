"""The judging protocols of LIMA and its successors, each a function of a judge and answers.

    >>> judge = get_judge("gpt-4o@https://api.openai.com/v1")
    >>> record = pairwise_judge(judge, ours_row, baseline_row)      # asked in both orders
    >>> record["outcome"]                                            # "win", "tie", "loss" or None
    'win'
    >>> win_tie_loss(records)
    {'win': 31, 'tie': 12, 'loss': 7, 'unparsed': 0, 'n': 50}
    >>> tie_discounted("adapter", "tie")                             # LIMA's agreement score
    0.5

Answer rows are `{"id", "prompt", "answer", "model", "finish_reason"}` (what `lima-lite eval generate`
writes). Judging prompts are the files in `lima_lite/evaluate/prompts/`; `{prompt}`, `{answer}`,
`{answer_a}`, `{answer_b}` and `{question}` are filled in. A verdict is read strictly from the judge's
last non-empty line (an optional `Verdict:` label, surrounding `*`, quotes and a final full stop are
allowed); a reply that does not end in one of the choices is asked again once with a reminder, and if
it still cannot be read the verdict is None and counted as unparsed, never guessed.
"""

import math
import re
import string
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean, median

from lima_lite import LimaError

PROMPTS = Path(__file__).resolve().parent / "prompts"
PAIRWISE_CHOICES = ("A", "B", "tie")
LIKERT_CHOICES = ("1", "2", "3", "4", "5", "6")
ABSOLUTE_CHOICES = ("Fail", "Pass", "Excellent")
REMINDER = "\n\nYour reply could not be read. Reply with only one of these and nothing else: {choices}"
_LABEL = re.compile(r"^(final verdict|verdict|final answer|answer|rating|grade|score)\s*[:=]\s*", re.IGNORECASE)
_DECOR = "*_`\"' \t"

# The Judge tab of ui/app.py saves one line per vote with exactly these fields (see human_vote_record).
HUMAN_VOTE_FIELDS = ("prompt", "model_a", "model_b", "answer_a", "answer_b", "vote", "winner", "rater", "time")
HUMAN_VOTES = ("a", "b", "tie")


def load_prompt(protocol: str) -> str:
    """The judging prompt of a protocol (pairwise, likert, absolute, knowledge), from the package."""
    path = PROMPTS / f"{protocol}.txt"
    if not path.is_file():
        raise LimaError(f"{path}: no prompt for protocol {protocol!r}; have {sorted(p.stem for p in PROMPTS.glob('*.txt'))}")
    return path.read_text(encoding="utf-8")


def render(template: str, **fields: str) -> str:
    """Fill `{name}` slots in one pass, so braces inside answers are left alone."""
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m[1], m[0]), template)


def parse_verdict(text: str, choices: tuple[str, ...]) -> str | None:
    """The choice on the reply's last non-empty line, or None. Case does not matter; nothing is guessed."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1].strip(_DECOR)
    last = _LABEL.sub("", last).strip(_DECOR).rstrip(".").strip(_DECOR)
    return next((choice for choice in choices if last.lower() == choice.lower()), None)


def ask(judge, prompt: str, choices: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """(verdict or None, the judge's raw replies): one retry with a reminder when the first can't be read."""
    replies = [judge.complete(prompt)]
    verdict = parse_verdict(replies[0], choices)
    if verdict is None:
        replies.append(judge.complete(prompt + REMINDER.format(choices=", ".join(choices))))
        verdict = parse_verdict(replies[1], choices)
    return verdict, replies


def pairwise_judge(judge, ours: dict, theirs: dict, template: str | None = None,
                   judge_prompt: str = "pairwise") -> dict:
    """Judge two answers to one prompt in both orders (Long Is More): win only if both orders prefer ours,
    loss only if both prefer theirs, tie otherwise. An unreadable verdict in either order -> outcome None."""
    template = template or load_prompt("pairwise")
    orders = [(ours, theirs), (theirs, ours)]
    verdicts, raw = [], []
    for first, second in orders:
        verdict, replies = ask(judge, render(template, prompt=ours["prompt"], answer_a=first["answer"],
                                             answer_b=second["answer"]), PAIRWISE_CHOICES)
        verdicts.append(verdict)
        raw.append(replies)
    # what each order's verdict says about *our* answer: in the second order ours is shown as B
    prefers = [{"A": "ours", "B": "theirs", "tie": "tie"}.get(verdicts[0]),
               {"A": "theirs", "B": "ours", "tie": "tie"}.get(verdicts[1])]
    if None in prefers:
        outcome = None
    elif prefers == ["ours", "ours"]:
        outcome = "win"
    elif prefers == ["theirs", "theirs"]:
        outcome = "loss"
    else:
        outcome = "tie"
    winner = {"win": ours["model"], "loss": theirs["model"], "tie": "tie", None: None}[outcome]
    name = judge.name if judge_prompt == "pairwise" else length_penalised_label(judge.name)
    return {"protocol": "pairwise", "judge": name, "judge_prompt": judge_prompt, "id": ours["id"],
            "prompt": ours["prompt"], "model_a": ours["model"], "model_b": theirs["model"], "answer_a": ours["answer"],
            "answer_b": theirs["answer"], "verdicts": verdicts, "raw": raw, "outcome": outcome, "winner": winner}


def length_penalised_label(judge_name: str) -> str:
    """The judge's name for verdicts given under the length-penalising prompt: a rater of its own, so the
    report's agreement table sets the two judgments side by side."""
    return f"{judge_name} [length-penalised]"


def likert_judge(judge, samples: list[dict], template: str | None = None) -> dict:
    """Helpfulness 1-6 for each sampled answer to one prompt (LIMA §5 rates 5 samples per prompt);
    `score` is the mean of the readable ratings, None if none could be read."""
    template = template or load_prompt("likert")
    scores, raw = [], []
    for row in samples:
        verdict, replies = ask(judge, render(template, prompt=row["prompt"], answer=row["answer"]), LIKERT_CHOICES)
        scores.append(int(verdict) if verdict else None)
        raw.append(replies)
    readable = [s for s in scores if s is not None]
    return {"protocol": "likert", "judge": judge.name, "id": samples[0]["id"], "prompt": samples[0]["prompt"],
            "model": samples[0]["model"], "answers": [r["answer"] for r in samples], "scores": scores, "raw": raw,
            "score": sum(readable) / len(readable) if readable else None, "unparsed": len(scores) - len(readable)}


def absolute_judge(judge, row: dict, template: str | None = None) -> dict:
    """Fail / Pass / Excellent for one answer (LIMA §4.3)."""
    template = template or load_prompt("absolute")
    verdict, replies = ask(judge, render(template, prompt=row["prompt"], answer=row["answer"]), ABSOLUTE_CHOICES)
    return {"protocol": "absolute", "judge": judge.name, "id": row["id"], "prompt": row["prompt"],
            "model": row["model"], "answer": row["answer"], "grade": verdict, "raw": replies}


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def knowledge_score(answer: str, gold: list[str]) -> dict:
    """exact: the whole answer equals a gold answer; contains: a gold answer appears in it (word-bounded)."""
    said = normalize_answer(answer)
    golds = [normalize_answer(g) for g in gold]
    return {"exact": said in golds,
            "contains": any(g and re.search(rf"(^| ){re.escape(g)}( |$)", said) for g in golds)}


# ---------------------------------------------------------------- summaries


def win_tie_loss(records: list[dict]) -> dict:
    counts = {"win": 0, "tie": 0, "loss": 0, "unparsed": 0}
    for record in records:
        counts[record["outcome"] or "unparsed"] += 1
    return {**counts, "n": len(records)}


def mean_ci95(values: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high): Student t interval over the values (prompts); None without values."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)  # two-sided 95%: 12.706 for 2 values, 2.045 for 30
    return mean, mean - half, mean + half


def words(text: str) -> int:
    """An answer's length in words (whitespace-separated), the same for every model's tokenizer."""
    return len(text.split())


def length_summary(records: list[dict]) -> dict:
    """Mean and median answer length in words of model_a's and model_b's answers in pairwise records."""
    out = {"n": len(records)}
    for side in ("a", "b"):
        lengths = [words(r[f"answer_{side}"]) for r in records]
        out[f"mean_{side}"] = mean(lengths) if lengths else None
        out[f"median_{side}"] = median(lengths) if lengths else None
    return out


OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def length_controlled(records: list[dict]) -> dict:
    """Raw and length-controlled win rate of model_a, AlpacaEval 2.0's way.

    Raw: (wins + ties / 2) / judged. Length-controlled: a logistic regression of the outcome (win 1, loss 0,
    tie half of each) on tanh(length difference in words / its standard deviation), read at a length
    difference of 0: the win rate the judge would give if both answers were equally long. The 95% interval
    is the Wald interval of the intercept (from the fit's Fisher information), mapped through the sigmoid.
    `lc` is None when nothing is judged, or every outcome is the same or follows length exactly (then the
    fit has no finite solution).
    """
    import numpy as np
    from scipy.special import expit

    judged = [r for r in records if r.get("outcome") in OUTCOME_SCORE]
    result = {"n": len(judged), "raw": None, "lc": None, "low": None, "high": None, "slope": None}
    if not judged:
        return result
    scores = np.array([OUTCOME_SCORE[r["outcome"]] for r in judged])
    result["raw"] = float(scores.mean())
    if scores.min() == scores.max():
        return result
    difference = np.array([words(r["answer_a"]) - words(r["answer_b"]) for r in judged], dtype=float)
    spread = difference.std()
    x = np.tanh(difference / spread) if spread > 0 else np.zeros_like(difference)
    # a tie is half a win and half a loss: each outcome becomes two rows weighted by its score
    features = np.concatenate([x, x])[:, None]
    labels = np.concatenate([np.ones_like(scores), np.zeros_like(scores)])
    weights = np.concatenate([scores, 1 - scores])
    intercept, slope = fit_logistic(features, labels, weights, with_slope=spread > 0)
    design = np.column_stack([np.ones_like(x), x]) if spread > 0 else np.ones((len(x), 1))
    if abs(slope) > SEPARATED:
        return result  # the outcome is a step function of length: no finite fit to read at equal length
    p = expit(intercept + slope * x)
    information = design.T @ (design * (p * (1 - p))[:, None])  # weights of a row pair sum to 1
    se = float(np.sqrt(np.linalg.inv(information)[0, 0]))
    result.update(lc=float(expit(intercept)), low=float(expit(intercept - 1.96 * se)),
                  high=float(expit(intercept + 1.96 * se)), slope=slope)
    return result


# A slope this steep (odds times e^20 across one standard deviation of length difference) only comes from
# judgments that length separates perfectly, where the maximum-likelihood fit runs off to infinity.
SEPARATED = 20.0


def fit_logistic(features, labels, weights, with_slope: bool) -> tuple[float, float]:
    """(intercept, slope) of an unpenalised weighted logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression

    if not with_slope:  # every length difference equal: only the intercept is identified
        features = features * 0
    model = LogisticRegression(penalty=None, tol=1e-10, max_iter=1000).fit(features, labels, sample_weight=weights)
    return float(model.intercept_[0]), float(model.coef_[0, 0]) if with_slope else 0.0


def outcome_agreement(first: list[dict], second: list[dict]) -> dict:
    """How often two pairwise judgments of the same comparisons give the same outcome (Long Is More: a
    length-penalising prompt agreed 94%), and LIMA's tie-discounted agreement, over items both judged."""
    key = lambda r: (r["id"], r["model_a"], r["model_b"])  # noqa: E731
    theirs = {key(r): r["outcome"] for r in second if r.get("outcome")}
    shared = [(r["outcome"], theirs[key(r)]) for r in first if r.get("outcome") and key(r) in theirs]
    if not shared:
        return {"n": 0, "same": None, "tie_discounted": None}
    return {"n": len(shared), "same": sum(a == b for a, b in shared) / len(shared),
            "tie_discounted": sum(tie_discounted(a, b) for a, b in shared) / len(shared)}


def likert_summary(records: list[dict]) -> dict:
    """Mean helpfulness over prompts (each prompt's samples averaged first) with its 95% interval."""
    means = [r["score"] for r in records if r["score"] is not None]
    ci = mean_ci95(means)
    return {"mean": ci and ci[0], "low": ci and ci[1], "high": ci and ci[2], "prompts": len(means),
            "ratings": sum(len(r["scores"]) for r in records), "unparsed": sum(r["unparsed"] for r in records)}


def absolute_mix(records: list[dict]) -> dict:
    counts = {grade: 0 for grade in ABSOLUTE_CHOICES} | {"unparsed": 0}
    for record in records:
        counts[record["grade"] or "unparsed"] += 1
    return {**counts, "n": len(records)}


def knowledge_summary(records: list[dict]) -> dict:
    n = len(records)
    return {"n": n, "exact": sum(r["exact"] for r in records), "contains": sum(r["contains"] for r in records),
            "length_stops": sum(r.get("finish_reason") == "length" for r in records)}


# ---------------------------------------------------------------- people, and agreement between raters


def human_vote_record(prompt: str, model_a: str, model_b: str, answer_a: str, answer_b: str, vote: str,
                      rater: str, time: str | None = None) -> dict:
    """One line of the Judge tab's JSONL: `vote` is "a", "b" or "tie" for the answers as shown;
    `winner` is the winning model's name (or "tie"), so the order shown does not matter afterwards."""
    if vote not in HUMAN_VOTES:
        raise LimaError(f"vote: expected one of {HUMAN_VOTES}, got {vote!r}")
    if time is None:
        time = datetime.now(timezone.utc).isoformat(timespec="seconds")
    winner = {"a": model_a, "b": model_b, "tie": "tie"}[vote]
    return {"prompt": prompt, "model_a": model_a, "model_b": model_b, "answer_a": answer_a, "answer_b": answer_b,
            "vote": vote, "winner": winner, "rater": rater, "time": time}


def check_human_vote(row: dict, where: str) -> None:
    """Raise a LimaError naming the file:line and the field when a vote line is not in the Judge tab's form."""
    if not isinstance(row, dict):
        raise LimaError(f"{where}: a vote must be a JSON object")
    for name in HUMAN_VOTE_FIELDS:
        if name == "time":
            continue
        if not isinstance(row.get(name), str) or (name != "answer_a" and name != "answer_b" and not row[name]):
            raise LimaError(f"{where}: {name}: missing or not a string (a vote has {', '.join(HUMAN_VOTE_FIELDS)})")
    if row["vote"] not in HUMAN_VOTES:
        raise LimaError(f"{where}: vote: expected one of {HUMAN_VOTES}, got {row['vote']!r}")
    expected = {"a": row["model_a"], "b": row["model_b"], "tie": "tie"}[row["vote"]]
    if row["winner"] != expected:
        raise LimaError(f"{where}: winner: vote {row['vote']!r} means winner {expected!r}, found {row['winner']!r}")


def human_records(votes: list[dict], ours: str | None = None) -> list[dict]:
    """Votes -> pairwise-shaped records (protocol "human", judge "human:RATER"), oriented so `model_a` is
    `ours` (or the alphabetically first model of each pair when `ours` is None)."""
    records = []
    for number, vote in enumerate(votes, 1):
        pair = sorted((vote["model_a"], vote["model_b"]))
        if ours is not None and ours not in pair:
            raise LimaError(f"vote {number}: neither model_a nor model_b is {ours!r} ({pair[0]!r} vs {pair[1]!r})")
        a = ours if ours is not None else pair[0]
        b = pair[1] if a == pair[0] else pair[0]
        flip = a != vote["model_a"]
        answer_a, answer_b = (vote["answer_b"], vote["answer_a"]) if flip else (vote["answer_a"], vote["answer_b"])
        outcome = "tie" if vote["winner"] == "tie" else "win" if vote["winner"] == a else "loss"
        records.append({"protocol": "human", "judge": f"human:{vote['rater']}", "id": vote.get("id", f"vote-{number}"),
                        "prompt": vote["prompt"], "model_a": a, "model_b": b, "answer_a": answer_a,
                        "answer_b": answer_b, "outcome": outcome, "winner": vote["winner"], "time": vote.get("time")})
    return records


def tie_discounted(x: str, y: str) -> float:
    """LIMA's agreement: 1 if the two raters say the same, 0.5 if exactly one says tie, 0 otherwise."""
    if x == y:
        return 1.0
    return 0.5 if (x == "tie") != (y == "tie") else 0.0


def preferences(records: list[dict]) -> dict[str, dict[tuple, str]]:
    """rater -> {(prompt, model pair): winner or "tie"} from pairwise and human records (unparsed left out)."""
    table: dict[str, dict[tuple, str]] = {}
    for record in records:
        if record["protocol"] in ("pairwise", "human") and record.get("winner"):
            key = (record["prompt"], *sorted((record["model_a"], record["model_b"])))
            table.setdefault(record["judge"], {})[key] = record["winner"]
    return table


def agreement(first: dict[tuple, str], second: dict[tuple, str]) -> tuple[float | None, int]:
    """(mean tie-discounted accuracy, number of shared items) between two raters' preferences."""
    shared = first.keys() & second.keys()
    if not shared:
        return None, 0
    return sum(tie_discounted(first[k], second[k]) for k in shared) / len(shared), len(shared)


def agreement_matrix(records: list[dict]) -> tuple[list[str], dict[tuple[str, str], tuple[float | None, int]]]:
    """(raters, {(rater, rater): (agreement, shared items)}) for every pair of raters, people or judges."""
    table = preferences(records)
    raters = sorted(table)
    return raters, {(a, b): agreement(table[a], table[b]) for a in raters for b in raters}
