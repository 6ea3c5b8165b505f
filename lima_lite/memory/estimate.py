"""The memory model: the peak GPU memory of QLoRA training, by component, from the model's config.json alone.

    $ lima-lite plan recipes/llama-7b.yaml          # lima_lite.memory.plan: the command; lima_lite.memory.fit: --fit
    >>> shape = model_shape(json.load(open("config.json")))
    >>> settings = PlanSettings(micro_batch=4, max_length=2048, lora_r=64, gradient_checkpointing=True,
    ...                         padding_free=True, optim="paged_adamw_8bit", added_tokens=1)
    >>> plan = memory_plan(shape, settings, gpu_gib=24)
    >>> plan["peak_gib"], plan["fits"], plan["max_micro_batch"]

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
  Without it every layer keeps those. With the tiled MLP (`mlp_chunk_tokens` N, lima_lite.memory.rewrites.tile_mlp) the
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

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from lima_lite import LimaError

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5
FRAGMENTATION = 0.20  # of what is allocated and freed during a step (see the module docstring)
TRANSIENT = ("gradients", "activations", "loss", "layer_backward")
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
LEAN_CHUNK_TOKENS = 4096  # lima_lite.memory.rewrites.LEAN_CHUNK_TOKENS: the norms' chunk when the MLP is not tiled
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

    `lean` (lean_activations: lima_lite.memory.rewrites.lean_norms and lean_lora): a norm keeps only its input, which is
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
    node runs (tests/oracles/step_bytes.HostOffload follows those rules)."""
    return max(0, shape.layers - OFFLOAD_ON_GPU) * tokens * shape.hidden * rb


def lora_numels(shape: ModelShape, r: int) -> list[int]:
    """Sizes of every LoRA A and B matrix (all linear layers of every decoder layer)."""
    return [n for out, inp in linear_shapes(shape) for n in (r * inp, out * r)] * shape.layers


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
    mlp_chunk_tokens: int = 0  # > 0: the tiled MLP (lima_lite.memory.rewrites.tile_mlp)
    lean_activations: bool = False  # norms and LoRA inputs recomputed (lima_lite.memory.rewrites.lean_norms, lean_lora)


def component_bytes(shape: ModelShape, settings: PlanSettings, tokens: int | None = None, cpu_masks: bool = False) -> dict:
    """Bytes of each component (no CUDA context, no fragmentation margin): what live tensors hold at the peak.

    `tokens` in the micro-batch of settings.micro_batch examples (default: every example max_length long).
    settings.loss_chunk_tokens None: the model's own head builds the logits of the whole micro-batch; 0: TRL's
    fused head (used when no token is added); N: a chunked loss over N tokens at a time. With fp32_layers false
    the unquantized weights and the residual stream are bf16, as for a base that skips
    `prepare_model_for_kbit_training` (plain TRL, as in the H100 anchor). mlp_chunk_tokens N > 0: the tiled MLP
    (lima_lite.memory.rewrites.tile_mlp), whose intermediate activations exist for N tokens at a time. lean_activations:
    norms and LoRA inputs recomputed in the backward (`layer_parts_per_token`); a norm's backward then works on
    one chunk of LEAN_CHUNK_TOKENS (or the MLP's chunk) at a time. `cpu_masks`: dropout masks as the CPU keeps
    them, for the calibration.
    """
    tokens = settings.micro_batch * settings.max_length if tokens is None else tokens
    kept, top, backward, forward = activation_bytes(shape, settings, tokens, cpu_masks)
    loss = loss_bytes(shape, settings, tokens)
    return {**weight_bytes(shape, settings), "activations": kept + top, "loss": loss,
            # the loss (with `top`), a layer's backward and a layer's forward never run at once
            "layer_backward": max(0, max(backward, forward) - loss - top)}


def weight_bytes(shape: ModelShape, settings: PlanSettings) -> dict:
    """Weights, LoRA, trainable-token rows, their gradients and the optimizer state."""
    unquantized_bytes = 4 if settings.fp32_layers else 2
    added_tokens = settings.added_tokens
    h, vocab = shape.hidden, shape.vocab + added_tokens
    head_modules = 1 if shape.tied else 2
    norms = (2 * shape.layers + 1) * h
    rotary = 2 * (shape.dim // 2)  # inv_freq and original_inv_freq
    token_rows = added_tokens * h * (head_modules if added_tokens else 0)  # PEFT trainable-token deltas
    lora = lora_numels(shape, settings.lora_r)
    trainable = lora + ([added_tokens * h] * head_modules if added_tokens else [])

    weights_16_32bit = unquantized_bytes * (head_modules * vocab * h + norms) + 4 * rotary + 4 * token_rows
    return {
        "weights_4bit": shape.layers * sum(nf4_bytes(out * inp) for out, inp in linear_shapes(shape)),
        "weights_16_32bit": weights_16_32bit,
        "lora": 2 * sum(lora),
        "trainable_tokens": 2 * token_rows,
        "gradients": 2 * sum(trainable),
        "optimizer": adam_bytes(trainable, settings.optim),
    }


def loss_bytes(shape: ModelShape, settings: PlanSettings, tokens: int) -> int:
    """What the loss holds at once, for `tokens` of the micro-batch."""
    h, vocab, loss_chunk_tokens = shape.hidden, shape.vocab + settings.added_tokens, settings.loss_chunk_tokens
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
    return loss


def activation_bytes(shape: ModelShape, settings: PlanSettings, tokens: int, cpu_masks: bool) -> tuple[int, int, int, int]:
    """(kept: the activations kept between forward and backward; top: what only the loss and the final norm keep;
    backward: one layer's backward; forward: one layer's forward under checkpointing)."""
    h, vocab, sequences = shape.hidden, shape.vocab + settings.added_tokens, settings.micro_batch
    rb = 4 if settings.fp32_layers else 2
    padding_free, attention, added_tokens = settings.padding_free, settings.attention, settings.added_tokens
    lora_dropout, residual_dropout = settings.lora_dropout, settings.residual_dropout
    mlp_chunk_tokens, lean_activations = settings.mlp_chunk_tokens, settings.lean_activations
    gradient_checkpointing, activation_offloading = settings.gradient_checkpointing, settings.activation_offloading
    loss_chunk_tokens = settings.loss_chunk_tokens
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
    return kept, top, backward, forward


def settings_peak(shape: ModelShape, settings: PlanSettings) -> tuple[dict, float]:
    """Components in GiB (rounded) and the peak, their sum."""
    raw = component_bytes(shape, settings)
    gib = {"cuda_context": CUDA_CONTEXT_GIB, **{k: v / GIB for k, v in raw.items()}}
    gib["fragmentation"] = FRAGMENTATION * sum(gib[k] for k in TRANSIENT)
    components = {k: round(gib[k], 3) for k in COMPONENTS}
    return components, round(sum(components.values()), 3)


def host_offload_gib(shape: ModelShape, settings: PlanSettings) -> float:
    """At most the CPU (pinned) memory that activation offloading takes: every tensor saved for the backward
    may be copied there once, the checkpoints and what the loss saves; counted on the CPU at about half this
    on a tiny model, where the loss's chunk weighs most (bench/plan_calibration.py --offloading)."""
    if not (settings.activation_offloading and settings.gradient_checkpointing):
        return 0.0
    raw = component_bytes(shape, replace(settings, activation_offloading=False))
    return round((raw["activations"] + raw["loss"]) / GIB, 3)


def memory_plan(shape: ModelShape, settings: PlanSettings, gpu_gib: float, search: bool = True) -> dict:
    """The plan: components in GiB (summing to peak_gib), fit, largest micro-batch and context that fit."""
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


def read_shape(config_file: Path) -> ModelShape:
    try:
        config = json.loads(Path(config_file).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LimaError(f"{config_file}: cannot read it as JSON ({error})") from None
    return model_shape(config)


def recipe_settings(sft_config, model_args, lima_args, added_tokens: int) -> PlanSettings:
    """The plan's settings for a loaded recipe (SFTConfig, ModelConfig, LimaArguments).

    The loss: training always goes through lima_lite's chunked loss (lima_lite/memory/loss.py)."""
    if not model_args.load_in_4bit:
        raise LimaError("the memory plan covers 4-bit QLoRA training (load_in_4bit: true)")
    from lima_lite.memory.loss import CHUNK_TOKENS

    return PlanSettings(
        micro_batch=sft_config.per_device_train_batch_size, max_length=sft_config.max_length,
        lora_r=model_args.lora_r, gradient_checkpointing=sft_config.gradient_checkpointing,
        padding_free=sft_config.padding_free, optim=sft_config.optim.value, added_tokens=added_tokens,
        loss_chunk_tokens=CHUNK_TOKENS, lora_dropout=model_args.lora_dropout > 0,
        residual_dropout=lima_args.residual_dropout > 0, attention=model_args.attn_implementation or "sdpa_varlen",
        fp32_layers=lima_args.fp32_layers, activation_offloading=sft_config.activation_offloading,
        mlp_chunk_tokens=lima_args.mlp_chunk_tokens, lean_activations=lima_args.lean_activations)
