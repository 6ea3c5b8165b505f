"""plan --fit and train's auto_fit: the fastest fitting setting, never over budget, user values kept, one step down;
activation offloading: counted bytes against the plan, and the same loss and LoRA gradients as without it."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import run_cli, write_run
from lima_lite import LimaError
from lima_lite.memory.estimate import CUDA_CONTEXT_GIB, GIB, ModelShape, PlanSettings, read_shape, settings_peak
from lima_lite.memory.fit import FIT_MARGIN, MLP_CHUNK_TOKENS, TILED_MLP_COST, fit, fit_summary, relative_speed, step_down

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "tests" / "assets" / "llama-shapes"
LLAMA_7B = ModelShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000, tied=False)
RECIPE_7B = PlanSettings(micro_batch=4, max_length=2048, lora_r=64, gradient_checkpointing=True, padding_free=True,
                         optim="paged_adamw_8bit", added_tokens=1, loss_chunk_tokens=512)


@pytest.mark.parametrize("budget", [8.0, 12.0, 16.0, 24.0, 48.0, 80.0])
def test_chosen_is_the_fastest_that_fits_and_never_over_budget(budget):
    result = fit(LLAMA_7B, RECIPE_7B, 64, budget)
    limit = budget * (1 - FIT_MARGIN)
    for row in result["candidates"]:
        assert row["fits"] == (settings_peak(LLAMA_7B, row["settings"])[1] <= limit)
        assert row["settings"].micro_batch * (64 // row["settings"].micro_batch) == 64  # same examples per step
    chosen = result["chosen"]
    assert chosen["peak_gib"] <= limit
    fastest = max(relative_speed(row["settings"]) for row in result["candidates"] if row["fits"])
    assert relative_speed(chosen["settings"]) == fastest
    assert chosen["speed"] == 1.0


def test_nothing_fits_a_tiny_budget():
    result = fit(LLAMA_7B, RECIPE_7B, 64, 4.0)
    assert result["chosen"] is None and not any(row["fits"] for row in result["candidates"])
    assert fit_summary(LLAMA_7B, result)["fits"] is False


def test_more_memory_never_chooses_a_slower_setting():
    speeds = [fit(LLAMA_7B, RECIPE_7B, 64, b)["chosen"]["settings"] for b in (10.0, 16.0, 24.0, 48.0, 80.0)]
    assert [relative_speed(s) for s in speeds] == sorted(relative_speed(s) for s in speeds)
    assert speeds[-1].micro_batch > speeds[0].micro_batch


def test_offloading_lowers_the_peak_and_costs_host_memory():
    on = replace(RECIPE_7B, micro_batch=16, activation_offloading=True)
    off = replace(on, activation_offloading=False)
    # every checkpoint leaves the GPU but the one recomputed and the one TRL frees next (OFFLOAD_ON_GPU)
    saved = (LLAMA_7B.layers - 2) * 16 * 2048 * 4096 * 4 / GIB
    assert settings_peak(LLAMA_7B, off)[1] - settings_peak(LLAMA_7B, on)[1] == pytest.approx(saved * 1.2, abs=0.01)
    summary = fit_summary(LLAMA_7B, fit(LLAMA_7B, RECIPE_7B, 64, 24.0))
    assert summary["activation_offloading"] and summary["host_offload_gib"] >= LLAMA_7B.layers * 16 * 2048 * 4096 * 2 / GIB


def test_offloading_only_within_host_memory():
    roomy = fit(LLAMA_7B, RECIPE_7B, 64, 24.0, host_gib=64.0)["chosen"]
    assert roomy["settings"].activation_offloading and roomy["host_gib"] <= 64.0 * (1 - FIT_MARGIN)
    tight = fit(LLAMA_7B, RECIPE_7B, 64, 24.0, host_gib=roomy["host_gib"] / 2)
    assert all(row["host_gib"] <= roomy["host_gib"] / 2 * (1 - FIT_MARGIN) for row in tight["candidates"] if row["fits"])
    assert relative_speed(tight["chosen"]["settings"]) < relative_speed(roomy["settings"])


def test_user_values_are_kept():
    kept = fit(LLAMA_7B, RECIPE_7B, 64, 80.0, fixed={"per_device_train_batch_size": 2, "fp32_layers": True})
    assert {(r["settings"].micro_batch, r["settings"].fp32_layers) for r in kept["candidates"]} == {(2, True)}
    no_checkpointing = fit(LLAMA_7B, RECIPE_7B, 64, 80.0, fixed={"gradient_checkpointing": False})["chosen"]["settings"]
    assert not no_checkpointing.gradient_checkpointing and not no_checkpointing.activation_offloading
    accumulation = fit(LLAMA_7B, RECIPE_7B, 64, 80.0, fixed={"gradient_accumulation_steps": 32})["chosen"]["settings"]
    assert accumulation.micro_batch == 2


def test_tiled_mlp_only_when_the_length_needs_it():
    """At LIMA's 2,048 tokens nothing is tiled; at 50,000 tokens only the tiled MLP with lean activations fits, and
    fit chooses it (at its cost, x TILED_MLP_COST x LEAN_COST); the longest example it reports is beyond what fits
    untiled; mlp_chunk_tokens=0 given by the user keeps the MLP whole (and tries no lean activations either)."""
    from lima_lite.memory.fit import LEAN_COST

    shape = read_shape(SHAPES / "llama3.1-8b" / "config.json")
    recipe = replace(RECIPE_7B, lora_dropout=True)
    short = fit(shape, recipe, 64, 24.0, host_gib=64.0)
    assert not any(row["settings"].mlp_chunk_tokens for row in short["candidates"])
    long = fit(shape, replace(recipe, max_length=50_000), 64, 24.0, host_gib=64.0)
    chosen = long["chosen"]["settings"]
    assert chosen.mlp_chunk_tokens == MLP_CHUNK_TOKENS and chosen.lean_activations
    assert not any(row["fits"] for row in long["candidates"] if not row["settings"].mlp_chunk_tokens)
    untiled = replace(chosen, mlp_chunk_tokens=0, lean_activations=False)
    assert relative_speed(untiled) / relative_speed(chosen) == pytest.approx(TILED_MLP_COST * LEAN_COST)
    assert settings_peak(shape, untiled)[1] > long["limit_gib"] >= settings_peak(shape, chosen)[1]
    summary = fit_summary(shape, short)
    assert summary["mlp_chunk_tokens"] == 0 and summary["long_context_mlp_chunk_tokens"] == MLP_CHUNK_TOKENS
    assert not summary["lean_activations"] and summary["long_context_lean_activations"]
    whole = fit_summary(shape, fit(shape, recipe, 64, 24.0, fixed={"mlp_chunk_tokens": 0}, host_gib=64.0))
    assert 50_000 < summary["max_length_at_micro_batch_1"]
    assert whole["max_length_at_micro_batch_1"] < 50_000 and whole["long_context_mlp_chunk_tokens"] == 0
    assert fit(shape, replace(recipe, max_length=50_000), 64, 24.0, fixed={"mlp_chunk_tokens": 0},
               host_gib=64.0)["chosen"] is None


def test_tiled_mlp_in_the_plan_is_per_chunk():
    """The recomputed layer's MLP term: the whole sequence's without tiling, one chunk's with it; what is saved
    outside the MLP (attention, norms) is unchanged."""
    from dataclasses import replace

    from lima_lite.memory.estimate import component_bytes, layer_parts_per_token

    shape = read_shape(SHAPES / "llama3.1-8b" / "config.json")
    tokens, chunk = 40_000, 4096
    settings = PlanSettings(micro_batch=1, max_length=tokens, lora_r=64, gradient_checkpointing=True, padding_free=True,
                            optim="paged_adamw_8bit", added_tokens=1, loss_chunk_tokens=512, fp32_layers=False)
    whole, tiled = component_bytes(shape, settings), component_bytes(shape, replace(settings, mlp_chunk_tokens=chunk))
    outside, inside = layer_parts_per_token(shape, True, True, True, rb=2)
    h, m, q, kv = shape.hidden, shape.intermediate, shape.heads * shape.dim, shape.kv_heads * shape.dim
    outside -= h  # the MLP's residual-dropout mask (bool) is never alive with the rest
    other = tokens * outside + max(tokens * (2 * (2 * q + 2 * kv) + 4 * q), tokens * 4 * 5 * h)  # attention, norms
    forward_end = 2 * m + 3 * 2 * h  # down_proj's input and outputs, per token, at the end of the MLP's forward
    whole_mlp = tokens * (outside + inside) + max(tokens * m * 2, tokens * forward_end)
    tiled_mlp = tokens * outside + max(chunk * (m * 2 + inside), chunk * forward_end) + tokens * h * 2
    assert whole_mlp > other and tiled_mlp < other  # the MLP bounds the whole layer, the attention the tiled one
    assert whole["layer_backward"] - tiled["layer_backward"] == whole_mlp - other
    assert whole["activations"] == tiled["activations"]
    short = replace(settings, max_length=chunk)
    assert component_bytes(shape, replace(short, mlp_chunk_tokens=chunk)) == component_bytes(shape, short)


def test_step_down_once_to_a_lower_peak():
    result = fit(LLAMA_7B, RECIPE_7B, 64, 24.0)
    fitted = {"result": result, "step_downs": 0}
    lower = step_down(fitted)
    assert lower["peak_gib"] < result["chosen"]["peak_gib"] <= 24.0 * (1 - FIT_MARGIN)
    assert lower["per_device_train_batch_size"] * lower["gradient_accumulation_steps"] == 64
    assert step_down(fitted) is None  # at most once


RECIPE_SHAPES = [("llama-7b", "7b", 24), ("llama-13b", "13b", 24), ("llama-33b", "33b", 24), ("llama-65b", "65b", 48),
                 ("lima-1030-dialogue", "7b", 24), ("llama3.1-8b", "llama3.1-8b", 24), ("mistral-7b", "mistral-7b", 24),
                 ("qwen3-8b", "qwen3-8b", 24), ("gemma3-1b-it", "gemma3-1b", 12),
                 ("llama3.2-3b-instruct", "llama3.2-3b", 24), ("llama3.1-70b", "llama3.1-70b", 48)]


def test_every_gpu_recipe_is_fitted():
    recipes = {path.stem for path in (ROOT / "recipes").glob("*.yaml") if "auto_fit: true" in path.read_text()}
    assert recipes == {recipe for recipe, _, _ in RECIPE_SHAPES}
    assert "auto_fit" not in (ROOT / "recipes" / "quickstart.yaml").read_text()  # the CPU recipe trains as written


@pytest.mark.parametrize("recipe,shape,gpu", RECIPE_SHAPES)
def test_cli_fit_json_for_each_recipe(recipe, shape, gpu):
    result = run_cli("plan", recipe, f"model_name_or_path={SHAPES / shape}", "--fit", "--gpu-gib", str(gpu),
                     "--host-gib", "64", "--json")
    assert result.returncode == 0, result.stderr
    fitted = json.loads(result.stdout.strip().splitlines()[-1])
    assert fitted["fits"] and fitted["peak_gib"] <= gpu * (1 - FIT_MARGIN)
    assert {"per_device_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
            "activation_offloading", "peak_gib", "max_length_at_micro_batch_1"} <= set(fitted)
    examples = 32 if shape in ("33b", "65b", "llama3.1-70b") else 64
    assert fitted["per_device_train_batch_size"] * fitted["gradient_accumulation_steps"] == examples


def test_cli_fit_table_marks_the_chosen_and_keeps_a_command_line_value():
    result = run_cli("plan", "llama-7b", f"model_name_or_path={SHAPES / '7b'}", "per_device_train_batch_size=2",
                     "--fit", "--gpu-gib", "24", "--host-gib", "64")
    assert result.returncode == 0, result.stderr
    chosen = [line for line in result.stdout.splitlines() if line.strip().startswith("->")]
    # the micro-batch the user gave, with the recipe's accumulation (2 x 16: what the command line asked for)
    assert len(chosen) == 1 and chosen[0].split()[1:4] == ["2", "x", "16"]


def test_train_applies_the_fit_before_loading_and_keeps_explicit_values(tiny_llama, tmp_path, monkeypatch, capsys):
    """On the CPU the fit runs against available system memory, as in CI; a command-line value is kept."""
    import lima_lite.model
    from lima_lite.train import train

    seen = {}

    def loaded(*args, **kwargs):
        raise LimaError("stop here: weights would load now")

    def record(setup, callbacks=()):
        seen.update(batch=setup.sft_config.per_device_train_batch_size, accumulation=setup.sft_config.gradient_accumulation_steps,
                    checkpointing=setup.sft_config.gradient_checkpointing, fp32=setup.lima_args.fp32_layers)
        loaded()

    import lima_lite.train

    monkeypatch.setattr(lima_lite.train, "build_trainer", record)
    monkeypatch.setattr(lima_lite.model, "get_model", loaded)
    common = [f"model_name_or_path={tiny_llama}", f"output_dir={tmp_path / 'run'}", "dev_dataset=null",
              "chat_format=lima", "auto_fit=true"]
    with pytest.raises(LimaError, match="stop here"):
        train(ROOT / "recipes" / "quickstart.yaml", common)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("auto_fit:"))
    assert "no GPU: available system memory" in line
    # plenty of memory for a tiny model: the largest micro-batch of the quick start's 8 examples, no checkpointing
    assert seen == {"batch": 8, "accumulation": 1, "checkpointing": False, "fp32": False}
    with pytest.raises(LimaError, match="stop here"):
        train(ROOT / "recipes" / "quickstart.yaml", [*common, "per_device_train_batch_size=2"])
    assert "kept from the command line: per_device_train_batch_size" in capsys.readouterr().out
    assert seen["batch"] == 2 and seen["accumulation"] == 8  # the recipe's accumulation: 2 x 8, as asked


def test_resume_reuses_the_runs_own_fit(tiny_llama, tmp_path, monkeypatch, capsys):
    """A rerun that resumes an auto_fit run trains with the setting its run.json records (after its step down),
    not a new fit (here 8 x 1, bf16: free memory differs from run to run), so the resume check sees the same
    batch and precision instead of refusing a changed run."""
    import lima_lite.train
    from lima_lite.resume import run_definition
    from lima_lite.train import prepare, train

    run_dir = tmp_path / "run"
    common = [f"model_name_or_path={tiny_llama}", f"output_dir={run_dir}", "dev_dataset=null", "chat_format=lima",
              "auto_fit=true"]
    used = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "gradient_checkpointing": True,
            "activation_offloading": False, "fp32_layers": True, "mlp_chunk_tokens": 0, "lean_activations": False}
    # the run's definition as it trained: the step down's setting, given as key=value
    setup = prepare(ROOT / "recipes" / "quickstart.yaml", [*common[:-1], *(f"{key}={value}" for key, value in used.items())])
    (run_dir / "checkpoint-3").mkdir(parents=True)
    (run_dir / "checkpoint-3" / "trainer_state.json").write_text("{}")
    record = {"chosen": {**used, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "peak_gib": 1.0},
              "budget_source": "free on this GPU", "step_down": {**used, "peak_gib": 0.5, "reason": "out of memory"}}
    write_run(run_dir, **run_definition(setup), fit=record)
    seen = {}

    def record_setup(setup, callbacks=()):
        seen.update(batch=setup.sft_config.per_device_train_batch_size, accumulation=setup.sft_config.gradient_accumulation_steps,
                    checkpointing=setup.sft_config.gradient_checkpointing, fp32=setup.lima_args.fp32_layers)
        raise LimaError("stop here: weights would load now")

    monkeypatch.setattr(lima_lite.train, "build_trainer", record_setup)
    with pytest.raises(LimaError, match="stop here"):
        train(ROOT / "recipes" / "quickstart.yaml", common)
    assert seen == {"batch": 2, "accumulation": 4, "checkpointing": True, "fp32": True}  # the step down's setting
    assert "auto_fit: resuming with the run's own setting (run.json): micro-batch 2 x 4" in capsys.readouterr().out


def test_counted_peak_of_the_chosen_setting_is_under_budget(tmp_path):
    """A tiny LLaMA trained (3 steps, CPU) with the setting fit chose for a budget the recipe's own setting
    (no checkpointing, micro-batch 4) exceeds: its counted peak plus the CUDA context stays under the budget."""
    from oracles.step_bytes import measure

    config = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=2000)
    shape = ModelShape(hidden=128, intermediate=352, layers=3, heads=4, kv_heads=4, vocab=2000, tied=False)
    recipe = PlanSettings(micro_batch=4, max_length=256, lora_r=8, gradient_checkpointing=False, padding_free=True,
                          optim="adamw_torch", added_tokens=1, loss_chunk_tokens=512)
    recipe_peak = settings_peak(shape, recipe)[1]
    budget = (CUDA_CONTEXT_GIB + 0.7 * (recipe_peak - CUDA_CONTEXT_GIB)) / (1 - FIT_MARGIN)
    result = fit(shape, recipe, 4, budget, fixed={"fp32_layers": True}, offloading=False)
    chosen = result["chosen"]["settings"]
    assert recipe_peak > result["limit_gib"] and chosen != recipe
    counted = measure(config, chosen.micro_batch, chosen.max_length, chosen.gradient_checkpointing, True,
                      root=str(tmp_path))
    assert CUDA_CONTEXT_GIB + counted["peak"] / GIB <= result["limit_gib"]


def test_calibration_with_offloading(tmp_path):
    """Checkpoints offloaded as TRL does (oracles.step_bytes.HostOffload): the counted device peak stays
    under the plan (within 12 %), and the host bytes under the plan's bound."""
    from oracles.step_bytes import OFFLOAD_SHAPES, compare

    shape = OFFLOAD_SHAPES["llama-h128-L10"]
    on = compare("test", shape, 2, 256, True, True, root=str(tmp_path), activation_offloading=True)["rows"]
    off = compare("test", shape, 2, 256, True, True, root=str(tmp_path))["rows"]
    assert on["peak"]["counted"] < off["peak"]["counted"]  # offloading lowered the counted peak
    assert 0 <= on["peak"]["error"] < 0.12, on["peak"]
    assert 0 < on["host_offload"]["counted"] <= on["host_offload"]["planned"], on["host_offload"]


def test_offloading_gives_the_same_loss_and_lora_gradients():
    """fp32 tiny LLaMA + LoRA with gradient checkpointing: loss and every LoRA gradient with the checkpoints
    offloaded (TRL's policy, and torch's save_on_cpu) equal those without, within 1e-5."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from oracles.step_bytes import HostOffload

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=8,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=300))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                             init_lora_weights=False))
    model.train()
    ids = torch.randint(0, 300, (2, 96), generator=torch.Generator().manual_seed(1))

    def loss_and_grads(context):
        model.zero_grad()
        with context:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}

    import contextlib

    base_loss, base_grads = loss_and_grads(contextlib.nullcontext())
    trl_offload = HostOffload()
    for context in (trl_offload, torch.autograd.graph.save_on_cpu()):
        loss, grads = loss_and_grads(context)
        assert abs(loss - base_loss) <= 1e-5
        assert grads.keys() == base_grads.keys() and len(grads) == 8 * 7 * 2
        for name, grad in grads.items():
            assert torch.allclose(grad, base_grads[name], atol=1e-5, rtol=0), name
    assert trl_offload.host_peak > 8 * 2 * 96 * 64 * 4 * 0.9  # the checkpoints really went to "host" memory


class OutOfMemoryAtFirstStep:
    """A TrainerCallback that raises CUDA's out-of-memory error at the first step of its first `times` trainers."""

    def __init__(self, times: int):
        from transformers import TrainerCallback

        outer = self
        self.times, self.batches = times, []

        class Raise(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                import torch

                if state.global_step == 0:
                    outer.batches.append(args.per_device_train_batch_size)
                    if len(outer.batches) <= outer.times:
                        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

        self.callback = Raise()


def test_out_of_memory_first_step_steps_down_once(tiny_llama, tmp_path, capsys):
    import torch

    from lima_lite.train import train

    args = [f"model_name_or_path={tiny_llama}", "dev_dataset=null", "chat_format=lima", "auto_fit=true", "max_steps=1",
            "num_train_epochs=1", "save_strategy=no"]
    once = OutOfMemoryAtFirstStep(times=1)
    run_dir = train(ROOT / "recipes" / "quickstart.yaml", [*args, f"output_dir={tmp_path / 'once'}"], [once.callback])
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished"
    # the fit's choice (8 x 1, no checkpointing), then the fastest candidate with a lower planned peak: 8 x 1 with
    # checkpointing
    assert once.batches == [8, 8]
    chosen, lower = run["fit"]["chosen"], run["fit"]["step_down"]
    assert not chosen["gradient_checkpointing"] and lower["gradient_checkpointing"]
    assert lower["peak_gib"] < chosen["peak_gib"]
    assert run["training"]["gradient_checkpointing"] is True
    assert "stepping down once" in capsys.readouterr().out
    twice = OutOfMemoryAtFirstStep(times=2)
    with pytest.raises(torch.OutOfMemoryError):
        train(ROOT / "recipes" / "quickstart.yaml", [*args, f"output_dir={tmp_path / 'twice'}"], [twice.callback])
    assert twice.batches == [8, 8]  # one step down, no second
    assert json.loads((tmp_path / "twice" / "run.json").read_text())["status"] == "interrupted"


@pytest.mark.slow  # a benchmark script end to end: three trainings in their own processes
def test_gpu_check_dry_run(tmp_path):
    """bench/gpu_check.py on a tiny shape on the CPU: plain TRL, lima_lite with auto_fit and with the recipe's
    setting; the fitted and the recipe's first-step losses agree, and the block names the paths taken."""
    out = tmp_path / "check.md"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--steps", "2",
                             "--root", str(tmp_path / "root"), "--out", str(out)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    block = out.read_text()
    rows = [line for line in block.splitlines() if line.startswith("| tiny |")]
    assert [row.split(" | ")[1] for row in rows] == ["plain TRL", "lima_lite --fit", "lima_lite, recipe's setting"]
    fitted, recipe = (float(row.rstrip(" |").split(" | ")[-1]) for row in rows[1:])
    assert fitted == pytest.approx(recipe, rel=1e-4)
    assert "equals the recipe's (1 % tolerance): yes" in block
    # on a CPU the kit prints no line about its CUDA paths (loss, attention, Liger): the fit is what is left
    assert "  - auto_fit: micro-batch" in block and "  - loss:" not in block


@pytest.mark.slow  # a benchmark script end to end: two trainings in their own processes
def test_gpu_check_long_dry_run(tmp_path):
    """bench/gpu_check.py --long on a tiny shape on the CPU: `train` with the long-context setting (micro-batch 1,
    bf16 layers, the MLP tiled, lean activations) runs two steps at two lengths, against the plan; for
    Llama-3.1-8B the lengths it would check on a GPU are 80,000 tokens and the plan's longest in 24 GiB."""
    from oracles.plan_fit import longest

    out = tmp_path / "long.md"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--long", "--dry-run",
                             "--root", str(tmp_path / "root"), "--out", str(out)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| 512 ") or
            line.startswith("| 1,024 ")]
    assert [row[1] for row in rows] == ["yes", "yes"]  # fits
    assert all(float(row[4]) > 0 and len(row[6].split(", ")) == 2 for row in rows)  # planned GiB, two losses
    assert longest(ROOT / "tests" / "assets" / "llama-shapes" / "llama3.1-8b", 24.0) >= 80_000
