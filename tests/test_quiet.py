"""A first run shows only what matters: the third-party messages lima_lite handles are dropped, others kept."""

import logging
import subprocess
import sys
import warnings

from helpers import say, write_jsonl
from lima_lite.quiet import DROPPED_LOGS, quiet_third_party


def test_known_messages_are_dropped_and_others_kept(caplog):
    quiet_third_party()
    with caplog.at_level(logging.WARNING):
        for name, start in DROPPED_LOGS:
            logging.getLogger(name).warning(start + " and the rest of the message")
            logging.getLogger(name).warning("something else from the same library")
    assert [r.getMessage() for r in caplog.records] == ["something else from the same library"] * len(DROPPED_LOGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()  # after simplefilter: its filters go in front again
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=2)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=2)
        warnings.warn("`something_else` is deprecated", FutureWarning, stacklevel=2)
    assert [str(w.message) for w in caught] == ["`something_else` is deprecated"]


def test_training_start_prints_no_third_party_warning(tiny_llama, tmp_path):
    """A whole `lima-lite train` run, stdout and stderr not a terminal: no FutureWarning, no TRL batch-size
    advice, no per-tensor loading bar, no CUDA-only lines on a CPU."""
    data = write_jsonl(tmp_path / "d.jsonl", [say(i) for i in range(2)])
    done = subprocess.run(
        [sys.executable, "-m", "lima_lite.cli", "train", "recipes/quickstart.yaml", f"model_name_or_path={tiny_llama}",
         f"dataset_name={data}", "dev_dataset=", f"output_dir={tmp_path / 'run'}", "max_steps=1", "lora_r=4",
         "eot_token=</s>", "chat_format=lima"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    for noise in ("FutureWarning", "annihilate", "Loading weights", "cuda_context", "no CUDA", "kernels-community"):
        assert noise not in out, noise
    assert "Adapter written to" in out and "training in" in out
