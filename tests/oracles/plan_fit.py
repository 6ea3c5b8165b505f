"""The memory plan's answers as `lima-lite plan --json` prints them, and the plan's longest example for the
long-context setting: what bench/gpu_check.py checks on a GPU and the tests check on the CPU."""

import contextlib
import io
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LONG_SETTING = ["per_device_train_batch_size=1", "gradient_accumulation_steps=1", "gradient_checkpointing=true",
                "activation_offloading=true", "fp32_layers=false", "mlp_chunk_tokens=4096", "lean_activations=true"]


def plan_json(args: list[str]) -> dict:
    """`lima-lite plan ARGS --json`, run here: its JSON."""
    from lima_lite.memory.plan import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([*args, "--json"])
    return json.loads(printed.getvalue().strip().splitlines()[-1])


def long_overrides(base: Path, length: int) -> list[str]:
    return [f"model_name_or_path={base}", f"max_length={length}", "auto_fit=false", *LONG_SETTING]


def longest(base: Path, budget_gib: float) -> int:
    """The plan's longest example at micro-batch 1 in `budget_gib`, with LONG_SETTING."""
    fit = plan_json([str(ROOT / "recipes" / "llama3.1-8b.yaml"), *long_overrides(base, 2048), "--fit",
                     "--gpu-gib", str(budget_gib), "--host-gib", "1024"])
    return fit["max_length_at_micro_batch_1"]
