"""Build LIMA-style training sets from public dumps, and choose subsets of them.

    $ lima-lite curate stackexchange --dump dumps/ --out data/stackexchange.jsonl
    $ lima-lite curate wikihow --csv wikihowAll.csv --out data/wikihow.jsonl
    $ lima-lite curate reddit --submissions RS.zst --comments RC.zst --out data/writingprompts.jsonl
    $ lima-lite select --strategy longest --k 1000 data/all.jsonl data/longest-1k.jsonl
    $ lima-lite data mix data/single-turn.jsonl data/dialogues.jsonl --out data/lima-1030.jsonl

Every run writes its output atomically and a report next to it (`OUT.report.md`, `.report.json`,
`.lengths.png`): counts at every step and filter, duplicates removed, the source mix, and sample kept
and dropped examples with the reason.
"""

import importlib
import sys

SOURCES = {
    "stackexchange": ("lima_lite.curate.stackexchange", "questions and top answers from the Stack Exchange data dump"),
    "wikihow": ("lima_lite.curate.wikihow", "how-to articles from the wikiHow dataset CSV (wikihowAll.csv)"),
    "reddit": ("lima_lite.curate.reddit", "r/WritingPrompts stories and r/AskReddit test prompts (Pushshift NDJSON)"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SOURCES:
        lines = ["usage: lima-lite curate SOURCE [ARGS ...]", ""]
        lines += [f"  {name:<14} {summary}" for name, (_, summary) in SOURCES.items()]
        lines += ["", "Run `lima-lite curate SOURCE --help` for a source's arguments."]
        known = not argv or argv[0] in ("-h", "--help")
        print(("" if known else f"error: unknown source {argv[0]!r}\n\n") + "\n".join(lines),
              file=sys.stdout if known else sys.stderr)
        return 0 if known else 2
    return importlib.import_module(SOURCES[argv[0]][0]).main(argv[1:])
