"""Pinned losses: the first steps of a fixed-seed tiny run, compared with stored numbers (as torchtune does),
so a change anywhere in the training path (data, template, labels, batching, loss, optimizer, schedule,
dropout, quantization) shows up as a number.

After a deliberate change of the training path, regenerate with
`LIMA_LITE_WRITE_LOSSES=1 python -m pytest tests/test_losses.py` and say why in the commit.
"""

import json
import os
from pathlib import Path

import pytest

from lima_lite.train import train

STORED = Path(__file__).parent / "assets" / "expected_losses.json"
# Varied lengths, a multi-turn conversation, so batching and masking matter.
CONVERSATIONS = [
    [("How do I keep bread fresh?",
      "Wrap it in a cloth and keep it in a bread box; freeze what you will not eat in two days.")],
    [("Name a prime number.", "Seven.")],
    [("What is a haiku?", "A three-line poem of five, seven and five syllables."),
     ("Write one about rain.", "Soft rain on the roof / the kettle begins to sing / nobody is home.")],
    [("Why is the sky blue?", "Air scatters short blue wavelengths of sunlight far more than long red ones, "
                              "so blue light reaches your eyes from every part of the sky.")],
    [("Give me a synonym for quick.", "Swift.")],
    [("How far is the moon?", "About 384,000 kilometres on average.")],
]
RUNS = {
    # full precision: differences of float rounding only
    "fp32": ({"load_in_4bit": False, "dtype": "float32", "bf16": False}, 1e-4),
    # the QLoRA path: NF4 base, bf16 compute (set here: on a CPU without native bf16 lima_lite would choose float32)
    "nf4": ({"load_in_4bit": True, "dtype": "bfloat16", "bf16": True}, 5e-3),
}


def write_data(path: Path) -> Path:
    rows = [{"messages": [m for user, assistant in turns for m in
                          ({"role": "user", "content": user}, {"role": "assistant", "content": assistant})]}
            for turns in CONVERSATIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("name", RUNS)
def test_first_losses_match_the_stored_ones(tiny_llama, tmp_path, name):
    settings, tolerance = RUNS[name]
    run = train(None, {"model_name_or_path": str(tiny_llama), "dataset_name": str(write_data(tmp_path / "d.jsonl")),
                       "output_dir": str(tmp_path / "run"), "num_train_epochs": 2, "per_device_train_batch_size": 2,
                       "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "lora_r": 8, "lora_alpha": 16,
                       "lora_dropout": 0.1, "residual_dropout": 0.2, "seed": 11, **settings})
    got = losses(run)
    assert len(got) == 6  # 6 conversations, 2 per step, 2 epochs
    assert got[-1] < got[0]  # it learns
    if os.environ.get("LIMA_LITE_WRITE_LOSSES") == "1":
        # Regenerating compares nothing: the new numbers are written, and the test says so instead of passing.
        stored = json.loads(STORED.read_text()) if STORED.exists() else {}
        STORED.write_text(json.dumps({**stored, name: got}, indent=2) + "\n")
        pytest.skip(f"{name}: wrote {got} to {STORED}; review `git diff` and commit it with the reason")
    expected = json.loads(STORED.read_text())[name]  # the committed numbers: never written by a normal run
    assert got == pytest.approx(expected, abs=tolerance), f"{name}: losses {got}, stored {expected}"
