"""Endpoint judges at concurrency 1 and 8 against a fake OpenAI-compatible server with fixed latency.

    $ python bench/judge_concurrency.py --pairs 300 --latency 0.2 --concurrency 1 8

The fake server (127.0.0.1 only, a free port) answers every chat completion after `--latency` seconds
with a verdict that depends only on the prompt (the longer answer wins), so every concurrency must give
identical judgments. Each pair is judged in both orders: 300 pairs are 600 requests. Prints the wall
time of each run and the speed-up over the first; the judgments files are compared byte for byte.
`FakeEndpoint` is also what the tests use for endpoint failures (HTML pages, HTTP 500, hangs, ...).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the oracles the tests use too
from oracles.endpoint import FakeEndpoint, answer_files, longer_answer_wins  # noqa: E402


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lima_lite.evaluate import steps
    from lima_lite.judges import get_judge

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="judge-concurrency-"))
    ours, base = answer_files(folder, args.pairs)
    times, outputs = {}, {}
    with FakeEndpoint(longer_answer_wins, args.latency) as server:
        judge = get_judge(f"fake-judge@{server.url}")
        for concurrency in args.concurrency:
            out = folder / f"pairwise-c{concurrency}.jsonl"
            start = time.perf_counter()
            steps.pairwise_file(judge, ours, base, out, concurrency=concurrency)
            times[concurrency] = time.perf_counter() - start
            outputs[concurrency] = out.read_bytes()
            print(f"concurrency {concurrency}: {2 * args.pairs} requests in {times[concurrency]:.1f} s")
    first = args.concurrency[0]
    for concurrency in args.concurrency[1:]:
        print(f"speed-up of {concurrency} over {first}: {times[first] / times[concurrency]:.2f}x; "
              f"judgments identical: {outputs[concurrency] == outputs[first]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
