"""A training run killed with SIGKILL resumes from its last checkpoint and ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys

from helpers import KILL_SCRIPT, adapter_weights, facts, max_difference


def run(overrides, kill_at=0):
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, json.dumps(overrides), str(kill_at)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


def test_sigkill_then_rerun_matches_an_uninterrupted_run(tiny_llama, tmp_path, capsys):
    """Only the killed run needs a process of its own; the uninterrupted run and the rerun train in this one."""
    from lima_lite.train import train

    data = facts(tmp_path / "train.jsonl", 8)
    common = {"model_name_or_path": str(tiny_llama), "dataset_name": str(data), "num_train_epochs": 3,
              "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "learning_rate": 1e-3,
              "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "residual_dropout": 0.2, "load_in_4bit": False,
              "dtype": "float32", "bf16": False, "gradient_checkpointing": False, "seed": 3}
    # 8 examples, 4 per step: 2 steps per epoch, 6 in all; checkpoints after steps 2 and 4

    train(None, {**common, "output_dir": str(tmp_path / "straight")})

    crashed_dir = tmp_path / "crashed"
    crashed = run({**common, "output_dir": str(crashed_dir)}, kill_at=5)
    assert crashed.returncode == -signal.SIGKILL
    assert (crashed_dir / "checkpoint-4").is_dir() and not (crashed_dir / "adapter").exists()
    capsys.readouterr()
    train(None, {**common, "output_dir": str(crashed_dir)})
    resumed = capsys.readouterr().out
    assert "Resuming from" in resumed and "checkpoint-4" in resumed

    a, b = adapter_weights(tmp_path / "straight"), adapter_weights(crashed_dir)
    assert max_difference(a, b) < 1e-5
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # not trivially equal: training moved LoRA
    # metrics.jsonl has each step once: the lines logged past the checkpoint before the crash are gone
    steps = [json.loads(line)["step"] for line in (crashed_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in crashed_dir.glob("epoch-*")) == ["epoch-01", "epoch-02", "epoch-03"]
