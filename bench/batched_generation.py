"""Batched local generation: tokens/s of `eval generate` at several --batch-size, and whether greedy answers match.

    $ PYTHONPATH=$PWD python bench/batched_generation.py --adapter runs/quickstart/adapter --sizes 1,4,8,12 --rounds 2

Answers the 12 embedded dev prompts greedily (temperature 0, --max-new-tokens each) through the code of
`lima-lite eval generate` (generate_answers on a LocalModel), once per batch size, the sizes alternating round
after round so a neighbour's load on a shared CPU falls on all of them. Prints, per run, the seconds, the new
tokens (turn ends included, padding not) and tokens/s; then, per size, how many of the answers (text and
finish_reason, and the generated token ids) equal those of batch size 1 in the same round.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path


def timed_answers(model, prompts, batch_size: int, max_new_tokens: int) -> dict:
    """One greedy `generate_answers` run: its rows, the Replies' token ids in prompt order, seconds, new tokens."""
    from lima_lite.evaluate.answers import generate_answers

    engine, replies = model.engine, []
    reply, batch = type(engine).reply, type(engine).replies

    def recorded_reply(*args, **kwargs):
        replies.append(reply(engine, *args, **kwargs))
        return replies[-1]

    def recorded_replies(*args, **kwargs):
        found = batch(engine, *args, **kwargs)
        replies.extend(found)
        return found

    engine.reply, engine.replies = recorded_reply, recorded_replies  # the Replies, for their token ids and counts
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            rows = generate_answers(model, prompts, Path(tmp) / "answers.jsonl", batch_size=batch_size,
                                    temperature=0, max_new_tokens=max_new_tokens)
            seconds = time.perf_counter() - start
    finally:
        del engine.reply, engine.replies
    return {"rows": rows, "ids": [r.token_ids for r in replies], "seconds": seconds,
            "tokens": sum(r.new_tokens for r in replies)}


def first_difference(a: list[int], b: list[int]) -> int:
    """The position of the first generated token where two sequences part."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="runs/quickstart/adapter")
    parser.add_argument("--prompts", default="embedded:dev.jsonl")
    parser.add_argument("--sizes", default="1,4,8,12", help="batch sizes, comma-separated; 1 is the reference")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", help="float32 or bfloat16 (default: lima_lite's choice for this machine)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes[0] != 1:
        parser.error("--sizes must start with 1, the one-at-a-time reference")
    from lima_lite.conversations import read_prompts
    from lima_lite.evaluate.answers import LocalModel
    from lima_lite.generate import load_engine

    prompts = read_prompts(args.prompts)
    model = LocalModel(engine=load_engine(adapter=args.adapter, dtype=args.dtype), name="bench")
    print(f"{args.adapter}: {len(prompts)} prompts, greedy, max_new_tokens {args.max_new_tokens}, dtype "
          f"{model.engine.model.dtype}")
    for round_ in range(1, args.rounds + 1):
        runs = {}
        for size in sizes:
            runs[size] = run = timed_answers(model, prompts, size, args.max_new_tokens)
            print(f"round {round_}, batch size {size:>2}: {run['seconds']:6.1f} s, {run['tokens']:5d} tokens, "
                  f"{run['tokens'] / run['seconds']:6.1f} tokens/s", flush=True)
        reference = runs[1]
        for size in sizes[1:]:
            pairs = zip(runs[size]["rows"], reference["rows"], strict=True)
            texts = [(a["answer"], a["finish_reason"]) == (b["answer"], b["finish_reason"]) for a, b in pairs]
            ids = [a == b for a, b in zip(runs[size]["ids"], reference["ids"], strict=True)]
            differ = [f"{r['id']} from token {first_difference(a, b)}" for r, a, b, ok in
                      zip(runs[size]["rows"], runs[size]["ids"], reference["ids"], ids, strict=True) if not ok]
            print(f"round {round_}, batch size {size:>2}: {sum(texts)}/{len(texts)} answers and {sum(ids)}/{len(ids)} "
                  f"token sequences equal batch size 1's{'; differ: ' + ', '.join(differ) if differ else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
