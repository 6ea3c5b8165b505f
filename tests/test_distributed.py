"""More than one process: `lima-lite train` under torchrun with 2 CPU processes (gloo backend).

Two processes train the adapter one process trains with the same examples per step, every file of the run
is written once by the main process, a SIGKILL of both processes followed by the same command resumes and
ends where an uninterrupted run ends, and the FSDP configuration loads the 4-bit base in its storage dtype.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import KILL_SCRIPT, adapter_weights, facts, free_port, max_difference, write_jsonl, write_run
from lima_lite import LimaError
from lima_lite.layout import ADAPTER_FILES
from lima_lite.resolve import per_process_accumulation
from lima_lite.resume import resume_point

ROOT = Path(__file__).resolve().parents[1]

def launch(script: Path, overrides: dict, processes: int, kill_at: int = 0):
    """The script under torchrun with `processes` CPU processes, or as a plain process for 1."""
    runner = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
              "--master_addr", "127.0.0.1", "--master_port", str(free_port())] if processes > 1 else [sys.executable]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*runner, str(script), json.dumps(overrides), str(kill_at)], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def setting(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    data = facts(folder / "train.jsonl", 8)
    script = folder / "train_script.py"
    script.write_text(KILL_SCRIPT)
    # The recipe, as written for one process: 1 x 4 = 4 examples per step; 8 examples: 2 steps per epoch.
    # No dropout: each process draws its own masks, so with dropout two processes equal one only in distribution.
    common = {"model_name_or_path": str(tiny_llama), "dataset_name": str(data), "num_train_epochs": 2,
              "per_device_train_batch_size": 1, "gradient_accumulation_steps": 4, "learning_rate": 1e-3,
              "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "residual_dropout": 0.0,
              "gradient_checkpointing": False, "seed": 3}
    full = {**common, "load_in_4bit": False, "dtype": "float32", "bf16": False}
    return folder, script, common, full


@pytest.fixture(scope="module")
def two_process_nf4_run(setting):
    """The QLoRA path: each of 2 processes loads its own NF4 copy of the base."""
    folder, script, common, _ = setting
    out = folder / "two-nf4"
    result = launch(script, {**common, "load_in_4bit": True, "output_dir": str(out)}, processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(setting):
    """Full precision: with a 4-bit base on bf16 hardware TRL trains LoRA in bf16, and two processes' bf16
    gradients, summed by the all-reduce, round differently from one process's (measured on the quick-start
    recipe: 1.95e-3 apart, same losses to 4 digits). In fp32 the only difference is the order of the sum:
    each optimizer step sees the same 4 examples (process i takes micro-batches i, i+2, ... of one seeded
    order) and the loss is divided by the tokens of all processes (transformers' num_items_in_batch, gathered).

    With a dev set, as the quick start has: the base's dev loss is evaluated before the first step, and an
    evaluation before training used to leave the model unwrapped by DistributedDataParallel, each process
    training alone on its half of the data (adapters 6.6e-3 apart on the quick-start recipe)."""
    folder, script, _, full = setting
    full = {**full, "dev_dataset": str(facts(folder / "dev.jsonl", 3, "the sea"))}
    one = launch(script, {**full, "output_dir": str(folder / "one")}, processes=1)
    two = launch(script, {**full, "output_dir": str(folder / "two")}, processes=2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = adapter_weights(folder / "one"), adapter_weights(folder / "two")
    assert max_difference(a, b) < 1e-5
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # not trivially equal: training moved LoRA
    run = json.loads((folder / "two" / "run.json").read_text())
    # gradient accumulation adapted: 1 x 2 x 2 processes = the recipe's 1 x 4
    assert (run["processes"], run["training"]["gradient_accumulation_steps"]) == (2, 2)
    assert (run["effective_batch"], run["steps_per_epoch"]) == (4, 2)
    assert json.loads((folder / "one" / "run.json").read_text())["training"]["gradient_accumulation_steps"] == 4
    # the base was evaluated, then each epoch
    dev = [json.loads(line)["step"] for line in (folder / "two" / "metrics.jsonl").read_text().splitlines()
           if "eval_loss" in json.loads(line)]
    assert dev == [0, 2, 4]


@pytest.mark.slow
def test_every_file_of_a_two_process_run_is_written_once_and_whole(two_process_nf4_run, tiny_llama):
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoModelForCausalLM

    out, result = two_process_nf4_run
    assert result.stdout.count("Adapter written to") == 1 and result.stdout.count("Training on 8") == 1
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("checkpoint-")) == [
        "adapter", "epoch-01", "epoch-02", "loss.png", "metrics.jsonl", "run.json"]  # no temp folders
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # one writer: each step once
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["processes"] == 2
    Image.open(out / "loss.png").verify()
    for name in ("adapter", "epoch-01", "epoch-02"):
        assert set(ADAPTER_FILES) <= {p.name for p in (out / name).iterdir()}
    # the last epoch is the final adapter
    assert max_difference(adapter_weights(out, "epoch-02"), adapter_weights(out)) == 0
    # a normal PEFT adapter: plain peft loads it over the base
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    base.resize_token_embeddings(base.get_input_embeddings().weight.shape[0] + 2)  # <|eot|> and <|pad|>
    PeftModel.from_pretrained(base, out / "adapter")


@pytest.mark.slow
def test_sigkill_of_both_processes_then_the_same_command_resumes(setting, two_process_nf4_run):
    folder, script, common, _ = setting
    out = folder / "killed-nf4"
    overrides = {**common, "load_in_4bit": True, "output_dir": str(out)}
    killed = launch(script, overrides, processes=2, kill_at=3)
    assert killed.returncode != 0
    assert (out / "checkpoint-2").is_dir() and not (out / "adapter").exists()
    resumed = launch(script, overrides, processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("Resuming from") == 1 and "checkpoint-2" in resumed.stdout
    assert max_difference(adapter_weights(out), adapter_weights(two_process_nf4_run[0])) < 1e-5
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4]
    assert sorted(p.name for p in out.glob("epoch-*")) == ["epoch-01", "epoch-02"]


class OneProcess:
    """What resume_point asks of accelerate's Accelerator, for a run with one process."""

    is_main_process, num_processes = True, 1

    def wait_for_everyone(self):
        pass


def test_a_checkpoint_resumes_only_under_the_number_of_processes_that_wrote_it(tmp_path):
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, checkpoint / "adapter_model.safetensors")  # weights that load: resume checks them
    write_run(tmp_path, processes=2)
    with pytest.raises(LimaError, match="written by 2 process.*this run has 1"):
        resume_point(tmp_path, OneProcess())
    write_run(tmp_path, processes=1)
    assert resume_point(tmp_path, OneProcess()) == checkpoint


def test_a_checkpoint_cut_by_a_kill_is_removed_and_the_one_before_resumed(tmp_path):
    from lima_lite.layout import last_complete_checkpoint

    for step, state in ((9, "{}"), (10, None), (11, '{"global_st')):  # whole; no state yet; state cut short
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"weights")
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-9"  # steps in number order, not text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-9"]


def test_gradient_accumulation_keeps_the_recipes_examples_per_step():
    assert per_process_accumulation(4, 16, 1) == 16
    assert per_process_accumulation(4, 16, 2) == 8  # llama-7b: 4 x 8 x 2 GPUs = 64
    assert per_process_accumulation(1, 32, 8) == 4  # llama-65b: 1 x 4 x 8 GPUs = 32
    uneven = r"per_device_train_batch_size 4 x gradient_accumulation_steps 3 = 12 .* 2 processes"
    with pytest.raises(LimaError, match=uneven):
        per_process_accumulation(4, 3, 2)


def test_uneven_split_stops_the_command_with_one_line(tiny_llama, tmp_path):
    """The check runs where the recipe is read, before a model is loaded."""
    data = write_jsonl(tmp_path / "train.jsonl", [[{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello"}]])
    code = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "lima_lite.cli", "inspect", str(ROOT / "recipes" / "quickstart.yaml"),
         f"model_name_or_path={tiny_llama}", f"dataset_name={data}", "gradient_accumulation_steps=3"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
             "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert code.returncode != 0
    assert code.stderr.count("error: per_device_train_batch_size") == 2  # one line from each process
    assert "cannot be split evenly over 2 processes" in code.stderr
    assert "exitcode  : 2" in code.stderr  # each process ends as the CLI ends on a LimaError; torchrun reports it


def test_accelerate_reads_the_shipped_configs_as_documented():
    """accelerate's own loader and launcher read recipes/accelerate/*.yaml into the settings the README promises."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType
    from accelerate.utils.launch import prepare_multi_gpu_env

    ddp = load_config_from_file(str(ROOT / "recipes" / "accelerate" / "ddp.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and ddp.num_processes == 2
    args = launch_command_parser().parse_args(
        ["--config_file", str(ROOT / "recipes" / "accelerate" / "fsdp-qlora.yaml"), "-m", "lima_lite.cli", "train",
         "x"])
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    assert {key: env[key] for key in ("ACCELERATE_USE_FSDP", "FSDP_USE_ORIG_PARAMS", "FSDP_CPU_RAM_EFFICIENT_LOADING",
                                      "FSDP_SYNC_MODULE_STATES", "FSDP_AUTO_WRAP_POLICY", "FSDP_STATE_DICT_TYPE")} == {
        "ACCELERATE_USE_FSDP": "true", "FSDP_USE_ORIG_PARAMS": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true",
        "FSDP_SYNC_MODULE_STATES": "true", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
        "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}


def test_under_fsdp_the_4bit_base_is_stored_in_the_compute_dtype(tiny_llama, tmp_path, monkeypatch):
    """FSDP shards only floating-point tensors, one dtype per flattened layer: the packed NF4 weights and every
    frozen weight stay bf16 (no fp32 norms from prepare_model_for_kbit_training), and they decode to the
    weights of the uint8-stored base (quantized from bf16 rather than fp32 weights: not bit for bit)."""
    import bitsandbytes as bnb

    from lima_lite.model import fsdp_enabled
    from lima_lite.train import prepare
    from lima_lite.trainer import build_trainer

    data = write_jsonl(tmp_path / "train.jsonl", [[{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello"}]])
    overrides = [f"model_name_or_path={tiny_llama}", f"dataset_name={data}", f"output_dir={tmp_path / 'run'}",
                 "dtype=bfloat16"]  # the compute dtype FSDP stores the 4-bit weights in, whatever this CPU prefers

    def frozen_dtypes_and_4bit_layers(trainer):
        model = trainer.model
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad and p.__class__.__name__ != "Params4bit"}
        return frozen, layers

    assert not fsdp_enabled()
    plain_dtypes, plain = frozen_dtypes_and_4bit_layers(build_trainer(prepare(None, overrides))[0])
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # as `accelerate launch` with fsdp-qlora.yaml sets it
    assert fsdp_enabled()
    sharded_dtypes, sharded = frozen_dtypes_and_4bit_layers(build_trainer(prepare(None, overrides))[0])
    assert plain_dtypes == {torch.float32} and sharded_dtypes == {torch.bfloat16}
    assert {m.weight.dtype for m in plain} == {torch.uint8} and {m.weight.dtype for m in sharded} == {torch.bfloat16}
    assert len(plain) == len(sharded) > 0
    for a, b in zip(sharded, plain, strict=True):
        weight_a = bnb.functional.dequantize_4bit(a.weight.data, a.weight.quant_state).float()
        weight_b = bnb.functional.dequantize_4bit(b.weight.data, b.weight.quant_state).float()
        # measured: 1.3-2.5 % (a few values cross to the next NF4 level); a wrong unpacking would be ~140 %
        assert (weight_a - weight_b).norm() < 0.05 * weight_b.norm()
