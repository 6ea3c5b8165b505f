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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lima_lite import LimaError

EMBEDDED_BASE = "embedded:SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
# LIMA's generation settings (§4): nucleus p = 0.9, temperature 0.7, repetition penalty 1.2, <= 2,048 new tokens.
LIMA_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "max_new_tokens": 2048}


def bounded(kind, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: `kind` (float or int) within [low, high] (`low_open`: strictly above low), or an error
    saying what is wrong ("must be >= 0, not -1")."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, not {text!r}") from None
        if value != value or (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and value > high):
            rule = " and ".join(part for part in (
                None if low is None else f"{'>' if low_open else '>='} {low:g}",
                None if high is None else f"<= {high:g}") if part)
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# One parser per flag, shared by every command, so chat, eval and ui refuse the same values the same way.
SAMPLING_TYPES = {"temperature": bounded(float, 0), "top_p": bounded(float, 0, 1, low_open=True),
                  "repetition_penalty": bounded(float, 0, low_open=True), "max_new_tokens": bounded(int, 1)}


def add_sampling_args(parser) -> None:
    """--temperature, --top-p, --repetition-penalty, --max-new-tokens (chat, eval, ui); a flag left out is
    None, so LIMA_SAMPLING applies. Values out of range are refused here, before any model is loaded."""
    group = parser.add_argument_group("sampling (LIMA's by default)")
    group.add_argument("--temperature", type=SAMPLING_TYPES["temperature"],
                       help=f"0 = greedy; default {LIMA_SAMPLING['temperature']}")
    group.add_argument("--top-p", type=SAMPLING_TYPES["top_p"],
                       help=f"nucleus sampling, in (0, 1]; default {LIMA_SAMPLING['top_p']}")
    group.add_argument("--repetition-penalty", type=SAMPLING_TYPES["repetition_penalty"], help=f"on the tokens generated "
                       f"so far, > 0 (1 = none); default {LIMA_SAMPLING['repetition_penalty']} (local models: the "
                       "OpenAI API has no such field)")
    group.add_argument("--max-new-tokens", type=SAMPLING_TYPES["max_new_tokens"],
                       help=f"longest reply; default {LIMA_SAMPLING['max_new_tokens']}")


def sampling_args(args) -> dict:
    """The sampling flags given on the command line (see add_sampling_args), as keyword arguments."""
    values = {name: getattr(args, name) for name in LIMA_SAMPLING}
    return {name: value for name, value in values.items() if value is not None}


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
    drop_too_long: bool = field(
        default=False,
        metadata={"help": "drop examples longer than max_length instead of cutting them at the right"},
    )
    ignore_memory_plan: bool = field(
        default=False, metadata={"help": "train even when the memory plan says the recipe does not fit this GPU"}
    )
    auto_fit: bool = field(
        default=False,
        metadata={"help": "before loading the model, set micro-batch x accumulation (same examples per step), "
                  "gradient checkpointing, activation offloading, fp32_layers and mlp_chunk_tokens to the fastest setting the memory "
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


NULL_TAG = "tag:yaml.org,2002:null"


def _raw(node):
    """A YAML value as the text the user wrote (a scalar), a list of texts, or a JSON object: argparse then
    reads it with the field's own type, so `save_strategy: no` stays TRL's "no" and `3e-4` is a float."""
    import json

    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == NULL_TAG else node.value
    if isinstance(node, yaml.SequenceNode):
        return [_raw(item) for item in node.value]
    return json.dumps(yaml.safe_load(yaml.serialize(node)))


def read_yaml(path: str | Path) -> dict[str, tuple[object, int]]:
    """key -> (raw value, line) of a recipe file; invalid YAML, a non-mapping and duplicate keys name their line."""
    path = Path(path)
    if not path.is_file():
        raise LimaError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
        # A recipe has no use for aliases (*name), and a few nested ones expand to billions of values.
        alias = next((event for event in yaml.parse(text) if isinstance(event, yaml.AliasEvent)), None)
        root = yaml.compose(text) if alias is None else None
    except UnicodeDecodeError:
        raise LimaError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LimaError(f"{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if alias is not None:
        raise LimaError(f"{path}:{alias.start_mark.line + 1}: YAML alias *{alias.anchor}: a recipe cannot use "
                        "aliases; write the value out")
    if root is None or (isinstance(root, yaml.MappingNode) and not root.value):
        raise LimaError(f"{path}: the recipe is empty; give at least model_name_or_path and dataset_name "
                        "(see recipes/quickstart.yaml)")
    if not isinstance(root, yaml.MappingNode):
        raise LimaError(f"{path}:{root.start_mark.line + 1}: a recipe is a mapping of key: value")
    values = {}
    for key_node, value_node in root.value:
        key, line = key_node.value, key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise LimaError(f"{path}:{line}: a recipe key must be a name")
        if key in values:
            raise LimaError(f"{path}:{line}: {key}: set twice (first on line {values[key][1]}); keep one")
        values[key] = (_raw(value_node), line)
    return values


def parse_overrides(pairs: list[str]) -> dict:
    """`["learning_rate=3e-4", "lora_target_modules=[q_proj,v_proj]"]` -> {key: raw value}, read as in a YAML file."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LimaError(f"override {pair!r} is not key=value")
        try:
            node = yaml.compose(value) if value.strip() else None
        except yaml.YAMLError:
            node = yaml.ScalarNode("tag:yaml.org,2002:str", value)  # not YAML: the text as it is
        overrides[key.strip()] = None if node is None else _raw(node)
    return overrides


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


def load_recipe(path: str | Path | None, overrides: list[str] | dict = ()):
    """Read a recipe into (ScriptArguments, SFTConfig, ModelConfig, LimaArguments).

    LIMA_DEFAULTS < the YAML < key=value overrides; every value is read by transformers' HfArgumentParser
    with its field's type, then checked for range (check_values). Errors name file:line and the key.
    """
    import argparse

    parser = _Parser()
    values = {key: str(value) if not isinstance(value, bool) else str(value).lower() for key, value in LIMA_DEFAULTS.items()}
    sources = {key: DEFAULTS_SOURCE for key in values}
    if path is not None:
        for key, (value, line) in read_yaml(path).items():
            values[key], sources[key] = value, f"{path}:{line}"
    extra = parse_overrides(list(overrides)) if isinstance(overrides, list | tuple) else dict(overrides)
    values.update(extra)
    sources.update({key: "command line" for key in extra})
    import torch

    from lima_lite.precision import recipe_precision

    chosen = recipe_precision({key for key, source in sources.items() if source != DEFAULTS_SOURCE})
    values.update(chosen)
    sources.update({key: "lima_lite.precision (this machine)" for key in chosen})
    if "use_cpu" not in values and not torch.cuda.is_available():
        values["use_cpu"] = "true"  # no GPU: bf16 autocast runs on the CPU instead of failing validation

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
    check_values(script_args, sft_config, model_args, lima_args, sources)
    return script_args, sft_config, model_args, lima_args


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
        ("chat_format", lima_args.chat_format in ("lima", "native"), f"{lima_args.chat_format!r} is not lima or native"),
        ("model_name_or_path", bool(model_args.model_name_or_path), "is not set"),
    ]
    for key, ok, problem in rules:
        if not ok:
            raise LimaError(f"{where(key)}: {problem}")


# An end-of-turn token is a special-token string: no spaces, not a plain word or number.
EOT_SHAPE = re.compile(r"^(?=.*[^\w])\S+$")


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
