"""Recipes: one YAML file of TRL's own settings plus the few that LIMA adds.

    >>> recipe = load_recipe("recipes/quickstart.yaml", ["seed=1"])
    >>> recipe.sft_config.learning_rate, recipe.model_args.lora_r, recipe.lima_args.eot_token, recipe.sources["seed"]

Every key is a field of TRL's `ScriptArguments` (dataset_name, ...), `SFTConfig` (learning_rate,
num_train_epochs, ...), `ModelConfig` (model_name_or_path, lora_r, load_in_4bit, ...) or of
`LimaArguments` below. Precedence: TRL's defaults < `LIMA_DEFAULTS` < the YAML < `key=value`
overrides. An unknown key is an error that names it and the closest valid key.

This module holds what a recipe may contain (LimaArguments, LIMA_DEFAULTS) and builds it (load_recipe, a
read-only `Recipe`); the text is read by lima_lite.recipe_yaml, the values this machine decides (precision,
use_cpu: TRL's SFTConfig fixes its device and mixed precision when it is built) come from lima_lite.precision,
what a run then really uses from lima_lite.resolve, and the sampling flags of chat, eval and ui live in
lima_lite.flags.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import importlib.util
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from lima_lite import LimaError
from lima_lite.machine import Machine, detect_machine
from lima_lite.precision import machine_values
from lima_lite.recipe_yaml import parse_overrides, read_yaml
from lima_lite.template import CHAT_FORMATS

if TYPE_CHECKING:
    from trl import ModelConfig, ScriptArguments, SFTConfig


EMBEDDED_BASE = "embedded:SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name


@dataclass
class LimaArguments:
    """What LIMA adds to TRL's settings. Help text here is what `lima-lite train --help` prints."""

    eot_token: str = field(
        default="<|eot|>",
        metadata={"help": "end-of-turn token written after every utterance; reused if the tokenizer has it "
                  "(e.g. '<|eot_id|>', '<|im_end|>'), otherwise added and trained as a new token"},
    )
    chat_format: str = field(
        default="lima",
        metadata={"help": "lima: LIMA's format, the EOT after every utterance and no role words; native: the base "
                  "tokenizer's own chat template (an instruct checkpoint keeps the format it was tuned in; "
                  "eot_token must then be the turn end that template writes)"},
    )
    residual_dropout: float = field(
        default=0.2,
        metadata={"help": "dropout on each layer's attention and MLP branch, rising linearly from 0.0 at the "
                  "bottom layer to this value at the top (LIMA: 0.3 for 65B, 0.2 for smaller models)"},
    )
    final_lr_ratio: float = field(
        default=0.1,
        metadata={"help": "the learning rate decays linearly, with no warm-up, to this fraction of the peak"},
    )
    dev_dataset: str | None = field(
        default=None,
        metadata={"help": "JSONL file or Hub id of held-out conversations; its loss is logged every epoch"},
    )
    multi_turn: bool = field(
        default=True,
        metadata={"help": "train on multi-turn conversations too; false keeps single-turn ones only "
                  "(LIMA's 1,000-example set out of GAIR/lima's 1,030)"},
    )
    liger_kernels: bool = field(
        default=True,
        metadata={"help": "on CUDA, Liger's RMSNorm, RoPE and SwiGLU kernels when liger-kernel is installed "
                  "(same numbers, less memory); otherwise transformers' own, said in one line"},
    )
    fp32_layers: bool = field(
        default=True,
        metadata={"help": "with a 4-bit base, keep the norms, embeddings and head in fp32, as peft's "
                  "prepare_model_for_kbit_training does (QLoRA); false keeps them in `dtype` (bf16), so the "
                  "residual stream and activations are bf16 too: less memory, bf16 matmuls (LLaMA-Factory's default)"},
    )
    mlp_chunk_tokens: int = field(
        default=0,
        metadata={"help": "0: off; N: every decoder layer's MLP runs over N tokens at a time, each chunk recomputed "
                  "in the backward (a tiled MLP: one chunk's gate/up activations at a time instead of the whole "
                  "micro-batch's, for long examples; the same numbers, one more MLP forward); auto_fit sets it "
                  "when nothing fits without it"},
    )
    lean_activations: bool = field(
        default=False,
        metadata={"help": "every RMSNorm (in chunks of mlp_chunk_tokens, else 4,096 tokens) and every LoRA layer's "
                  "dropout and A matmul recomputed in the backward, each keeping only its input: at LLaMA-3.1-8B "
                  "with bf16 layers about half the bytes per token of a recomputed layer; the same numbers, a little "
                  "more compute; auto_fit sets it with mlp_chunk_tokens when nothing fits without them"},
    )
    drop_too_long: bool = field(
        default=False,
        metadata={"help": "drop examples longer than max_length instead of cutting them at the right"},
    )
    ignore_memory_plan: bool = field(
        default=False, metadata={"help": "train even when the memory plan says the recipe does not fit this GPU"}
    )
    slow_cpu_fallback: bool = field(
        default=False,
        metadata={"help": "on a CPU without native bf16 (emulated there, 30-45x slower): load the base unquantized "
                  "(load_in_4bit: false) and train one epoch, each unless the recipe or command line sets it; for a "
                  "demo that must finish in minutes on any laptop (the quick start)"},
    )
    auto_fit: bool = field(
        default=False,
        metadata={"help": "before loading the model, set micro-batch x accumulation (same examples per step), "
                  "gradient checkpointing, activation offloading, fp32_layers, mlp_chunk_tokens and lean_activations to the "
                  "fastest setting "
                  "the memory "
                  "plan fits in this GPU's free memory (a CPU run: available system memory); a key given as "
                  "key=value on the command line is kept (`lima-lite plan RECIPE --fit` shows the candidates); one "
                  "process only (with several, each would measure its own free memory)"},
    )


# LIMA §3 as TRL settings. Recipes override what differs per model size.
LIMA_DEFAULTS = {
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "weight_decay": 0.1,
    "num_train_epochs": 15,
    "warmup_steps": 0,
    "lr_scheduler_type": "polynomial",  # power 1 = linear; its end point comes from final_lr_ratio
    "max_length": 2048,
    # Examples of a micro-batch concatenated into one row, each restarting its position ids, attending only
    # to itself: no pad token is computed (LIMA's lengths vary ~10x, so padding to the longest wastes about
    # half the tokens); per_device_train_batch_size still counts examples. packing: true is TRL's other way.
    "padding_free": True,
    "save_strategy": "epoch",
    "eval_strategy": "no",
    "logging_steps": 1,
    # A non-finite loss is logged as it is, and stops the run (lima_lite.train), instead of being averaged away.
    "logging_nan_inf_filter": False,
    "report_to": "none",
    "dataset_name": "embedded:train.jsonl",
    "model_name_or_path": EMBEDDED_BASE,
    "use_peft": True,
    "lora_target_modules": "all-linear",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "use_bnb_nested_quant": True,  # double quantization (QLoRA)
    # dtype, bf16 and fp16 are chosen from the hardware unless a recipe sets them (lima_lite.precision)
}


def _trl_classes():
    from trl import ModelConfig, ScriptArguments, SFTConfig

    return ScriptArguments, SFTConfig, ModelConfig, LimaArguments


def _argv(values: dict, actions: dict) -> tuple[list[str], list[str]]:
    """Raw values -> an argument list for HfArgumentParser, and the keys set to null (left to set after)."""
    argv, nulls = [], []
    for key, value in values.items():
        if value is None:
            nulls.append(key)
        elif isinstance(value, list) and actions[key].nargs in ("+", "*"):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, list):
            argv.append(f"--{key}=[{', '.join(map(str, value))}]")  # refused by the field's type, with its name
        else:
            argv.append(f"--{key}={value}")
    return argv, nulls


class _Parser:
    """transformers' HfArgumentParser over TRL's dataclasses and ours, raising instead of exiting."""

    def __init__(self):
        from transformers import HfArgumentParser

        class Raising(HfArgumentParser):
            def error(self, message):
                raise LimaError(message)

        self.parser = Raising(_trl_classes(), exit_on_error=False)
        self.actions = {a.dest: a for a in self.parser._actions if a.option_strings}


DEFAULTS_SOURCE = "lima_lite.config.LIMA_DEFAULTS"


@dataclass(frozen=True)
class Recipe:
    """A recipe as read: TRL's three settings objects and LIMA's, each read-only, and where each key was set.

    `sources`: key -> "FILE:LINE", "command line", DEFAULTS_SOURCE or MACHINE_SOURCE. lima_lite.resolve turns
    a recipe into what a run on this machine really uses (`resolve(recipe, machine)`).
    """

    script_args: ScriptArguments
    sft_config: SFTConfig
    model_args: ModelConfig
    lima_args: LimaArguments
    sources: Mapping[str, str]
    path: str | None = None

    @property
    def command_line(self) -> frozenset[str]:
        """The keys given as key=value (auto_fit keeps them)."""
        return frozenset(key for key, source in self.sources.items() if source == COMMAND_LINE)

    @property
    def given(self) -> frozenset[str]:
        """The keys the recipe file or the command line set (not LIMA's defaults, not this machine)."""
        return frozenset(key for key, source in self.sources.items() if source not in (DEFAULTS_SOURCE, MACHINE_SOURCE))


class FrozenSettings:
    """Mixed into a copy of a settings dataclass by `frozen`: its fields can no longer be set or deleted.

    Attributes that are not fields stay writable: TrainingArguments caches its device state on itself."""

    def __setattr__(self, name, value):
        if name in self.__dataclass_fields__:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}: these settings are resolved and "
                                                  "read-only (lima_lite.resolve makes changed copies)")
        super().__setattr__(name, value)

    def __delattr__(self, name):
        if name in self.__dataclass_fields__:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}: these settings are read-only")
        super().__delattr__(name)


_FROZEN_CLASSES: dict[type, type] = {}


def frozen(settings):
    """A read-only copy of a settings dataclass (SFTConfig, ModelConfig, ...), still an instance of its class."""
    cls = type(settings)
    if issubclass(cls, FrozenSettings):
        return settings
    if cls not in _FROZEN_CLASSES:
        _FROZEN_CLASSES[cls] = type(cls.__name__, (FrozenSettings, cls), {"__module__": cls.__module__,
                                                                          "__qualname__": cls.__qualname__})
    copied = copy.copy(settings)
    object.__setattr__(copied, "__class__", _FROZEN_CLASSES[cls])
    return copied


def writable(settings):
    """A writable copy of settings (frozen or not): what resolve changes, and what TRL's trainer gets."""
    copied = copy.copy(settings)
    cls = type(settings)
    if issubclass(cls, FrozenSettings):
        object.__setattr__(copied, "__class__", cls.__mro__[2])
    return copied


COMMAND_LINE = "command line"
MACHINE_SOURCE = "lima_lite.precision (this machine)"


def load_recipe(path: str | Path | None, overrides: list[str] | dict = (), machine: Machine | None = None) -> Recipe:
    """Read a recipe: its ScriptArguments, SFTConfig, ModelConfig and LimaArguments, read-only, by name.

    LIMA_DEFAULTS < the YAML < key=value overrides; every value is read by transformers' HfArgumentParser
    with its field's type, then checked for range (check_values). Errors name file:line and the key.
    `machine` (default: this one, lima_lite.machine.detect_machine) decides the precision keys left unset.
    """
    parser = _Parser()
    values = {key: str(value) if not isinstance(value, bool) else str(value).lower() for key, value in LIMA_DEFAULTS.items()}
    sources = {key: DEFAULTS_SOURCE for key in values}
    if path is not None:
        for key, (value, line) in read_yaml(path).items():
            values[key], sources[key] = value, f"{path}:{line}"
    extra = parse_overrides(list(overrides)) if isinstance(overrides, list | tuple) else dict(overrides)
    values.update(extra)
    sources.update({key: COMMAND_LINE for key in extra})
    machine = machine or detect_machine()
    chosen = machine_values({key for key, source in sources.items() if source != DEFAULTS_SOURCE}, machine.hardware,
                            machine.cuda)
    values.update(chosen)
    sources.update({key: MACHINE_SOURCE for key in chosen})

    for key in values:
        if key not in parser.actions:
            close = difflib.get_close_matches(key, parser.actions, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LimaError(f"{sources.get(key, 'recipe')}: unknown key {key!r}{hint}")
    argv, nulls = _argv(values, parser.actions)
    try:
        built = parser.parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except (argparse.ArgumentError, LimaError) as error:
        text = str(error)
        key = next((k for k in values if f"--{k}" in text or f"--{k.replace('_', '-')}" in text), None)
        where = f"{sources[key]}: {key}" if key else str(path or "recipe")
        raise LimaError(f"{where}: {text.split(': ', 1)[-1]}") from None
    except (TypeError, ValueError) as error:
        raise LimaError(f"{path or 'recipe'}: {str(error).splitlines()[0]}") from None
    script_args, sft_config, model_args, lima_args = built
    for key in nulls:
        for args in built:
            if hasattr(args, key):
                setattr(args, key, None)
    if isinstance(model_args.lora_target_modules, str) and re.fullmatch(r"\w+", model_args.lora_target_modules):
        # TRL turns a one-item list into its item, which peft reads as a regular expression over whole module
        # names ("model.layers.0.self_attn.q_proj"): [q_proj] would match nothing. A bare name is a list of it.
        model_args.lora_target_modules = [model_args.lora_target_modules]
    check_values(script_args, sft_config, model_args, lima_args, sources)
    return Recipe(frozen(script_args), frozen(sft_config), frozen(model_args), frozen(lima_args),
                  MappingProxyType(dict(sources)), str(path) if path is not None else None)


def check_values(script_args, sft_config, model_args, lima_args, sources: dict) -> None:
    """Values of the right type but out of range would train silently wrong: refuse them by name."""
    def where(key):
        return f"{sources.get(key, 'recipe')}: {key}"

    rules = [
        ("learning_rate", sft_config.learning_rate > 0, "must be > 0"),
        ("num_train_epochs", sft_config.num_train_epochs > 0 or sft_config.max_steps > 0, "must be > 0"),
        ("per_device_train_batch_size", sft_config.per_device_train_batch_size >= 1, "must be >= 1"),
        ("gradient_accumulation_steps", sft_config.gradient_accumulation_steps >= 1, "must be >= 1"),
        ("max_length", sft_config.max_length is None or sft_config.max_length >= 2, "must be >= 2 tokens (or null)"),
        ("weight_decay", sft_config.weight_decay >= 0, "must be >= 0"),
        ("seed", 0 <= sft_config.seed < 2**32, "must be in [0, 2**32)"),  # numpy's range; torch's is wider
        ("lora_r", model_args.lora_r >= 1, "must be >= 1"),
        ("lora_alpha", model_args.lora_alpha > 0, "must be > 0"),
        ("lora_dropout", 0 <= model_args.lora_dropout < 1, "must be in [0, 1)"),
        ("residual_dropout", 0 <= lima_args.residual_dropout < 1, "must be in [0, 1)"),
        ("final_lr_ratio", 0 <= lima_args.final_lr_ratio <= 1, "must be in [0, 1]"),
        ("mlp_chunk_tokens", lima_args.mlp_chunk_tokens >= 0, "must be >= 0 (0: the MLP is not tiled)"),
        ("eot_token", bool(EOT_SHAPE.match(lima_args.eot_token or "")),
         f"{lima_args.eot_token!r} is not a special-token string (e.g. '<|eot|>', '<|eot_id|>', '<|im_end|>')"),
        ("chat_format", lima_args.chat_format in CHAT_FORMATS,
         f"{lima_args.chat_format!r} is not one of {', '.join(CHAT_FORMATS)}"),
        ("model_name_or_path", bool(model_args.model_name_or_path), "is not set"),
    ]
    for key, ok, problem in rules:
        if not ok:
            raise LimaError(f"{where(key)}: {problem}")
    check_numbers((script_args, sft_config, model_args, lima_args), sources)
    targets = model_args.lora_target_modules
    if isinstance(targets, str) and targets != "all-linear":  # peft matches a string as a regular expression
        try:
            re.compile(targets)
        except re.error as error:
            raise LimaError(f"{where('lora_target_modules')}: {targets!r} is not a regular expression ({error}); "
                            "name the modules as a list instead, e.g. [q_proj, v_proj]") from None
    missing = missing_reporters(sft_config.report_to)
    if missing:
        raise LimaError(f"{where('report_to')}: {', '.join(missing)} is not installed (pip install {' '.join(missing)}), "
                        "or report_to: none")


# report_to's integrations and the module each needs (transformers.integrations); "none" and "all" need none.
REPORTERS = {"wandb": "wandb", "mlflow": "mlflow", "tensorboard": "tensorboard", "comet_ml": "comet_ml",
             "clearml": "clearml", "neptune": "neptune", "dagshub": "dagshub", "codecarbon": "codecarbon",
             "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio", "azure_ml": "azureml"}


def missing_reporters(report_to) -> list[str]:
    """The report_to integrations whose package is not installed (transformers would raise at the first log)."""
    given = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [part.strip("[]'\" ") for text in given for part in str(text).split(",")]
    return [name for name in names if name in REPORTERS and importlib.util.find_spec(REPORTERS[name]) is None]


# Upper ends past which a value is a typo, not a recipe: each is far beyond any run on one GPU.
HIGHEST = {"lora_r": 4096, "lora_alpha": 1e6, "max_length": 10_000_000, "num_train_epochs": 10_000,
           "max_steps": 10**9, "per_device_train_batch_size": 65_536, "gradient_accumulation_steps": 65_536,
           "max_grad_norm": 1e6, "adam_epsilon": 1.0, "warmup_steps": 10**9, "weight_decay": 10.0}


def check_numbers(built, sources: dict) -> None:
    """Every number a recipe or the command line gives: finite (no inf or nan), a whole number within 2**53,
    and no higher than HIGHEST names, so a typo (1e19, inf) is refused by key instead of overflowing later."""
    for args in built:
        for f in dataclasses.fields(args):
            if f.name not in sources or sources[f.name] == DEFAULTS_SOURCE:
                continue
            value = getattr(args, f.name, None)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            where = f"{sources[f.name]}: {f.name}"
            if isinstance(value, float) and not math.isfinite(value):
                raise LimaError(f"{where}: must be a finite number, not {value}")
            if isinstance(value, int) and abs(value) > 2**53:
                raise LimaError(f"{where}: {value} is too large for a count (at most 2**53)")
            if f.name in HIGHEST and value > HIGHEST[f.name]:
                raise LimaError(f"{where}: must be <= {HIGHEST[f.name]:g}, not {value:g}")


# An end-of-turn token is a special-token string: no spaces, not a plain word or number.
# ("." or "!!" would end a turn at every period: a special token holds a word character too, e.g. <|eot|>, </s>)
EOT_SHAPE = re.compile(r"^(?=.*[^\w])(?=.*[^\W_])\S{2,}$")


def lima_help() -> str:
    """The LIMA fields with their help, for `--help` (no heavy imports)."""
    lines = []
    for f in dataclasses.fields(LimaArguments):
        lines.append(f"  {f.name} (default {f.default!r})\n      {f.metadata['help']}")
    return "\n".join(lines)
