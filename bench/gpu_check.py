"""One GPU check of `lima-lite plan --fit`: plain TRL against lima_lite's fitted setting, on random-init LLaMA shapes.

    $ PYTHONPATH=. python bench/gpu_check.py --out gpu-check.md          # 7B and 13B on one CUDA GPU (> 6 min)
    $ PYTHONPATH=. python bench/gpu_check.py --dry-run --out check.md    # a tiny shape on the CPU (tests)
    $ PYTHONPATH=. python bench/gpu_check.py --long --out long.md        # Llama-3.1-8B's longest example in 24 GiB
    $ PYTHONPATH=. python bench/gpu_check.py --long --dry-run            # the same on a tiny shape (tests)

For each shape: a random-init LLaMA (bf16, saved with a word-level tokenizer whose words are token ids) and
LIMA-like examples (lengths log-normal around 600 tokens, sigma 0.6, cut at 2,048; the first eighth is the
prompt), then, each in its own process so that peaks and memory start clean:
- plain TRL: SFTTrainer + peft LoRA r 16 on the 4-bit base, padded micro-batches of 4, gradient checkpointing,
  paged 8-bit AdamW (the H100 anchor's setting);
- lima_lite: `lima-lite train` with the size's recipe and auto_fit (the setting `plan --fit` chooses for this
  GPU's free memory), dropouts off so that micro-batching does not change the numbers;
- lima_lite with the recipe's own micro-batch and no fit, one optimizer step: its first-step loss must equal
  the fitted run's (the same examples per step, averaged over the same tokens).
Reported: real (non-padding) tokens/s over the steps after the first two, peak allocated GiB against the
plan, first-step losses, and which fast paths lima_lite took (the lines it prints about attention, the loss
and Liger). Writes a Markdown block for docs/benchmarks.md.

--long checks the plan's longest example instead: a random-init Llama-3.1-8B (its published config.json, vocab
128,256), `lima-lite train recipes/llama3.1-8b.yaml` on examples of 80,000 tokens and of the plan's
`max_length_at_micro_batch_1` for --gpu-gib (24), with the setting `plan --fit` gives for them (micro-batch 1,
checkpointing, offloading, bf16 layers, the MLP tiled by 4,096, lean activations), two optimizer steps, in a
process whose CUDA allocator is capped at --gpu-gib (`torch.cuda.set_per_process_memory_fraction`), as on a card
of that size: whether it fits, its peak allocated and reserved GiB against the plan, and real tokens/s.
"""

import argparse
import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the oracles the tests use too
from oracles.plan_fit import long_overrides, longest, plan_json  # noqa: E402

SHAPES = {  # LLaMA-1/2 shapes; "tiny" for --dry-run
    "7b": (dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32), "llama-7b"),
    "13b": (dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40), "llama-13b"),
    "tiny": (dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4), "llama-7b"),
}
VOCAB = 32000
LONG_SHAPES = {"llama3.1-8b": ROOT / "tests" / "assets" / "llama-shapes" / "llama3.1-8b" / "config.json",
               "tiny": dict(hidden_size=64, intermediate_size=224, num_hidden_layers=6, num_attention_heads=4,
                            num_key_value_heads=1, vocab_size=2000)}
PATH_WORDS = ("attention:", "loss:", "Liger kernels:", "activation offloading:", "auto_fit:")


def make_base(shape: str, root: Path) -> Path:
    """A random-init LLaMA of this shape in bf16, with a tokenizer whose word "t<i>" is token i."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = root / f"llama-{shape}"
    if (folder / "tokenizer_config.json").is_file():
        return folder
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, **SHAPES[shape][0]))
    model.to(torch.bfloat16).save_pretrained(folder)
    del model
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="<unk>").save_pretrained(folder)
    return folder


def make_long_base(shape: str, root: Path) -> Path:
    """A random-init LLaMA of a LONG_SHAPES shape in bf16, with a tokenizer whose word "t<i>" is token i."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = root / f"long-{shape}"
    if (folder / "tokenizer_config.json").is_file():
        return folder
    spec = LONG_SHAPES[shape]
    config = json.loads(spec.read_text()) if isinstance(spec, Path) else spec
    config = {key: value for key, value in config.items() if key not in ("architectures", "transformers_version")}
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(LlamaConfig(**{**config, "max_position_embeddings": 2**18}))
    model.to(torch.bfloat16).save_pretrained(folder)
    vocab_size = model.config.vocab_size
    del model
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="<unk>").save_pretrained(folder)
    return folder


def lengths(n: int, median: int, cut: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [int(min(cut, max(16, rng.lognormvariate(math.log(median), 0.6)))) for _ in range(n)]


def write_conversations(path: Path, n: int, median: int, cut: int) -> Path:
    """LIMA-like conversations for lima_lite (words = token ids), the first eighth of each as the prompt."""
    rng = random.Random(1)
    with path.open("w") as out:
        for i, length in enumerate(lengths(n, median, cut)):
            words = [f"t{rng.randrange(3, VOCAB)}" for _ in range(length)]
            prompt = max(4, length // 8)
            out.write(json.dumps({"messages": [{"role": "user", "content": " ".join(words[:prompt])},
                                               {"role": "assistant", "content": " ".join(words[prompt:])}],
                                  "id": str(i)}) + "\n")
    return path


class Clock:
    """A TrainerCallback's hooks: seconds and real tokens of each step, and the logged losses."""

    def __init__(self):
        import torch
        from transformers import TrainerCallback

        outer = self
        self.steps, self.losses = [], []

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.started, self.tokens = time.perf_counter(), state.num_input_tokens_seen

            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                outer.steps.append((time.perf_counter() - self.started, state.num_input_tokens_seen - self.tokens))

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    outer.losses.append(float(logs["loss"]))

        self.callback = Callback()

    def tokens_per_second(self) -> float | None:
        steady = self.steps[2:] if len(self.steps) > 2 else self.steps
        seconds = sum(s for s, _ in steady)
        return round(sum(n for _, n in steady) / seconds, 1) if seconds else None


def peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def run_plain(base: Path, steps: int, median: int, cut: int) -> dict:
    """Plain TRL, padded micro-batches of 4 (the H100 anchor's setting)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quantization, dtype=torch.bfloat16,
                                                 device_map={"": 0} if cuda else None)
    rng = random.Random(1)
    rows = [{"input_ids": [rng.randrange(3, VOCAB) for _ in range(n)], "completion_mask": [0] * (n // 8) + [1] * (n - n // 8)}
            for n in lengths(4 * steps, median, cut)]
    config = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, max_steps=steps,
                       learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[], bf16=True, use_cpu=not cuda,
                       gradient_checkpointing=True, optim="paged_adamw_8bit" if cuda else "adamw_torch",
                       max_length=cut, include_num_input_tokens_seen="non_padding", remove_unused_columns=False,
                       dataloader_num_workers=0, seed=0)
    clock = Clock()
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(base), peft_config=lora, callbacks=[clock.callback])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    return {"run": "plain TRL", "setting": "4 x 1, padded, checkpointing", "tokens_per_s": clock.tokens_per_second(),
            "peak_gib": peak_gib(), "planned_gib": None, "first_loss": clock.losses[0] if clock.losses else None}


def run_lima(base: Path, recipe: str, data: Path, steps: int, fitted: bool, cut: int) -> dict:
    """`lima-lite train` with the recipe (auto_fit on or off), dropouts off; what it printed about its paths."""
    import torch

    from lima_lite.train import train

    clock = Clock()
    overrides = [f"model_name_or_path={base}", f"dataset_name={data}", "dev_dataset=null", f"max_steps={steps}",
                 "num_train_epochs=1", "save_strategy=no", "lora_dropout=0.0", "residual_dropout=0.0",
                 f"max_length={cut}", f"output_dir={tempfile.mkdtemp()}/run", f"auto_fit={str(fitted).lower()}",
                 "include_num_input_tokens_seen=true", "seed=0"]  # padding-free: every token is real
    printed = io.StringIO()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.redirect_stdout(printed):
        run_dir = train(ROOT / "recipes" / f"{recipe}.yaml", overrides, [clock.callback])
    record = json.loads((run_dir / "run.json").read_text())
    training = record["training"]
    paths = [line for line in printed.getvalue().splitlines() if line.startswith(PATH_WORDS)]
    fit = record.get("fit") or {}
    chosen = fit.get("chosen") or {}
    setting = (f"{training['per_device_train_batch_size']} x {training['gradient_accumulation_steps']}, "
               f"checkpointing {'on' if training['gradient_checkpointing'] else 'off'}, offloading "
               f"{'on' if training['activation_offloading'] else 'off'}, "
               f"{'fp32' if record['lima']['fp32_layers'] else 'bf16'} layers")
    return {"run": "lima_lite --fit" if fitted else "lima_lite, recipe's setting", "setting": setting,
            "tokens_per_s": clock.tokens_per_second(), "peak_gib": peak_gib(), "planned_gib": chosen.get("peak_gib"),
            "first_loss": clock.losses[0] if clock.losses else None, "step_down": fit.get("step_down"),
            "paths": paths}


def run_long(base: Path, length: int, budget_gib: float) -> dict:
    """`lima-lite train` on two examples of `length` tokens with LONG_SETTING, the CUDA allocator capped at
    `budget_gib`; whether it fit, its peaks against the plan, real tokens/s."""
    import torch

    from lima_lite.train import train

    cuda = torch.cuda.is_available()
    planned = plan_json([str(ROOT / "recipes" / "llama3.1-8b.yaml"), *long_overrides(base, length),
                         "--gpu-gib", str(budget_gib)])
    data = Path(tempfile.mkdtemp()) / "long.jsonl"
    rng = random.Random(2)
    with data.open("w") as out:
        for i in range(2):
            words = [f"t{rng.randrange(3, 1000)}" for _ in range(length - 16)]  # the template adds a few tokens
            prompt = len(words) // 8
            out.write(json.dumps({"messages": [{"role": "user", "content": " ".join(words[:prompt])},
                                               {"role": "assistant", "content": " ".join(words[prompt:])}],
                                  "id": str(i)}) + "\n")
    if cuda:
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gib * 2**30 / torch.cuda.mem_get_info()[1]))
        torch.cuda.reset_peak_memory_stats()
    clock = Clock()
    overrides = [*long_overrides(base, length), f"dataset_name={data}", "dev_dataset=null", "max_steps=2",
                 "num_train_epochs=1", "save_strategy=no", "ignore_memory_plan=true",
                 f"output_dir={tempfile.mkdtemp()}/run", "include_num_input_tokens_seen=true", "seed=0"]
    error = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            train(ROOT / "recipes" / "llama3.1-8b.yaml", overrides, [clock.callback])
    except torch.OutOfMemoryError as oom:
        error = str(oom).splitlines()[0][:200]
    reserved = round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None
    return {"tokens": length, "fits": error is None, "error": error, "peak_gib": peak_gib(), "reserved_gib": reserved,
            "planned_gib": planned["peak_gib"], "tokens_per_s": clock.tokens_per_second(),
            "losses": clock.losses}


def long_check(shape: str, budget_gib: float, root: Path, dry_run: bool) -> list[dict]:
    base = make_long_base(shape, root)
    sizes = (512, 1024) if dry_run else (80_000, longest(base, budget_gib))
    return [in_process("long", [str(base), str(size), str(budget_gib), "-", "-", "-"]) for size in sizes]


def long_markdown(rows: list[dict], shape: str, budget_gib: float, device: str, command: str) -> str:
    lines = [f"Command: `{command}`; device: {device}; CUDA allocator capped at {budget_gib:g} GiB; {shape}, "
             "micro-batch 1, checkpointing, offloading, bf16 layers, MLP tiled by 4,096, lean activations.", "",
             "| tokens | fits | peak allocated GiB | peak reserved GiB | planned GiB | real tok/s | losses |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row['tokens']:,}", "yes" if row["fits"] else f"no ({row['error']})",
                 *("—" if v is None else f"{v:.2f}" for v in (row["peak_gib"], row["reserved_gib"], row["planned_gib"])),
                 "—" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:,.0f}",
                 ", ".join(f"{loss:.4f}" for loss in row["losses"]) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def python_path() -> str:
    """This checkout first, then whatever PYTHONPATH already holds (packages installed outside site-packages)."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def in_process(kind: str, args: list[str]) -> dict:
    """Run one measurement in a fresh Python process (clean peak statistics and GPU memory); its result."""
    result = subprocess.run([sys.executable, __file__, "--one", kind, *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": python_path()})
    line = next((line for line in reversed(result.stdout.splitlines()) if line.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{kind} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    found = json.loads(line[len("RESULT "):])
    # each run as it finishes: a check cut short by a time limit still leaves what it measured
    print(f"{kind}: {json.dumps(found)}", file=sys.stderr, flush=True)
    return found


def check(shapes: list[str], steps: int, median: int, cut: int, root: Path) -> list[dict]:
    results = []
    for shape in shapes:
        base = make_base(shape, root)
        recipe = SHAPES[shape][1]
        data = write_conversations(root / f"data-{shape}.jsonl", 64 * (steps + 1), median, cut)
        common = [str(base), recipe, str(data), str(steps), str(median), str(cut)]
        plain = in_process("plain", common)
        fitted = in_process("fit", common)
        recipe_step = in_process("recipe", [*common[:3], "1", *common[4:]])
        same = (fitted["first_loss"] is not None and recipe_step["first_loss"] is not None
                and abs(fitted["first_loss"] - recipe_step["first_loss"]) <= 1e-2 * abs(recipe_step["first_loss"]))
        results.append({"shape": shape, "rows": [plain, fitted, recipe_step], "first_step_loss_equal": same})
    return results


def markdown(results: list[dict], device: str, command: str) -> str:
    lines = [f"Command: `{command}`; device: {device}.", "",
             "| shape | run | setting | real tok/s | peak GiB | planned GiB | first-step loss |", "|---|---|---|---|---|---|---|"]
    for result in results:
        for row in result["rows"]:
            numbers = [(row["tokens_per_s"], ",.0f"), (row["peak_gib"], ".2f"), (row["planned_gib"], ".2f"),
                       (row["first_loss"], ".4f")]
            cells = [result["shape"], row["run"], row["setting"], *("—" if v is None else format(v, f) for v, f in numbers)]
            lines.append("| " + " | ".join(cells) + " |")
    for result in results:
        fitted = result["rows"][1]
        lines.append("")
        lines.append(f"- {result['shape']}: first-step loss of the fitted setting equals the recipe's "
                     f"(1 % tolerance): {'yes' if result['first_step_loss_equal'] else 'NO'}; step down after "
                     f"out of memory: {'yes' if fitted['step_down'] else 'no'}")
        lines += [f"  - {line}" for line in fitted["paths"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="a tiny shape, short examples, on whatever device")
    parser.add_argument("--out", help="write the Markdown block here (printed either way)")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps of plain TRL and of the fitted run")
    parser.add_argument("--root", help="folder for the random-init bases and data (default: a temporary one)")
    parser.add_argument("--long", action="store_true",
                        help="the plan's longest example for Llama-3.1-8B in --gpu-gib (see above) instead")
    parser.add_argument("--gpu-gib", type=float, default=24.0, help="with --long: the card size to cap memory at")
    parser.add_argument("--one", nargs=7, metavar=("KIND", "BASE", "RECIPE", "DATA", "STEPS", "MEDIAN", "CUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, base, recipe, data, steps, median, cut = args.one
        if kind == "long":  # BASE, TOKENS, GPU GiB
            result = run_long(Path(base), int(recipe), float(data))
        elif kind == "plain":
            result = run_plain(Path(base), int(steps), int(median), int(cut))
        else:
            result = run_lima(Path(base), recipe, Path(data), int(steps), kind == "fit", int(cut))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    if args.long:
        shape = "tiny" if args.dry_run else "llama3.1-8b"
        with tempfile.TemporaryDirectory() as scratch:
            rows = long_check(shape, args.gpu_gib, Path(args.root or scratch), args.dry_run)
        block = long_markdown(rows, shape, args.gpu_gib, device, "python bench/gpu_check.py --long"
                              + (" --dry-run" if args.dry_run else ""))
        print(block)
        if args.out:
            Path(args.out).write_text(block)
        return 0 if all(row["fits"] for row in rows) else 1
    shapes, median, cut = (["tiny"], 40, 256) if args.dry_run else (["7b", "13b"], 600, 2048)
    with tempfile.TemporaryDirectory() as scratch:
        results = check(shapes, args.steps, median, cut, Path(args.root or scratch))
    block = markdown(results, device, "python bench/gpu_check.py" + (" --dry-run" if args.dry_run else ""))
    print(block)
    if args.out:
        Path(args.out).write_text(block)
    return 0 if all(r["first_step_loss_equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
