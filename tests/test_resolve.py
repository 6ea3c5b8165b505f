"""A run's settings are decided once: lima_lite.resolve is pure, its settings are read-only, and nothing in the
package sets a setting after it."""

import dataclasses
import re
from pathlib import Path

import pytest

from helpers import dataset
from lima_lite.config import load_recipe
from lima_lite.machine import Machine
from lima_lite.memory.estimate import ModelShape
from lima_lite.precision import Hardware
from lima_lite.resolve import Inputs, resolve

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
AVX2 = Machine(Hardware("cpu", "AVX2", False), cuda=False, host_gib=8.0)
SHAPE = ModelShape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152, tied=True)


def snapshot(recipe) -> dict:
    return {"script": dataclasses.asdict(recipe.script_args), "training": recipe.sft_config.to_dict(),
            "model": dataclasses.asdict(recipe.model_args), "lima": dataclasses.asdict(recipe.lima_args),
            "sources": dict(recipe.sources)}


@pytest.mark.parametrize("machine, extra", [
    (AVX2, ["auto_fit=true", "load_in_4bit=true"]),  # the fallback's epoch, LIMA's schedule end, auto_fit's choice
    (dataclasses.replace(AVX2, processes=2), ["gradient_accumulation_steps=8"]),  # accumulation per process
])
def test_resolve_is_pure(machine, extra):
    recipe = load_recipe(QUICKSTART, extra, machine)
    before = snapshot(recipe)
    inputs = Inputs(added_tokens=0, dev_examples=12, shape=SHAPE)
    first, second = resolve(recipe, machine, inputs), resolve(recipe, machine, inputs)
    assert first == second and first.notes == second.notes and first.reasons == second.reasons
    assert snapshot(recipe) == before  # the recipe is not changed
    assert first.sft_config.eval_strategy == "epoch" and recipe.sft_config.eval_strategy == "no"
    assert first.sft_config.lr_scheduler_kwargs == {"lr_end": pytest.approx(5e-5), "power": 1.0}
    if machine.processes == 2:
        assert first.sft_config.gradient_accumulation_steps == 4
        assert not first.model_args.load_in_4bit and first.sft_config.num_train_epochs == 1  # slow_cpu_fallback
        assert first.notes[0].startswith("CPU without native bf16 (AVX2): the quick start trains with load_in_4bit=false")
    else:
        assert first.sft_config.num_train_epochs == 1 and first.model_args.load_in_4bit  # given on the command line
        assert "auto_fit: micro-batch" in first.notes[-1] and first.reasons["per_device_train_batch_size"].startswith("auto_fit")


def test_resolved_settings_cannot_be_changed():
    resolved = resolve(load_recipe(QUICKSTART, [], AVX2), AVX2)
    for settings, key in ((resolved.sft_config, "learning_rate"), (resolved.model_args, "lora_r"),
                          (resolved.lima_args, "residual_dropout"), (resolved.script_args, "dataset_name")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(settings, key, getattr(settings, key))
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(settings, key)
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.sft_config = None
    recipe = load_recipe(QUICKSTART, [], AVX2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.sft_config.num_train_epochs = 3


# A setting assigned: `sft_config.learning_rate = ...`, `setattr(model_args, ...)`, and the like.
ASSIGNED = re.compile(r"\b(?:sft_config|model_args|lima_args|script_args|training_args)\.\w+\s*(?:[-+*/]?=)(?!=)"
                      r"|setattr\((?:setup|sft_config|model_args|lima_args|script_args)\b")


def test_no_setting_is_assigned_outside_resolve():
    """Every choice a run makes from the machine and the data is made in lima_lite/resolve.py (and the recipe's
    values in lima_lite/config.py): no other module sets a setting."""
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sorted((ROOT / "lima_lite").rglob("*.py")) if path.name not in ("resolve.py", "config.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if ASSIGNED.search(line)]
    assert found == []


def test_inspect_prints_the_resolved_settings_with_their_reasons(tiny_llama, tmp_path, capsys):
    from lima_lite.inspection import main

    data = dataset(tmp_path)
    assert main(["quickstart", f"model_name_or_path={tiny_llama}", f"dataset_name={data}", "chat_format=lima",
                 "--resolved"]) == 0
    lines = capsys.readouterr().out.splitlines()
    settings = {line.split(" = ")[0]: line for line in lines}
    assert {"dtype", "bf16", "fp16", "lr_scheduler_kwargs", "eval_strategy", "attn_implementation"} <= set(settings)
    assert all("  # " in line for line in lines)
    assert "linear decay to final_lr_ratio 0.1 of the peak" in settings["lr_scheduler_kwargs"]
    assert settings["attn_implementation"].startswith("attn_implementation = 'sdpa_varlen'")


def test_the_quick_start_says_its_resolved_settings_in_one_line(tmp_path, monkeypatch, capsys):
    import lima_lite.generate
    from lima_lite import LimaError
    from lima_lite.quickstart import main

    def loaded(*args, **kwargs):
        raise LimaError("stop here: the chat model would load now")

    (tmp_path / "run" / "adapter").mkdir(parents=True)  # a finished run: training is skipped
    monkeypatch.setattr(lima_lite.generate, "load_engine", loaded)
    with pytest.raises(LimaError, match="stop here"):
        main([f"output_dir={tmp_path / 'run'}", "num_train_epochs=3"])
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("Resolved settings:")] == [lines[0]]
    assert " 3 epoch(s) of 1 x 8 examples per step" in lines[0]
    assert lines[1] == f"{tmp_path / 'run' / 'adapter'} exists: skipping training (delete {tmp_path / 'run'} to train again)"
