"""Memory plan: the peak GPU memory of QLoRA training, by component, from the model's config.json alone.

    $ lima-lite plan recipes/llama-7b.yaml
    $ lima-lite plan recipes/llama-33b.yaml model_name_or_path=tests/assets/llama-shapes/33b --gpu-gib 24 --json
    $ lima-lite plan recipes/llama-7b.yaml --fit --gpu-gib 24 --json    # the fastest setting that fits
    >>> shape = model_shape(json.load(open("config.json")))
    >>> settings = PlanSettings(micro_batch=4, max_length=2048, lora_r=64, gradient_checkpointing=True,
    ...                         padding_free=True, optim="paged_adamw_8bit", added_tokens=1)
    >>> plan = memory_plan(shape, settings, gpu_gib=24)
    >>> plan["peak_gib"], plan["fits"], plan["max_micro_batch"]
    >>> fit(shape, settings, examples_per_step=64, budget_gib=24)["chosen"]

What is counted, for the way `lima-lite train` loads and trains a model (transformers 5.24, peft 0.21,
trl 1.16, bitsandbytes 0.50), in bytes:
- 4-bit NF4 weights (every linear layer of the decoder): bitsandbytes packs two 4-bit values per byte and
  keeps one absmax per block of 64; double quantization stores those absmax as uint8 with an fp32
  absmax per block of 256 of them, so 1/2 + 1/64 + 4/(64*256) = 0.51587 bytes per parameter, plus per
  tensor a 16-entry NF4 code (64 B), the fp32 offset (4 B) and the 256-entry 8-bit code (1,024 B).
- Weights kept in 16/32-bit (embeddings, lm_head, norms): `get_model` loads them in fp32 for 4-bit bases
  and peft's `prepare_model_for_kbit_training` casts any fp16/bf16 ones to fp32, so 4 bytes each (2 with
  `fp32_layers: false`, which keeps them in bf16); the rotary inv_freq buffers and PEFT's copy of the
  original rows of added tokens are fp32 either way.
- LoRA weights: r x (in + out) per adapted linear layer; TRL casts the trainable parameters of a
  quantized model to bf16, so 2 bytes each, and 2 bytes of gradient.
- Optimizer state: torch's AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype, bf16 here, so 4
  bytes per parameter (not 8) and a 4-byte step per tensor; bitsandbytes' 8-bit AdamW keeps two uint8
  states and two fp32 absmax per block of 256 (2 + 8/256 bytes), fp32 states (8 bytes) for tensors under
  4,096 values.
- Activations of the worst micro-batch: every sequence at max_length, micro_batch x max_length tokens in
  all (padding-free or padded: no pad tokens either way when every example is max_length long; with
  padding-free batches under transformers' sdpa or eager attention a block-diagonal mask of tokens^2 is
  built once, 1 byte each, and each attention call converts it to a bf16 bias, 2 bytes each, kept for its
  backward; flash-attention and lima_lite's sdpa_varlen, the defaults, build none). The residual stream is
  fp32 (the embeddings are; bf16 with `fp32_layers: false`). With gradient checkpointing each layer keeps
  only its input; the backward of one layer recomputes its forward, which saves per token 36h + 4kv + 15m
  bytes (h hidden, kv the key/value width, m the MLP width; worked out in `layer_bytes_per_token`).
  Without it every layer keeps those. With the tiled MLP (`mlp_chunk_tokens` N, lima_lite.model.tile_mlp) the
  MLP's part of that, 3 rb m plus LoRA's inputs, exists for N tokens at a time, and no layer keeps it.
- The loss: the model's own head (used when an EOT is added, so its lm_head row trains) builds the logits
  of the micro-batch: bf16 logits, their fp32 copy and log-softmax in the forward; in the backward the
  log-softmax, its incoming gradient and its outgoing gradient, 3 x 4 bytes per token and vocabulary entry.
  A chunked loss holds that only for its chunk of tokens.
- The loss and a layer's backward never run at once: `layer_backward` is what one layer's backward needs
  beyond the loss's working set and what only the loss and the final norm keep (the final norm's input and
  output, the head's input: freed once the backward has gone through them); 0 when those are larger.
- The attention's backward (the output's, q's, k's and v's gradients, and on a GPU the flash kernel's fp32
  accumulator for q's) and the MLP's (its gradient of the MLP's width) do not run at once either.
- Activation offloading (TRL's, with gradient checkpointing): every layer's checkpoint goes to pinned CPU memory;
  the GPU holds the one being recomputed and the one TRL frees next (TRL's forward stash holds the loss's last
  tensors when the backward starts); what else it moves (the final norm's tensors, the loss's) is left counted
  on the GPU, so the plan stays above the counted peak (bench/plan_calibration.py --offloading).
- CUDA context 0.5 GiB (cuBLAS and kernels; not visible to torch's allocator), and a fragmentation margin of
  20% of what is allocated and freed during a step (gradients, activations, loss): the weights are allocated
  once and do not fragment. On the H100 anchor, torch's caching allocator reserved 0.43 GiB over the peak
  with padding-free batches (18% of that run's planned transient bytes), 1.90 GiB with padded batches of
  varying length (docs/benchmarks.md "Memory plan: calibration").
Calibrated by counting live tensor bytes in real training steps on the CPU (bench/plan_calibration.py).
"""

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from lima_lite import LimaError
from lima_lite.flags import bounded
from lima_lite.layout import TOKENIZER_FILES

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5
FRAGMENTATION = 0.20  # of what is allocated and freed during a step (see the module docstring)
TRANSIENT = ("gradients", "activations", "loss", "layer_backward")
DEFAULT_GPU_GIB = 24.0
NF4_BLOCK = 64  # bitsandbytes' default 4-bit block size
NESTED_BLOCK = 256  # double quantization: the absmax of 256 blocks share one fp32 absmax
ADAM8_BLOCK = 256  # bitsandbytes' blockwise 8-bit optimizer state
ADAM8_MIN_SIZE = 4096  # smaller tensors keep 32-bit state
OFFLOAD_STASH = 5  # TRL's OffloadActivations keeps its 5 newest offloaded tensors on the GPU (max_fwd_stash_size)
OFFLOAD_ON_GPU = 2  # layer checkpoints on the GPU with offloading: the one recomputed, the one TRL frees next
TRL_TOKEN_TILE, TRL_VOCAB_TILE = 4096, 32768  # TRL's fused head (trl/kernels/chunked_logprob.py)
RESIDUAL_BYTES = 4  # fp32 embeddings -> fp32 residual stream
COMPUTE_BYTES = 2  # bf16 autocast
MASK_BYTES = 1  # a dropout mask on CUDA is bool
LEAN_CHUNK_TOKENS = 4096  # lima_lite.model.LEAN_CHUNK_TOKENS: the norms' chunk when the MLP is not tiled
NORM_BACKWARD_VALUES = 5  # fp32 values per input value alive at once in an RMSNorm's backward (counted on the CPU)
COMPONENTS = ("cuda_context", "weights_4bit", "weights_16_32bit", "lora", "trainable_tokens", "gradients",
              "optimizer", "activations", "loss", "layer_backward", "fragmentation")


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int | None = None

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden // self.heads


def model_shape(config: dict) -> ModelShape:
    """A LLaMA-family shape from a config.json dict (a multimodal config's text_config if it has one)."""
    config = config.get("text_config", config)
    try:
        return ModelShape(hidden=config["hidden_size"], intermediate=config["intermediate_size"],
                          layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
                          kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
                          vocab=config["vocab_size"], tied=bool(config.get("tie_word_embeddings", False)),
                          head_dim=config.get("head_dim"))
    except KeyError as error:
        raise LimaError(f"config.json: no {error.args[0]!r}: not a LLaMA-family decoder config") from None


def linear_shapes(shape: ModelShape) -> list[tuple[int, int]]:
    """(out, in) of every linear layer of one decoder layer: q, k, v, o, gate, up, down."""
    h, m, q, kv = shape.hidden, shape.intermediate, shape.heads * shape.dim, shape.kv_heads * shape.dim
    return [(q, h), (kv, h), (kv, h), (h, q), (m, h), (m, h), (h, m)]


def nf4_bytes(numel: int) -> int:
    """Bytes of one bitsandbytes NF4 weight with double quantization (see the module docstring)."""
    blocks = math.ceil(numel / NF4_BLOCK)
    return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + 64 + 4 + 1024


def adam_bytes(numels: list[int], optim: str, param_bytes: int = 2) -> int:
    """Optimizer state for parameters of these sizes."""
    if "8bit" in optim:
        return sum(8 * n if n < ADAM8_MIN_SIZE else 2 * n + 8 * math.ceil(n / ADAM8_BLOCK) for n in numels)
    return sum(2 * param_bytes * n + 4 for n in numels)  # exp_avg, exp_avg_sq in the param dtype; fp32 step


def layer_bytes_per_token(shape: ModelShape, lora: bool, lora_dropout: bool, residual_dropout: bool,
                          rb: int = RESIDUAL_BYTES, cb: int = COMPUTE_BYTES, mask: int = MASK_BYTES,
                          cpu_masks: bool = False, lean: bool = False) -> int:
    """Bytes one decoder layer saves for its backward, per token (its input not included).

    With an fp32 residual stream (rb 4), bf16 compute (cb 2), bool dropout masks (1), LoRA with dropout on
    all seven projections and LIMA's residual dropout, per token:
    attention: norm output rb*h; q, k, v LoRA inputs (mask + bf16 copy) 3 x 3h; sdpa's bf16 q, k, v
    2(h + 2kv), its output 2h and log-sum-exp 4/head; o LoRA input 3h; residual-dropout mask h; the
    residual after attention rb*h. MLP: norm output rb*h; gate, up LoRA inputs 2 x 3h; gate, up and
    SiLU(gate) in fp32 3 x rb*m; down LoRA input 3m; residual-dropout mask h.
    = 36h + 4kv + 15m + 4 x heads with LLaMA's shapes. bitsandbytes' 4-bit matmul keeps no input (the
    base weights are frozen). On the CPU a dropout mask has its input's dtype (bf16 for LoRA inputs,
    bf16 after attention, fp32 after the MLP): `cpu_masks` counts that, for the calibration.
    """
    return sum(layer_parts_per_token(shape, lora, lora_dropout, residual_dropout, rb, cb, mask, cpu_masks, lean))


def layer_parts_per_token(shape: ModelShape, lora: bool, lora_dropout: bool, residual_dropout: bool,
                          rb: int = RESIDUAL_BYTES, cb: int = COMPUTE_BYTES, mask: int = MASK_BYTES,
                          cpu_masks: bool = False, lean: bool = False) -> tuple[int, int]:
    """`layer_bytes_per_token` in two parts: outside the MLP module (attention, both norms, the residual
    dropout masks) and inside it (gate, up, SiLU and the LoRA inputs: 3 rb m + (2h + m) with LoRA's
    dropout), the part a tiled MLP holds for one chunk of tokens only.

    `lean` (lean_activations: lima_lite.model.lean_norms and lean_lora): a norm keeps only its input, which is
    kept anyway (the layer's input, the residual after attention), and a LoRA layer only its input, which is the
    norm's output or the attention's (kept by sdpa) or, in the MLP, SiLU(gate) x up: outside, the two norms'
    outputs rb h each, sdpa's q, k, v, output and log-sum-exp, the residual after attention rb h; inside, gate,
    up and SiLU(gate) and their product (down's input)."""
    h, m, kv, q = shape.hidden, shape.intermediate, shape.kv_heads * shape.dim, shape.heads * shape.dim
    lora_in = (2 * mask if cpu_masks else mask) + cb if lora_dropout else cb  # LoRA A's input (+ mask)
    norm = rb * h + (4 * h if rb != 4 and not lean else 0)  # output; RMSNorm upcasts a 16-bit input to fp32, keeps it
    outside = norm + 2 * (q + 2 * kv) + 2 * q + 4 * shape.heads + rb * h + norm
    inside = 3 * rb * m
    if lora and lean:
        inside += cb * m
    elif lora:
        outside += lora_in * (3 * h + q)
        inside += lora_in * (2 * h + m)
    if residual_dropout:  # one mask of the hidden size after each of o_proj (bf16) and down_proj (residual's dtype)
        outside += (2 * mask + rb * mask if cpu_masks else 2 * mask) * h
    return outside, inside


def offloaded_bytes(shape: ModelShape, tokens: int, rb: int = RESIDUAL_BYTES) -> int:
    """GPU bytes that activation offloading (with gradient checkpointing) moves to CPU memory: every layer's
    checkpoint (its input, tokens x hidden in the residual's dtype) but OFFLOAD_ON_GPU.

    TRL's forward stash (its OFFLOAD_STASH newest packed tensors, kept on the GPU until the first backward node
    has run) holds the loss's last tensors, packed after every layer's (counted as the loss's); in the backward,
    the layer being recomputed has its checkpoint brought back, and TRL frees a brought-back tensor when the next
    node runs (bench/plan_calibration.HostOffload follows those rules)."""
    return max(0, shape.layers - OFFLOAD_ON_GPU) * tokens * shape.hidden * rb


def lora_numels(shape: ModelShape, r: int) -> list[int]:
    """Sizes of every LoRA A and B matrix (all linear layers of every decoder layer)."""
    return [n for out, inp in linear_shapes(shape) for n in (r * inp, out * r)] * shape.layers


def component_bytes(shape: ModelShape, tokens: int, sequences: int, lora_r: int, gradient_checkpointing: bool,
                    padding_free: bool, optim: str, added_tokens: int, loss_chunk_tokens: int | None,
                    lora_dropout: bool = True, residual_dropout: bool = True, attention: str = "sdpa",
                    unquantized_bytes: int = 4, rb: int = RESIDUAL_BYTES, cpu_masks: bool = False,
                    activation_offloading: bool = False, mlp_chunk_tokens: int = 0,
                    lean_activations: bool = False) -> dict:
    """Bytes of each component (no CUDA context, no fragmentation margin): what live tensors hold at the peak.

    `tokens` in the micro-batch, in `sequences` examples. `loss_chunk_tokens` None: the model's own head
    builds the logits of the whole micro-batch; 0: TRL's fused head (used when no token is added); N: a
    chunked loss over N tokens at a time. `unquantized_bytes` and `rb` (the residual stream's bytes) are 2
    for a bf16 base that skips `prepare_model_for_kbit_training` (plain TRL, as in the H100 anchor).
    `mlp_chunk_tokens` N > 0: the tiled MLP (lima_lite.model.tile_mlp), whose intermediate activations exist
    for N tokens at a time. `lean_activations`: norms and LoRA inputs recomputed in the backward
    (`layer_parts_per_token`); a norm's backward then works on one chunk of LEAN_CHUNK_TOKENS (or the MLP's
    chunk) at a time.
    """
    h, vocab = shape.hidden, shape.vocab + added_tokens
    head_modules = 1 if shape.tied else 2
    norms = (2 * shape.layers + 1) * h
    rotary = 2 * (shape.dim // 2)  # inv_freq and original_inv_freq
    token_rows = added_tokens * h * (head_modules if added_tokens else 0)  # PEFT trainable-token deltas
    lora = lora_numels(shape, lora_r)
    trainable = lora + ([added_tokens * h] * head_modules if added_tokens else [])

    weights_16_32bit = unquantized_bytes * (head_modules * vocab * h + norms) + 4 * rotary + 4 * token_rows
    # Activations kept between forward and backward: each layer's input (the checkpoints), rotary cos and sin
    # (fp32), the padding-free mask; and, until the backward has gone through the loss and the final norm
    # (`top`), the final norm's input and output and what the head keeps (the head weight's bf16 copy below).
    # One sequence needs no mask (causal); padded batches of max_length examples have no padding to mask.
    masked = padding_free and sequences > 1 and attention in ("sdpa", "eager")  # not flash or sdpa_varlen
    mask, bias = (tokens * tokens, 2 * tokens * tokens) if masked else (0, 0)
    # sdpa_varlen keeps each example's attention output for its backward and their concatenation (bf16)
    split = padding_free and sequences > 1 and attention == "sdpa_varlen"
    outside, inside = layer_parts_per_token(shape, True, lora_dropout, residual_dropout, rb=rb, cpu_masks=cpu_masks,
                                            lean=lean_activations)
    tiled = 0 < mlp_chunk_tokens < tokens
    mlp_tokens = mlp_chunk_tokens if tiled else tokens  # tokens whose MLP intermediates exist at once
    layer = (outside + (COMPUTE_BYTES * h if split else 0) + (0 if tiled else inside)) * tokens + bias
    kept = shape.layers * tokens * h * rb + 2 * tokens * shape.dim * 4 + mask
    top = 2 * tokens * h * rb
    if loss_chunk_tokens is None:
        top += COMPUTE_BYTES * vocab * h  # autocast's bf16 copy of the head weight, inside the model's forward
    if rb != 4 and not lean_activations:
        top += 4 * tokens * h  # the final norm's fp32 copy of its input
    if added_tokens and not shape.tied:
        top += COMPUTE_BYTES * tokens * h  # the head's input, for the gradient of its trainable rows
    if loss_chunk_tokens == 0:
        # TRL's fused head casts the weight tile by tile and keeps the labelled positions' hidden states
        top += COMPUTE_BYTES * tokens * h
    if not gradient_checkpointing:
        kept += shape.layers * layer
    elif activation_offloading:
        # the layers' checkpoints go to CPU memory but for OFFLOAD_ON_GPU (see offloaded_bytes). Without
        # checkpointing nothing is counted as moved: the plan then over-states the peak, never under-states it.
        kept -= offloaded_bytes(shape, tokens, rb)
    if loss_chunk_tokens is None:
        loss = 12 * tokens * vocab
    elif loss_chunk_tokens == 0:
        # one bf16 tile of logits, the weight tile's bf16 copy, the fp32 gradient of the hidden states
        loss = 2 * min(tokens, TRL_TOKEN_TILE) * min(vocab, TRL_VOCAB_TILE) + 2 * min(vocab, TRL_VOCAB_TILE) * h + 4 * tokens * h
    else:
        # lima_lite's chunked loss (loss.py; every chunk but the last recomputed in backward): 12 bytes per
        # logit of one chunk (in backward the saved fp32 log-probabilities, nll_loss's gradient and
        # log_softmax's; in forward the fp32 logits and log-probabilities, the entropy taken a few rows at a
        # time) plus the chunk's selected fp32 hidden states and their gradient; counted on the CPU
        # (bench/plan_calibration.py)
        chunk = min(tokens, loss_chunk_tokens)
        loss = 12 * chunk * vocab + 8 * chunk * h
    # One layer's backward: the gradient flowing through it (one of the residual's width), the largest dequantized
    # bf16 weight, and, with checkpointing, what its recomputed forward keeps, in two phases that never overlap:
    # - the MLP's: the whole layer's kept tensors and either the end of the MLP's recomputed forward or its backward
    #   (its gradient of the MLP's width, in the residual's dtype);
    # - then the attention's and the norms': the MLP's kept tensors are freed by then, and either the attention's
    #   backward (the output's, q's, k's and v's gradients in bf16 and, on a GPU, the flash kernel's fp32
    #   accumulator for q's) or an RMSNorm's runs.
    # A tiled MLP recomputes one chunk at a time (its intermediates and its MLP-wide gradient for that chunk only)
    # and gathers the chunks' input gradients before joining them: one more of the residual's width.
    q, kv = shape.heads * shape.dim, shape.kv_heads * shape.dim
    mlp_backward = mlp_tokens * shape.intermediate * rb + (mlp_tokens * inside if tiled else 0)
    # The end of the MLP's recomputed forward: down_proj's input (SiLU(gate) x up, in the residual's dtype; nothing
    # keeps it, but it is referenced until down_proj returns), its bf16 copy for LoRA when the layers are fp32,
    # down_proj's 4-bit output, LoRA's and their sum (counted on the CPU).
    mlp_forward_end = mlp_tokens * (shape.intermediate * (rb + (COMPUTE_BYTES if rb != COMPUTE_BYTES else 0))
                                    + 3 * h * rb)
    attention_backward = tokens * (COMPUTE_BYTES * (2 * q + 2 * kv) + (0 if cpu_masks else 4 * q))
    # An RMSNorm's backward (autograd's, through pow, mean, rsqrt and mul) holds NORM_BACKWARD_VALUES fp32 values
    # per input value at once: for every token, or with lean activations for one chunk at a time.
    norm_tokens = min(tokens, mlp_chunk_tokens or LEAN_CHUNK_TOKENS) if lean_activations else tokens
    norm_backward = 4 * NORM_BACKWARD_VALUES * norm_tokens * h
    mlp_phase = max(mlp_backward, mlp_forward_end) + (tokens * h * rb if tiled else 0)
    other_phase = max(attention_backward, norm_backward)
    # the MLP's residual-dropout mask is made last and its backward runs first: never alive with the others
    recomputed = layer - (tokens * h * (rb if cpu_masks else MASK_BYTES) if residual_dropout else 0)
    if gradient_checkpointing:
        outside_kept = recomputed - (0 if tiled else inside * tokens)
        mlp_phase, other_phase = recomputed + mlp_phase, outside_kept + other_phase
    backward = tokens * h * rb + max(mlp_phase, other_phase) + 2 * max(o * i for o, i in linear_shapes(shape))
    # One layer's forward under checkpointing keeps nothing, but works on about what its backward recomputes;
    # with offloading, TRL's forward stash then holds the newest OFFLOAD_STASH checkpoints on the GPU, not
    # OFFLOAD_ON_GPU.
    # With fp32 layers, RoPE multiplies bf16 q and k by fp32 cos and sin: fp32 q and k, and rotate_half's copies.
    # The decoder's forward holds the embeddings' output (the first layer's input) until it returns.
    forward = 0
    if gradient_checkpointing:
        forward = recomputed + (mlp_tokens * inside if tiled else 0) + (4 * (q + kv) * tokens if rb == 4 else 0)
        if activation_offloading:
            forward += (max(0, min(shape.layers, OFFLOAD_STASH) - OFFLOAD_ON_GPU) + 1) * tokens * h * rb
    return {
        "weights_4bit": shape.layers * sum(nf4_bytes(out * inp) for out, inp in linear_shapes(shape)),
        "weights_16_32bit": weights_16_32bit,
        "lora": 2 * sum(lora),
        "trainable_tokens": 2 * token_rows,
        "gradients": 2 * sum(trainable),
        "optimizer": adam_bytes(trainable, optim),
        "activations": kept + top,
        "loss": loss,
        # the loss (with `top`), a layer's backward and a layer's forward never run at once
        "layer_backward": max(0, max(backward, forward) - loss - top),
    }


@dataclass(frozen=True)
class PlanSettings:
    """The training settings the plan depends on, as `lima-lite train` runs them (see `recipe_settings`)."""

    micro_batch: int
    max_length: int
    lora_r: int
    gradient_checkpointing: bool
    padding_free: bool
    optim: str
    added_tokens: int
    loss_chunk_tokens: int | None = None  # None: the model's head over the whole micro-batch; 0: TRL's fused head
    lora_dropout: bool = True
    residual_dropout: bool = True
    attention: str = "sdpa_varlen"
    fp32_layers: bool = True
    activation_offloading: bool = False
    mlp_chunk_tokens: int = 0  # > 0: the tiled MLP (lima_lite.model.tile_mlp)
    lean_activations: bool = False  # norms and LoRA inputs recomputed (lima_lite.model.lean_norms, lean_lora)


def settings_peak(shape: ModelShape, settings: PlanSettings) -> tuple[dict, float]:
    """Components in GiB (rounded) and the peak, their sum."""
    width = 4 if settings.fp32_layers else 2  # unquantized weights and the residual stream
    tokens = settings.micro_batch * settings.max_length
    raw = component_bytes(shape, tokens, settings.micro_batch, settings.lora_r, settings.gradient_checkpointing,
                          settings.padding_free, settings.optim, settings.added_tokens, settings.loss_chunk_tokens,
                          settings.lora_dropout, settings.residual_dropout, settings.attention,
                          unquantized_bytes=width, rb=width, activation_offloading=settings.activation_offloading,
                          mlp_chunk_tokens=settings.mlp_chunk_tokens, lean_activations=settings.lean_activations)
    gib = {"cuda_context": CUDA_CONTEXT_GIB, **{k: v / GIB for k, v in raw.items()}}
    gib["fragmentation"] = FRAGMENTATION * sum(gib[k] for k in TRANSIENT)
    components = {k: round(gib[k], 3) for k in COMPONENTS}
    return components, round(sum(components.values()), 3)


def host_offload_gib(shape: ModelShape, settings: PlanSettings) -> float:
    """At most the CPU (pinned) memory that activation offloading takes: every tensor saved for the backward
    may be copied there once, the checkpoints and what the loss saves; counted on the CPU at about half this
    on a tiny model, where the loss's chunk weighs most (bench/plan_calibration.py --offloading)."""
    from dataclasses import replace

    if not (settings.activation_offloading and settings.gradient_checkpointing):
        return 0.0
    width = 4 if settings.fp32_layers else 2
    kept = replace(settings, activation_offloading=False)
    raw = component_bytes(shape, kept.micro_batch * kept.max_length, kept.micro_batch, kept.lora_r, True,
                          kept.padding_free, kept.optim, kept.added_tokens, kept.loss_chunk_tokens, kept.lora_dropout,
                          kept.residual_dropout, kept.attention, unquantized_bytes=width, rb=width,
                          mlp_chunk_tokens=kept.mlp_chunk_tokens, lean_activations=kept.lean_activations)
    return round((raw["activations"] + raw["loss"]) / GIB, 3)


def memory_plan(shape: ModelShape, settings: PlanSettings, gpu_gib: float, search: bool = True) -> dict:
    """The plan: components in GiB (summing to peak_gib), fit, largest micro-batch and context that fit."""
    from dataclasses import replace

    components, peak_gib = settings_peak(shape, settings)
    tokens = settings.micro_batch * settings.max_length
    plan = {"peak_gib": peak_gib, "fits": peak_gib <= gpu_gib, "gpu_gib": round(gpu_gib, 3),
            "components": components, "micro_batch": settings.micro_batch, "max_length": settings.max_length,
            "tokens_per_micro_batch": tokens, "host_offload_gib": host_offload_gib(shape, settings)}
    if search:
        plan["max_micro_batch"] = largest(lambda b: settings_peak(shape, replace(settings, micro_batch=b))[1] <= gpu_gib, 4096)
        plan["max_length_at_micro_batch_1"] = largest(
            lambda t: settings_peak(shape, replace(settings, micro_batch=1, max_length=t))[1] <= gpu_gib, 2**22)
    return plan


def largest(fits, limit: int) -> int:
    """The largest n in [1, limit] with fits(n) (fits is monotone: more tokens never take less memory); 0 if none."""
    if not fits(1):
        return 0
    low, high = 1, limit
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


# --- fit: the fastest setting that fits ---------------------------------------------------------------------

FIT_MARGIN = 0.05  # of the budget, kept free: the plan is +2.5 to +5.8 % over counted peaks, the allocator rounds
# Throughput per micro-batch size, tokens/s proportional to mb / (mb + BATCH_HALF_SPEED): fitted to the H100
# rows of plain TRL on a LLaMA-7B shape (mb 4: 1,683 real tok/s, mb 8: 3,091): 3,091 / 1,683 = 2 (4 + b) / (8 + b)
# gives b = 41, and an asymptote of 18,900 tok/s, close to the 19,500 that 6 N FLOPs per token allow there.
BATCH_HALF_SPEED = 41.0
# Step time of gradient checkpointing relative to none (the recomputed forward), and of offloading relative to
# checkpointing alone (the copies to host memory and back), as CPU time of a 4-layer LLaMA (hidden 256, 4-bit,
# LoRA), micro-batch 2 x 1,024 tokens (bench/plan_calibration.py --costs; docs/benchmarks.md "Memory plan: fit").
# On a GPU TRL copies on a side stream, overlapped with compute, so 1.03 stands for the part that is not hidden.
RECOMPUTE_COST = 1.27
OFFLOAD_COST = 1.03
# The tiled MLP (lima_lite.model.tile_mlp) computes each MLP forward once more: its step time relative to the
# same setting untiled, with checkpointing, measured as RECOMPUTE_COST is (bench/plan_calibration.py --costs:
# 2.057 s against 1.906 s of CPU time, 4 chunks). On the CPU shape the head and attention weigh more than at 8B,
# where one more MLP forward is about 2/3 x 1/4 of a checkpointed step's matmul FLOPs (x1.17). fit turns it on
# only when nothing fits without it (a length that needs it), so the ratio ranks tiled settings among themselves:
# where a larger micro-batch would be its only gain, the batch term above is an extrapolation beyond
# micro-batch 8 and would trade a measured cost for a guessed gain.
TILED_MLP_COST = 1.08
# Lean activations (norms and LoRA inputs recomputed): step time relative to the same setting without, with the
# MLP tiled, measured as the ratios above (bench/plan_calibration.py --costs, 2026-12-05: 2.079 s against 1.815 s
# of CPU time). The recomputed work is elementwise plus LoRA's rank-r matmuls; on a small CPU shape the
# checkpoints' own overhead weighs more than at 8B, so 1.15 is an upper bound there.
LEAN_COST = 1.15
MLP_CHUNK_TOKENS = 4096  # the chunk fit tiles with: the hidden size of a 7B/8B model, as Arctic's TiledMLP does
FIT_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
            "activation_offloading", "fp32_layers", "mlp_chunk_tokens", "lean_activations")


def relative_speed(settings: PlanSettings) -> float:
    """Examples per second, up to a constant, by the cost model above (bf16 and fp32 layers: the same speed)."""
    speed = settings.micro_batch / (settings.micro_batch + BATCH_HALF_SPEED)
    if settings.gradient_checkpointing:
        speed /= RECOMPUTE_COST
        if settings.activation_offloading:
            speed /= OFFLOAD_COST
    if is_tiled(settings):
        speed /= TILED_MLP_COST
    if settings.lean_activations:
        speed /= LEAN_COST
    return speed


def is_tiled(settings: PlanSettings) -> bool:
    """Whether the MLP really runs in chunks: a chunk shorter than the micro-batch's tokens."""
    return 0 < settings.mlp_chunk_tokens < settings.micro_batch * settings.max_length


def fit_candidates(settings: PlanSettings, examples_per_step: int, fixed: dict, offloading: bool = True,
                   mlp_chunk_tokens: int = 0, lean: bool = False) -> list[PlanSettings]:
    """Every setting with the same examples per optimizer step (micro-batch divides it), in the order ties are
    broken: the recipe's own precision first, then without offloading, then checkpointing off. `fixed` holds
    the values the user set (FIT_KEYS -> value); they are never changed. `offloading` False (a CPU run: the
    activations are in CPU memory already) leaves offloading out. The MLP is tiled in chunks of
    `mlp_chunk_tokens` (0: untiled) and activations are lean (`lean`), or as the user fixed them."""
    from dataclasses import replace

    batches = [b for b in range(1, examples_per_step + 1) if examples_per_step % b == 0]
    if "per_device_train_batch_size" in fixed:
        batches = [fixed["per_device_train_batch_size"]]
    elif "gradient_accumulation_steps" in fixed:
        batches = [b for b in batches if b * fixed["gradient_accumulation_steps"] == examples_per_step]
    precisions = [settings.fp32_layers, not settings.fp32_layers]
    memory = [(False, False), (True, False), (True, True)] if offloading else [(False, False), (True, False)]
    if "fp32_layers" in fixed:
        precisions = [fixed["fp32_layers"]]
    if "gradient_checkpointing" in fixed:
        memory = [m for m in memory if m[0] == fixed["gradient_checkpointing"]]
    if "activation_offloading" in fixed:
        memory = [m for m in memory if m[1] == fixed["activation_offloading"]] or \
            [(fixed.get("gradient_checkpointing", False), fixed["activation_offloading"])]
    chunk = fixed.get("mlp_chunk_tokens", mlp_chunk_tokens)
    lean = fixed.get("lean_activations", lean)
    return [replace(settings, micro_batch=b, gradient_checkpointing=c, activation_offloading=o, fp32_layers=p,
                    mlp_chunk_tokens=chunk, lean_activations=lean) for p in precisions for c, o in memory for b in batches]


def fit(shape: ModelShape, settings: PlanSettings, examples_per_step: int, budget_gib: float,
        fixed: dict | None = None, offloading: bool = True, host_gib: float | None = None) -> dict:
    """The fastest candidate whose planned peak fits budget_gib x (1 - FIT_MARGIN) (and, with `host_gib`, whose
    offloaded bytes fit that much CPU memory); every candidate with its peak and speed (relative to the chosen
    one), in order of speed. `chosen` is None when nothing fits. The tiled MLP (MLP_CHUNK_TOKENS) with lean
    activations is tried only when nothing fits without them, unless the user set mlp_chunk_tokens or
    lean_activations (then as set)."""
    limit = budget_gib * (1 - FIT_MARGIN)
    fixed = fixed or {}

    def rows_for(chunk: int, lean: bool) -> list[dict]:
        rows = []
        for candidate in fit_candidates(settings, examples_per_step, fixed, offloading, chunk, lean):
            peak, host = settings_peak(shape, candidate)[1], host_offload_gib(shape, candidate)
            fits = peak <= limit and (host_gib is None or host <= host_gib * (1 - FIT_MARGIN))
            rows.append({"settings": candidate, "peak_gib": peak, "host_gib": host, "fits": fits,
                         "speed": relative_speed(candidate)})
        return rows

    rows = rows_for(0, False)
    if not ({"mlp_chunk_tokens", "lean_activations"} & set(fixed)) and not any(row["fits"] for row in rows):
        rows += [row for row in rows_for(MLP_CHUNK_TOKENS, True) if is_tiled(row["settings"])]
    rows.sort(key=lambda row: -row["speed"])  # stable: ties keep fit_candidates' order
    fitting = [row for row in rows if row["fits"]]
    best = fitting[0]["speed"] if fitting else rows[0]["speed"]
    for row in rows:
        row["speed"] = round(row["speed"] / best, 3)
    return {"budget_gib": round(budget_gib, 3), "limit_gib": round(limit, 3), "examples_per_step": examples_per_step,
            "host_gib": None if host_gib is None else round(host_gib, 3),
            "candidates": rows, "chosen": fitting[0] if fitting else None, "fixed": sorted(fixed or {})}


def fit_summary(shape: ModelShape, result: dict) -> dict:
    """What --fit --json prints: the chosen setting as recipe keys, its peak and its longest example."""
    from dataclasses import replace

    chosen = result["chosen"]
    if chosen is None:
        return {"fits": False, "budget_gib": result["budget_gib"], "limit_gib": result["limit_gib"]}
    s = chosen["settings"]
    # the longest example: with the chosen setting at micro-batch 1, the MLP tiled and lean activations, as fit
    # sets them for a max_length that needs them (unless the user set mlp_chunk_tokens or lean_activations:
    # then as set)
    user_set = {"mlp_chunk_tokens", "lean_activations"} & set(result["fixed"])
    chunk = s.mlp_chunk_tokens if user_set else s.mlp_chunk_tokens or MLP_CHUNK_TOKENS
    lean = s.lean_activations if user_set else True
    one = replace(s, micro_batch=1, mlp_chunk_tokens=chunk, lean_activations=lean)
    longest = largest(lambda t: settings_peak(shape, replace(one, max_length=t))[1] <= result["limit_gib"], 2**22)
    return {"fits": True, "per_device_train_batch_size": s.micro_batch,
            "gradient_accumulation_steps": result["examples_per_step"] // s.micro_batch,
            "gradient_checkpointing": s.gradient_checkpointing, "activation_offloading": s.activation_offloading,
            "fp32_layers": s.fp32_layers, "mlp_chunk_tokens": s.mlp_chunk_tokens,
            "lean_activations": s.lean_activations, "peak_gib": chosen["peak_gib"],
            "budget_gib": result["budget_gib"], "limit_gib": result["limit_gib"], "max_length": s.max_length,
            "max_length_at_micro_batch_1": longest, "long_context_mlp_chunk_tokens": chunk,
            "long_context_lean_activations": lean,
            "host_offload_gib": host_offload_gib(shape, s), "kept_from_user": result["fixed"]}


def describe(settings: PlanSettings) -> str:
    tiled = f", MLP by {settings.mlp_chunk_tokens} tokens" if is_tiled(settings) else ""
    tiled += ", lean activations" if settings.lean_activations else ""
    return (f"checkpointing {'on' if settings.gradient_checkpointing else 'off'}, "
            f"offloading {'on' if settings.activation_offloading else 'off'}, "
            f"{'fp32' if settings.fp32_layers else 'bf16'} layers{tiled}")


def format_fit(result: dict, summary: dict, source: str) -> str:
    """One row per (checkpointing, offloading, precision): its largest fitting micro-batch (or 1), the chosen one marked."""
    host = f"; offloading within {result['host_gib']:.1f} GiB of CPU memory" if result["host_gib"] is not None else ""
    lines = [f"Fit for {result['budget_gib']:.2f} GiB ({source}), planned peak at most {result['limit_gib']:.2f} GiB "
             f"({FIT_MARGIN:.0%} margin){host}, {result['examples_per_step']} examples per optimizer step:",
             ""]
    shown = {}
    for row in result["candidates"]:  # fastest first: the first fitting row of each kind is its best
        s = row["settings"]
        kind = (s.gradient_checkpointing, s.activation_offloading, s.fp32_layers, is_tiled(s), s.lean_activations)
        if (kind not in shown or (row["fits"] and not shown[kind]["fits"])
                or (not shown[kind]["fits"] and not row["fits"] and s.micro_batch < shown[kind]["settings"].micro_batch)):
            shown[kind] = row
    width = max(66, *(len(describe(row["settings"])) + 2 for row in shown.values()))
    lines[-1] = f"  {'':3}{'micro-batch x accum':<20}{'setting':<{width}}{'peak GiB':>9}  {'fits':<5}{'speed':>6}"
    for row in sorted(shown.values(), key=lambda r: (not r["fits"], -r["speed"])):
        s = row["settings"]
        mark = "->" if row is result["chosen"] else ""
        batch = f"{s.micro_batch} x {result['examples_per_step'] // s.micro_batch}"
        lines.append(f"  {mark:<3}{batch:<20}"
                     f"{describe(s):<{width}}{row['peak_gib']:>9.2f}  {'yes' if row['fits'] else 'no':<5}{row['speed']:>6.2f}")
    if summary["fits"]:
        chunk = summary["long_context_mlp_chunk_tokens"]
        tiled = f" and the MLP tiled by {chunk:,} tokens (mlp_chunk_tokens)" if chunk else ""
        tiled += " and lean activations" if summary["long_context_lean_activations"] else ""
        lines.append(f"  longest example at micro-batch 1 with the chosen setting{tiled}: "
                     f"{summary['max_length_at_micro_batch_1']:,} tokens")
        if summary["host_offload_gib"]:
            lines.append(f"  offloading takes up to {summary['host_offload_gib']:.2f} GiB of CPU (pinned) memory")
    else:
        lines.append("  nothing fits: a shorter max_length, a smaller lora_r, or a larger GPU")
    return "\n".join(lines)


# --- from a recipe -------------------------------------------------------------------------------------------

HUB_FILES = ["config.json", *TOKENIZER_FILES, "special_tokens_map.json"]  # what planning reads of a Hub model


def model_folder(name: str) -> Path:
    """A local folder holding the model's config.json: the folder given, the embedded base, or only the
    config and tokenizer files of a Hub id (no weights are downloaded)."""
    from lima_lite.config import EMBEDDED_BASE, HUB_ID

    path = Path(name).expanduser()
    if name == EMBEDDED_BASE or path.exists():
        from lima_lite.model import resolve_model

        return Path(resolve_model(name))
    if not HUB_ID.match(name):
        raise LimaError(f"{name}: model path does not exist (give a local folder with its config.json, or a Hub id)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as error:  # offline, gated, unknown id: one line, whatever huggingface_hub raised
        raise LimaError(f"{name}: could not fetch its config.json from the Hugging Face Hub ({type(error).__name__}); "
                        "offline? pass a local folder that holds its config.json") from None


def added_token_count(folder: Path, eot_token: str, trust_remote_code: bool = False) -> int:
    """How many tokens `lima-lite train` adds (EOT, pad) to this tokenizer; 1 (the EOT) without tokenizer files."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        print(f"{folder}: no tokenizer files; planning with the EOT token {eot_token!r} added (1 new row)")
        return 1
    from lima_lite.model import get_tokenizer

    return len(get_tokenizer(str(folder), eot_token, trust_remote_code)[2])


def detected_gpu_gib() -> float | None:
    """Total memory of the current CUDA device in GiB, None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.mem_get_info()[1] / GIB


def read_shape(config_file: Path) -> ModelShape:
    try:
        config = json.loads(Path(config_file).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LimaError(f"{config_file}: cannot read it as JSON ({error})") from None
    return model_shape(config)


def recipe_settings(sft_config, model_args, lima_args, added_tokens: int) -> PlanSettings:
    """The plan's settings for a loaded recipe (SFTConfig, ModelConfig, LimaArguments).

    The loss: training always goes through lima_lite's chunked loss (lima_lite/loss.py)."""
    if not model_args.load_in_4bit:
        raise LimaError("the memory plan covers 4-bit QLoRA training (load_in_4bit: true)")
    from lima_lite.loss import CHUNK_TOKENS

    return PlanSettings(
        micro_batch=sft_config.per_device_train_batch_size, max_length=sft_config.max_length,
        lora_r=model_args.lora_r, gradient_checkpointing=sft_config.gradient_checkpointing,
        padding_free=sft_config.padding_free, optim=sft_config.optim.value, added_tokens=added_tokens,
        loss_chunk_tokens=CHUNK_TOKENS, lora_dropout=model_args.lora_dropout > 0,
        residual_dropout=lima_args.residual_dropout > 0, attention=model_args.attn_implementation or "sdpa_varlen",
        fp32_layers=lima_args.fp32_layers, activation_offloading=sft_config.activation_offloading,
        mlp_chunk_tokens=lima_args.mlp_chunk_tokens, lean_activations=lima_args.lean_activations)


def plan_for(config_file: Path, settings: PlanSettings, gpu_gib: float) -> dict:
    """The plan for a model's config.json and these settings, with the model and settings it assumed."""
    shape = read_shape(config_file)
    plan = memory_plan(shape, settings, gpu_gib)
    plan["model"] = {"config": str(config_file), "hidden": shape.hidden, "layers": shape.layers,
                     "intermediate": shape.intermediate, "vocab": shape.vocab, "added_tokens": settings.added_tokens}
    chunk = settings.loss_chunk_tokens
    plan["settings"] = {"gradient_checkpointing": settings.gradient_checkpointing, "padding_free": settings.padding_free,
                        "fp32_layers": settings.fp32_layers, "activation_offloading": settings.activation_offloading,
                        "optim": settings.optim, "lora_r": settings.lora_r, "mlp_chunk_tokens": settings.mlp_chunk_tokens,
                        "lean_activations": settings.lean_activations,
                        "loss": "chunked" if chunk else ("full logits" if chunk is None else "TRL fused head")}
    return plan


def recipe_plan(sft_config, model_args, lima_args, folder: Path, added_tokens: int, gpu_gib: float) -> dict:
    """The plan for a loaded recipe (SFTConfig, ModelConfig, LimaArguments) and its base's folder."""
    return plan_for(folder / "config.json", recipe_settings(sft_config, model_args, lima_args, added_tokens), gpu_gib)


def advice(plan: dict, effective_batch: int) -> list[str]:
    """What to change so that the plan fits: the largest micro-batch, checkpointing, a shorter max_length."""
    lines = []
    settings = plan["settings"]
    if plan["max_micro_batch"] >= 1:
        micro = max(b for b in range(1, plan["max_micro_batch"] + 1) if effective_batch % b == 0)
        lines.append(f"per_device_train_batch_size={micro} gradient_accumulation_steps={effective_batch // micro} "
                     f"(the same {effective_batch} examples per step; {plan['max_micro_batch']} at most fit)")
    if not settings["gradient_checkpointing"]:
        lines.append("gradient_checkpointing=true (keeps only each layer's input between forward and backward)")
    if plan["max_micro_batch"] == 0 and plan["max_length_at_micro_batch_1"] >= 1:
        lines.append(f"max_length={plan['max_length_at_micro_batch_1']} (the longest example that fits at micro-batch 1)")
    if not lines:
        lines.append("nothing fits at micro-batch 1: a smaller lora_r, optim=paged_adamw_8bit, or a larger GPU")
    return lines


def format_plan(plan: dict, gpu_source: str, effective_batch: int) -> str:
    model, settings = plan["model"], plan["settings"]
    lines = [f"Memory plan: hidden {model['hidden']}, {model['layers']} layers, MLP {model['intermediate']}, vocab "
             f"{model['vocab']} + {model['added_tokens']} added; micro-batch {plan['micro_batch']} x {plan['max_length']:,} "
             f"tokens, gradient checkpointing {'on' if settings['gradient_checkpointing'] else 'off'}, "
             f"{'padding-free' if settings['padding_free'] else 'padded'}, {settings['optim']}, LoRA r {settings['lora_r']}, "
             f"loss: {settings['loss']}"]
    lines += [f"  {name:<18} {gib:8.3f} GiB" for name, gib in plan["components"].items()]
    verdict = "fits" if plan["fits"] else "does NOT fit"
    lines.append(f"  {'peak':<18} {plan['peak_gib']:8.3f} GiB of {plan['gpu_gib']:.3f} GiB ({gpu_source}): {verdict}")
    lines.append(f"  largest micro-batch at {plan['max_length']:,} tokens: {plan['max_micro_batch']}; longest example "
                 f"at micro-batch 1: {plan['max_length_at_micro_batch_1']:,} tokens")
    if not plan["fits"]:
        lines += ["To fit, set:"] + [f"  {line}" for line in advice(plan, effective_batch)]
    return "\n".join(lines)


def check_fit(plan: dict, gpu_present: bool, ignore: bool) -> None:
    """Stop before any weight is loaded when the plan does not fit the GPU it will run on."""
    if gpu_present and not plan["fits"] and not ignore:
        raise LimaError(f"memory plan: {plan['peak_gib']:.1f} GiB at the peak does not fit this GPU's "
                        f"{plan['gpu_gib']:.1f} GiB (see the plan above; ignore_memory_plan=true to train anyway)")


def check_training_fit(resolved, base: str, added_tokens: int) -> dict | None:
    """On a GPU, print the plan of the resolved settings before training and stop (LimaError) when it does not fit;
    nothing on a CPU. Called by `train` before any weight is loaded."""
    detected = detected_gpu_gib()
    if detected is None:
        return None  # a CPU run: the GPU plan says nothing about it (`lima-lite plan` shows it for a GPU to come)
    sft_config, model_args, lima_args = resolved.sft_config, resolved.model_args, resolved.lima_args
    if not model_args.load_in_4bit:
        print("Memory plan: skipped (it covers 4-bit QLoRA; load_in_4bit is false)")
        return None
    plan = recipe_plan(sft_config, model_args, lima_args, Path(base), added_tokens, detected)
    effective = sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps
    print(format_plan(plan, "this GPU", effective))
    check_fit(plan, gpu_present=True, ignore=lima_args.ignore_memory_plan)
    return plan


def fit_budget(gpu_gib: float | None) -> tuple[float, str]:
    """GiB to fit in and where the figure comes from: `gpu_gib`, else the free memory of this machine's GPU,
    else (a CPU run) the system memory available now."""
    if gpu_gib:
        return gpu_gib, "--gpu-gib"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0] / GIB, "free on this GPU"
    return available_host_gib(), "no GPU: available system memory"


def available_host_gib() -> float:
    """System memory available now: where offloaded checkpoints go (pinned)."""
    import psutil

    return psutil.virtual_memory().available / GIB


def current_values(sft_config, lima_args) -> dict:
    """The FIT_KEYS values of these settings."""
    return {"per_device_train_batch_size": sft_config.per_device_train_batch_size,
            "gradient_accumulation_steps": sft_config.gradient_accumulation_steps,
            "gradient_checkpointing": sft_config.gradient_checkpointing,
            "activation_offloading": sft_config.activation_offloading, "fp32_layers": lima_args.fp32_layers,
            "mlp_chunk_tokens": lima_args.mlp_chunk_tokens, "lean_activations": lima_args.lean_activations}


def step_down(fitted: dict) -> dict | None:
    """After an out-of-memory first step: the next fitting candidate with a lower planned peak than the
    chosen one, as recipe keys; None when the fit already stepped down once or nothing lower fits."""
    if fitted is None or fitted["step_downs"]:
        return None
    result = fitted["result"]
    chosen = result["chosen"]
    lower = [row for row in result["candidates"] if row["fits"] and row["peak_gib"] < chosen["peak_gib"]]
    if not lower:
        return None
    fitted["step_downs"] = 1
    s = lower[0]["settings"]  # candidates are in order of speed: the fastest of those below
    return {"per_device_train_batch_size": s.micro_batch,
            "gradient_accumulation_steps": result["examples_per_step"] // s.micro_batch,
            "gradient_checkpointing": s.gradient_checkpointing, "activation_offloading": s.activation_offloading,
            "fp32_layers": s.fp32_layers, "mlp_chunk_tokens": s.mlp_chunk_tokens,
            "lean_activations": s.lean_activations, "peak_gib": lower[0]["peak_gib"]}


FIT_HELP = f"""--fit: the fastest setting whose planned peak fits the GPU's free memory (or --gpu-gib) less a
{FIT_MARGIN:.0%} margin, with the recipe's examples per optimizer step kept: micro-batch x accumulation,
gradient checkpointing, activation offloading (TRL's, with checkpointing: the checkpoints go to pinned CPU
memory, the GPU keeping TRL's {OFFLOAD_STASH} newest in the forward and {OFFLOAD_ON_GPU} in the backward; only
within --host-gib), fp32 or bf16 layers. Keys given as key=value
are kept. Speed is ranked by a cost model: throughput grows as mb / (mb + {BATCH_HALF_SPEED:g}) (fitted to two H100 rows of a
LLaMA-7B shape, mb 4 and 8); checkpointing costs x{RECOMPUTE_COST:g} and offloading a further x{OFFLOAD_COST:g}
(measured on the CPU); fp32 and bf16 layers are ranked equal (the recipe's own wins a tie). When nothing fits,
the MLP is tiled (mlp_chunk_tokens={MLP_CHUNK_TOKENS}: one chunk's activations at a time, x{TILED_MLP_COST:g}) and
activations are lean (lean_activations: norms and LoRA inputs recomputed in the backward, x{LEAN_COST:g})."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lima-lite plan", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Predict the peak GPU memory of `lima-lite train` for a recipe, by component, from the base\n"
                    "model's config.json alone (a Hub id: only config.json and tokenizer files are fetched).",
        epilog="keys: any recipe key (per_device_train_batch_size, max_length, gradient_checkpointing, padding_free,\n"
               "optim, lora_r, model_name_or_path, ...). Without --gpu-gib: this machine's GPU, else 24 GiB.\n\n"
               + FIT_HELP)
    parser.add_argument("recipe", help="recipe YAML (a path, or a name from recipes/: llama-7b, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a recipe key")
    parser.add_argument("--gpu-gib", type=bounded(float, 0, 1e6, low_open=True), help="plan for a GPU of this many GiB")
    parser.add_argument("--fit", action="store_true", help="choose the fastest setting that fits (see below)")
    parser.add_argument("--host-gib", type=bounded(float, 0, 1e6, low_open=True), help="with --fit: CPU memory for "
                        "offloaded checkpoints (default: what this machine has available now)")
    parser.add_argument("--json", action="store_true", help="print the plan (or the fit) as one JSON object")
    args = parser.parse_args(argv)
    from lima_lite.config import load_recipe
    from lima_lite.recipe_yaml import parse_overrides, resolve_recipe

    # The recipe's own settings, not this machine's resolved ones: the plan is for a GPU (--gpu-gib) that may
    # be another machine's.
    recipe = load_recipe(resolve_recipe(args.recipe), args.overrides)
    sft_config, model_args, lima_args = recipe.sft_config, recipe.model_args, recipe.lima_args
    folder = model_folder(model_args.model_name_or_path)
    if not (folder / "config.json").is_file():
        raise LimaError(f"{folder}: no config.json")
    added = added_token_count(folder, lima_args.eot_token, sft_config.trust_remote_code)
    if args.fit:
        return print_fit(sft_config, model_args, lima_args, folder, added, set(parse_overrides(args.overrides)),
                         args.gpu_gib, args.json, args.host_gib or available_host_gib())
    detected = None if args.gpu_gib else detected_gpu_gib()
    gpu_gib = args.gpu_gib or detected or DEFAULT_GPU_GIB
    source = "--gpu-gib" if args.gpu_gib else ("this GPU" if detected else f"no GPU found: assumed {DEFAULT_GPU_GIB:g} GiB")
    plan = recipe_plan(sft_config, model_args, lima_args, folder, added, gpu_gib)
    if args.json:
        print(json.dumps(plan))
    else:
        print(format_plan(plan, source, sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps))
    return 0


def print_fit(sft_config, model_args, lima_args, folder: Path, added: int, explicit: set[str], gpu_gib: float | None,
              as_json: bool, host_gib: float) -> int:
    """`lima-lite plan --fit`: the candidates table (or one JSON object); 1 when nothing fits."""
    shape = read_shape(folder / "config.json")
    settings = recipe_settings(sft_config, model_args, lima_args, added)
    budget, source = fit_budget(gpu_gib)
    fixed = {key: value for key, value in current_values(sft_config, lima_args).items() if key in explicit}
    examples = sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps
    # a GPU is what is planned for (given or detected); on a CPU run train leaves offloading out
    result = fit(shape, settings, examples, budget, fixed, offloading=source != "no GPU: available system memory",
                 host_gib=host_gib)
    summary = fit_summary(shape, result)
    print(json.dumps(summary) if as_json else format_fit(result, summary, source))
    return 0 if summary["fits"] else 1
