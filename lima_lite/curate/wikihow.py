"""Build LIMA's wikiHow examples from the wikiHow dataset CSV (Koupaee & Wang, 2018: `wikihowAll.csv`).

    $ lima-lite curate wikihow --csv wikihowAll.csv --out data/wikihow.jsonl --n 200

The CSV has one article per row with the columns `headline` (the bold step summaries), `title`
("How to Sell Fine Art Online") and `text` (the article's paragraphs). An optional `category` column
(wikiHow's top-level category, e.g. joined from the site's category pages) lets the sampler do what LIMA
did: pick a category uniformly, then an article from it; without it every article is in "uncategorized".
The prompt is the title as a question ("How to Sell Fine Art Online?"), the answer the article text with
"This article ..." rewritten as "The following answer ...", and links, images and URLs removed. Rules,
each counted: `not_a_how_to_title`, `answer_too_short` / `answer_too_long` (--min-chars/--max-chars).
The file is streamed; each category keeps a seeded reservoir of at most --n articles.
"""

import argparse
import csv
import random
import sys
from collections import Counter
from pathlib import Path

from lima_lite import LimaError
from lima_lite.curate import filters
from lima_lite.curate.report import Funnel, check_kept, dedupe, with_report, write_report
from lima_lite.files import add_overwrite_flag, check_outputs, write_jsonl
from lima_lite.flags import DRAW_SEED, bounded


def rows(path: Path, funnel: Funnel, on_error: str):
    """Yield (line number, row) of the CSV with a progress bar over bytes; a malformed row is reported as file:line."""
    from tqdm import tqdm

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    if not path.is_file():
        raise LimaError(f"{path}: CSV file not found")
    with path.open(encoding="utf-8", newline="") as handle, \
            tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"{path.name}", mininterval=1.0) as bar:
        # strict: a file cut inside a quoted field is an error, not one last row holding the rest of the file
        reader = csv.DictReader(handle, strict=True)
        try:
            fieldnames = reader.fieldnames
        except UnicodeDecodeError:
            raise LimaError(f"{path}:1: not UTF-8 text") from None
        missing = {"title", "text"} - set(fieldnames or ())
        if missing:
            raise LimaError(f"{path}:1: header: missing column(s) {sorted(missing)}; expected wikihowAll.csv's "
                            "headline,title,text (and optionally category)")
        done, line = 0, 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError:
                raise LimaError(f"{path}: not UTF-8 text after line {reader.line_num}") from None
            except csv.Error as error:
                problem = ("the file ends inside a quoted field (cut or truncated?)" if "end of data" in str(error)
                           else f"malformed CSV row ({error})")
                funnel.bad(f"{path}:{line + 1}", problem, on_error)  # where the bad row starts
                if "end of data" in str(error):
                    break
                continue
            if None in row or any(value is None for value in row.values()):
                funnel.bad(f"{path}:{line + 1}", f"expected {len(reader.fieldnames)} columns", on_error)
            else:
                yield line + 1, row
            line = reader.line_num
            position = handle.buffer.tell()
            if position - done > 1 << 20:
                bar.update(position - done)
                done = position
        bar.update(path.stat().st_size - done)


def prompt_from_title(title: str) -> str | None:
    """"How to Sell Fine Art Online" -> "How to Sell Fine Art Online?"; None for a title that is not a how-to."""
    title = " ".join(title.split()).rstrip("0123456789").strip()
    if not title.lower().startswith("how to "):
        return None
    return title.rstrip(".?! ") + "?"


def curate_wikihow(path: Path, out: Path, n: int = 200, min_chars: int = filters.MIN_ANSWER_CHARS,
                   max_chars: int = filters.MAX_ANSWER_CHARS, seed: int = 0, on_error: str = "stop") -> list[dict]:
    funnel, rng = Funnel(seed), random.Random(seed)
    reservoirs, seen, before = {}, Counter(), []
    for number, row in rows(path, funnel, on_error):
        funnel.count("articles")
        category = (row.get("category") or "uncategorized").strip() or "uncategorized"
        example_id = f"wikihow/{category}/{number}"
        prompt = prompt_from_title(row["title"])
        if prompt is None:
            funnel.drop("not_a_how_to_title", example_id, row["title"])
            continue
        answer = filters.rewrite_this_article(filters.strip_plain_links(row["text"].replace("\n,", "\n")))
        before.append(len(answer))
        if not filters.length_ok(answer, min_chars, max_chars):
            funnel.drop("answer_too_short" if len(answer) < min_chars else "answer_too_long", example_id, answer)
            continue
        example = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                   "source": f"wikihow/{category}", "id": example_id}
        seen[category] += 1
        reservoir = reservoirs.setdefault(category, [])
        if len(reservoir) < n:
            reservoir.append(example)
        else:  # reservoir sampling keeps a uniform sample of n per category without holding the whole file
            slot = rng.randrange(seen[category])
            if slot < n:
                reservoir[slot] = example
    funnel.count("passed every rule", sum(seen.values()))
    pools = {c: dedupe(sorted(r, key=lambda e: e["id"]), Funnel(seed), seed=seed) for c, r in sorted(reservoirs.items())}
    kept = []
    for _ in range(n):  # LIMA: sample a category, then an article from it
        categories = [c for c in pools if pools[c]]
        if not categories:
            break
        pool = pools[rng.choice(categories)]
        kept.append(pool.pop(rng.randrange(len(pool))))
    kept = dedupe(kept, funnel, seed=seed)
    funnel.count("sampled", len(kept))
    check_kept(kept, path, funnel)
    write_jsonl(kept, out)
    settings = {"command": "curate wikihow", "csv": str(path), "n": n, "chars": [min_chars, max_chars], "seed": seed,
                "categories": dict(sorted(seen.items()))}
    write_report(out, funnel, before, kept, settings, seed)
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lima-lite curate wikihow", description=__doc__.split("\n\n")[1],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, required=True,
                        help="wikihowAll.csv (columns headline,title,text; optional category)")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL; the report is written next to it")
    parser.add_argument("--n", type=bounded(int, 1), default=200, help="articles to keep (LIMA: 200)")
    parser.add_argument("--min-chars", type=int, default=filters.MIN_ANSWER_CHARS, help="shortest article kept")
    parser.add_argument("--max-chars", type=int, default=filters.MAX_ANSWER_CHARS, help="longest article kept")
    parser.add_argument("--seed", type=DRAW_SEED, default=0, help="seed for the category and article draws")
    parser.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                        help="on a malformed CSV row: stop with its file:line, or count it in the report and go on")
    add_overwrite_flag(parser)
    args = parser.parse_args(argv)
    check_outputs(with_report(args.out), [args.csv], args.overwrite)
    kept = curate_wikihow(args.csv, args.out, args.n, args.min_chars, args.max_chars, args.seed, args.on_error)
    print(f"wrote {len(kept)} examples to {args.out}")
    return 0
