"""Recipes: every YAML parses with the real parser; unknown keys fail by name; precedence holds."""

from pathlib import Path

import pytest

from lima_lite import LimaError
from lima_lite.config import LIMA_DEFAULTS, load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes_for_every_size_and_variant():
    names = {p.stem for p in RECIPES}
    assert {"quickstart", "llama-7b", "llama-13b", "llama-33b", "llama-65b", "lima-1030-dialogue"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_keeps_lima_optimizer(recipe):
    read = load_recipe(recipe)
    sft, model_args, lima = read.sft_config, read.model_args, read.lima_args
    assert (sft.adam_beta1, sft.adam_beta2, sft.weight_decay) == (0.9, 0.95, 0.1)
    assert sft.warmup_steps == 0 and sft.lr_scheduler_type == "polynomial"
    assert model_args.lora_target_modules == "all-linear"
    assert 0.0 <= lima.residual_dropout <= 0.3


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.stem.startswith("llama-")], ids=lambda p: p.stem)
def test_paper_recipes_follow_lima(recipe):
    read = load_recipe(recipe)
    sft, model_args, lima = read.sft_config, read.model_args, read.lima_args
    size = int(recipe.stem.split("-")[1].rstrip("b"))
    batch = sft.per_device_train_batch_size * sft.gradient_accumulation_steps
    assert batch == (64 if size <= 13 else 32)  # LIMA: 32 examples per step, 64 for smaller models
    assert lima.residual_dropout == (0.2 if size <= 13 else 0.3)
    assert sft.num_train_epochs == 15 and sft.max_length == 2048 and sft.save_strategy == "epoch"
    assert model_args.load_in_4bit and model_args.bnb_4bit_quant_type == "nf4" and model_args.use_bnb_nested_quant
    assert lima.eot_token == "<|eot|>"  # LLaMA-1 has no end-of-turn token: LIMA adds one


def test_unknown_key_names_the_key_line_and_a_suggestion(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 1.0e-4\nlearnig_rate: 2.0e-4\n")
    with pytest.raises(LimaError, match=r"r\.yaml:2: unknown key 'learnig_rate'; did you mean 'learning_rate'"):
        load_recipe(recipe)
    with pytest.raises(LimaError, match="command line: unknown key 'residual_drop'"):
        load_recipe(None, ["residual_drop=0.1"])


def test_precedence_defaults_then_yaml_then_command_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 1.0e-4\nnum_train_epochs: 3\n")
    read = load_recipe(recipe, ["learning_rate=5e-4"])
    sft = read.sft_config
    assert sft.learning_rate == 5e-4  # "5e-4" is a string to YAML; coerced to the field's float
    assert sft.num_train_epochs == 3
    assert sft.weight_decay == LIMA_DEFAULTS["weight_decay"]


def test_invalid_yaml_and_bad_override_are_clear(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("learning_rate: [1\n")
    with pytest.raises(LimaError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_recipe(recipe)
    with pytest.raises(LimaError, match="not key=value"):
        load_recipe(None, ["learning_rate"])
    with pytest.raises(LimaError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


BAD_VALUES = [
    ("num_train_epochs: three", "num_train_epochs", "invalid float value"),
    ("learning_rate: [1, 2]", "learning_rate", "invalid float value"),
    ("learning_rate: -1.0e-4", "learning_rate", "must be > 0"),
    ("per_device_train_batch_size: -2", "per_device_train_batch_size", "must be >= 1"),
    ("lora_r: -8", "lora_r", "must be >= 1"),
    ("residual_dropout: 1.5", "residual_dropout", r"must be in \[0, 1\)"),
    ("eot_token: 123", "eot_token", "not a special-token string"),
    ("eot_token: ''", "eot_token", "not a special-token string"),
    ("dtype: float8", "dtype", "invalid choice"),
    ("num_train_epochs: -1", "num_train_epochs", "must be > 0"),
    ("max_length: -5", "max_length", "must be >= 2"),
    ("multi_turn: maybe", "multi_turn", "Truthy value expected"),
]


@pytest.mark.parametrize("line,key,problem", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_name_file_line_and_key(tmp_path, line, key, problem):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"# a comment\n{line}\n")
    with pytest.raises(LimaError, match=rf"r\.yaml:2: {key}: .*{problem}"):
        load_recipe(recipe)


def test_values_are_read_with_the_fields_own_types(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("save_strategy: no\nmulti_turn: 'no'\nlearning_rate: 3e-4\n"
                      "lr_scheduler_kwargs: {power: 1.0, lr_end: 1.0e-6}\nlora_target_modules: [q_proj, v_proj]\n")
    read = load_recipe(recipe)
    sft, model_args, lima = read.sft_config, read.model_args, read.lima_args
    assert sft.save_strategy == "no" and lima.multi_turn is False and sft.learning_rate == 3e-4
    assert sft.lr_scheduler_kwargs == {"power": 1.0, "lr_end": 1.0e-6}
    assert model_args.lora_target_modules == ["q_proj", "v_proj"]
    read = load_recipe(None, ["save_strategy=no", "multi_turn=false", "dev_dataset=null"])
    sft, lima = read.sft_config, read.lima_args
    assert sft.save_strategy == "no" and lima.multi_turn is False and lima.dev_dataset is None


def test_duplicate_keys_are_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lora_r: 8\nseed: 1\nlora_r: 16\n")
    with pytest.raises(LimaError, match=r"r\.yaml:3: lora_r: set twice \(first on line 1\)"):
        load_recipe(recipe)
