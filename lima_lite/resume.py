"""Resuming a run folder: the checkpoint to go on from, and only under the recipe and process count it started with.

    >>> check_same_run(run, setup)          # a changed learning rate, batch, data, ... is refused, naming it
    >>> resume_point(run, accelerator)      # the newest whole checkpoint-N, or None
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from lima_lite import LimaError
from lima_lite.files import write_jsonl
from lima_lite.layout import (
    CHECKPOINT,
    CHECKPOINT_STATE,
    METRICS_FILE,
    RunRecord,
    checkpoint_damage,
    checkpoints,
    last_complete_checkpoint,
    read_metrics,
    read_run,
)

if TYPE_CHECKING:
    from lima_lite.train import Setup


def keep_metrics_until(output_dir: Path, step: int) -> None:
    """Forget what a killed run logged after its last checkpoint (or everything, with no checkpoint)."""

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
    check_resumable(last, output_dir)
    return last


def check_resumable(last: Path | None, output_dir: Path) -> None:
    """Refuse, in one line, to resume from a checkpoint whose files are damaged (layout.checkpoint_damage),
    naming the newest older one that loads: deleting the damaged one resumes from it."""
    if last is None or (problem := checkpoint_damage(last)) is None:
        return
    older = [folder for step, folder in checkpoints(output_dir).items() if step < int(CHECKPOINT.match(last.name)[1])]
    sound = next((folder for folder in reversed(older) if checkpoint_damage(folder) is None), None)
    way = (f"delete it to resume from {sound.name}" if sound else
           "no older checkpoint loads either: delete the checkpoints to train from the start, or choose another output_dir")
    raise LimaError(f"{last}: {last.name} is damaged: {problem}; {way}")


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
    sft_config = setup.sft_config
    sections = {"training": sft_config.to_dict(), "script": asdict(setup.script_args),
                "data": {"sha256": setup.data_sha256},
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
