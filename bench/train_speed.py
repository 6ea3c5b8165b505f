"""Training speed and memory: plain TRL SFTTrainer (padded to the longest) against lima_lite's path
(padding-free batches + lima_lite.memory.loss), same 4-bit base, same LoRA, same LIMA-like examples, one run.

    $ python bench/train_speed.py                      # CPU: the embedded SmolLM2-135M, lengths scaled by 1/4
    $ python bench/train_speed.py --size 7b            # CUDA: random-init LLaMA-7B shape, LIMA's lengths
    $ python bench/train_speed.py --size 13b --steps 8

Each mode runs in its own process (so peak memory is its own) for `--steps` timed optimizer steps after
two untimed ones. Printed per mode: real tokens/s (non-padding tokens, Trainer's "non_padding" count),
mean step time; peak memory: on CUDA torch.cuda.max_memory_allocated, on the CPU the process's maximum
resident set and the peak of tensor bytes created during one extra, untimed step (tests/oracles/loss_bytes.py's
LiveBytes). Then lima_lite / plain ratios.

Data, as in the H100 method of the GPU measurements: lengths log-normal around a median of 600 tokens
(sigma 0.6), at least 64, cut at 2,048; the first eighth of each example untrained (a prompt); on the CPU
every length is multiplied by --length-scale (0.25: median 150, cut at 512) so both modes finish in minutes.
"""

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the oracles the tests use too

SIZES = {  # LLaMA-1/2 shapes, vocabulary 32,000
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
}


def lima_like_rows(n: int, vocab: int, scale: float, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = int(min(2048 * scale, max(64 * scale, rng.lognormvariate(math.log(600 * scale), 0.6))))
        prompt = max(2, length // 8)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def random_llama(size: str, root: Path) -> Path:
    """A randomly initialised LLaMA of `size` saved in bf16 (no download), with its tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = root / f"llama-{size}-random"
    if (path / "tokenizer_config.json").is_file():
        return path
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=32000, max_position_embeddings=4096, **SIZES[size]))
    model.to(torch.bfloat16).save_pretrained(path)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, 32000)}}
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    return path


def step_times(measure_last: bool, last_step: int):
    """A callback keeping seconds and non-padding tokens of every optimizer step; LiveBytes around the last."""
    from transformers import TrainerCallback

    from oracles.loss_bytes import LiveBytes

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self.tracker = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            if measure_last and state.global_step == last_step - 1:
                self.tracker = LiveBytes()
                self.tracker.__enter__()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start, self.tokens = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append((time.perf_counter() - self.start, state.num_input_tokens_seen - self.tokens))
            if self.tracker is not None and state.global_step == last_step:
                self.tracker.__exit__(None, None, None)

    return StepTimes()


def run_mode(mode: str, args) -> dict:
    """One mode in this process: load, train `args.steps + 2 (+1 measured on CPU)` steps, measure."""
    from datasets import Dataset
    from peft import LoraConfig

    from lima_lite.config import load_recipe, writable
    from lima_lite.memory.kernels import apply_liger_kernels, attention_implementation
    from lima_lite.model import get_model, get_tokenizer, resolve_model
    from lima_lite.trainer import sft_trainer_class, trainer_config

    cuda = torch.cuda.is_available()
    base = str(random_llama(args.size, Path(args.root))) if cuda else resolve_model("embedded:SmolLM2-135M-Instruct")
    tokenizer, _, _ = get_tokenizer(base, "</s>" if cuda else "<|im_end|>")
    measured = 0 if cuda else 1
    total_steps = args.steps + 2 + measured
    scale = 1.0 if cuda else args.length_scale
    overrides = {"model_name_or_path": base, "output_dir": str(Path(args.root) / f"out-{mode}"),
                 "per_device_train_batch_size": args.mbs, "gradient_accumulation_steps": 1,
                 "max_steps": total_steps, "max_length": int(2048 * scale), "learning_rate": 1e-4,
                 "gradient_checkpointing": True, "save_strategy": "no", "logging_steps": 1, "report_to": "none",
                 "dataloader_num_workers": 0, "seed": 0,
                 "padding_free": mode == "lima", "optim": "paged_adamw_8bit" if cuda else "adamw_torch",
                 "bf16": cuda}
    sft_config = writable(load_recipe(None, overrides).sft_config)  # the recipe's settings are read-only
    sft_config.include_num_input_tokens_seen = "non_padding"  # real tokens; the recipe parser reads this key as a bool
    attn, attn_line = attention_implementation(None, cuda) if mode == "lima" else ("sdpa", "attention: sdpa")
    started = time.perf_counter()
    model = get_model(base, load_in_4bit=True, dtype="bfloat16", vocab_size=len(tokenizer), attn_implementation=attn)
    load_s = time.perf_counter() - started
    lines = [attn_line]
    if mode == "lima":
        lines.append(apply_liger_kernels(model, enabled=True))
    from trl import SFTTrainer

    trainer_class = sft_trainer_class() if mode == "lima" else SFTTrainer
    rows = lima_like_rows(args.mbs * total_steps, model.config.vocab_size - 1, scale)
    callback = step_times(measure_last=not cuda, last_step=total_steps)
    trainer = trainer_class(model=model, args=trainer_config(sft_config), train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, callbacks=[callback],
                            peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                                   task_type="CAUSAL_LM"))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = callback.times[2:len(callback.times) - measured]
    seconds, tokens = sum(t for t, _ in timed), sum(n for _, n in timed)
    return {"mode": mode, "size": args.size if cuda else "SmolLM2-135M (embedded)", "mbs": args.mbs,
            "steps_timed": len(timed), "length_scale": scale, "load_s": round(load_s, 1),
            "step_s_mean": round(seconds / len(timed), 2), "real_tokens_per_step": tokens // len(timed),
            "real_tokens_per_s": round(tokens / seconds, 1), "lines": lines,
            "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "peak_step_tensor_mib": None if cuda else round(callback.tracker.peak / 2**20, 1),
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="7b", choices=sorted(SIZES), help="LLaMA shape on CUDA (ignored on the CPU)")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per mode (after 2 untimed)")
    parser.add_argument("--mbs", type=int, default=4, help="examples per micro-batch (and per step)")
    parser.add_argument("--length-scale", type=float, default=0.25, help="CPU only: multiply LIMA-like lengths")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "lima-train-speed"))
    parser.add_argument("--child", choices=["plain", "lima"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_mode(args.child, args)), flush=True)
        return 0
    results = {}
    for mode in ("plain", "lima"):
        child = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--child", mode],
                               stdout=subprocess.PIPE, text=True)  # progress bars on stderr
        found = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not found:
            sys.stderr.write(child.stdout[-4000:])
            raise SystemExit(f"{mode}: the benchmark process failed (exit {child.returncode})")
        results[mode] = json.loads(found[0][len("RESULT "):])
        print(json.dumps(results[mode]), flush=True)
    plain, lima = results["plain"], results["lima"]
    ratios = {"real_tokens_per_s": round(lima["real_tokens_per_s"] / plain["real_tokens_per_s"], 2)}
    for key in ("peak_alloc_gib", "peak_step_tensor_mib", "max_rss_mib"):
        if plain[key]:
            ratios[key] = round(lima[key] / plain[key], 2)
    print("RATIOS lima_lite / plain TRL " + json.dumps(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
