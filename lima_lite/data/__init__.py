"""`lima-lite data`: tools for a training set, each in its own module here.

    $ lima-lite data stats data/train.jsonl                    # a set at a glance (stats.py)
    $ lima-lite data mix --single data/longest-1k.jsonl --dialogues data/dialogues.jsonl --out data/lima-1030.jsonl
    $ lima-lite data overlap data/train.jsonl embedded:dev.jsonl --out overlap.jsonl   # train/eval duplicates

Run `lima-lite data TOOL --help` for a tool's arguments.
"""

import argparse

from lima_lite.data import mix, overlap, stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lima-lite data", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="tool", required=True)
    stats.add_parser(sub)
    mix.add_parser(sub)
    overlap.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)
