"""What every curate/select/mix run writes next to its output, and the shared plumbing those runs stream through.

    >>> funnel = Funnel(seed=0)
    >>> for number, line in read_lines(Path("Posts.xml"), "math: pass 1"): ...
    >>> write_report("out/se.jsonl", funnel, before=[1830, 950], kept=[...], settings={"seed": 0}, seed=0)

For `out/se.jsonl` the report is `out/se.report.md` (for people), `out/se.report.json` (for programs) and
`out/se.lengths.png` (response-length histograms before and after). It holds the count at every step and
every filter, the exact and near-duplicate removals, the source/site mix, and 5 random kept and 5 random
dropped examples with the rule that dropped them; under "Dropped, by rule", 3 random dropped titles or texts
of each rule (so a rule that is too strict shows at a glance) and, for the wording rules, their precision
and recall measured on labelled examples (lima_lite.curate.filters.RULE_QUALITY).
"""

import hashlib
import io
import json
import random
import re
from collections import Counter
from pathlib import Path

from lima_lite import LimaError
from lima_lite.curate.filters import RULE_QUALITY
from lima_lite.files import save_figure, write_json, write_text
from lima_lite.plots import pyplot
from lima_lite.text import fold

SHOWN = 5
SHOWN_PER_RULE = 3
SNIPPET = 400
LISTED = 100


def response_text(example: dict) -> str:
    """All assistant turns of a conversation, joined (what "response length" means for multi-turn data)."""
    return "\n\n".join(m["content"] for m in example["messages"] if m["role"] == "assistant")


def example_hash(example: dict) -> str:
    text = json.dumps([[m["role"], m["content"]] for m in example["messages"]], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Funnel:
    """Counts at every step, drops by rule, bad input lines, and a seeded sample of dropped examples."""

    def __init__(self, seed: int):
        self.counts: dict[str, int] = {}
        self.drops: Counter = Counter()
        self.drop_ids: dict[str, list[str]] = {}  # the first LISTED ids dropped by each rule
        self.bad_lines: list[str] = []
        self.bad_count = 0
        self._rng = random.Random(f"dropped-{seed}")
        self._seen_drops = 0
        self.dropped: list[dict] = []
        self.dropped_by_rule: dict[str, list[str]] = {}  # SHOWN_PER_RULE texts of each rule, reservoir-sampled
        self._rule_rng = random.Random(f"dropped-by-rule-{seed}")

    def count(self, step: str, n: int = 1) -> None:
        self.counts[step] = self.counts.get(step, 0) + n

    def drop(self, rule: str, example_id: str, text: str = "") -> None:
        """Count a drop under `rule`; keep it in the shown samples with reservoir sampling (seeded): 5 over all
        rules, and 3 of each rule."""
        self.drops[rule] += 1
        if len(self.drop_ids.setdefault(rule, [])) < LISTED:
            self.drop_ids[rule].append(example_id)
        self._seen_drops += 1
        _reservoir(self.dropped, {"id": example_id, "reason": rule, "text": text[:SNIPPET]}, SHOWN,
                   self._seen_drops, self._rng)
        _reservoir(self.dropped_by_rule.setdefault(rule, []), f"{example_id}: {text[:SNIPPET // 2]}",
                   SHOWN_PER_RULE, self.drops[rule], self._rule_rng)

    def bad(self, where: str, problem: str, on_error: str) -> None:
        """A corrupted input line: stop with its location, or count it and go on (`--on-error skip`).

        "ignore" is for a second pass over a file whose bad lines the first pass already reported."""
        if on_error == "ignore":
            return
        if on_error == "stop":
            raise LimaError(f"{where}: {problem} (nothing was written; rerun with --on-error skip to skip bad lines)")
        self.bad_count += 1
        if len(self.bad_lines) < 20:
            self.bad_lines.append(f"{where}: {problem}")


def _reservoir(sample: list, item, k: int, seen: int, rng: random.Random) -> None:
    """Keep a uniform random k of the `seen` items offered so far (Algorithm R)."""
    if len(sample) < k:
        sample.append(item)
    elif (slot := rng.randrange(seen)) < k:
        sample[slot] = item


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # every zstd frame starts with these 4 bytes (RFC 8878 §3.1.1)


def read_lines(path: Path, desc: str):
    """Yield (line number, bytes) from a plain or .zst file, with a progress bar over the bytes read from disk.

    A missing file, or a .zst that is not zstd (or is damaged), is a LimaError naming the file."""
    from tqdm import tqdm

    if not path.is_file():
        raise LimaError(f"{path}: file not found")
    size = path.stat().st_size
    with path.open("rb") as raw, tqdm(total=size, unit="B", unit_scale=True, desc=desc, mininterval=1.0) as bar:
        if path.name.endswith(".zst"):
            import zstandard

            if raw.read(4) != ZSTD_MAGIC:
                raise LimaError(f"{path}: not a zstd file (it does not start with zstd's magic number); "
                                "decompress it first or name it without .zst if it is plain NDJSON")
            raw.seek(0)
            # Pushshift archives are compressed with a 2 GiB window; the default limit refuses them.
            stream = io.BufferedReader(zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(raw))
            damaged = (zstandard.ZstdError,)
        else:
            stream, damaged = raw, ()
        done, number = 0, 0
        try:
            for number, line in enumerate(stream, 1):
                yield number, line
                if number % 4096 == 0:
                    position = raw.tell()
                    bar.update(position - done)
                    done = position
        except damaged as error:
            raise LimaError(f"{path}: damaged zstd data after line {number} ({error})") from None
        bar.update(size - done)


_WORDS = re.compile(r"\w+")


def dedupe(examples: list[dict], funnel: Funnel, threshold: float = 0.8, seed: int = 0) -> list[dict]:
    """Drop exact duplicates (same normalised prompt + response), then near-duplicate responses (MinHash LSH).

    Both match on lima_lite.text.fold (NFKC, invisible characters removed, look-alike letters folded, casefold).
    Near-duplicates: Jaccard similarity of word 5-shingles >= `threshold`, estimated with 64 permutations;
    the first example in the given order is kept.
    """
    from datasketch import MinHash, MinHashLSH

    seen, unique = set(), []
    for example in examples:
        key = hashlib.sha256(" ".join(_WORDS.findall(json.dumps(
            [fold(m["content"]) for m in example["messages"]], ensure_ascii=False))).encode()).digest()
        if key in seen:
            funnel.drop("exact_duplicate", example["id"], response_text(example))
            continue
        seen.add(key)
        unique.append(example)
    funnel.count("after exact-duplicate removal", len(unique))

    lsh, kept = MinHashLSH(threshold=threshold, num_perm=64), []
    for i, example in enumerate(unique):
        words = _WORDS.findall(fold(response_text(example)))
        shingles = {" ".join(words[j:j + 5]) for j in range(max(1, len(words) - 4))}
        signature = MinHash(num_perm=64, seed=seed)
        signature.update_batch([s.encode("utf-8") for s in shingles])
        if lsh.query(signature):
            funnel.drop("near_duplicate", example["id"], response_text(example))
            continue
        lsh.insert(str(i), signature)
        kept.append(example)
    funnel.count("after near-duplicate removal", len(kept))
    return kept


def _histogram_png(before: list[int], after: list[int], path: Path, unit: str) -> None:
    figure, axes = pyplot().subplots(1, 2, figsize=(10, 3.5), sharex=True)
    top = max([*before, *after, 1])
    bins = [top * i / 40 for i in range(41)]
    for axis, lengths, title in ((axes[0], before, "before filtering"), (axes[1], after, "kept")):
        axis.hist(lengths, bins=bins, color="#4c72b0")
        axis.set_title(f"{title} (n = {len(lengths):,})")
        axis.set_xlabel(f"response length ({unit})")
    axes[0].set_ylabel("examples")
    figure.tight_layout()
    save_figure(figure, path, dpi=90)


def report_paths(out: str | Path) -> dict[str, Path]:
    out = Path(out)
    stem = out.with_suffix("") if out.suffix else out
    return {"md": Path(f"{stem}.report.md"), "json": Path(f"{stem}.report.json"), "png": Path(f"{stem}.lengths.png")}


def with_report(out: str | Path, *more) -> list[Path]:
    """`out`, the report files written next to it and any further outputs: what files.check_outputs guards."""
    return [Path(out), *report_paths(out).values(), *(Path(m) for m in more if m is not None)]


def check_kept(kept: list, source, funnel: Funnel) -> None:
    """Curation that keeps nothing is an error, not an empty training file: one line saying where the
    examples went, before anything is written."""
    if kept:
        return
    counts = ", ".join(f"{step} {n}" for step, n in funnel.counts.items()) or "nothing read"
    drops = ", ".join(f"{rule} {n}" for rule, n in funnel.drops.most_common(3))
    bad = f", {funnel.bad_count} bad line(s) skipped" if funnel.bad_count else ""
    raise LimaError(f"{source}: no example was kept ({counts}{'; dropped: ' + drops if drops else ''}{bad}); "
                    "nothing written")


def write_report(out: str | Path, funnel: Funnel, before: list[int], kept: list[dict], settings: dict,
                 seed: int, unit: str = "characters", after: list[int] | None = None) -> dict[str, Path]:
    """Write the Markdown + JSON report and the length histograms next to `out`; return their paths.

    `before` and `after` are response lengths in `unit`; `after` defaults to the kept responses' characters
    (`select --by tokens` passes both in tokens)."""
    paths = report_paths(out)
    after = [len(response_text(e)) for e in kept] if after is None else after
    mix = dict(sorted(Counter(e.get("source", "?") for e in kept).items(), key=lambda kv: (-kv[1], kv[0])))
    shown = random.Random(f"kept-{seed}").sample(kept, min(SHOWN, len(kept)))
    kept_shown = [{"id": e["id"], "source": e.get("source"), "prompt": e["messages"][0]["content"][:SNIPPET],
                   "response": response_text(e)[:SNIPPET]} for e in shown]
    data = {
        "output": str(out), "settings": settings,
        "counts": funnel.counts, "dropped_by_rule": dict(funnel.drops),
        "dropped_ids": funnel.drop_ids, "dropped_shown_by_rule": funnel.dropped_by_rule,
        "rule_quality": {rule: {"precision": q[0], "recall": q[1], "labelled": q[2], "fixture": q[3]}
                         for rule, q in RULE_QUALITY.items() if rule in funnel.drops},
        "bad_lines": {"count": funnel.bad_count, "first": funnel.bad_lines},
        "mix": mix, "kept_examples": kept_shown, "dropped_examples": funnel.dropped,
        "lengths": {"unit": unit, "before": _summary(before), "after": _summary(after)},
        "histogram": paths["png"].name,
    }
    _histogram_png(before, after, paths["png"], unit)
    write_json(paths["json"], data)
    write_text(paths["md"], _markdown(data))
    return paths


def _summary(lengths: list[int]) -> dict:
    if not lengths:
        return {"n": 0}
    ordered = sorted(lengths)
    return {"n": len(ordered), "min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}


def _markdown(data: dict) -> str:
    lines = [f"# Report for {data['output']}", "", "## Settings", ""]
    lines += [f"- {key}: `{value}`" for key, value in data["settings"].items()]
    lines += ["", "## Counts at every step", "", "| step | count |", "|---|---:|"]
    lines += [f"| {step} | {n:,} |" for step, n in data["counts"].items()]
    lines += ["", "## Dropped, by rule", "", "| rule | dropped |", "|---|---:|"]
    lines += [f"| {rule} | {n:,} |" for rule, n in data["dropped_by_rule"].items()]
    for rule, shown in data["dropped_shown_by_rule"].items():
        quality = data["rule_quality"].get(rule)
        measured = (f" (precision {quality['precision']:.2f}, recall {quality['recall']:.2f} on "
                    f"{quality['labelled']} labelled examples)" if quality else "")
        lines += ["", f"`{rule}`{measured}, {len(shown)} of {data['dropped_by_rule'][rule]:,} dropped:", ""]
        lines += ["- " + " ".join(text.split()) for text in shown]
    if data["bad_lines"]["count"]:
        lines += ["", f"## Bad input lines skipped: {data['bad_lines']['count']}", ""]
        lines += [f"- {line}" for line in data["bad_lines"]["first"]]
    lines += ["", "## Source mix", "", "| source | examples |", "|---|---:|"]
    lines += [f"| {source} | {n:,} |" for source, n in data["mix"].items()]
    lengths = data["lengths"]
    lines += ["", f"## Response lengths ({lengths['unit']})", "",
              f"before: {lengths['before']}  ", f"after: {lengths['after']}", "", f"![lengths]({data['histogram']})"]
    lines += ["", "## 5 random kept examples", ""]
    for e in data["kept_examples"]:
        lines += [f"### {e['id']} ({e['source']})", "", "> " + e["prompt"].replace("\n", "\n> "), "",
                  e["response"] + " …", ""]
    lines += ["## 5 random dropped examples", ""]
    for e in data["dropped_examples"]:
        lines += [f"### {e['id']}: dropped by `{e['reason']}`", "", e["text"] + " …", ""]
    return "\n".join(lines) + "\n"
