"""`lima-lite data mix`: assemble LIMA's 1,030-example dialogue variant (§6) from single-turn examples and dialogues.

    $ lima-lite data mix --single data/longest-1k.jsonl --dialogues data/dialogues.jsonl --out data/lima-1030.jsonl
    $ lima-lite train recipes/lima-1030-dialogue.yaml dataset_name=data/lima-1030.jsonl

`--single` files (one or more, e.g. the outputs of `lima-lite curate` and `select`) give the single-turn
examples: one user turn and one assistant answer; the first `--single-k` are taken, in the order given.
`--dialogues` gives the multi-turn chains (two or more user turns; LIMA wrote 30). Every row keeps its
`source` (or gets the file's name as one). A row of the wrong
kind is an error naming file:line. Output order is shuffled with `--seed`; the report lies next to it.
"""

import argparse
import os
import random
from pathlib import Path

from lima_lite import LimaError
from lima_lite.conversations import load_conversations
from lima_lite.curate.report import Funnel, response_text, with_report, write_report
from lima_lite.files import add_overwrite_flag, check_outputs, write_jsonl
from lima_lite.flags import DRAW_SEED, bounded


def user_turns(example: dict) -> int:
    return sum(m["role"] == "user" for m in example["messages"])


def mix(single: list[list[dict]], dialogues: list[dict], single_k: int, seed: int, funnel) -> list[dict]:
    chosen = []
    for examples in single:
        for example in examples:
            if len(chosen) < single_k:
                chosen.append(example)
            else:
                funnel.drop(f"over --single-k {single_k}", example["id"], response_text(example))
    funnel.count("single-turn", len(chosen))
    funnel.count("dialogues", len(dialogues))
    rows = chosen + dialogues
    random.Random(seed).shuffle(rows)
    return rows


def load(path: str, kind: str) -> list[dict]:
    examples = load_conversations(path)
    for number, example in enumerate(examples, 1):
        turns = user_turns(example)
        if (kind == "single") != (turns == 1):
            raise LimaError(f"{path}:{number}: messages: {turns} user turn(s) in a --{kind} file "
                            f"({'exactly one' if kind == 'single' else 'two or more'} expected)")
        if example.get("source") in (None, path, str(Path(path))):
            example["source"] = Path(path).stem
    return examples


def add_parser(sub) -> None:
    """`data mix` under `lima-lite data` (lima_lite.data)."""
    m = sub.add_parser("mix", help="single-turn examples + multi-turn dialogues -> one training file",
                       description=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--single", nargs="+", required=True, help="JSONL file(s) of single-turn examples")
    m.add_argument("--dialogues", required=True, help="JSONL file of multi-turn dialogues (LIMA: 30)")
    m.add_argument("--out", type=Path, required=True, help="output JSONL; the report is written next to it")
    m.add_argument("--single-k", type=bounded(int, 0), default=1000, help="how many single-turn examples to take (LIMA: 1000)")
    m.add_argument("--seed", type=DRAW_SEED, default=0, help="seed for the output order")
    add_overwrite_flag(m)
    m.set_defaults(func=mix_main)


def check_distinct(paths: list[str]) -> None:
    """Each input file once: the same file twice (by resolved path or a hard link) would put its rows in twice."""
    for index, path in enumerate(paths):
        for earlier in paths[:index]:
            same = Path(path).resolve() == Path(earlier).resolve()
            try:
                same = same or os.path.samefile(path, earlier)
            except OSError:
                pass
            if same:
                raise LimaError(f"{path}: given twice ({earlier}); each file's rows would be mixed in twice, give it once")


def mix_main(args) -> int:
    """`data mix`: single-turn examples + dialogues -> one training file and its report."""
    check_outputs(with_report(args.out), [*args.single, args.dialogues], args.overwrite)
    check_distinct(args.single)  # a file in both --single and --dialogues fails the turn-count check by line

    funnel = Funnel(args.seed)
    single = [load(path, "single") for path in args.single]
    dialogues = load(args.dialogues, "dialogues")
    rows = mix(single, dialogues, args.single_k, args.seed, funnel)
    write_jsonl(rows, args.out)
    before = [len(response_text(e)) for examples in single for e in examples] + [len(response_text(e)) for e in dialogues]
    settings = {"command": "data mix", "single": args.single, "dialogues": args.dialogues, "single_k": args.single_k,
                "seed": args.seed}
    write_report(args.out, funnel, before, rows, settings, args.seed)
    print(f"wrote {len(rows)} conversations ({funnel.counts['single-turn']} single-turn + {len(dialogues)} dialogues) "
          f"to {args.out}")
    return 0
