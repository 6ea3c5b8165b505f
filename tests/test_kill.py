"""A QLoRA run with a dev set, SIGKILLed at ten moments (steps, checkpoint writes, epoch ends, evaluation,
the end of training) and rerun with the same command each time, ends in the adapter an uninterrupted run
ends in, with every epoch's adapter and dev loss present once."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from helpers import facts
from lima_lite.precision import detect_hardware

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from transformers import Trainer, TrainerCallback
    from lima_lite.train import train

    def die():
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup: a real crash

    overrides, moment = json.loads(sys.argv[1]), sys.argv[2]
    event, _, at = moment.partition("@")
    at = int(at) if at else None

    if event == "mid_save":  # model weights of checkpoint-N written, optimizer and trainer_state.json not
        original = Trainer._save_optimizer_and_scheduler
        def save(self, output_dir):
            if self.state.global_step == at:
                die()
            return original(self, output_dir)
        Trainer._save_optimizer_and_scheduler = save

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if event == "step" and state.global_step == at:
                die()
        def on_save(self, args, state, control, **kw):
            if event == "saved" and state.global_step == at:
                die()
        def on_epoch_end(self, args, state, control, **kw):
            if event == "epoch_end" and round(state.epoch) == at:
                die()
        def on_prediction_step(self, args, state, control, **kw):
            if event == "evaluating" and state.global_step == at:
                die()
        def on_log(self, args, state, control, logs=None, **kw):
            if event == "logged_eval" and "eval_loss" in (logs or {}) and state.global_step == at:
                die()
        def on_train_end(self, args, state, control, **kw):
            if event == "train_end":
                die()

    train(None, overrides, callbacks=[Kill()] if event != "none" else [])
""")

# 8 examples, 4 per step: 2 steps per epoch, 6 in all, a checkpoint after every step.
MOMENTS = ["step@1", "mid_save@2", "saved@2", "epoch_end@1", "evaluating@2", "logged_eval@2", "step@3",
           "mid_save@4", "saved@6", "train_end"]


def run(overrides, moment="none"):
    return subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(overrides), moment], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


def dev_losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "eval_loss" in r]


@pytest.mark.slow
def test_ten_kills_each_rerun_end_in_the_uninterrupted_adapter(tiny_llama, tmp_path):
    common = {"model_name_or_path": str(tiny_llama), "dataset_name": str(facts(tmp_path / "t.jsonl", 8, "the moon")),
              "dev_dataset": str(facts(tmp_path / "d.jsonl", 2, "the sea")), "num_train_epochs": 3,
              "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "learning_rate": 1e-3,
              "lora_r": 8, "lora_alpha": 16, "residual_dropout": 0.2, "load_in_4bit": True,
              "save_strategy": "steps", "save_steps": 1, "seed": 3}
    straight = run({**common, "output_dir": str(tmp_path / "straight")})
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    # QLoRA's LoRA weights train in bf16 where it is native (TRL casts them under bf16 autocast), else in float32
    assert {t.dtype for t in expected.values()} == {torch.bfloat16 if detect_hardware().bf16 else torch.float32}
    assert dev_losses(tmp_path / "straight") == [0, 2, 4, 6]

    resumed = []
    for moment in MOMENTS:
        out = tmp_path / moment.replace("@", "-")
        killed = run({**common, "output_dir": str(out)}, moment)
        assert killed.returncode == -signal.SIGKILL, (moment, killed.stderr[-3000:])
        rerun = run({**common, "output_dir": str(out)})
        assert rerun.returncode == 0, (moment, rerun.stderr[-3000:])
        got = load_file(out / "adapter" / "adapter_model.safetensors")
        assert got.keys() == expected.keys() and all(got[k].dtype == expected[k].dtype for k in got), moment
        difference = max((got[k].float() - expected[k].float()).abs().max().item() for k in got)
        assert difference < 1e-5, (moment, difference)
        assert dev_losses(out) == [0, 2, 4, 6], moment  # the base's and every epoch's, once each
        assert sorted(p.name for p in out.glob("epoch-*")) == ["epoch-01", "epoch-02", "epoch-03"], moment
        assert json.loads((out / "run.json").read_text())["status"] == "finished"
        if "Resuming from" in rerun.stdout:
            resumed.append(moment)
    # A rerun that ignored the checkpoints and started over would end in the same adapter too: every kill
    # after the first checkpoint (written after step 1, whose end is the first kill) must resume from one.
    assert resumed == MOMENTS[1:]
