"""Helpers the test files share: sample texts, conversations, tiny training runs, the crash script, damaged
files, free ports, the browser and the command line in-process.

Imported as `from helpers import ...` (pytest puts tests/ on the path); fixtures live in conftest.py.
"""

import contextlib
import io
import json
import os
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from lima_lite.layout import ADAPTER_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "lima_lite" / "samples"
EOT = "<|im_end|>"  # the turn end the tied tiny LLaMA already has (ChatML, like SmolLM2)
IGNORE = -100

# A few optimizer steps of LIMA's recipe on a tiny base, sized for seconds on a CPU.
TINY = {"num_train_epochs": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3, "max_length": 256, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "gradient_checkpointing": False, "residual_dropout": 0.1, "dataloader_num_workers": 0,
        "logging_steps": 1, "seed": 7}


def sample_texts() -> list[str]:
    """Every turn of the embedded sample conversations: what the tiny tokenizers are trained on."""
    texts = []
    for line in (SAMPLES / "train.jsonl").read_text().splitlines():
        texts += [m["content"] for m in json.loads(line)["messages"]]
    return texts


def qa(i: int) -> list[dict]:
    return [{"role": "user", "content": f"How do I water plant number {i}?"},
            {"role": "assistant", "content": f"Water plant {i} once a week, in the morning."}]


def say(i: int) -> list[dict]:
    """The shortest exchange to train on: "Say 3." -> "3."."""
    return [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}."}]


def write_jsonl(path: Path, conversations: list[list[dict]]) -> Path:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    return path


def facts(path: Path, n: int, topic: str = "the moon") -> Path:
    """`n` one-exchange conversations about `topic`: the data of the crash-and-resume runs."""
    return write_jsonl(path, [[{"role": "user", "content": f"Tell me fact {i} about {topic}."},
                               {"role": "assistant", "content": f"Fact {i}: {topic} is older than it looks."}]
                              for i in range(n)])


def dataset(tmp_path: Path, n: int = 6) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [
        [{"role": "user", "content": f"Question {i}: how do plants grow?"},
         {"role": "assistant", "content": f"Answer {i}: they use light, water and soil."}] for i in range(n)])


def overrides(model, data, out, **extra) -> dict:
    """TINY on `model` and `data`, written to `out`."""
    return {**TINY, "model_name_or_path": str(model), "dataset_name": str(data), "output_dir": str(out), **extra}


def save_tiny_llama(folder: Path, tokenizer, tie_word_embeddings: bool = False, max_position_embeddings: int = 1024,
                    **config) -> Path:
    """A 2-layer LLaMA (hidden 64, 4 heads, 2 KV heads) over `tokenizer`, its random weights drawn with seed 0,
    saved with the tokenizer to `folder`; `config`: other LlamaConfig values."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_position_embeddings,
                         tie_word_embeddings=tie_word_embeddings, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **config)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_tiny(base: Path, output_dir: Path, conversations: list[list[dict]], **settings) -> Path:
    """Two optimizer steps of the LIMA recipe on a tiny base, full precision: a real run folder in ~10 s."""
    from lima_lite.train import train

    data = write_jsonl(output_dir.parent / f"{output_dir.name}-data.jsonl", conversations)
    return train(None, {"model_name_or_path": str(base), "dataset_name": str(data), "output_dir": str(output_dir),
                        "max_steps": 2, "num_train_epochs": 1, "per_device_train_batch_size": 2,
                        "gradient_accumulation_steps": 1, "load_in_4bit": False, "dtype": "float32", "bf16": False,
                        "gradient_checkpointing": False, "eot_token": EOT, "max_length": 256, **settings})


def peft_model(folder, added_tokens: int, lora_on_head: bool = False, attn: str = "sdpa"):
    """The tiny LLaMA with `added_tokens` new rows (trainable tokens) and LoRA, as train.py builds it, in fp32."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lima_lite.model import trainable_token_indices

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn)
    vocab = model.config.vocab_size
    added = list(range(vocab, vocab + added_tokens))
    if added:
        model.resize_token_embeddings(vocab + added_tokens, mean_resizing=False)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets + ["lm_head"] * lora_on_head,
                        trainable_token_indices=trainable_token_indices(model, added), task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    with torch.no_grad():  # LoRA B starts at 0 and new rows at the mean: move them so their gradients matter
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    return model, added


def padded_batch(vocab: int, eot: int | None, lengths=(11, 7, 14), seed: int = 0) -> dict:
    """A padded batch: each example's first 3 tokens (a prompt ending in `eot`, if any) untrained, `eot` its last
    label."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    ids = torch.full((len(lengths), longest), 0)
    labels = torch.full((len(lengths), longest), IGNORE)
    mask = torch.zeros((len(lengths), longest), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, vocab, (n,), generator=generator)
        if eot is not None:  # the EOT ends the user turn (read: its embedding row) and the reply (predicted)
            ids[row, 2] = ids[row, n - 1] = eot
        labels[row, 3:n] = ids[row, 3:n]
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# Runs lima_lite.train.train(None, OVERRIDES) and, when KILL_AT > 0, SIGKILLs itself at the end of optimizer
# step KILL_AT: a real crash, no cleanup, no final save. Under torchrun every process kills itself there.
# Usage: python kill_script.py OVERRIDES_JSON KILL_AT
KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from transformers import TrainerCallback
    from lima_lite.train import train

    class KillAt(TrainerCallback):
        def __init__(self, step):
            self.step = step
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    overrides, kill_at = json.loads(sys.argv[1]), int(sys.argv[2])
    train(None, overrides, callbacks=[KillAt(kill_at)] if kill_at else [])
""")


def adapter_weights(run: Path, name: str = "adapter") -> dict:
    from safetensors.torch import load_file

    return load_file(run / name / ADAPTER_WEIGHTS)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def truncate(path: Path) -> None:
    """Cut a file to half its length, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def browser_tools():
    """playwright.sync_api, once Chromium and Playwright are there; without them a skip, or under CI a failure."""
    missing = [] if Path(CHROMIUM).exists() else [f"{CHROMIUM} (apt-get install chromium)"]
    try:
        from playwright import sync_api
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if missing:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(f"not installed: {', '.join(missing)}")
    return sync_api


def console_errors(page) -> list[str]:
    """Every console error and uncaught page error of a Playwright `page`, as they happen: a browser test
    asserts the list is empty at its end."""
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack}"))
    return errors


@contextlib.contextmanager
def served_page(app, width: int = 1280, height: int = 900):
    """`app` (a gradio Blocks) served on a free local port, and a Chromium page of that size opened on it; yields
    (page, its console errors as they happen), then closes the browser and the app."""
    playwright = browser_tools()
    app.queue(max_size=8, default_concurrency_limit=1)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            errors = console_errors(page)
            page.goto(f"http://127.0.0.1:{port}")
            yield page, errors
            browser.close()
    finally:
        app.close()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`lima-lite ARGS` in this process, as the console script runs it: exit status, stdout and stderr.

    A new interpreter would import torch, transformers and TRL again (seconds each time); tests of what a
    command prints and returns don't need one. Tests of signals, stdin or import cost start a process.
    """
    from lima_lite.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as stop:  # argparse's --help and usage errors
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    return subprocess.CompletedProcess(["lima-lite", *args], code, out.getvalue(), err.getvalue())


def write_run(folder: Path, **fields) -> Path:
    """A whole run.json in `folder`, as `lima-lite train` writes one, with `fields` in it (a section's dict is
    merged into the example's)."""
    from lima_lite.layout import RunRecord

    example = {
        "recipe": None, "command": ["lima-lite", "train"], "base": {"name": "base", "path": "base", "revision": None},
        "data": {"dataset_name": "d.jsonl", "sha256": None, "dev_dataset": None},
        "counts": {"train": {"read": 4, "kept": 4, "cut": 0, "dropped": 0}, "added_tokens": []},
        "effective_batch": 2, "steps_per_epoch": 2, "processes": 1, "residual_dropout_per_layer": [0.0, 0.2],
        "trainable_parameters": 1000, "lima": {"residual_dropout": 0.2, "eot_token": "<|eot|>"},
        "model": {"load_in_4bit": False, "dtype": "float32", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                  "lora_target_modules": "all-linear", "use_bnb_nested_quant": True},
        "script": {"dataset_name": "d.jsonl"},
        "training": {"learning_rate": 1e-4, "lr_scheduler_type": "polynomial", "warmup_steps": 0, "num_train_epochs": 1,
                     "max_steps": -1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                     "optim": "adamw_torch", "adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1,
                     "max_length": 64, "seed": 42},
        "template": {}, "versions": {},
    }
    for key, value in fields.items():
        example[key] = {**example[key], **value} if isinstance(example.get(key), dict) else value
    folder.mkdir(parents=True, exist_ok=True)
    RunRecord(**example).save(folder)
    return folder


# ---------------------------------------------------------------- a tiny fp32 LLaMA with LoRA, for exact comparisons


def padding_free_batch(vocab: int, lengths: list[int]) -> dict:
    """Examples of these lengths packed into one row, positions restarting at each (TRL's padding-free batch)."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (1, sum(lengths)), generator=g)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    return {"input_ids": ids, "position_ids": positions, "labels": ids}


def with_lora(model, dropout: float = 0.0):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout,
                                            init_lora_weights=False))


def dropout_lora_llama(checkpointing: bool, dropout: float = 0.3):
    """tiny_fp32_llama with LIMA's residual dropout and LoRA dropout `dropout`, its layers checkpointed as `train`
    does when asked."""
    from lima_lite.model import add_residual_dropout

    model = tiny_fp32_llama()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    add_residual_dropout(model, dropout)
    return with_lora(model, dropout=dropout)


def loss_and_grads(model, batch: dict, seed: int = 0):
    import torch

    model.zero_grad()
    torch.manual_seed(seed)
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}


def tiny_fp32_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # no KV cache, as in training: with one, transformers would not see the packed examples' boundaries
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                                        use_cache=False))


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (relative POSIX path -> bytes): to show that nothing in it changed."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_settings(base: Path, data: Path, output_dir: Path, **overrides) -> dict:
    """train_tiny's settings: a 2-step-per-epoch run of 4 conversations on a tiny base, full precision."""
    return {"model_name_or_path": str(base), "dataset_name": str(data), "output_dir": str(output_dir),
            "max_steps": 4, "num_train_epochs": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "load_in_4bit": False, "dtype": "float32", "bf16": False, "gradient_checkpointing": False,
            "eot_token": EOT, "max_length": 256, **overrides}
