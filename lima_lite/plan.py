"""Memory plan: the peak GPU memory of QLoRA training, by component, from the model's config.json alone.

    $ lima-lite plan recipes/llama-7b.yaml
    $ lima-lite plan recipes/llama-33b.yaml model_name_or_path=tests/assets/llama-shapes/33b --gpu-gib 24 --json
    >>> shape = model_shape(json.load(open("config.json")))
    >>> plan = memory_plan(shape, micro_batch=4, max_length=2048, lora_r=64, gradient_checkpointing=True,
    ...                    padding_free=True, optim="paged_adamw_8bit", added_tokens=1, gpu_gib=24)
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
  Without it every layer keeps those.
- The loss: the model's own head (used when an EOT is added, so its lm_head row trains) builds the logits
  of the micro-batch: bf16 logits, their fp32 copy and log-softmax in the forward; in the backward the
  log-softmax, its incoming gradient and its outgoing gradient, 3 x 4 bytes per token and vocabulary entry.
  A chunked loss holds that only for its chunk of tokens.
- The loss and a layer's backward never run at once: `layer_backward` is what one layer's backward needs
  beyond the loss's working set (0 when the loss is larger).
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
from lima_lite.config import bounded

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5
FRAGMENTATION = 0.20  # of what is allocated and freed during a step (see the module docstring)
TRANSIENT = ("gradients", "activations", "loss", "layer_backward")
DEFAULT_GPU_GIB = 24.0
NF4_BLOCK = 64  # bitsandbytes' default 4-bit block size
NESTED_BLOCK = 256  # double quantization: the absmax of 256 blocks share one fp32 absmax
ADAM8_BLOCK = 256  # bitsandbytes' blockwise 8-bit optimizer state
ADAM8_MIN_SIZE = 4096  # smaller tensors keep 32-bit state
TRL_TOKEN_TILE, TRL_VOCAB_TILE = 4096, 32768  # TRL's fused head (trl/kernels/chunked_logprob.py)
RESIDUAL_BYTES = 4  # fp32 embeddings -> fp32 residual stream
COMPUTE_BYTES = 2  # bf16 autocast
MASK_BYTES = 1  # a dropout mask on CUDA is bool
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
                          cpu_masks: bool = False) -> int:
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
    h, m, kv, q = shape.hidden, shape.intermediate, shape.kv_heads * shape.dim, shape.heads * shape.dim
    lora_in = (2 * mask if cpu_masks else mask) + cb if lora_dropout else cb  # LoRA A's input (+ mask)
    norm = rb * h + (4 * h if rb != 4 else 0)  # output; RMSNorm upcasts a 16-bit input to fp32 and keeps it
    attention = norm + 2 * (q + 2 * kv) + 2 * q + 4 * shape.heads + rb * h
    mlp = norm + 3 * rb * m
    if lora:
        attention += lora_in * (3 * h + q)
        mlp += lora_in * (2 * h + m)
    if residual_dropout:
        attention += 2 * mask if cpu_masks else mask  # after o_proj: bf16
        mlp += rb * mask if cpu_masks else mask  # after down_proj: the residual's dtype
    return attention + mlp


def lora_numels(shape: ModelShape, r: int) -> list[int]:
    """Sizes of every LoRA A and B matrix (all linear layers of every decoder layer)."""
    return [n for out, inp in linear_shapes(shape) for n in (r * inp, out * r)] * shape.layers


def component_bytes(shape: ModelShape, tokens: int, sequences: int, lora_r: int, gradient_checkpointing: bool,
                    padding_free: bool, optim: str, added_tokens: int, loss_chunk_tokens: int | None,
                    lora_dropout: bool = True, residual_dropout: bool = True, attention: str = "sdpa",
                    unquantized_bytes: int = 4, rb: int = RESIDUAL_BYTES, cpu_masks: bool = False) -> dict:
    """Bytes of each component (no CUDA context, no fragmentation margin): what live tensors hold at the peak.

    `tokens` in the micro-batch, in `sequences` examples. `loss_chunk_tokens` None: the model's own head
    builds the logits of the whole micro-batch; 0: TRL's fused head (used when no token is added); N: a
    chunked loss over N tokens at a time. `unquantized_bytes` and `rb` (the residual stream's bytes) are 2
    for a bf16 base that skips `prepare_model_for_kbit_training` (plain TRL, as in the H100 anchor).
    """
    h, vocab = shape.hidden, shape.vocab + added_tokens
    head_modules = 1 if shape.tied else 2
    norms = (2 * shape.layers + 1) * h
    rotary = 2 * (shape.dim // 2)  # inv_freq and original_inv_freq
    token_rows = added_tokens * h * (head_modules if added_tokens else 0)  # PEFT trainable-token deltas
    lora = lora_numels(shape, lora_r)
    trainable = lora + ([added_tokens * h] * head_modules if added_tokens else [])

    weights_16_32bit = unquantized_bytes * (head_modules * vocab * h + norms) + 4 * rotary + 4 * token_rows
    # Activations kept between forward and backward: each layer's input (the checkpoints), the final norm's
    # input and output, rotary cos and sin (fp32), the padding-free mask (the head weight's bf16 copy below).
    # One sequence needs no mask (causal); padded batches of max_length examples have no padding to mask.
    masked = padding_free and sequences > 1 and attention in ("sdpa", "eager")  # not flash or sdpa_varlen
    mask, bias = (tokens * tokens, 2 * tokens * tokens) if masked else (0, 0)
    # sdpa_varlen keeps each example's attention output for its backward and their concatenation (bf16)
    split = padding_free and sequences > 1 and attention == "sdpa_varlen"
    layer = (layer_bytes_per_token(shape, True, lora_dropout, residual_dropout, rb=rb, cpu_masks=cpu_masks)
             + (COMPUTE_BYTES * h if split else 0)) * tokens + bias
    kept = (shape.layers + 2) * tokens * h * rb + 2 * tokens * shape.dim * 4 + mask
    if loss_chunk_tokens is None:
        kept += COMPUTE_BYTES * vocab * h  # autocast's bf16 copy of the head weight, inside the model's forward
    if rb != 4:
        kept += 4 * tokens * h  # the final norm's fp32 copy of its input
    if added_tokens and not shape.tied:
        kept += COMPUTE_BYTES * tokens * h  # the head's input, for the gradient of its trainable rows
    if not gradient_checkpointing:
        kept += shape.layers * layer
    if loss_chunk_tokens == 0:
        # TRL's fused head casts the weight tile by tile and keeps the labelled positions' hidden states
        kept += COMPUTE_BYTES * tokens * h
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
    # One layer's backward: its recomputed forward (with checkpointing), the gradient flowing through it
    # (one of the residual and one of the MLP width, fp32) and the largest dequantized bf16 weight.
    backward = tokens * (h + shape.intermediate) * rb + 2 * max(o * i for o, i in linear_shapes(shape))
    if gradient_checkpointing:
        backward += layer
    return {
        "weights_4bit": shape.layers * sum(nf4_bytes(out * inp) for out, inp in linear_shapes(shape)),
        "weights_16_32bit": weights_16_32bit,
        "lora": 2 * sum(lora),
        "trainable_tokens": 2 * token_rows,
        "gradients": 2 * sum(trainable),
        "optimizer": adam_bytes(trainable, optim),
        "activations": kept,
        "loss": loss,
        "layer_backward": max(0, backward - loss),
    }


def memory_plan(shape: ModelShape, micro_batch: int, max_length: int, lora_r: int, gradient_checkpointing: bool,
                padding_free: bool, optim: str, added_tokens: int, gpu_gib: float,
                loss_chunk_tokens: int | None = None, lora_dropout: bool = True, residual_dropout: bool = True,
                attention: str = "sdpa_varlen", search: bool = True, fp32_layers: bool = True) -> dict:
    """The plan: components in GiB (summing to peak_gib), fit, largest micro-batch and context that fit."""
    width = 4 if fp32_layers else 2  # unquantized weights and the residual stream

    def peak(batch: int, length: int) -> tuple[dict, float]:
        raw = component_bytes(shape, batch * length, batch, lora_r, gradient_checkpointing, padding_free, optim,
                              added_tokens, loss_chunk_tokens, lora_dropout, residual_dropout, attention,
                              unquantized_bytes=width, rb=width)
        gib = {"cuda_context": CUDA_CONTEXT_GIB, **{k: v / GIB for k, v in raw.items()}}
        gib["fragmentation"] = FRAGMENTATION * sum(gib[k] for k in TRANSIENT)
        components = {k: round(gib[k], 3) for k in COMPONENTS}
        return components, round(sum(components.values()), 3)

    components, peak_gib = peak(micro_batch, max_length)
    plan = {"peak_gib": peak_gib, "fits": peak_gib <= gpu_gib, "gpu_gib": round(gpu_gib, 3),
            "components": components, "micro_batch": micro_batch, "max_length": max_length,
            "tokens_per_micro_batch": micro_batch * max_length}
    if search:
        plan["max_micro_batch"] = largest(lambda b: peak(b, max_length)[1] <= gpu_gib, 4096)
        plan["max_length_at_micro_batch_1"] = largest(lambda t: peak(1, t)[1] <= gpu_gib, 2**22)
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


# --- from a recipe -------------------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
HUB_FILES = ["config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]


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


def plan_for(config_file: Path, micro_batch: int, max_length: int, gradient_checkpointing: bool, padding_free: bool,
             optim: str, lora_r: int, lora_dropout: float, residual_dropout: float, added_tokens: int,
             gpu_gib: float, attention: str | None = None, loss_chunk_tokens: int | None = None,
             fp32_layers: bool = True) -> dict:
    """The plan for a model's config.json and a recipe's values.

    The loss: the model's own head when tokens are added (lima_lite/train.py, so the EOT rows train),
    TRL's fused head otherwise; a chunked loss when `loss_chunk_tokens` is given.
    """
    try:
        config = json.loads(Path(config_file).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LimaError(f"{config_file}: cannot read it as JSON ({error})") from None
    shape = model_shape(config)
    chunk = loss_chunk_tokens if loss_chunk_tokens else (None if added_tokens else 0)
    plan = memory_plan(shape, micro_batch, max_length, lora_r, gradient_checkpointing, padding_free, optim,
                       added_tokens, gpu_gib, chunk, lora_dropout > 0, residual_dropout > 0,
                       attention or "sdpa_varlen", fp32_layers=fp32_layers)
    plan["model"] = {"config": str(config_file), "hidden": shape.hidden, "layers": shape.layers,
                     "intermediate": shape.intermediate, "vocab": shape.vocab, "added_tokens": added_tokens}
    plan["settings"] = {"gradient_checkpointing": gradient_checkpointing, "padding_free": padding_free,
                        "fp32_layers": fp32_layers,
                        "optim": optim, "lora_r": lora_r, "loss": "chunked" if loss_chunk_tokens else
                        ("full logits" if added_tokens else "TRL fused head")}
    return plan


def recipe_plan(sft_config, model_args, lima_args, folder: Path, added_tokens: int, gpu_gib: float) -> dict:
    """The plan for a loaded recipe (SFTConfig, ModelConfig, LimaArguments) and its base's folder."""
    if not model_args.load_in_4bit:
        raise LimaError("the memory plan covers 4-bit QLoRA training (load_in_4bit: true)")
    from lima_lite.loss import CHUNK_TOKENS

    # training always goes through lima_lite's chunked loss (lima_lite/loss.py)
    return plan_for(folder / "config.json", sft_config.per_device_train_batch_size, sft_config.max_length,
                    sft_config.gradient_checkpointing, sft_config.padding_free, sft_config.optim.value,
                    model_args.lora_r, model_args.lora_dropout, lima_args.residual_dropout, added_tokens, gpu_gib,
                    model_args.attn_implementation, loss_chunk_tokens=CHUNK_TOKENS, fp32_layers=lima_args.fp32_layers)


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


def check_training_fit(sft_config, model_args, lima_args, base: str, added_tokens: int) -> dict | None:
    """Print the plan before training; on a GPU it does not fit, stop (LimaError). Called by `train`
    before any weight is loaded."""
    if not model_args.load_in_4bit:
        print("Memory plan: skipped (it covers 4-bit QLoRA; load_in_4bit is false)")
        return None
    detected = detected_gpu_gib()
    plan = recipe_plan(sft_config, model_args, lima_args, Path(base), added_tokens, detected or DEFAULT_GPU_GIB)
    effective = sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps
    print(format_plan(plan, "this GPU" if detected else f"no GPU: assumed {DEFAULT_GPU_GIB:g} GiB", effective))
    check_fit(plan, gpu_present=detected is not None, ignore=lima_args.ignore_memory_plan)
    return plan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lima-lite plan", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Predict the peak GPU memory of `lima-lite train` for a recipe, by component, from the base\n"
                    "model's config.json alone (a Hub id: only config.json and tokenizer files are fetched).",
        epilog="keys: any recipe key (per_device_train_batch_size, max_length, gradient_checkpointing, padding_free,\n"
               "optim, lora_r, model_name_or_path, ...). Without --gpu-gib: this machine's GPU, else 24 GiB.")
    parser.add_argument("recipe", help="recipe YAML (a path, or a name from recipes/: llama-7b, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a recipe key")
    parser.add_argument("--gpu-gib", type=bounded(float, 0, 1e6, low_open=True), help="plan for a GPU of this many GiB")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    args = parser.parse_args(argv)
    from lima_lite.config import load_recipe, resolve_recipe

    _, sft_config, model_args, lima_args = load_recipe(resolve_recipe(args.recipe), args.overrides)
    folder = model_folder(model_args.model_name_or_path)
    if not (folder / "config.json").is_file():
        raise LimaError(f"{folder}: no config.json")
    added = added_token_count(folder, lima_args.eot_token, sft_config.trust_remote_code)
    detected = None if args.gpu_gib else detected_gpu_gib()
    gpu_gib = args.gpu_gib or detected or DEFAULT_GPU_GIB
    source = "--gpu-gib" if args.gpu_gib else ("this GPU" if detected else f"no GPU found: assumed {DEFAULT_GPU_GIB:g} GiB")
    plan = recipe_plan(sft_config, model_args, lima_args, folder, added, gpu_gib)
    if args.json:
        print(json.dumps(plan))
    else:
        print(format_plan(plan, source, sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps))
    return 0
