"""Model rewrites that keep less for the backward, with the same numbers: the MLP tiled over the tokens, the
norms and the LoRA inputs recomputed. The memory plan (estimate.py) counts what each saves; fit.py what each costs.

    >>> tile_mlp(model, 4096)              # each MLP over 4,096 tokens at a time, recomputed in backward
    >>> lean_norms(model, 4096); lean_lora(peft_model)   # norms and LoRA inputs recomputed in backward
"""

import torch

from lima_lite.model import decoder_layers


def tiled_forward(forward, chunk_tokens: int, single: bool = False):
    """`forward` (an MLP's or a norm's: tokens in, tokens out, each token on its own) run over `chunk_tokens` tokens
    at a time.

    In training each chunk is checkpointed (non-reentrant, RNG state kept, so LoRA dropout draws the same mask
    when it is recomputed): the backward recomputes one chunk's gate, up and SiLU outputs at a time, so the
    MLP's intermediate activations (tokens x intermediate_size, several tensors) exist for one chunk only, at
    the cost of one more MLP forward. Tokens never see each other in an MLP, so any split of the flattened
    (batch x sequence) tokens gives the same output: padded or padding-free batches alike. Inside gradient
    checkpointing the layer's recomputed forward runs the chunks again, each saving only its input (a view).
    `single`: checkpoint even when the tokens fit one chunk (a norm: its fp32 copy and the temporaries of its
    backward are then never kept).
    """
    from torch.utils.checkpoint import checkpoint

    def forward_in_chunks(x):
        tokens = x.reshape(-1, x.shape[-1])
        if tokens.shape[0] <= chunk_tokens:
            return checkpoint(forward, x, use_reentrant=False) if single and torch.is_grad_enabled() else forward(x)
        if torch.is_grad_enabled():
            parts = [checkpoint(forward, part, use_reentrant=False) for part in tokens.split(chunk_tokens)]
        else:
            parts = [forward(part) for part in tokens.split(chunk_tokens)]
        return torch.cat(parts).reshape(*x.shape[:-1], parts[0].shape[-1])

    return forward_in_chunks


def tile_mlp(model, chunk_tokens: int) -> None:
    """Run every decoder layer's MLP over `chunk_tokens` tokens at a time (see `tiled_forward`).

    The module's own forward is replaced on the instance, so its name, its parameters (and the names of the
    LoRA layers peft puts in it later) and its hooks (residual dropout on its output) stay as they are."""
    for layer in decoder_layers(model):
        layer.mlp.forward = tiled_forward(layer.mlp.forward, chunk_tokens)


LEAN_CHUNK_TOKENS = 4096  # the norms' chunk when the MLP is not tiled


def lean_norms(model, chunk_tokens: int) -> int:
    """Every RMSNorm of the model (each layer's two, the final one, Qwen 3's per-head q/k norms) recomputed in
    its backward, `chunk_tokens` tokens at a time (`tiled_forward`): a norm then keeps only its input, which
    the layer keeps anyway, instead of its fp32 copy (with bf16 layers) and the fp32 temporaries of its
    backward (pow, mean, rsqrt: about 5 x 4 bytes per value at once) for every token. Same numbers.
    Returns how many norms."""
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    for norm in norms:
        norm.forward = tiled_forward(norm.forward, chunk_tokens, single=True)
    return len(norms)


def _identity(x):
    return x


def lean_lora(model) -> int:
    """Every LoRA layer's dropout and A matmul recomputed in the backward: each keeps only its input (the
    layer's own, which the layer keeps anyway) instead of a dropout mask and a dropped copy per adapted
    projection (with fp32 layers, also autocast's bf16 copy). The RNG state is kept, so the recomputed mask is
    the same. For a peft model (after `get_peft_model`); module names and weights are unchanged. Returns how
    many LoRA layers."""
    from peft.tuners.lora import LoraLayer
    from torch.utils.checkpoint import checkpoint

    def recomputed(lora_a, dropout):
        def run(x):
            return lora_a(dropout(x))

        def forward(x):
            return checkpoint(run, x, use_reentrant=False) if torch.is_grad_enabled() else run(x)

        return forward

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        for name, lora_a in layer.lora_A.items():
            dropout = layer.lora_dropout[name]
            if dropout.__dict__.get("forward") is _identity:
                continue  # already recomputed
            lora_a.forward = recomputed(lora_a.forward, dropout.forward)
            dropout.forward = _identity
    return len(layers)
