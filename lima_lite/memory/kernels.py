"""Attention kernels and CUDA fast paths, each chosen for this machine and said in one line (on CUDA).

    >>> attention_choice(None, cuda=False, flash=False)[0]                # "sdpa_varlen" (lima_lite.resolve)
    >>> print(apply_liger_kernels(model, enabled=True))                 # "Liger kernels: not used: no CUDA"

- sdpa_varlen: transformers' sdpa once per example of a padding-free row (no block-diagonal mask), the
  default wherever flash-attention's varlen kernel is not available;
- flash-attention 2 and Liger's RMSNorm, RoPE and SwiGLU kernels on CUDA when installed;
- TRL's activation offloading where there is a GPU to offload from.
"""

import importlib.util

import torch


def apply_liger_kernels(model, enabled: bool) -> str:
    """Liger's RMSNorm, RoPE and SwiGLU kernels on a CUDA model, in place; the line saying what happened.

    The loss is lima_lite's own (above), so Liger's cross-entropy patches stay off here.
    """
    if not enabled:
        return "Liger kernels: off (liger_kernels: false)"
    device = next(model.parameters()).device
    if device.type != "cuda":
        return "Liger kernels: not used: no CUDA (transformers' RMSNorm, RoPE and SwiGLU run instead)"
    if importlib.util.find_spec("liger_kernel") is None:
        return "Liger kernels: not used: liger-kernel is not installed (pip install liger-kernel)"
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)
    return f"Liger kernels: RMSNorm, RoPE and SwiGLU on {model.config.model_type}"


SDPA_VARLEN = "sdpa_varlen"


def sequence_bounds(query: torch.Tensor, key: torch.Tensor, attention_mask, kwargs: dict) -> list[tuple[int, int]] | None:
    """(start, end) of each example of a padding-free row, from TRL's cu_seq_lens_q or else the position ids
    (transformers' find_packed_sequence_indices); None when attention is not over one unpadded row without
    a cache (then plain sdpa is right)."""
    from transformers.masking_utils import find_packed_sequence_indices

    if attention_mask is not None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return None
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        positions = kwargs.get("position_ids")
        if positions is None or positions.shape[0] != 1 or positions.shape[-1] != query.shape[2]:
            return None
        packed = find_packed_sequence_indices(positions)  # None: one sequence
        lengths = [query.shape[2]] if packed is None else torch.unique_consecutive(packed[0], return_counts=True)[1]
        cu = torch.cumsum(torch.as_tensor([0, *lengths]), 0)
    cu = cu.tolist()
    return list(zip(cu[:-1], cu[1:], strict=True))


def window_mask(length: int, window: int | None, device) -> torch.Tensor | None:
    """Causal mask of one example under a sliding window (token i sees j when i - window < j <= i); None when
    the window covers the example (plain causal)."""
    if window is None or length <= window:
        return None
    full = torch.ones(length, length, dtype=torch.bool, device=device)
    return (full.tril() & full.triu(1 - window))[None, None]


def sdpa_varlen_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa, called once per example of a padding-free row: each example attends causally to
    itself only, as flash-attention's varlen kernel does, without the row's block-diagonal mask.

    sdpa over a packed row needs a (tokens x tokens) mask, so 4 examples of 512 tokens cost 2,048^2 scores
    instead of 4 x 512^2, and the mask rules out sdpa's causal fast path; one call per example costs its own
    length squared. Anything else (padding, a KV cache) goes to transformers' sdpa unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = sequence_bounds(query, key, attention_mask, kwargs)
    window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if len(bounds) == 1:
        return sdpa_attention_forward(module, query, key, value, window_mask(query.shape[2], window, query.device),
                                      **kwargs)
    # split, not slices: in backward a slice's gradient is a zero tensor of the whole row, one per example;
    # split's is one concatenation
    lengths = [end - start for start, end in bounds]
    parts = [sdpa_attention_forward(module, q, k, v, window_mask(q.shape[2], window, query.device), **kwargs)[0]
             for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2), strict=True)]
    return torch.cat(parts, dim=1), None


def sdpa_varlen_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                     attention_mask=None, **kwargs):
    """The mask for SDPA_VARLEN: none for a training row (no padding, no cache: each example's own causal
    mask is made in sdpa_varlen_attention); transformers' sdpa mask for anything else."""
    from transformers.masking_utils import sdpa_mask

    unpadded = attention_mask is None or bool(attention_mask[:, -kv_length:].all())
    if unpadded and q_length == kv_length and q_offset == 0 and kv_offset == 0:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, **kwargs)


def register_sdpa_varlen() -> str:
    """Make `attn_implementation="sdpa_varlen"` known to transformers (its attention and mask interfaces)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SDPA_VARLEN, sdpa_varlen_attention)
    AttentionMaskInterface.register(SDPA_VARLEN, sdpa_varlen_mask)
    return SDPA_VARLEN


def attention_implementation(requested: str | None, cuda: bool) -> tuple[str, str]:
    """attention_choice on this machine (is flash-attn installed?), with sdpa_varlen registered when chosen."""
    name, line = attention_choice(requested, cuda, cuda and importlib.util.find_spec("flash_attn") is not None)
    if name == SDPA_VARLEN:
        register_sdpa_varlen()
    return name, line


def attention_choice(requested: str | None, cuda: bool, flash: bool) -> tuple[str, str]:
    """(attn_implementation to load the model with, the line saying why); `flash`: flash-attn is installed.

    Padding-free batches need attention that keeps examples apart: flash-attention's varlen kernel does
    (cu_seq_lens), and without it sdpa_varlen (sdpa once per example; register_sdpa_varlen before loading).
    transformers' own sdpa and eager also do, through a block-diagonal mask built from the position ids, at the
    cost of the whole row's length squared (tested on CPU).
    """
    flash = cuda and flash
    if requested in (None, "flash_attention_2") and flash:
        return "flash_attention_2", "attention: flash-attention 2 (varlen over the padding-free batch)"
    if requested in (None, "flash_attention_2", SDPA_VARLEN):
        why = "" if requested == SDPA_VARLEN else "; flash-attention not used: " + ("no CUDA" if not cuda else
                                                                                 "flash-attn is not installed")
        return SDPA_VARLEN, f"attention: sdpa, once per example of the padding-free batch{why}"
    return requested, f"attention: {requested} (attn_implementation)"


def activation_offloading(requested: bool, cuda: bool) -> tuple[bool, str | None]:
    """TRL's activation offloading (checkpoints kept in CPU memory) only where there is a GPU to offload from."""
    if requested and not cuda:
        return False, "activation offloading: not used: no CUDA (activations already live in CPU memory)"
    return requested, "activation offloading: checkpoints kept in CPU memory" if requested else None
