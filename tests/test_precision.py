"""Precision chosen from the hardware (lima_lite.precision), for every kind of machine, by faking what torch
reports; an explicit recipe value wins; training, chat and merge really run in the chosen dtype."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import say, write_jsonl
from lima_lite import precision
from lima_lite.config import load_recipe
from lima_lite.precision import Hardware, choose_precision

CPU_AVX2 = Hardware("cpu", "AVX2", False)
CPU_BF16 = Hardware("cpu", "AVX512", True)
TURING = Hardware("cuda", "Quadro RTX 8000, sm 7.5", False)
AMPERE = Hardware("cuda", "NVIDIA A100, sm 8.0", True)


@pytest.fixture
def hardware(monkeypatch):
    """Fake the machine: precision.detect_hardware answers `kind`."""
    def use(kind: Hardware):
        monkeypatch.setattr(precision, "detect_hardware", lambda: kind)
    yield use


@pytest.mark.parametrize("kind, dtype, autocast", [
    (CPU_AVX2, "float32", None), (CPU_BF16, "bfloat16", "bf16"), (TURING, "float16", "fp16"), (AMPERE, "bfloat16", "bf16")])
def test_choice_for_each_kind_of_hardware(kind, dtype, autocast):
    choice = choose_precision(kind)
    assert (choice.dtype, choice.autocast) == (dtype, autocast)


def test_the_line_says_what_and_why():
    assert choose_precision(CPU_AVX2).line("training") == "CPU without native bf16 (AVX2): training in float32"
    assert "fp16 autocast with loss scaling" in choose_precision(TURING).line("training")


@pytest.mark.parametrize("kind, dtype, bf16, fp16", [
    (CPU_AVX2, "float32", False, False), (CPU_BF16, "bfloat16", True, False), (TURING, "float16", False, True)])
def test_a_recipe_without_precision_keys_gets_the_hardware_choice(hardware, kind, dtype, bf16, fp16):
    hardware(kind)
    values = precision.recipe_precision(set())
    assert values == {"dtype": dtype, "bf16": str(bf16).lower(), "fp16": str(fp16).lower()}
    if kind.device == "cuda":
        return  # TrainingArguments refuses fp16 without a real GPU: the values above are what it would get
    read = load_recipe(None, [])
    sft, model_args = read.sft_config, read.model_args
    assert (model_args.dtype, sft.bf16, sft.fp16) == (dtype, bf16, fp16)


def test_an_explicit_setting_wins_with_a_warning_when_slow(hardware, tmp_path):
    hardware(CPU_AVX2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dtype: bfloat16\n")
    read = load_recipe(recipe, [])
    sft, model_args = read.sft_config, read.model_args
    assert model_args.dtype == "bfloat16" and sft.bf16 is False  # autocast follows an explicit dtype only when set
    read = load_recipe(recipe, ["bf16=true"])
    sft, model_args = read.sft_config, read.model_args
    assert model_args.dtype == "bfloat16" and sft.bf16 is True
    warning = precision.precision_warning("bfloat16", True, False, CPU_AVX2)
    assert warning.startswith("warning: bf16 was set explicitly") and "float32" in warning
    assert precision.precision_warning("float32", False, False, CPU_AVX2) is None
    assert precision.precision_warning("bfloat16", True, False, CPU_BF16) is None
    assert "no bf16" in precision.precision_warning("bfloat16", True, False, TURING)
    # an explicit float32 on a bf16 machine: float32 without bf16 autocast
    hardware(CPU_BF16)
    read = load_recipe(None, ["dtype=float32"])
    sft, model_args = read.sft_config, read.model_args
    assert (model_args.dtype, sft.bf16) == ("float32", False)


def test_cpu_bf16_probe_follows_what_torch_runs():
    """The probe times the kernels torch dispatches to: with ATEN_CPU_CAPABILITY=avx2 and
    ONEDNN_MAX_CPU_ISA=AVX2 (what a CPU without AVX-512 runs) it must say "not native"."""
    code = "from lima_lite.precision import cpu_bf16_native; print(cpu_bf16_native())"
    env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"}
    emulated = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert emulated.stdout.strip() == "False", emulated.stderr[-2000:]


def test_cuda_bf16_ignores_emulation(monkeypatch):
    """A Turing card 'supports' bf16 through emulation; the choice must not count that."""
    precision.detect_hardware.cache_clear()
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return including_emulation  # what torch answers on a Turing card
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Quadro RTX 8000")
    try:
        found = precision.detect_hardware()
    finally:
        precision.detect_hardware.cache_clear()
    assert found == Hardware("cuda", "Quadro RTX 8000, sm 7.5", False) and calls == [False]
    assert choose_precision(found).dtype == "float16"


def parameter_dtypes(model) -> set:
    return {p.dtype for p in model.parameters() if p.is_floating_point()}


@pytest.mark.parametrize("kind, dtype", [(CPU_AVX2, torch.float32), (CPU_BF16, torch.bfloat16)])
def test_chat_loads_in_the_chosen_dtype(hardware, tiny_llama, kind, dtype, capsys):
    from lima_lite.generate import load_engine

    hardware(kind)
    engine = load_engine(base=str(tiny_llama))
    assert parameter_dtypes(engine.model) == {dtype}
    assert f"replies in {str(dtype).split('.')[1]}" in capsys.readouterr().err
    assert engine.reply([{"role": "user", "content": "hi"}], max_new_tokens=3, seed=0).new_tokens > 0


@pytest.mark.parametrize("kind, dtype", [(CPU_AVX2, torch.float32), (CPU_BF16, torch.bfloat16)])
def test_training_runs_in_the_chosen_dtype(hardware, tiny_llama, tmp_path, kind, dtype, capsys):
    """A 4-bit base computes in the chosen dtype: the LoRA input (the 4-bit layer's output) has that dtype."""
    from transformers import TrainerCallback

    from lima_lite.train import train

    hardware(kind)
    seen = set()

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            for module in model.modules():
                if type(module).__name__ == "Linear4bit" and hasattr(module, "lora_A"):
                    module.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
                    break

    data = write_jsonl(tmp_path / "d.jsonl", [say(i) for i in range(4)])
    train(None, [f"model_name_or_path={tiny_llama}", f"dataset_name={data}", f"output_dir={tmp_path / 'run'}",
                 "max_steps=1", "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "fp32_layers=false",
                 "lora_r=4", "lora_alpha=8"], callbacks=[Watch()])
    assert seen == {dtype}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model"]["dtype"] == str(dtype).split(".")[1]
    assert kind.label in capsys.readouterr().out


def test_merge_follows_the_choice(hardware, tiny_llama, tmp_path, capsys):
    from safetensors.torch import load_file

    from lima_lite.merge import main as merge_main
    from lima_lite.train import train

    data = write_jsonl(tmp_path / "d.jsonl", [say(i) for i in range(2)])
    hardware(CPU_AVX2)
    run = train(None, [f"model_name_or_path={tiny_llama}", f"dataset_name={data}", f"output_dir={tmp_path / 'run'}",
                       "max_steps=1", "per_device_train_batch_size=2", "lora_r=4", "lora_alpha=8", "load_in_4bit=false"])
    assert merge_main([str(run / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    assert "CPU without native bf16 (AVX2): merging in float32" in capsys.readouterr().out
    weights = load_file(tmp_path / "merged" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_quickstart_loads_full_precision_for_one_epoch_only_without_native_bf16(hardware):
    """The quick-start recipe's slow_cpu_fallback, as lima_lite.resolve applies it: (load_in_4bit, epochs)."""
    from lima_lite.machine import detect_machine
    from lima_lite.resolve import resolve

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"

    def quick(overrides):
        resolved = resolve(load_recipe(recipe, overrides), detect_machine())
        return resolved.model_args.load_in_4bit, resolved.sft_config.num_train_epochs

    hardware(CPU_AVX2)
    assert quick(["seed=1"]) == (False, 1)
    # the user's choices win, each on its own
    assert quick(["load_in_4bit=true"]) == (True, 1)
    assert quick(["num_train_epochs=2", "load_in_4bit=true"]) == (True, 2)
    hardware(CPU_BF16)
    assert quick(["seed=1"]) == (True, 2)
    hardware(AMPERE)
    assert quick([]) == (True, 2)


def test_env_reports_versions_precision_and_fast_paths(hardware, capsys):
    from lima_lite.cli import main

    hardware(CPU_AVX2)
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["packages"]["torch"] == torch.__version__ and env["packages"]["trl"]
    assert env["precision"]["dtype"] == "float32" and env["precision"]["device"] == "cpu"
    assert env["cpu"]["bf16_native"] is False and env["cpu"]["capability"]
    assert env["fast_paths"]["fused_loss"] == {"used": False, "why": "no CUDA"}
    assert env["fast_paths"]["chunked_loss"]["used"] and env["cuda"]["devices"] == []
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    assert "precision: CPU without native bf16 (AVX2): training and replies in float32" in text
    assert "fused_loss" in text and "transformers" in text


def test_env_with_faked_cuda_devices(hardware, monkeypatch):
    from lima_lite import env

    hardware(TURING)
    props = [SimpleNamespace(name="Quadro RTX 8000", total_memory=48 * 2**30, major=7, minor=5),
             SimpleNamespace(name="NVIDIA A100-SXM4-80GB", total_memory=80 * 2**30, major=8, minor=0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    found = env.environment()
    assert [(d["name"], d["memory_gib"], d["compute_capability"], d["bf16"]) for d in found["cuda"]["devices"]] == [
        ("Quadro RTX 8000", 48.0, "7.5", False), ("NVIDIA A100-SXM4-80GB", 80.0, "8.0", True)]
    assert found["precision"]["dtype"] == "float16" and found["precision"]["autocast"] == "fp16"
    assert found["cpu"]["bf16_native"] is None
    paths = found["fast_paths"]
    assert paths["fused_loss"]["used"] is False and "liger-kernel is not installed" in paths["fused_loss"]["why"]
    assert "cuda:1 NVIDIA A100-SXM4-80GB, 80.0 GiB, compute 8.0, bf16" in env.render(found)
