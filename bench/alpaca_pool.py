"""A generated Alpaca-like pool (instruction / input / output), for timing `lima-lite data stats` at Alpaca's size.

    $ python bench/alpaca_pool.py /tmp/alpaca-52k.jsonl --n 52000
    $ time lima-lite data stats /tmp/alpaca-52k.jsonl --json > /dev/null

Words are drawn from the embedded samples' vocabulary by their frequency there, so two texts share few word
pairs, as different prompts do. Lengths follow Alpaca's shape: instructions of 4-30 words, an input on 40 % of
the examples (5-60 words), outputs log-normal around 45 words with a tail past 500; 1 % of the prompts repeat
an earlier one and 1 % repeat it with one word changed, 2 % of the outputs are long code, 1 % open with
"As an AI language model".
"""

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "lima_lite" / "samples" / "train.jsonl"


def vocabulary() -> tuple[list[str], list[int]]:
    counts = Counter()
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        for message in json.loads(line)["messages"]:
            counts.update(re.findall(r"[A-Za-z']+", message["content"].lower()))
    words = sorted(counts)
    return words, [counts[w] for w in words]


def pool(n: int, seed: int):
    rng = random.Random(seed)
    words, weights = vocabulary()

    def text(count: int) -> str:
        return " ".join(rng.choices(words, weights, k=max(1, count))).capitalize() + "."

    instructions = []
    for i in range(n):
        roll = rng.random()
        if instructions and roll < 0.01:
            instruction = rng.choice(instructions)
        elif instructions and roll < 0.02:
            parts = rng.choice(instructions).split()
            parts[rng.randrange(len(parts))] = rng.choice(words)
            instruction = " ".join(parts)
        else:
            instruction = text(rng.randint(4, 30))
        instructions.append(instruction)
        output = text(min(1500, int(rng.lognormvariate(3.8, 0.8))))
        if rng.random() < 0.02:
            output += "\n\n```python\n" + "\n".join(f"x{j} = {j} * 2" for j in range(rng.randint(5, 80))) + "\n```"
        if rng.random() < 0.01:
            output = "As an AI language model, " + output
        yield {"instruction": instruction, "input": text(rng.randint(5, 60)) if rng.random() < 0.4 else "",
               "output": output, "id": f"alpaca-{i:05d}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=52000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with args.out.open("w", encoding="utf-8") as out:
        for row in pool(args.n, args.seed):
            out.write(json.dumps(row) + "\n")
    print(f"wrote {args.n} examples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
