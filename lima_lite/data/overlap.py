"""Contamination check: evaluation prompts that also appear, exactly or nearly, in the training data.

    $ lima-lite data overlap data/train.jsonl embedded:dev.jsonl --out overlap.jsonl
    12 of 50 eval prompts overlap the training data (3 exact, 9 near); pairs in overlap.jsonl
    >>> pairs = overlapping_pairs(train_prompts, eval_prompts)          # [{"kind": "exact"|"near", ...}]

A prompt is a training conversation's user turns (every one of them: a multi-turn dialogue can hold an
eval prompt in its third turn) or an eval prompts file's prompt (any file `lima-lite eval generate` reads).
Exact: the same text once normalised (lima_lite.text.fold: Unicode NFKC, so fullwidth letters are plain
ones; zero-width characters and soft hyphens removed; Cyrillic and Greek look-alikes folded to Latin;
casefolded), with punctuation, runs of space and courtesy words ("please") removed (a SHA-256 of that).
Near: MinHash over word 2-grams (128 permutations) finds candidates with an estimated Jaccard similarity
>= `threshold` (0.5 by default); the true Jaccard of the two 2-gram sets then decides, so the estimate's
noise never reports a pair. One word changed in a 20-word prompt keeps 17 of its 19 2-grams (Jaccard
0.81), three changed words keep about 13 (0.52); two different questions cast in one template ("What's the
difference between X and Y?") share at most 0.38 on the embedded samples. A prompt of a few words
reworded in several places falls below the threshold: lower it to search wider.
"""

import argparse
import functools
import hashlib
import re
from pathlib import Path

from lima_lite import LimaError
from lima_lite.conversations import load_conversations, read_prompts, resolve_data_path
from lima_lite.files import add_overwrite_flag, check_outputs, write_jsonl
from lima_lite.layout import find_run, is_adapter, is_run, read_run
from lima_lite.text import fold

_WORDS = re.compile(r"\w+")
NGRAM = 2  # word 2-grams: one changed word costs a prompt 2 of its n-grams, so rewordings stay similar
NUM_PERM = 128
THRESHOLD = 0.5


# Courtesy words that change nothing a prompt asks: "Please, how do I ...?" duplicates "How do I ...?".
FILLER = {"please", "pls", "plz", "kindly"}


def normalized(text: str) -> str:
    """lima_lite.text.fold (NFKC, invisible characters removed, look-alike letters folded, casefold), then words
    only, courtesy words (FILLER) left out, single spaces: "What is  LoRA?", "what is lora", "Ｗhat is\u200b
    LoRA?" and "Please, what is LoRA?" are one prompt."""
    return " ".join(word for word in _WORDS.findall(fold(text)) if word not in FILLER)


def ngrams(text: str, n: int = NGRAM) -> set[str]:
    words = normalized(text).split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def train_prompts(name: str) -> list[dict]:
    """[{"id", "prompt"}] for every user turn of every training conversation (ids `ID` or `ID#turn`)."""
    found = []
    for example in load_conversations(name):
        users = [m["content"] for m in example["messages"] if m["role"] == "user"]
        for turn, text in enumerate(users, 1):
            found.append({"id": str(example["id"]) if len(users) == 1 else f"{example['id']}#{turn}", "prompt": text})
    return found


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def overlapping_pairs(train: list[dict], evals: list[dict], threshold: float = THRESHOLD, seed: int = 0) -> list[dict]:
    """Every (eval prompt, training prompt) pair that is an exact or near duplicate, in eval-prompt order;
    an eval prompt with an exact match is not searched for near ones as well."""
    from datasketch import MinHashLSH

    if not 0 < threshold <= 1:
        raise LimaError(f"threshold: expected a Jaccard similarity in (0, 1], got {threshold}")
    by_hash: dict[bytes, list[dict]] = {}
    lsh, shingles = MinHashLSH(threshold=threshold, num_perm=NUM_PERM), {}
    for index, row in enumerate(train):
        by_hash.setdefault(hashlib.sha256(normalized(row["prompt"]).encode()).digest(), []).append(row)
        shingles[index] = ngrams(row["prompt"])
        lsh.insert(index, signature(shingles[index], seed))
    pairs = []
    for row in evals:
        exact = by_hash.get(hashlib.sha256(normalized(row["prompt"]).encode()).digest(), [])
        for match in exact:
            pairs.append(pair("exact", row, match, 1.0))
        if exact:
            continue
        mine = ngrams(row["prompt"])
        for index in sorted(lsh.query(signature(mine, seed))):
            similarity = jaccard(mine, shingles[index])
            if similarity >= threshold:
                pairs.append(pair("near", row, train[index], similarity))
    return pairs


def signature(grams: set[str], seed: int):
    from datasketch import MinHash

    permutations, scheme = _permutations(seed)
    minhash = MinHash(num_perm=NUM_PERM, seed=seed, permutations=permutations, scheme=scheme)
    minhash.update_batch([g.encode("utf-8") for g in grams])
    return minhash


@functools.cache
def _permutations(seed: int):
    """The seed's permutations, drawn once: a signature drawing its own took 0.45 ms against 0.034 ms, 23 s over
    52,000 prompts (docs/benchmarks.md, "data stats"); the signatures are the same."""
    from datasketch import MinHash

    minhash = MinHash(num_perm=NUM_PERM, seed=seed)
    return minhash.permutations, minhash.scheme


def duplicate_pairs(prompts: list[dict], threshold: float = THRESHOLD, seed: int = 0) -> list[dict]:
    """Prompts of one set that repeat an earlier one, matched as `overlapping_pairs` matches an eval prompt to
    training prompts: one pair per repeating prompt, with the first earlier prompt it equals (exact) or else the
    earlier one most like it (near). Prompts of one `group` (a conversation's own turns) never pair."""
    from datasketch import MinHashLSH

    if not 0 < threshold <= 1:
        raise LimaError(f"threshold: expected a Jaccard similarity in (0, 1], got {threshold}")
    by_hash: dict[bytes, list[dict]] = {}
    lsh, shingles, pairs = MinHashLSH(threshold=threshold, num_perm=NUM_PERM), {}, []
    for index, row in enumerate(prompts):
        key = hashlib.sha256(normalized(row["prompt"]).encode()).digest()
        same = by_hash.setdefault(key, [])
        earlier = next((r for r in same if r["group"] != row["group"]), None)
        same.append(row)
        if earlier is not None:
            pairs.append({"kind": "exact", "similarity": 1.0, "id": row["id"], "of": earlier["id"]})
            continue
        if len(same) > 1:
            continue  # the same text as a turn of its own conversation: that turn stands for both
        mine = ngrams(row["prompt"])
        minhash = signature(mine, seed)
        best = None
        for other in lsh.query(minhash):
            similarity = jaccard(mine, shingles[other])
            if prompts[other]["group"] != row["group"] and similarity >= threshold and (
                    best is None or (similarity, -other) > (best[0], -best[1])):
                best = (similarity, other)
        if best is not None:
            pairs.append({"kind": "near", "similarity": round(best[0], 3), "id": row["id"], "of": prompts[best[1]]["id"]})
        lsh.insert(index, minhash)
        shingles[index] = mine
    return pairs


def pair(kind: str, evaluated: dict, trained: dict, similarity: float) -> dict:
    return {"kind": kind, "similarity": round(similarity, 3), "eval_id": evaluated["id"],
            "eval_prompt": evaluated["prompt"], "train_id": trained["id"], "train_prompt": trained["prompt"]}


def overlap_summary(pairs: list[dict], n_eval: int) -> str:
    """One line: how many eval prompts overlap, split into exact and near."""
    exact = {p["eval_id"] for p in pairs if p["kind"] == "exact"}
    near = {p["eval_id"] for p in pairs if p["kind"] == "near"} - exact
    return (f"{len(exact) + len(near)} of {n_eval} eval prompts overlap the training data "
            f"({len(exact)} exact, {len(near)} near)")


def find_overlap(train: str, evals: str | list[dict], out: str | Path | None = None,
                 threshold: float = THRESHOLD) -> tuple[list[dict], str]:
    """(pairs, one-line summary) for a training data file and an eval prompts file (or its rows already
    read); pairs written to `out`."""
    eval_rows = read_prompts(evals) if isinstance(evals, str) else evals
    pairs = overlapping_pairs(train_prompts(train), eval_rows, threshold)
    if out is not None:
        write_jsonl(pairs, out)
    return pairs, overlap_summary(pairs, len(eval_rows))


def run_overlap_warning(spec: str, prompts: str, rows: list[dict] | None = None) -> str | None:
    """For `eval generate`: a one-line warning when the model's run names its training data (run.json)
    and some of the prompts (`rows`, else all of the file `prompts`) overlap it; None when they do not or
    the training data is not known or not at hand."""
    path = Path(spec)
    if not (is_adapter(path) or is_run(path)):
        return None
    _, run = find_run(path)
    settings = read_run(run) if run else None
    data = settings.data["dataset_name"] if settings else None
    if not data:
        return None

    if not (resolve_data_path(data) or Path(data)).is_file():
        return None  # a Hub dataset (GAIR/lima) is not read here: no network during generation
    pairs, summary = find_overlap(data, rows if rows is not None else prompts)
    if not pairs:
        return None
    return (f"warning: {summary} of {data} (run.json); answers to them measure memory, not skill "
            f"(list: lima-lite data overlap {data} {prompts} --out overlap.jsonl)")


def overlap_main(args) -> int:
    """`data overlap`: the pairs file and one summary line."""
    out = args.out or Path(f"{Path(args.eval).name.split(':')[-1].rsplit('.', 1)[0]}.overlap.jsonl")
    check_outputs([out], [args.train, args.eval], args.overwrite)
    pairs, summary = find_overlap(args.train, args.eval, out, args.threshold)
    print(f"{summary}; {len(pairs)} pair(s) in {out}")
    return 0


def add_parser(sub) -> None:
    """`data overlap` under `lima-lite data` (lima_lite.data)."""
    o = sub.add_parser("overlap", help="eval prompts that duplicate training prompts, exactly or nearly",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    o.add_argument("train", metavar="TRAIN", help="training data (any form lima_lite trains on; every user turn)")
    o.add_argument("eval", metavar="EVAL", help="eval prompts (any file `lima-lite eval generate` reads)")
    o.add_argument("--out", type=Path, help="overlapping pairs JSONL (default: EVAL's name + .overlap.jsonl here)")
    o.add_argument("--threshold", type=float, default=THRESHOLD,
                   help=f"near duplicate: word 2-gram Jaccard >= this (default {THRESHOLD})")
    add_overwrite_flag(o)
    o.set_defaults(func=overlap_main)
