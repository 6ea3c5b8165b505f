"""Peak memory of the loss alone, lima_lite's chunked cross-entropy against the plain path, on the CPU.

    $ python bench/loss_memory.py --tokens 8192 --vocab 32000 --hidden 1024

The plain path is what transformers does with labels: the full (tokens x vocab) logits through the head,
then ForCausalLMLoss (fp32 upcast, shift, cross-entropy). Both run forward and backward from the same
final hidden states through the same head: a frozen base head plus one PEFT trainable-token row (an
added EOT, untied head, as in LLaMA-1 recipes), and a plain frozen head.

What is counted: bytes of every tensor storage created while the loss runs forward and backward
(a TorchDispatchMode sees each op's outputs, a weakref finalizer sees each storage freed); the peak of
their sum. Outputs on an input's storage (views, in-place ops) are not new memory, and the inputs
(hidden states, head weight) existed before: neither is counted. The gradient of the hidden states is.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the oracles the tests use too
from oracles.loss_bytes import chunked, head, peak_bytes, plain  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--trained-fraction", type=float, default=0.875, help="labels not -100 (prompts are the rest)")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, args.tokens, args.hidden, generator=generator)
    labels = torch.randint(0, args.vocab, (1, args.tokens), generator=generator)
    labels[0, : int(args.tokens * (1 - args.trained_fraction))] = -100
    results = []
    for trainable_token in (True, False):
        lm_head = head(args.vocab, args.hidden, trainable_token)
        plain_peak, plain_loss = peak_bytes(plain, lm_head, hidden, labels)
        chunked_peak, chunked_loss = peak_bytes(chunked, lm_head, hidden, labels)
        results.append({"head": "trainable-token row (PEFT)" if trainable_token else "frozen Linear",
                        "tokens": args.tokens, "vocab": args.vocab, "hidden": args.hidden,
                        "plain_peak_mib": round(plain_peak / 2**20, 1), "chunked_peak_mib": round(chunked_peak / 2**20, 1),
                        "ratio": round(plain_peak / chunked_peak, 1), "plain_loss": plain_loss,
                        "chunked_loss": chunked_loss})
        print("RESULT " + json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
