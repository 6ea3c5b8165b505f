"""`lima-lite plan`: the memory plan of a recipe, by component, from the base model's config.json alone.

    $ lima-lite plan recipes/llama-7b.yaml
    $ lima-lite plan recipes/llama-33b.yaml model_name_or_path=tests/assets/llama-shapes/33b --gpu-gib 24 --json
    $ lima-lite plan recipes/llama-7b.yaml --fit --gpu-gib 24 --json    # the fastest setting that fits

What is counted and why: lima_lite.memory.estimate; the fit search and its cost model: lima_lite.memory.fit; auto_fit,
which applies a fit before training: lima_lite.resolve.
"""

import argparse
from pathlib import Path

from lima_lite import LimaError
from lima_lite.config import EMBEDDED_BASE, HUB_ID, load_recipe
from lima_lite.files import print_json
from lima_lite.flags import bounded
from lima_lite.layout import TOKENIZER_FILES
from lima_lite.machine import available_host_gib
from lima_lite.memory.estimate import GIB, OFFLOAD_ON_GPU, OFFLOAD_STASH, PlanSettings, memory_plan, read_shape, recipe_settings
from lima_lite.memory.fit import (
    BATCH_HALF_SPEED,
    FIT_MARGIN,
    LEAN_COST,
    MLP_CHUNK_TOKENS,
    OFFLOAD_COST,
    RECOMPUTE_COST,
    TILED_MLP_COST,
    current_values,
    describe,
    fit,
    fit_summary,
    is_tiled,
)
from lima_lite.recipe_yaml import parse_overrides, resolve_recipe

DEFAULT_GPU_GIB = 24.0


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
    path = Path(name).expanduser()
    if name == EMBEDDED_BASE or path.exists():
        from lima_lite.model import resolve_base

        return Path(resolve_base(name, "model_name_or_path"))
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
        print_json(plan)
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
    print_json(summary) if as_json else print(format_fit(result, summary, source))
    return 0 if summary["fits"] else 1
