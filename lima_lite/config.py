"""Recipes: one YAML file of TRL's own settings plus the few that LIMA adds.

    >>> script_args, sft_config, model_args, lima_args = load_recipe("recipes/quickstart.yaml", ["seed=1"])

Every key is a field of TRL's `ScriptArguments` (dataset_name, ...), `SFTConfig` (learning_rate,
num_train_epochs, ...), `ModelConfig` (model_name_or_path, lora_r, load_in_4bit, ...) or of
`LimaArguments` below. Precedence: TRL's defaults < `LIMA_DEFAULTS` < the YAML < `key=value`
overrides. An unknown key is an error that names it and the closest valid key.
"""

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lima_lite import LimaError

EMBEDDED_BASE = "embedded:SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
# LIMA's generation settings (§4): nucleus p = 0.9, temperature 0.7, repetition penalty 1.2, <= 2,048 new tokens.
LIMA_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "max_new_tokens": 2048}


@dataclass
class LimaArguments:
    """What LIMA adds to TRL's settings. Help text here is what `lima-lite train --help` prints."""

    eot_token: str = field(
        default="<|eot|>",
        metadata={"help": "end-of-turn token written after every utterance; reused if the tokenizer has it "
                  "(e.g. '<|eot_id|>', '<|im_end|>'), otherwise added and trained as a new token"},
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
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run Python code shipped with a Hub model (off: safetensors only)"}
    )
    multi_turn: bool = field(
        default=True,
        metadata={"help": "train on multi-turn conversations too; false keeps single-turn ones only "
                  "(LIMA's 1,000-example set out of GAIR/lima's 1,030)"},
    )
    drop_too_long: bool = field(
        default=False,
        metadata={"help": "drop examples longer than max_length instead of cutting them at the right"},
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
    "save_strategy": "epoch",
    "eval_strategy": "no",
    "logging_steps": 1,
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
    "dtype": "bfloat16",
}


def _trl_classes():
    from trl import ModelConfig, ScriptArguments, SFTConfig

    return ScriptArguments, SFTConfig, ModelConfig, LimaArguments


def parse_overrides(pairs: list[str]) -> dict:
    """`["learning_rate=3e-4", "lora_target_modules=[q_proj,v_proj]"]` -> dict, values read as YAML."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LimaError(f"override {pair!r} is not key=value")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return overrides


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LimaError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LimaError(f"{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise LimaError(f"{path}: a recipe is a mapping of key: value")
    return data


def _key_lines(path: Path) -> dict:
    """key -> line number of a top-level key in a YAML file, for error messages."""
    lines = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line and not line[0].isspace() and ":" in line and not line.startswith("#"):
            lines.setdefault(line.split(":", 1)[0].strip(), number)
    return lines


def _coerce(value, annotation):
    """YAML reads `3e-4` as a string and `1` as an int; make values match the field's declared type."""
    origins = typing.get_args(annotation) or (annotation,)
    if isinstance(value, str) and float in origins and str not in origins:
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool) and float in origins and int not in origins:
        return float(value)
    return value


def load_recipe(path: str | Path | None, overrides: list[str] | dict = ()):
    """Read a recipe into (ScriptArguments, SFTConfig, ModelConfig, LimaArguments)."""
    classes = _trl_classes()
    fields = {f.name: (cls, f) for cls in classes for f in dataclasses.fields(cls) if f.init}
    values = dict(LIMA_DEFAULTS)
    sources = {}
    if path is not None:
        recipe = read_yaml(path)
        lines = _key_lines(Path(path))
        values.update(recipe)
        sources.update({key: f"{path}:{lines.get(key, 1)}" for key in recipe})
    extra = parse_overrides(overrides) if isinstance(overrides, list | tuple) else dict(overrides)
    values.update(extra)
    sources.update({key: "command line" for key in extra})
    import torch

    if "use_cpu" not in values and not torch.cuda.is_available():
        values["use_cpu"] = True  # no GPU: bf16 autocast runs on the CPU instead of failing validation

    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LimaError(f"{sources.get(key, 'recipe')}: unknown key {key!r}{hint}")

    per_class = {cls: {} for cls in classes}
    for key, value in values.items():
        cls, f = fields[key]
        per_class[cls][key] = _coerce(value, f.type if not isinstance(f.type, str) else eval(f.type, vars(typing)))
    built = []
    for cls in classes:
        try:
            built.append(cls(**per_class[cls]))
        except (TypeError, ValueError) as error:
            raise LimaError(f"{path or 'recipe'}: {cls.__name__}: {error}") from None
    script_args, sft_config, model_args, lima_args = built
    if model_args.model_name_or_path is None:
        raise LimaError(f"{path}: model_name_or_path is not set")
    return script_args, sft_config, model_args, lima_args


def lima_help() -> str:
    """The LIMA fields with their help, for `--help` (no heavy imports)."""
    lines = []
    for f in dataclasses.fields(LimaArguments):
        lines.append(f"  {f.name} (default {f.default!r})\n      {f.metadata['help']}")
    return "\n".join(lines)


def resolve_recipe(name: str) -> Path:
    """A recipe path as given, or a recipe name shipped with lima_lite (`quickstart`)."""
    path = Path(name)
    if path.is_file():
        return path
    here = Path(__file__).resolve().parent
    for folder in (here / "recipes", here.parent / "recipes"):
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    raise LimaError(f"{name}: recipe file not found (give a path, or one of the names in recipes/)")
