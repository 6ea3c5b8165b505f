"""The hostile-input tables of the tests (tests/test_bad_inputs.py, _2.py, _3.py), case by case,
against whichever lima_lite is first on the path, with each case's verdict: clear (one line naming what was
wrong, exit 2, no file changed), traceback, silent (accepted, exit 0), vague, changed, or hang (no answer in
--timeout seconds).

    $ PYTHONPATH=$PWD python bench/hostile_cases.py --out today.json
    $ git archive OLD_COMMIT | tar -x -C /tmp/old                      # an older lima_lite, today's cases
    $ PYTHONPATH=/tmp/old:$PWD/tests python bench/hostile_cases.py --tests $PWD/tests --out old.json
    $ python bench/hostile_cases.py --table old.json today.json       # verdicts side by side

The fixtures are the tests' own: the tied tiny LLaMA of tests/conftest.py and two training steps on it.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

VERDICTS = ("clear", "traceback", "silent", "vague", "changed", "hang")


class Hang(Exception):
    pass


def on_alarm(signum, frame):
    raise Hang()


def fixtures(folder: Path) -> dict:
    """The tests' "base" (tiny_llama_tied) and "adapter" (tiny_adapter), built with the lima_lite on the path."""
    from conftest import build_tiny_llama
    from helpers import qa, train_tiny

    base = build_tiny_llama(folder / "base", tie_word_embeddings=True, eos="<|im_end|>", extra_special=("<|im_end|>",))
    return {"base": base, "adapter": train_tiny(base, folder / "run", [qa(i) for i in range(4)]) / "adapter"}


TABLES = {"first": "test_bad_inputs", "second": "test_bad_runs_and_outputs", "third": "test_hostile_inputs"}


def verdicts(timeout: int, tables=tuple(TABLES)) -> dict:
    """{case name: [table, verdict, detail]} for every case of the chosen tables."""
    import importlib

    try:
        from bad_input import outcome
    except ImportError:  # the tests of a checkout from before the runner had its own module
        from test_bad_inputs import outcome

    results = {}
    signal.signal(signal.SIGALRM, on_alarm)
    with tempfile.TemporaryDirectory() as scratch:
        made = fixtures(Path(scratch))
        for table, module in ((name, importlib.import_module(TABLES[name])) for name in tables):
            for number, case in enumerate(module.CASES):
                folder = Path(scratch) / f"{table}-{number}"
                folder.mkdir()
                signal.alarm(timeout)
                try:
                    kind, detail = outcome(case, folder, {k: made[k] for k in case.needs})
                except Hang:
                    kind, detail = "hang", f"no answer in {timeout} s"
                except Exception as error:  # noqa: BLE001 - a case whose setup fails on this code is a traceback too
                    kind, detail = "traceback", f"{type(error).__name__}: {error}"[:300]
                finally:
                    signal.alarm(0)
                if case.name in results:
                    raise SystemExit(f"case {case.name!r} is in two tables: the table rows are keyed by name")
                results[case.name] = [table, kind, detail]
                print(f"{kind:9} {case.name}", flush=True)
    return results


def table(before: dict, after: dict) -> str:
    """Markdown: cases per verdict before and after, for the cases both runs have."""
    names = [name for name in after if name in before]
    rows = ["| verdict | before | after |", "|---|---|---|"]
    for verdict in VERDICTS:
        rows.append(f"| {verdict} | {sum(before[n][1] == verdict for n in names)} | "
                    f"{sum(after[n][1] == verdict for n in names)} |")
    return "\n".join([*rows, f"| cases | {len(names)} | {len(names)} |"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", default=str(Path(__file__).resolve().parents[1] / "tests"),
                        help="the tests folder whose tables to run (default: this checkout's)")
    parser.add_argument("--out", help="write {case: [table, verdict, detail]} here as JSON")
    parser.add_argument("--timeout", type=int, default=60, help="seconds before a case counts as a hang")
    parser.add_argument("--table", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two --out files, run nothing")
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES),
                        help="which tables to run (default all: " + ", ".join(f"tests/{m}.py" for m in TABLES.values()) + ")")
    args = parser.parse_args()
    if args.table:
        before, after = (json.loads(Path(p).read_text()) for p in args.table)
        print(table(before, after))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, args.tests)
    import lima_lite

    print(f"lima_lite from {Path(lima_lite.__file__).parent}, cases from {args.tests}")
    results = verdicts(args.timeout, args.tables)
    print(dict(Counter(kind for _, kind, _ in results.values())))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
