"""Live bytes of the loss alone, forward and backward: the oracle behind tests/test_loss.py and
bench/loss_memory.py (whose docstring explains what is counted). `plain` is what transformers does with
labels; `chunked` is lima_lite's chunked cross-entropy; `head` builds the head they run through.
"""

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
    from lima_lite.memory.loss import chunked_cross_entropy

    return chunked_cross_entropy(lm_head, hidden, labels)[0]


def peak_bytes(loss_fn, lm_head, hidden, labels) -> tuple[int, float]:
    hidden = hidden.detach().requires_grad_(True)
    with LiveBytes() as tracker:
        loss = loss_fn(lm_head, hidden, labels)
        loss.backward()
        value = loss.item()
        del loss
    return tracker.peak, value
