"""Calibrate the memory plan (lima_lite/memory/estimate.py) by counting live tensor bytes during real training steps.

    $ PYTHONPATH=. python bench/plan_calibration.py                     # the shapes in SHAPES, both modes
    $ PYTHONPATH=. python bench/plan_calibration.py --json out.json
    $ PYTHONPATH=. python bench/plan_calibration.py --offloading    # checkpoints offloaded as TRL does
    $ PYTHONPATH=. OMP_NUM_THREADS=1 python bench/plan_calibration.py --costs --max-length 1024   # cost ratios
    $ PYTHONPATH=. python bench/plan_calibration.py --per-token     # bytes per token of long examples

Each run builds a random-init LLaMA from a config, loads it the way `lima-lite train` does (4-bit NF4 with
double quantization via bitsandbytes, non-quantized weights in fp32 and `prepare_model_for_kbit_training`
(or, with --bf16-layers, in bf16 without it), attention sdpa_varlen (or --attention),
LIMA's residual dropout, an added EOT token trained as PEFT trainable tokens, LoRA on all linear layers,
TRL's SFTTrainer with bf16 autocast) and trains 3 steps on examples of exactly max_length tokens (the
worst micro-batch). The third step runs under `LiveBytes`, a TorchDispatchMode that registers every
tensor storage created (and every storage alive at the start: weights, quantization constants, optimizer
state) and frees it when the storage is collected, so its peak is the peak of live tensor bytes: what
`torch.cuda.max_memory_allocated` reports on a GPU, without the allocator's rounding and caching.

With --offloading, `HostOffload` does on the CPU what TRL's activation offloading (OffloadActivations) does
on a GPU: every saved tensor of at least 1,024 bytes that is not a parameter is copied to "host" memory
(copies made outside LiveBytes, so not counted as device bytes, but summed as host bytes), the 5 newest
originals stay alive (TRL's forward stash, also used as they are in the backward), and the backward brings
a copy back (counted). So the counted peak is the GPU's peak with offloading, and the host bytes its CPU cost.
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the oracles the tests use too
from oracles.step_bytes import LONG_SHAPE, OFFLOAD_SHAPES, SHAPES, compare, measure, planned  # noqa: E402


def cost_ratios(shape: dict, micro_batch: int, max_length: int, steps: int = 8) -> dict:
    """Median step time of checkpointing, of checkpointing with offloading (HostOffload's copies), relative to
    neither, of checkpointing with the MLP tiled in 4 chunks relative to checkpointing alone, and of lean
    activations added to that: lima_lite/memory/fit.py's RECOMPUTE_COST, OFFLOAD_COST, TILED_MLP_COST and LEAN_COST."""
    times = {}
    chunk = micro_batch * max_length // 4
    runs = (("plain", False, False, 0, False), ("checkpointing", True, False, 0, False),
            ("offloading", True, True, 0, False), ("tiled_mlp", True, False, chunk, False),
            ("lean", True, False, chunk, True))
    with tempfile.TemporaryDirectory() as root:
        for name, checkpointing, offloading, tiled, lean in runs:
            got = measure(shape, micro_batch, max_length, checkpointing, True, root=root,
                          activation_offloading=offloading, steps=steps, mlp_chunk_tokens=tiled, lean_activations=lean)
            times[name] = statistics.median(got["step_seconds"])
    return {"seconds": times, "recompute_cost": round(times["checkpointing"] / times["plain"], 3),
            "offload_cost": round(times["offloading"] / times["checkpointing"], 3),
            "tiled_mlp_cost": round(times["tiled_mlp"] / times["checkpointing"], 3),
            "lean_cost": round(times["lean"] / times["tiled_mlp"], 3)}


def per_token(lengths=(8192, 16384), chunk: int = 256) -> list[dict]:
    """Counted and planned transient bytes per token (in units of the hidden size) of one example of each length,
    LONG_SHAPE, checkpoints offloaded, MLP tiled by `chunk`, with and without lean activations, fp32 or bf16
    layers: what bounds the longest example."""
    rows = []
    for lean in (False, True):
        for fp32_layers in (False, True):
            got, plan = [], []
            with tempfile.TemporaryDirectory() as root:
                for length in lengths:
                    settings = dict(fp32_layers=fp32_layers, activation_offloading=True, mlp_chunk_tokens=chunk,
                                    lean_activations=lean)
                    got.append(measure(LONG_SHAPE, 1, length, True, True, root=root, **settings)["transient_at_peak"])
                    parts = planned(LONG_SHAPE, 1, length, True, True, **settings)
                    plan.append(sum(parts[k] for k in ("gradients", "activations", "loss", "layer_backward")))
            tokens, h = lengths[1] - lengths[0], LONG_SHAPE["hidden_size"]
            rows.append({"lean_activations": lean, "fp32_layers": fp32_layers,
                         "counted_per_token_h": round((got[1] - got[0]) / tokens / h, 2),
                         "planned_per_token_h": round((plan[1] - plan[0]) / tokens / h, 2),
                         "planned_over_counted": [round(p / c, 3) for p, c in zip(plan, got, strict=True)]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the comparison to this file")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--attention", default="sdpa_varlen", choices=["sdpa_varlen", "sdpa", "eager"])
    parser.add_argument("--bf16-layers", action="store_true", help="fp32_layers: false (norms, embeddings, head in bf16)")
    parser.add_argument("--anchor", action="store_true", help="only compare with the H100 anchor figures")
    parser.add_argument("--offloading", action="store_true",
                        help="checkpoints offloaded as TRL does (HostOffload), on OFFLOAD_SHAPES, checkpointing on")
    parser.add_argument("--costs", action="store_true",
                        help="time checkpointing, offloading, the tiled MLP and lean activations (memory/fit.py's cost ratios)")
    parser.add_argument("--per-token", action="store_true",
                        help="counted and planned bytes per token of long examples (LONG_SHAPE, 8,192 and 16,384 "
                             "tokens, offloading, tiled MLP, with and without lean activations)")
    args = parser.parse_args(argv)
    if args.per_token:
        print(json.dumps(per_token(), indent=2))
        return 0
    if args.costs:
        print(json.dumps(cost_ratios(SHAPES["llama-h256-L4"], args.micro_batch, args.max_length), indent=2))
        return 0
    if args.anchor:
        print(json.dumps(anchor_comparison(), indent=2))
        return 0
    results = []
    shapes = OFFLOAD_SHAPES if args.offloading else SHAPES
    for name, shape in shapes.items():
        with tempfile.TemporaryDirectory() as root:
            for checkpointing in ((True,) if args.offloading else (True, False)):
                for padding_free in (True, False):
                    result = compare(name, shape, args.micro_batch, args.max_length, checkpointing, padding_free, root,
                                     args.attention, not args.bf16_layers, args.offloading)
                    results.append(result)
                    print(f"\n{name} micro-batch {args.micro_batch} x {args.max_length}, gradient checkpointing "
                          f"{checkpointing}, padding-free {padding_free}, attention {args.attention}, "
                          f"fp32_layers {not args.bf16_layers}, offloading {args.offloading}")
                    for key, row in result["rows"].items():
                        print(f"  {key:<18} counted {row['counted'] / 2**20:9.3f} MiB  planned "
                              f"{row['planned'] / 2**20:9.3f} MiB  error {100 * row['error']:+6.2f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0



# The H100 anchor (its gpu-measurements.md): LLaMA-2-7B shape, plain TRL (bf16 base without
# prepare_model_for_kbit_training, so 16-bit embeddings and residual stream), no token added (TRL's fused
# head), LoRA r 16 with dropout, no residual dropout, gradient checkpointing, paged_adamw_8bit, micro-batch 4.
# Tokens of its largest micro-batch, from bench/anchor_batches.py (its batch order replayed on the CPU).
# The "held_out" rows are two more runs of the same script, padded, given with their peaks only: 7B at micro-batch
# 8 (8 steps: largest batch 8 x 1,791) and 13B at micro-batch 4. For 13B the batch is inferred: with the script's
# default 6 steps its largest batch is 4 x 1,802 (`anchor_batches.py baseline 4 6`), and the 7B rows' transient
# bytes per token then match 13B's within a few percent; with 8 steps (4 x 1,534) the plan would be 4.4 % under.
LLAMA2 = {"7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000, tied=False),
          "13b": dict(hidden=5120, intermediate=13824, layers=40, heads=40, kv_heads=40, vocab=32000, tied=False)}
ANCHOR = {"padded": {"size": "7b", "tokens": 4 * 1534, "sequences": 4, "padding_free": False, "measured_gib": 7.04},
          "padding_free": {"size": "7b", "tokens": 3955, "sequences": 4, "padding_free": True, "measured_gib": 5.92},
          "held_out_7b_mb8_padded": {"size": "7b", "tokens": 8 * 1791, "sequences": 8, "padding_free": False,
                                     "measured_gib": 11.39},
          "held_out_13b_mb4_padded": {"size": "13b", "tokens": 4 * 1802, "sequences": 4, "padding_free": False,
                                      "measured_gib": 12.30}}
PAGED_MIN = 10**5  # bitsandbytes pages optimizer state of tensors this large: cudaMallocManaged, not torch's allocator


def anchor_comparison() -> dict:
    """The plan's allocated bytes (what torch.cuda.max_memory_allocated sees) for the anchor's rows."""
    from lima_lite.memory.estimate import GIB, ModelShape, PlanSettings, component_bytes, lora_numels

    rows = {}
    for mode, run in ANCHOR.items():
        shape = ModelShape(**LLAMA2[run["size"]])
        paged = sum(2 * n for n in lora_numels(shape, 16) if n >= PAGED_MIN)
        settings = PlanSettings(micro_batch=run["sequences"], max_length=run["tokens"] // run["sequences"], lora_r=16,
                                gradient_checkpointing=True, padding_free=run["padding_free"], optim="paged_adamw_8bit",
                                added_tokens=0, loss_chunk_tokens=0, residual_dropout=False, attention="sdpa",
                                fp32_layers=False)
        parts = component_bytes(shape, settings, tokens=run["tokens"])
        planned = (sum(parts.values()) - paged) / GIB
        rows[mode] = {"size": run["size"], "tokens": run["tokens"], "planned_gib": round(planned, 3),
                      "measured_gib": run["measured_gib"],
                      "error": round((planned - run["measured_gib"]) / run["measured_gib"], 4),
                      "components_gib": {k: round(v / GIB, 3) for k, v in parts.items()}}
    return rows


if __name__ == "__main__":
    sys.exit(main())
