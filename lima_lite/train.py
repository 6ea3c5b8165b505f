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
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lima_lite import LimaError
from lima_lite.adapters import save_trained_adapter
from lima_lite.config import LimaArguments, Recipe, lima_help, load_recipe
from lima_lite.conversations import encode_dataset, load_conversations, read_conversations
from lima_lite.env import package_versions
from lima_lite.files import check_output_dir
from lima_lite.layout import (
    CHECKPOINT,
    LOCK_FILE,
    LOSS_PLOT,
    METRICS_FILE,
    RUN_FILE,
    RunRecord,
    adapter_dir,
    run_lock,
)
from lima_lite.machine import Machine, detect_machine, with_free_memory
from lima_lite.memory.estimate import read_shape
from lima_lite.memory.fit import step_down
from lima_lite.memory.host import map_large_blocks
from lima_lite.memory.plan import check_training_fit
from lima_lite.plots import plot_loss
from lima_lite.precision import precision_report
from lima_lite.recipe_yaml import resolve_recipe
from lima_lite.resolve import Inputs, Resolved, per_process_accumulation, resolve, stepped_down
from lima_lite.resume import check_same_run, keep_metrics_until, resume_point, resumed_fit
from lima_lite.template import ChatTemplate
from lima_lite.trainer import build_trainer, check_lora_targets, steps_per_epoch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from trl import ModelConfig, ScriptArguments, SFTConfig


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
    data_sha256: str | None  # of the bytes the rows were read from (None: a Hub dataset)

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
    from lima_lite.model import get_tokenizer, module_names, resolve_base

    machine = machine or detect_machine()
    read = load_recipe(recipe, overrides, machine)
    script_args, sft_config, model_args, lima_args = read.script_args, read.sft_config, read.model_args, read.lima_args
    if machine.processes > 1:  # refused before the data is read
        per_process_accumulation(sft_config.per_device_train_batch_size, sft_config.gradient_accumulation_steps,
                                 machine.processes)
    conversations, data_sha256 = read_conversations(script_args.dataset_name, script_args.dataset_train_split)
    dev = load_conversations(lima_args.dev_dataset) if lima_args.dev_dataset else []
    base = resolve_base(model_args.model_name_or_path, "model_name_or_path")
    check_lora_targets(module_names(base, sft_config.trust_remote_code), model_args.lora_target_modules,
                       model_args.model_name_or_path, read.sources.get("lora_target_modules", "recipe"))
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
    return Setup(read, resolve(read, machine, inputs, resumed), base, tokenizer, template, added, rows, dev_rows, report,
                 data_sha256)


def versions() -> dict:
    """Python's and the training libraries' versions, for run.json."""
    return {"python": sys.version.split()[0], **package_versions(
        ("lima-lite", "torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate"))}


def run_record(setup: Setup, recipe, trainer, rates: list[float]) -> RunRecord:
    sft_config, model_args, script_args = setup.sft_config, setup.model_args, setup.script_args
    batch = sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps * sft_config.world_size
    steps = steps_per_epoch(trainer)
    if sft_config.packing:  # a batch is then rows of max_length tokens: report LIMA's unit, examples, as a mean
        batch = round(len(setup.rows) / steps, 1)
    return RunRecord(
        recipe=str(recipe) if recipe else None,
        command=sys.argv,
        base={"name": model_args.model_name_or_path, "path": setup.base, "revision": model_args.model_revision},
        data={"dataset_name": script_args.dataset_name, "sha256": setup.data_sha256,
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


def check_output(setup: Setup) -> Path:
    """The run folder, once it is known to take this run: a folder (or none yet) holding nobody else's files,
    no finished run, and no interrupted run of other settings. The app's Train tab asks before it starts one."""
    output_dir = output_folder(setup.sft_config.output_dir)
    check_output_dir(output_dir, protected=[setup.base], own=(RUN_FILE, LOCK_FILE, "train.log"), how="output_dir",
                     writes=("adapter", "epoch-*", "checkpoint-*", METRICS_FILE, LOSS_PLOT, "tensorboard", "README.md"))
    if adapter_dir(output_dir).exists():
        raise LimaError(f"{output_dir}: holds a finished run (adapter/ exists); choose another output_dir or delete it")
    check_same_run(output_dir, setup)
    return output_dir


def train(recipe: str | None, overrides=(), callbacks=()) -> Path:
    """Train and return the run folder. `callbacks` are extra transformers TrainerCallbacks."""
    setup = prepare(recipe, overrides)
    resolved = setup.resolved
    if resolved.sft_config.process_index == 0:
        print(precision_report(resolved.model_args.dtype, resolved.sft_config.bf16, resolved.sft_config.fp16, "training"))
        for line in resolved.notes:
            print(line)
    output_dir = check_output(setup)
    check_training_fit(resolved, setup.base, len(setup.added))
    output_dir.mkdir(parents=True, exist_ok=True)
    # One writer per run folder: the main process holds the lock (the others only follow it)
    with run_lock(output_dir, resolved.sft_config.process_index == 0):
        return train_in(setup, recipe, output_dir, callbacks)


def train_in(setup: Setup, recipe, output_dir: Path, callbacks) -> Path:
    """train() once the run folder is checked and locked."""
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
    args = recipe_parser("lima-lite train", "Fine-tune a base model with the LIMA recipe (QLoRA via TRL's SFTTrainer).\n"
                         "Rerun the same command after an interruption to resume.").parse_args(argv)
    train(resolve_recipe(args.recipe), args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
