"""Fine-tune a base model with the LIMA recipe on QLoRA, through TRL's SFTTrainer.

    $ lima-lite train recipes/llama-7b.yaml model_name_or_path=/models/llama-7b output_dir=runs/llama-7b
    $ lima-lite inspect recipes/quickstart.yaml --n 2        # what exactly is trained
    $ lima-lite quickstart                                   # the embedded SmolLM2, on a CPU, in minutes

Writes into output_dir: `adapter/` (final adapter + tokenizer + template), `epoch-NN/` (one adapter per
epoch, to pick one between epochs 5 and 10 as LIMA did), `checkpoint-N/` (Trainer state to resume),
`run.json` (resolved recipe, versions, data hash, counts), `metrics.jsonl` and `loss.png`.
Run the same command again after a crash and it resumes from the last checkpoint.

More than one GPU: the same command under accelerate or torchrun (data parallel, or FSDP with
recipes/accelerate/fsdp-qlora.yaml); the recipe's examples per step are kept, the main process writes.

    $ accelerate launch --config_file recipes/accelerate/ddp.yaml -m lima_lite.cli train recipes/llama-7b.yaml
    $ torchrun --nproc_per_node 2 -m lima_lite.cli train recipes/llama-7b.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lima_lite import LimaError
from lima_lite.config import LimaArguments, Recipe, lima_help, load_recipe, writable
from lima_lite.fit_search import step_down
from lima_lite.io import atomic_dir
from lima_lite.layout import (
    ADAPTER_CONFIG,
    CHECKPOINT,
    CHECKPOINT_STATE,
    LOSS_PLOT,
    METRICS_FILE,
    RunRecord,
    adapter_dir,
    checkpoints,
    epoch_dir,
    last_complete_checkpoint,
    read_metrics,
    read_run,
    readable_weights,
    run_lock,
)
from lima_lite.memory import read_shape
from lima_lite.plan import check_training_fit
from lima_lite.precision import precision_report
from lima_lite.resolve import (
    Inputs,
    Machine,
    Resolved,
    detect_machine,
    per_process_accumulation,
    resolve,
    stepped_down,
    with_free_memory,
)
from lima_lite.template import ChatTemplate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from trl import ModelConfig, ScriptArguments, SFTConfig


def encode_dataset(conversations, tokenizer, template, max_length: int, drop_too_long: bool = False,
                   multi_turn: bool = True):
    """Token ids and labels of every conversation, with counts of what was kept, cut and dropped."""
    from lima_lite.data import CHARS_PER_TOKEN, cut_chars
    from lima_lite.template import IGNORE, encode_conversation

    rows, counts, dropped = [], {"read": len(conversations), "kept": 0, "cut": 0, "dropped": 0}, []
    for conversation in conversations:
        if not multi_turn and sum(m["role"] == "user" for m in conversation["messages"]) > 1:
            counts["dropped"] += 1
            dropped.append({"id": conversation["id"], "tokens": None, "reason": "multi-turn (multi_turn: false)"})
            continue
        messages, chars_cut = (cut_chars(conversation["messages"], max_length * CHARS_PER_TOKEN) if max_length
                               else (conversation["messages"], False))
        example = encode_conversation(tokenizer, template, messages, max_length)
        cut = chars_cut or example["full_length"] > len(example["input_ids"])
        if (cut and drop_too_long) or all(label == IGNORE for label in example["labels"]):
            counts["dropped"] += 1
            dropped.append({"id": conversation["id"], "tokens": example["full_length"],
                            "reason": "longer than max_length" if drop_too_long else "no trained token left after the cut"})
            continue
        counts["cut"] += cut
        counts["kept"] += 1
        rows.append({"input_ids": example["input_ids"], "labels": example["labels"], "id": conversation["id"]})
    return rows, counts, dropped


@dataclass(frozen=True)
class Setup:
    """Everything `train` checks before it loads a model, so `inspect` sees exactly the same thing."""

    recipe: Recipe  # as read
    resolved: Resolved  # what the run uses on this machine, with the reasons (lima_lite.resolve)
    base: str  # local folder of the base model
    tokenizer: PreTrainedTokenizerBase
    template: ChatTemplate
    added: list[int]  # ids of tokens added to the vocabulary (trained as PEFT trainable tokens)
    rows: list[dict]
    dev_rows: list[dict]
    report: dict  # counts of what was kept, cut and dropped

    @property
    def script_args(self) -> ScriptArguments:
        return self.resolved.script_args

    @property
    def sft_config(self) -> SFTConfig:
        return self.resolved.sft_config

    @property
    def model_args(self) -> ModelConfig:
        return self.resolved.model_args

    @property
    def lima_args(self) -> LimaArguments:
        return self.resolved.lima_args


def prepare(recipe: str | Path | None, overrides, machine: Machine | None = None) -> Setup:
    """Recipe -> resolved settings, base folder, tokenizer, template and the encoded train and dev rows."""
    from lima_lite.data import load_conversations
    from lima_lite.model import get_tokenizer, resolve_model

    machine = machine or detect_machine()
    read = load_recipe(recipe, overrides, machine)
    script_args, sft_config, model_args, lima_args = read.script_args, read.sft_config, read.model_args, read.lima_args
    if machine.processes > 1:  # refused before the data is read
        per_process_accumulation(sft_config.per_device_train_batch_size, sft_config.gradient_accumulation_steps,
                                 machine.processes)
    conversations = load_conversations(script_args.dataset_name, script_args.dataset_train_split)
    dev = load_conversations(lima_args.dev_dataset) if lima_args.dev_dataset else []
    base = resolve_model(model_args.model_name_or_path)
    tokenizer, template, added = get_tokenizer(base, lima_args.eot_token, sft_config.trust_remote_code,
                                               lima_args.chat_format)
    rows, counts, dropped = encode_dataset(conversations, tokenizer, template, sft_config.max_length,
                                           lima_args.drop_too_long, lima_args.multi_turn)
    dev_rows, dev_counts, _ = encode_dataset(dev, tokenizer, template, sft_config.max_length)
    if not rows:
        raise LimaError(f"{script_args.dataset_name}: every example was dropped ({counts})")
    fitting = lima_args.auto_fit and model_args.load_in_4bit
    machine = with_free_memory(machine) if fitting else machine
    inputs = Inputs(added_tokens=len(added), dev_examples=len(dev_rows),
                    shape=read_shape(Path(base) / "config.json") if fitting else None)
    resumed = resumed_fit(Path(sft_config.output_dir)) if fitting and sft_config.output_dir else None
    report = {"train": counts, "dev": dev_counts, "dropped": dropped, "added_tokens": added}
    return Setup(read, resolve(read, machine, inputs, resumed), base, tokenizer, template, added, rows, dev_rows, report)


def save_adapter(model, tokenizer, template, folder: Path, base_name: str, state_dict: dict | None = None) -> Path:
    """Adapter (LoRA + trainable-token rows only), tokenizer and template, written atomically.

    `base_name` is the base as the user named it (a Hub id, a path, the embedded alias), recorded in
    adapter_config.json so chat and plain peft find the base again. `state_dict`: the model's full state
    gathered from FSDP shards (PEFT keeps only the adapter's entries of it); None reads the model itself.
    """
    check_finite(model, state_dict, folder)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict, save_embedding_layers=False)
        config_file = tmp / ADAPTER_CONFIG
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                           "base_model_name_or_path": base_name}, indent=2) + "\n")
        # The saved tokenizer renders the trained format with typed special text kept as text (template.jinja),
        # for plain transformers and other runtimes; training itself encodes with `template`.
        own, tokenizer.chat_template = tokenizer.chat_template, template.jinja()
        try:
            tokenizer.save_pretrained(tmp)
        finally:
            tokenizer.chat_template = own
        template.save(tmp)
    return folder


def check_finite(model, state_dict: dict | None, folder: Path) -> None:
    """Never write an adapter with inf or NaN weights: chat, merge and export would load it and say nothing."""
    import torch

    weights = (state_dict.items() if state_dict is not None else
               ((name, p) for name, p in model.named_parameters() if p.requires_grad))
    for name, weight in weights:
        if weight.is_floating_point() and not torch.isfinite(weight).all():
            raise LimaError(f"{folder}: not written: {name} holds inf or NaN values (training diverged); "
                            "train again with a lower learning_rate")


def save_trained_adapter(trainer, tokenizer, template, folder: Path, base_name: str) -> Path:
    """save_adapter, called by every process of a run: under FSDP the adapter is spread over the processes
    and gathering it takes all of them (accelerate's get_state_dict, as Trainer.save_model does); then the
    main process alone writes `folder` and the others wait until it is there."""
    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if accelerator.is_main_process:
        save_adapter(accelerator.unwrap_model(trainer.model), tokenizer, template, folder, base_name, state_dict)
    accelerator.wait_for_everyone()
    return folder


def versions() -> dict:
    """Python's and the training libraries' versions, for run.json."""
    from lima_lite.env import package_versions

    return {"python": sys.version.split()[0], **package_versions(
        ("lima-lite", "torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate"))}


def plot_loss(run: Path) -> Path | None:
    """Training loss per step and dev loss per epoch (metrics.jsonl), as the PNG people look at first (loss.png)."""
    from lima_lite.io import save_figure
    from lima_lite.plots import pyplot

    rows = read_metrics(run)
    train = [(r["epoch"], r["loss"]) for r in rows if "loss" in r]
    dev = [(r["epoch"] or 0.0, r["eval_loss"]) for r in rows if "eval_loss" in r]  # epoch 0: the base
    if not train:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=120)
    ax.plot(*zip(*train, strict=True), label="train loss", lw=1.2)
    if dev:
        ax.plot(*zip(*dev, strict=True), "o-", label="dev loss", lw=1.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (assistant tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, run / LOSS_PLOT)


def is_epoch_end(epoch: float | None) -> bool:
    """The Trainer's state.epoch is a whole number exactly at an epoch's end (epoch + steps/steps_in_epoch)."""
    return epoch is not None and epoch > 0 and abs(epoch - round(epoch)) < 1e-6


def lima_callbacks(output_dir: Path, tokenizer, template, base_name: str):
    """Log the base's dev loss at step 0, save `epoch-NN/` after every whole epoch, append every log line to
    metrics.jsonl, and redo an epoch's end (its adapter and dev loss) that a killed run checkpointed but never
    finished.

    Every process runs the callbacks (saving an FSDP adapter and evaluating take all of them); only the
    main one writes. `trainer` is set by build_trainer.
    """
    from transformers import TrainerCallback

    metrics_file = output_dir / METRICS_FILE

    class LimaCallback(TrainerCallback):
        trainer = None

        def save_epoch(self, state):
            save_trained_adapter(self.trainer, tokenizer, template, epoch_dir(output_dir, round(state.epoch)), base_name)

    class EpochAdapters(LimaCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            # max_steps can stop inside an epoch: only a whole epoch gets an epoch-NN/
            if is_epoch_end(state.epoch):
                self.save_epoch(state)

    class MetricsFile(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with metrics_file.open("a", encoding="utf-8") as out:
                    out.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    class FinishEpochEnd(LimaCallback):
        """A checkpoint saved at an epoch's last step, killed before that epoch's end was handled."""

        def on_train_begin(self, args, state, control, **kwargs):
            if not is_epoch_end(state.epoch):
                return
            epoch = round(state.epoch)
            missing = not epoch_dir(output_dir, epoch).exists()
            logged = [r for r in read_metrics(output_dir) if "eval_loss" in r and r.get("step") == state.global_step]
            # every process decides from the same files before the main one writes any of them
            self.trainer.accelerator.wait_for_everyone()
            if missing:
                if state.is_world_process_zero:
                    print(f"Saving {epoch_dir(output_dir, epoch).name}/, which the interrupted run did not")
                self.save_epoch(state)
            if self.trainer.eval_dataset is not None and not logged:
                if state.is_world_process_zero:
                    print(f"Evaluating epoch {epoch} on the dev set, which the interrupted run did not")
                self.trainer.evaluate()

    class StopOnNonFinite(TrainerCallback):
        """A loss or gradient norm that is inf or NaN stops the run at once: every later step, checkpoint and
        adapter would be NaN too. on_log comes before the step's checkpoint is saved, on every process alike
        (the logged values are the processes' mean), so no process goes on alone."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if isinstance(value, int | float) and not math.isfinite(value):
                    raise LimaError(f"{output_dir}: {key} is {value} at step {state.global_step}: training diverged "
                                    f"(learning_rate {args.learning_rate:g}); nothing was saved from this step on; "
                                    "train again into another output_dir with a lower learning_rate")

    class BaseDevLoss(LimaCallback):
        """The base's dev loss, logged at step 0: the point every epoch is compared with.

        Evaluated here, once the Trainer has prepared the model for training, not before train(): an evaluation
        first marks the model as prepared without wrapping it in DistributedDataParallel, and accelerate then
        never wraps it, so each process of a multi-process run would train alone on its share of the data and
        the main process would save its own adapter (measured: 6.6e-3 from the one-process adapter)."""

        def on_train_begin(self, args, state, control, **kwargs):
            # step 0 only on a fresh start: a resume starts at its checkpoint's step, and a fresh start has
            # already cut metrics.jsonl back to nothing (keep_metrics_until), so the base is never logged twice
            if state.global_step == 0 and self.trainer.eval_dataset is not None:
                self.trainer.evaluate()

    return [StopOnNonFinite(), EpochAdapters(), MetricsFile(), FinishEpochEnd(), BaseDevLoss()]


def keep_metrics_until(output_dir: Path, step: int) -> None:
    """Forget what a killed run logged after its last checkpoint (or everything, with no checkpoint)."""
    from lima_lite.io import write_jsonl

    if (output_dir / METRICS_FILE).exists():
        write_jsonl([r for r in read_metrics(output_dir) if r.get("step", -1) <= step], output_dir / METRICS_FILE)


def resume_point(output_dir: Path, accelerator) -> Path | None:
    """The checkpoint every process resumes from: the main process removes unfinished ones first
    (last_complete_checkpoint), the others look once it has. A checkpoint holds one optimizer state and
    data position per process, so it resumes only under the number of processes that wrote it (run.json)."""
    last = last_complete_checkpoint(output_dir) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        last = last_complete_checkpoint(output_dir)
    run = read_run(output_dir)
    before = run.processes if run else 1
    if last and before != accelerator.num_processes:
        raise LimaError(f"{last}: written by {before} process(es); resume it with {before} "
                        f"(this run has {accelerator.num_processes}), or choose another output_dir")
    return last


def trainer_config(sft_config):
    """The SFTConfig the trainer gets: padding-free batches without packing leave max_length to us.

    encode_dataset already cut every example at max_length (and counted the cuts); TRL refuses
    padding_free with a max_length it would not enforce, so its copy gets None. run.json keeps the original.
    """
    trainer_args = writable(sft_config)  # its own copy, which TRL may change; not replace: no second __post_init__
    if sft_config.padding_free and not sft_config.packing:
        trainer_args.max_length = None
    return trainer_args


def steps_per_epoch(trainer) -> int:
    """Optimizer steps per epoch as the Trainer will count them (packing changes what a batch holds)."""
    return trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[1]


def sft_trainer_class():
    """TRL's SFTTrainer, resumable in one precision, with lima_lite.loss's loss.

    TRL's fused LM head reads `lm_head.weight` directly, which skips PEFT's trainable-token rows (an added
    EOT would never learn to be predicted); lima_lite.loss goes through the model's head, chunk by chunk.
    """
    from trl import SFTTrainer

    from lima_lite.loss import with_lima_loss

    class ResumableSFTTrainer(SFTTrainer):
        def evaluate(self, *args, **kwargs):
            """Evaluate without moving the random state training draws from (dropout masks): a DataLoader
            draws a seed from the global RNG each time it starts, so a run that evaluates at an epoch's end
            and a run resumed after it would otherwise go on with different masks."""
            import torch

            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):
                return super().evaluate(*args, **kwargs)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            """Trainable weights come back in the precision they trained in.

            With a 4-bit base, TRL trains LoRA weights in bf16 (as the QLoRA paper does); PEFT upcasts an
            adapter it loads to fp32, so a resumed run would go on in another precision than an
            uninterrupted one. Cast back before the optimizer (and its bf16 state) is restored."""
            dtypes = {name: p.dtype for name, p in self.model.named_parameters() if p.requires_grad}
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            for name, p in self.model.named_parameters():
                if name in dtypes and p.dtype != dtypes[name]:
                    p.data = p.data.to(dtypes[name])

    return with_lima_loss(ResumableSFTTrainer)


def build_trainer(setup: Setup, callbacks=()):
    """The base model (4-bit or not) with LIMA's residual dropout and LoRA, in TRL's SFTTrainer.

    Returns (trainer, residual dropout rate of each layer).
    """
    import torch
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training
    from transformers import set_seed
    from trl import get_peft_config

    from lima_lite.kernels import SDPA_VARLEN, apply_liger_kernels, register_sdpa_varlen
    from lima_lite.model import (
        LEAN_CHUNK_TOKENS,
        add_residual_dropout,
        fsdp_enabled,
        get_model,
        lean_lora,
        lean_norms,
        tile_mlp,
        trainable_token_indices,
    )

    sft_config, model_args, lima_args = setup.sft_config, setup.model_args, setup.lima_args
    set_seed(sft_config.seed)  # new token rows are drawn at random: the same seed must give the same run
    sharded = fsdp_enabled()
    if model_args.attn_implementation == SDPA_VARLEN:
        register_sdpa_varlen()  # chosen by lima_lite.resolve; transformers must know it before loading
    with readable_weights(setup.base):
        model = get_model(setup.base, model_args.load_in_4bit, model_args.dtype, model_args.bnb_4bit_quant_type,
                          model_args.use_bnb_nested_quant, len(setup.tokenizer), sft_config.trust_remote_code,
                          model_args.attn_implementation, model_args.model_revision, sharded, lima_args.fp32_layers)
    check_lora_targets(model, model_args.lora_target_modules, model_args.model_name_or_path)
    liger = apply_liger_kernels(model, lima_args.liger_kernels)
    if next(model.parameters()).device.type == "cuda":
        print(liger)
    # prepare_model_for_kbit_training casts the norms and embeddings to fp32 (fp32_layers). Never under FSDP:
    # it flattens a decoder layer's weights (bf16-stored 4-bit ones and its norms) into one tensor of one dtype.
    if model_args.load_in_4bit and lima_args.fp32_layers and not sharded:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=sft_config.gradient_checkpointing)
    if model_args.load_in_4bit:
        keep_4bit_layout(model)
    # No KV cache in training: with one, transformers would not see packed sequences' boundaries.
    model.config.use_cache = False
    rates = add_residual_dropout(model, lima_args.residual_dropout)
    if lima_args.mlp_chunk_tokens:
        tile_mlp(model, lima_args.mlp_chunk_tokens)
    if lima_args.lean_activations:
        lean_norms(model, lima_args.mlp_chunk_tokens or LEAN_CHUNK_TOKENS)
    peft_config = get_peft_config(model_args)
    peft_config.trainable_token_indices = trainable_token_indices(model, setup.added)

    def dataset(rows):
        return Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]) if rows else None

    output_dir = Path(sft_config.output_dir)
    lima = lima_callbacks(output_dir, setup.tokenizer, setup.template, model_args.model_name_or_path)
    trainer = sft_trainer_class()(
        model=model, args=trainer_config(sft_config), train_dataset=dataset(setup.rows), eval_dataset=dataset(setup.dev_rows),
        processing_class=setup.tokenizer, peft_config=peft_config,
        callbacks=[*lima, *callbacks],
    )
    for callback in lima:
        callback.trainer = trainer  # saving an epoch's adapter and evaluating go through it
    if lima_args.lean_activations:
        lean_lora(trainer.model)  # peft's LoRA layers exist once the trainer has wrapped the model
    if model_args.load_in_4bit and model_args.dtype != "bfloat16":
        keep_trainable_dtype(trainer.model, getattr(torch, model_args.dtype))
    return trainer, rates


def keep_trainable_dtype(model, dtype) -> None:
    """Train LoRA (and trainable-token rows) in `dtype` where the hardware has no native bf16.

    TRL casts a quantized model's trainable weights to bf16 (QLoRA's recommendation). Without native bf16 that
    makes every LoRA matmul an emulated bf16 one on a CPU, and on a GPU without bf16 (fp16 autocast with loss
    scaling) the weights the scaler updates should be float32, not bf16. Called before the optimizer exists.
    """
    import torch

    target = torch.float32 if dtype == torch.float16 else dtype
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.to(target)


def check_lora_targets(model, targets, base: str) -> None:
    """Every module lora_target_modules names is in the base, matched as peft matches them (a list: a name or a
    dotted suffix of one; a single string, which TRL makes of a one-item list: a regular expression over full
    names): peft would otherwise train the others alone without a word, or fail with a traceback when none is."""
    import re

    names = [name for name, _ in model.named_modules()]
    if targets is None or targets == "all-linear":
        return
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        missing = [t for t in targets if t != "all-linear" and not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__.startswith("Linear")})
        raise LimaError(f"lora_target_modules: {', '.join(map(repr, missing))}: no such module in {base}; "
                        f"its linear layers are {', '.join(linear)}")


def keep_4bit_layout(model) -> None:
    """Keep the NF4 weights in one layout for the whole run.

    On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight into a CPU-only layout at its first
    forward without gradients (an evaluation) and computes differently from then on: a run with a dev set
    would then train differently after each evaluation than a run resumed from a checkpoint (measured:
    adapters 2e-4 to 3e-3 apart). Training never needs that fast inference path.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def run_record(setup: Setup, recipe, trainer, rates: list[float]) -> RunRecord:
    from lima_lite.data import file_sha256

    sft_config, model_args, script_args = setup.sft_config, setup.model_args, setup.script_args
    batch = sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps * sft_config.world_size
    steps = steps_per_epoch(trainer)
    if sft_config.packing:  # a batch is then rows of max_length tokens: report LIMA's unit, examples, as a mean
        batch = round(len(setup.rows) / steps, 1)
    return RunRecord(
        recipe=str(recipe) if recipe else None,
        command=sys.argv,
        base={"name": model_args.model_name_or_path, "path": setup.base, "revision": model_args.model_revision},
        data={"dataset_name": script_args.dataset_name, "sha256": file_sha256(script_args.dataset_name),
              "dev_dataset": setup.lima_args.dev_dataset},
        counts=setup.report,
        effective_batch=batch,
        steps_per_epoch=steps,
        processes=sft_config.world_size,
        residual_dropout_per_layer=rates,
        trainable_parameters=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        lima=asdict(setup.lima_args), model=asdict(model_args), script=asdict(script_args),
        training=sft_config.to_dict(), template=asdict(setup.template), versions=versions(),
    )


def output_folder(output_dir: str | None) -> Path:
    """output_dir as a folder to train into: set, and not a file."""
    if not output_dir or not str(output_dir).strip():
        raise LimaError("output_dir: is empty; name the folder the run writes to (output_dir=runs/NAME)")
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise LimaError(f"{path}: output_dir is a file, not a folder; choose another output_dir")
    return path


# What a run is: resuming with any of these changed would go on from the checkpoint under another recipe
# (a learning rate schedule, a batch, data or LoRA shape that the saved optimizer state and step count do not
# belong to). Logging, saving, evaluation and memory settings may change between resumes.
RUN_DEFINING = {
    "training": ("learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "num_train_epochs", "max_steps",
                 "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_steps", "warmup_ratio",
                 "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "optim", "seed",
                 "data_seed", "max_length", "packing", "padding_free", "completion_only_loss", "bf16", "fp16"),
    "script": ("dataset_name", "dataset_train_split"),
    "data": ("sha256",),
    "model": ("model_name_or_path", "model_revision", "use_peft", "lora_r", "lora_alpha", "lora_dropout",
              "lora_target_modules", "lora_modules_to_save", "use_rslora", "use_dora", "load_in_4bit",
              "load_in_8bit", "dtype", "bnb_4bit_quant_type", "use_bnb_nested_quant"),
    "lima": ("eot_token", "chat_format", "residual_dropout", "final_lr_ratio", "multi_turn", "drop_too_long",
             "fp32_layers"),
}


def run_definition(setup: Setup) -> dict:
    """The RUN_DEFINING values of `setup`, as run.json stores them (JSON values)."""
    from lima_lite.data import file_sha256

    sft_config = setup.sft_config
    sections = {"training": sft_config.to_dict(), "script": asdict(setup.script_args),
                "data": {"sha256": file_sha256(setup.script_args.dataset_name)},
                "model": asdict(setup.model_args), "lima": asdict(setup.lima_args)}
    sections["training"]["gradient_accumulation_steps"] *= sft_config.world_size  # the recipe's, for any GPU count
    return json.loads(json.dumps({section: {key: sections[section].get(key) for key in keys}
                                  for section, keys in RUN_DEFINING.items()}, default=str))


def recorded_definition(run: RunRecord) -> dict:
    """The RUN_DEFINING values that run.json recorded (gradient accumulation as the recipe's, for any GPU count)."""
    recorded = {section: {key: getattr(run, section).get(key) for key in keys} for section, keys in RUN_DEFINING.items()}
    recorded["training"]["gradient_accumulation_steps"] *= run.processes
    return recorded


def resumed_fit(output_dir: Path) -> dict | None:
    """auto_fit's record in run.json (chosen setting, step down) of the run a rerun resumes; None when there is
    nothing to resume or the run was not fitted. A resume trains with that setting: a fit made again could differ
    (the GPU's free memory does), and a changed micro-batch is a changed run (check_same_run)."""
    run = read_run(output_dir)
    if run is None or not any(output_dir.glob("checkpoint-*/trainer_state.json")):
        return None
    return run.fit


def check_same_run(output_dir: Path, setup: Setup) -> None:
    """A run folder with a checkpoint resumes only under the recipe it was started with: a change that alters
    the run (learning rate, schedule, batch, data or its hash, LoRA shape, ...) is refused, naming it."""
    run = read_run(output_dir)
    if run is None or not any((folder / CHECKPOINT_STATE).is_file() for folder in checkpoints(output_dir).values()):
        return  # nothing to resume: the run starts from the beginning
    before, now = recorded_definition(run), run_definition(setup)
    for section, keys in RUN_DEFINING.items():
        for key in keys:
            old, new = before[section][key], now[section][key]
            if old != new:
                name = "data file (sha256)" if section == "data" else key
                raise LimaError(f"{output_dir}: resuming would change {name} from {old!r} to {new!r}; rerun with the "
                                f"run's own value to resume, or choose another output_dir for the new recipe")


def train(recipe: str | None, overrides=(), callbacks=()) -> Path:
    """Train and return the run folder. `callbacks` are extra transformers TrainerCallbacks."""
    setup = prepare(recipe, overrides)
    resolved = setup.resolved
    if resolved.sft_config.process_index == 0:
        print(precision_report(resolved.model_args.dtype, resolved.sft_config.bf16, resolved.sft_config.fp16, "training"))
        for line in resolved.notes:
            print(line)
    output_dir = output_folder(resolved.sft_config.output_dir)
    check_training_fit(resolved, setup.base, len(setup.added))
    if adapter_dir(output_dir).exists():
        raise LimaError(f"{output_dir}: holds a finished run (adapter/ exists); choose another output_dir or delete it")
    check_same_run(output_dir, setup)
    output_dir.mkdir(parents=True, exist_ok=True)
    # One writer per run folder: the main process holds the lock (the others only follow it)
    with run_lock(output_dir, resolved.sft_config.process_index == 0):
        return train_in(setup, recipe, output_dir, callbacks)


def train_in(setup: Setup, recipe, output_dir: Path, callbacks) -> Path:
    """train() once the run folder is checked and locked."""
    from lima_lite.host_memory import map_large_blocks

    map_large_blocks()  # on a CPU, freed tensors go back to the system instead of fragmenting the heap
    # transformers' TensorBoard callback (report_to: tensorboard) would open its writer at the first log line,
    # the base's dev loss logged before training starts, in ./runs/ of the working directory: name the run's.
    tensorboard_dir = os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(output_dir / "tensorboard"))
    try:
        trainer, rates = build_trainer(setup, callbacks)  # the callback reads the variable when it is built
    finally:
        if tensorboard_dir == str(output_dir / "tensorboard"):
            del os.environ["TENSORBOARD_LOGGING_DIR"]
    main_process = trainer.accelerator.is_main_process  # the one writer of run.json, metrics.jsonl, loss.png
    run = run_record(setup, recipe, trainer, rates)
    last = resume_point(output_dir, trainer.accelerator)
    if main_process:
        run.save(output_dir)
        keep_metrics_until(output_dir, int(CHECKPOINT.match(last.name)[1]) if last else -1)
        counts = setup.report["train"]
        print(f"Training on {counts['kept']} conversations ({counts['cut']} cut at {setup.sft_config.max_length} "
              f"tokens, {counts['dropped']} dropped), effective batch {run.effective_batch} ({run.processes} "
              f"process(es)), {run.steps_per_epoch} steps/epoch x {setup.sft_config.num_train_epochs:g} epochs -> {output_dir}")
        if last:
            print(f"Resuming from {last}")
    trainer.accelerator.wait_for_everyone()  # the callbacks read metrics.jsonl as the main process left it
    last = str(last) if last else None
    started = time.time()
    try:
        trainer = train_fitted(trainer, setup, run, callbacks, last)
    except BaseException:
        if main_process:
            run.status = "interrupted"  # a rerun of the same command resumes from the last checkpoint
            run.save(output_dir)
        raise
    model_name = setup.model_args.model_name_or_path
    save_trained_adapter(trainer, setup.tokenizer, setup.template, adapter_dir(output_dir), model_name)
    if main_process:
        plot_loss(output_dir)
        run.status, run.train_seconds, run.resumed_from = "finished", round(time.time() - started, 1), last
        run.final_train_loss = next((r["loss"] for r in reversed(trainer.state.log_history) if "loss" in r), None)
        run.save(output_dir)
        print(f"Adapter written to {adapter_dir(output_dir)}")
    trainer.accelerator.wait_for_everyone()  # no process returns before the run's files are whole
    return output_dir


def train_fitted(trainer, setup: Setup, run: RunRecord, callbacks, last: str | None):
    """trainer.train(). When auto_fit chose the setting and the first step still runs out of GPU memory, step
    down once to the next candidate (lower planned peak), say so, record the miss in run.json and train with a
    new trainer; returns the trainer that finished."""
    import torch

    fitted = setup.resolved.fit
    if fitted is not None:  # a resume keeps the first run's record
        run.fit = fitted.get("record") or {"chosen": fitted["summary"], "budget_source": fitted["budget_source"],
                                           "step_down": None}
    try:
        trainer.train(resume_from_checkpoint=last)
        return trainer
    except torch.OutOfMemoryError:
        lower = step_down(fitted) if trainer.state.global_step == 0 and not last else None
        if lower is None:
            raise
    # out of the except block: its traceback no longer holds the failed step's tensors
    print(f"auto_fit: the first step ran out of GPU memory at a planned {fitted['summary']['peak_gib']:.2f} GiB; "
          f"stepping down once to micro-batch {lower['per_device_train_batch_size']} x "
          f"{lower['gradient_accumulation_steps']}, checkpointing {lower['gradient_checkpointing']}, offloading "
          f"{lower['activation_offloading']}, fp32_layers {lower['fp32_layers']}, mlp_chunk_tokens "
          f"{lower['mlp_chunk_tokens']}, lean_activations {lower['lean_activations']} (planned {lower['peak_gib']:.2f} GiB)")
    run.fit["step_down"] = {**lower, "reason": "out of GPU memory at the first step"}
    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    handler = trainer.callback_handler  # it holds the model and optimizer for the callbacks
    handler.model = handler.optimizer = handler.lr_scheduler = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    setup = replace(setup, resolved=stepped_down(setup.resolved, lower))
    trainer, _ = build_trainer(setup, callbacks)
    run.training, run.lima = setup.sft_config.to_dict(), asdict(setup.lima_args)
    if trainer.accelerator.is_main_process:
        run.save(Path(setup.sft_config.output_dir))
    trainer.train()
    return trainer


def recipe_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="keys: any field of TRL's ScriptArguments, SFTConfig or ModelConfig (learning_rate, "
               "num_train_epochs, max_length, output_dir, model_name_or_path, dataset_name, lora_r, load_in_4bit, ...),\n"
               "plus LIMA's own:\n" + lima_help() + "\n\nPrecedence: LIMA defaults < recipe YAML < key=value.",
    )
    parser.add_argument("recipe", help="recipe YAML (a path, or a name from recipes/: quickstart, llama-7b, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a recipe key")
    return parser


def main(argv=None) -> int:
    from lima_lite.recipe_yaml import resolve_recipe

    args = recipe_parser("lima-lite train", "Fine-tune a base model with the LIMA recipe (QLoRA via TRL's SFTTrainer).\n"
                         "Rerun the same command after an interruption to resume.").parse_args(argv)
    train(resolve_recipe(args.recipe), args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
