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
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storages alive at once, among those created inside the mode."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.seen = 0, 0, set()

    def _freed(self, key, size):
        self.seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # An output on an input's storage (a view, an in-place op, `.t()` of the head weight) is no new memory.
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.seen and key not in inputs:
                    self.seen.add(key)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._freed, key, storage.nbytes())
        return out


def head(vocab: int, hidden: int, trainable_token: bool):
    from peft import LoraConfig, get_peft_model

    class Tiny(torch.nn.Module):  # a head (and a layer for LoRA), wrapped by PEFT as train.py wraps a causal LM
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(hidden, hidden, bias=False)
            self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)

    torch.manual_seed(0)
    module = Tiny()
    if trainable_token:
        module = get_peft_model(module, LoraConfig(target_modules=["proj"], trainable_token_indices={"lm_head": [vocab - 1]}))
        return module.base_model.model.lm_head
    module.lm_head.weight.requires_grad_(False)
    return module.lm_head


def plain(lm_head, hidden, labels):
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = lm_head(hidden)
    return ForCausalLMLoss(logits, labels, vocab_size=logits.shape[-1])


def chunked(lm_head, hidden, labels):
    from lima_lite.loss import chunked_cross_entropy

    return chunked_cross_entropy(lm_head, hidden, labels)[0]


def peak_bytes(loss_fn, lm_head, hidden, labels) -> tuple[int, float]:
    hidden = hidden.detach().requires_grad_(True)
    with LiveBytes() as tracker:
        loss = loss_fn(lm_head, hidden, labels)
        loss.backward()
        value = loss.item()
        del loss
    return tracker.peak, value


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
