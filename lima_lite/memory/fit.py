"""The fit search: the fastest setting whose planned peak fits a budget, ranked by a cost model.

    >>> result = fit(shape, settings, examples_per_step=64, budget_gib=24)   # lima_lite.memory.estimate's shape, settings
    >>> result["chosen"], fit_summary(shape, result)["per_device_train_batch_size"]

auto_fit (lima_lite.resolve) applies the chosen setting before training; `lima-lite plan --fit` shows the table.
"""

from dataclasses import replace

from lima_lite.memory.estimate import ModelShape, PlanSettings, host_offload_gib, largest, settings_peak

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
# The tiled MLP (lima_lite.memory.rewrites.tile_mlp) computes each MLP forward once more: its step time relative to the
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


