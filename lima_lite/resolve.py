"""What a run really uses, decided once: a recipe and a machine in, read-only settings and one reason per choice out.

    >>> recipe = load_recipe("recipes/quickstart.yaml")
    >>> resolved = resolve(recipe, detect_machine())
    >>> resolved.sft_config.num_train_epochs, resolved.reasons["num_train_epochs"]
    >>> print(resolved.describe())          # what `lima-lite inspect RECIPE --resolved` prints

The choices, in the order they are made (each one sees the ones before):
- precision (dtype, bf16, fp16, use_cpu): from the hardware where the recipe leaves them out. TRL's SFTConfig
  fixes its device and mixed precision when it is built, so `load_recipe` reads them from the same `Machine`;
  resolve says why.
- slow_cpu_fallback (the quick start): on a CPU without native bf16, an unquantized base for one epoch.
- gradient accumulation per data-parallel process, so an optimizer step keeps the recipe's examples.
- the end of LIMA's linear schedule (final_lr_ratio of the peak), and a dev loss every epoch with a dev set.
- auto_fit: the fastest micro-batch, checkpointing, offloading and layer precision the memory plan fits.
- fast paths: flash-attention's varlen kernel or sdpa per example; activation offloading where there is a GPU.

`resolve` reads nothing and prints nothing: the machine (`detect_machine`), the base and the data (`Inputs`) and a
resumed run's fit come in as values; the lines to print come out as `notes`. Nothing changes the settings after it:
they are read-only copies (lima_lite.config.frozen), and TRL's trainer gets a writable copy of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from lima_lite import LimaError, precision
from lima_lite.config import COMMAND_LINE, MACHINE_SOURCE, LimaArguments, Recipe, frozen, writable
from lima_lite.machine import Machine
from lima_lite.memory.estimate import ModelShape, recipe_settings
from lima_lite.memory.fit import FIT_KEYS, FIT_MARGIN, current_values, describe, fit, fit_summary

if TYPE_CHECKING:
    from trl import ModelConfig, ScriptArguments, SFTConfig


@dataclass(frozen=True)
class Inputs:
    """What resolve needs to know of the base model and the data (lima_lite.train.prepare reads them)."""

    added_tokens: int  # tokens added to the vocabulary (the EOT, a pad)
    dev_examples: int  # dev conversations kept after encoding
    shape: ModelShape | None = None  # the base's config.json, for auto_fit


@dataclass(frozen=True)
class Resolved:
    """The settings a run uses, read-only, with the reason for each choice resolve made."""

    script_args: ScriptArguments
    sft_config: SFTConfig
    model_args: ModelConfig
    lima_args: LimaArguments
    reasons: Mapping[str, str]  # key -> why it has its value (only the keys resolve decided or explained)
    notes: tuple[str, ...]  # the lines a run prints about its choices, in order
    machine: Machine
    fit: dict | None = field(default=None, compare=False)  # auto_fit's search (plan.fit), for a step down

    def value(self, key: str):
        for settings in (self.sft_config, self.model_args, self.lima_args, self.script_args):
            if key in settings.__dataclass_fields__:
                return getattr(settings, key)
        raise KeyError(key)

    def describe(self) -> str:
        """One line per decided setting: `key = value  # why`."""
        width = max(len(f"{key} = {self.value(key)!r}") for key in self.reasons)
        return "\n".join(f"{f'{key} = {self.value(key)!r}':<{width}}  # {why}" for key, why in self.reasons.items())

    def summary(self) -> str:
        """The resolved settings in one line (the quick start prints it)."""
        sft, model, lima = self.sft_config, self.model_args, self.lima_args
        autocast = ", bf16 autocast" if sft.bf16 else ", fp16 autocast" if sft.fp16 else ""
        base = "4-bit NF4 base" if model.load_in_4bit else "unquantized base"
        processes = f" x {self.machine.processes} processes" if self.machine.processes > 1 else ""
        return (f"Resolved settings: {model.dtype}{autocast}, {base}, {sft.num_train_epochs:g} epoch(s) of "
                f"{sft.per_device_train_batch_size} x {sft.gradient_accumulation_steps}{processes} examples per step, "
                f"attention {model.attn_implementation}, learning rate {sft.learning_rate:g} -> "
                f"{sft.learning_rate * lima.final_lr_ratio:g} (`lima-lite inspect RECIPE --resolved` says why)")


# A choice: key -> (value, why). Each function below returns the choices of one concern from what it reads.
Choices = dict[str, tuple[object, str]]


def resolve(recipe: Recipe, machine: Machine, inputs: Inputs | None = None, resumed: dict | None = None) -> Resolved:
    """The settings a run of `recipe` uses on `machine`: every choice made from the machine and the data, here.

    `inputs`: the base and the data (None before they are read: then no dev loss and no auto_fit); `resumed`:
    auto_fit's record in run.json of the run this one resumes (its setting is kept). Pure: the recipe is not
    changed (it is read-only), and the same inputs give the same result."""
    configs = [writable(c) for c in (recipe.sft_config, recipe.model_args, recipe.lima_args, recipe.script_args)]
    reasons, notes = {}, []

    def apply(choices: Choices) -> None:
        for key, (value, why) in choices.items():
            setting = next(c for c in configs if key in c.__dataclass_fields__)
            setattr(setting, key, value)
            reasons[key] = why

    sft, model, lima = configs[:3]
    apply(precision_choices(recipe, machine))
    fallback = slow_cpu_choices(recipe, machine)
    if fallback:
        keys = " ".join(f"{key}={str(value).lower()}" for key, (value, _) in fallback.items())
        notes.append(f"{machine.hardware.label}: the quick start trains with {keys} (fast on this CPU; give either on "
                     "the command line to change it)")
    apply(fallback)
    apply(accumulation_choices(sft, machine))
    apply(schedule_choices(sft, lima))
    apply(dev_choices(inputs))
    fit, choices, line = auto_fit_choices(recipe, sft, model, lima, machine, inputs, resumed)
    notes += [line] if line else []
    apply(choices)
    choices, lines = fast_path_choices(sft, model, machine)
    notes += lines
    apply(choices)
    sft, model, lima, script = configs
    return Resolved(frozen(script), frozen(sft), frozen(model), frozen(lima), MappingProxyType(reasons), tuple(notes),
                    machine, fit)


def stepped_down(resolved: Resolved, lower: dict) -> Resolved:
    """`resolved` with auto_fit's step down (plan.step_down: FIT_KEYS -> value) after an out-of-memory first step."""
    sft, lima = writable(resolved.sft_config), writable(resolved.lima_args)
    reasons = dict(resolved.reasons)
    for key in FIT_KEYS:
        setattr(sft if key in sft.__dataclass_fields__ else lima, key, lower[key])
        reasons[key] = f"auto_fit: stepped down once, the first step ran out of GPU memory (planned {lower['peak_gib']:.2f} GiB)"
    return Resolved(resolved.script_args, frozen(sft), resolved.model_args, frozen(lima), MappingProxyType(reasons),
                    resolved.notes, resolved.machine, resolved.fit)


def reply_precision(machine: Machine) -> tuple[bool, str]:
    """(4-bit?, dtype) of chat, the app and eval: 4-bit NF4 on CUDA, full precision on a CPU (faster there than
    dequantizing), each in the dtype this hardware computes fast (bf16 where native, else fp16 on a GPU and
    float32 on a CPU)."""
    return machine.cuda, precision.choose_precision(machine.hardware).dtype


def where(recipe: Recipe, key: str) -> str:
    return recipe.sources.get(key, "TRL's default")


def precision_choices(recipe: Recipe, machine: Machine) -> Choices:
    """dtype, bf16, fp16 and use_cpu as the recipe was built with them, and why."""
    chosen = precision.choose_precision(machine.hardware)
    choices = {}
    for key, settings in (("dtype", recipe.model_args), ("bf16", recipe.sft_config), ("fp16", recipe.sft_config),
                          ("use_cpu", recipe.sft_config)):
        if where(recipe, key) == MACHINE_SOURCE:
            why = ("no GPU: bf16 autocast runs on the CPU" if key == "use_cpu" else
                   f"{machine.hardware.label}: {chosen.dtype}" + (f", {chosen.autocast} autocast" if chosen.autocast else ""))
        else:
            why = f"set at {where(recipe, key)}"
        choices[key] = (getattr(settings, key), why)
    return choices


def slow_cpu_choices(recipe: Recipe, machine: Machine) -> Choices:
    """slow_cpu_fallback on a CPU without native bf16: load_in_4bit false and one epoch, each unless given as key=value.

    There bitsandbytes' 4-bit layers dequantize to float32 for every matmul: a quick-start step cost 1.6x the CPU
    time of the same step on a plain float32 base, and two epochs in float32 took 7 min 51 s against 5 min 04 s for
    one (docs/benchmarks.md, "Fast on every machine"): one epoch keeps the demo within 6 minutes and its dev loss
    still below the 4-bit bf16 run's after two. With native bf16 (and on every GPU) it stays QLoRA as the recipe says.
    """
    hardware = machine.hardware
    if not recipe.lima_args.slow_cpu_fallback or hardware.bf16 or hardware.device != "cpu":
        return {}
    why = f"slow_cpu_fallback on a {hardware.label}"
    wanted = {"load_in_4bit": False, "num_train_epochs": 1}
    return {key: (value, why) for key, value in wanted.items() if key not in recipe.command_line}


def per_process_accumulation(per_device: int, accumulation: int, processes: int) -> int:
    """Gradient accumulation steps of each of `processes` data-parallel processes, so that an optimizer step
    still sees the recipe's per_device x accumulation examples, whatever the number of GPUs.

    A recipe is written for one process: 4 x 8 = 32 examples/step (LIMA's batch) runs as 4 x 4 on each of 2
    GPUs (4 x 4 x 2 = 32) and as 4 x 1 on 8. The micro-batch stays the recipe's, since it is what fits a card.
    """
    if accumulation % processes:
        raise LimaError(f"per_device_train_batch_size {per_device} x gradient_accumulation_steps {accumulation} = "
                        f"{per_device * accumulation} examples per step cannot be split evenly over {processes} "
                        f"processes: make gradient_accumulation_steps a multiple of {processes}")
    return accumulation // processes


def accumulation_choices(sft, machine: Machine) -> Choices:
    steps, processes = sft.gradient_accumulation_steps, machine.processes
    if processes == 1:
        return {}
    return {"gradient_accumulation_steps": (
        per_process_accumulation(sft.per_device_train_batch_size, steps, processes),
        f"the recipe's {steps} over {processes} processes: {sft.per_device_train_batch_size * steps} examples per step")}


def schedule_choices(sft, lima: LimaArguments) -> Choices:
    """LIMA's schedule end: linear (power 1) from the peak to final_lr_ratio of it, no warm-up (1e-5 -> 1e-6)."""
    if sft.lr_scheduler_type != "polynomial" or sft.lr_scheduler_kwargs:
        return {}
    return {"lr_scheduler_kwargs": ({"lr_end": sft.learning_rate * lima.final_lr_ratio, "power": 1.0},
                                    f"linear decay to final_lr_ratio {lima.final_lr_ratio:g} of the peak")}


def dev_choices(inputs: Inputs | None) -> Choices:
    if inputs is None or not inputs.dev_examples:
        return {}
    return {"eval_strategy": ("epoch", f"a dev set of {inputs.dev_examples} conversations: its loss every epoch")}


def fast_path_choices(sft, model, machine: Machine) -> tuple[Choices, list[str]]:
    """attn_implementation and activation_offloading this machine can run, and the lines a CUDA run prints."""
    from lima_lite.memory.kernels import activation_offloading, attention_choice

    attn, attn_line = attention_choice(model.attn_implementation, machine.cuda, machine.flash_attn)
    offloading, offload_line = activation_offloading(sft.activation_offloading, machine.cuda)
    choices = {"attn_implementation": (attn, attn_line.removeprefix("attention: "))}
    if offload_line:
        choices["activation_offloading"] = (offloading, offload_line.removeprefix("activation offloading: "))
    # on a CPU these paths are GPU-only; `lima-lite env` says so for whoever asks
    lines = [attn_line, *([offload_line] if offload_line else [])] if machine.cuda else []
    return choices, lines


def auto_fit_choices(recipe: Recipe, sft, model, lima, machine: Machine, inputs: Inputs | None,
                     resumed: dict | None) -> tuple[dict | None, Choices, str | None]:
    """auto_fit: (the fit, for a step down; the chosen setting; the line saying why). Keys given as key=value are
    kept. A resumed run keeps the setting its run.json records (after its step down, if any): a fit made again
    could differ (the GPU's free memory does), and a changed micro-batch is a changed run."""
    if not lima.auto_fit or not model.load_in_4bit or inputs is None or inputs.shape is None:
        return None, {}, None
    if machine.processes > 1:
        # each process would measure its own free memory and could choose differently: the recipe's setting
        return None, {}, f"auto_fit: off with {machine.processes} processes; training with the recipe's setting"
    explicit = recipe.command_line
    if resumed is not None:
        used = resumed["step_down"] or resumed["chosen"]
        # a run recorded before a key existed trained with that key's default, which the recipe still holds
        values = {**current_values(sft, lima), **{key: used[key] for key in FIT_KEYS if key in used and key not in explicit}}
        line = (f"auto_fit: resuming with the run's own setting (run.json): micro-batch {values['per_device_train_batch_size']}"
                f" x {values['gradient_accumulation_steps']} accumulation, checkpointing {values['gradient_checkpointing']}, "
                f"offloading {values['activation_offloading']}, fp32_layers {values['fp32_layers']}, mlp_chunk_tokens "
                f"{values['mlp_chunk_tokens']}, lean_activations {values['lean_activations']}")
        fitted = {"record": resumed, "summary": {**resumed["chosen"], **values}, "budget_source": resumed["budget_source"],
                  "step_downs": 1}
        return fitted, {key: (value, "auto_fit: the resumed run's own setting (run.json)") for key, value in values.items()}, line
    settings = recipe_settings(sft, model, lima, inputs.added_tokens)
    examples = sft.per_device_train_batch_size * sft.gradient_accumulation_steps
    fixed = {key: value for key, value in current_values(sft, lima).items() if key in explicit}
    budget, source = ((machine.gpu_free_gib, "free on this GPU") if machine.cuda
                      else (machine.host_gib, "no GPU: available system memory"))
    if budget is None:
        return None, {}, "auto_fit: off: the machine's free memory was not measured (resolve.with_free_memory)"
    result = fit(inputs.shape, settings, examples, budget, fixed, offloading=machine.cuda, host_gib=machine.host_gib)
    summary = fit_summary(inputs.shape, result)
    if not summary["fits"]:
        return None, {}, f"auto_fit: nothing fits {budget:.1f} GiB ({source}); training with the recipe's setting"
    values = {key: summary[key] for key in FIT_KEYS}
    kept = f"; kept from the command line: {', '.join(result['fixed'])}" if result["fixed"] else ""
    line = (f"auto_fit: micro-batch {values['per_device_train_batch_size']} x {values['gradient_accumulation_steps']} "
            f"accumulation, {describe(result['chosen']['settings'])}: planned peak {summary['peak_gib']:.2f} GiB of "
            f"{budget:.1f} ({source}, {FIT_MARGIN:.0%} margin), the fastest of {len(result['candidates'])} settings "
            f"by the cost model{kept}")
    why = f"auto_fit: the fastest setting planned to fit {budget:.1f} GiB ({source})"
    choices = {key: (value, why if key not in explicit else f"set at {COMMAND_LINE} (auto_fit keeps it)")
               for key, value in values.items()}
    return {"result": result, "summary": summary, "budget_source": source, "step_downs": 0}, choices, line
