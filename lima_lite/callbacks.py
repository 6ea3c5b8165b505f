"""The LIMA run's TrainerCallbacks: the base's dev loss at step 0, an adapter per epoch, metrics.jsonl, a stop at
a non-finite loss, and an epoch's end finished after a kill.

    >>> trainer = SFTTrainer(..., callbacks=lima_callbacks(run, tokenizer, template, "embedded:SmolLM2-135M-Instruct"))
"""

import json
import math
from pathlib import Path

from lima_lite import LimaError
from lima_lite.adapters import save_trained_adapter
from lima_lite.layout import METRICS_FILE, epoch_dir, read_metrics


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
