"""Third-party messages a lima_lite user cannot act on, silenced once per command (`lima_lite.entry.run`).

    >>> quiet_third_party()

Each is something lima_lite already handles, so the first run shows only what matters:
- transformers' FutureWarnings that `gradient_checkpointing` is renamed `activation_checkpointing`: the recipes
  use TRL's key, which transformers still maps to the new one;
- TRL's warning that a micro-batch of 1 "annihilates the benefits" of padding-free training: a recipe with
  micro-batch 1 chose it for memory (the quick start: one example's activations alive at a time);
- bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" (and, offline, the `kernels`
  package's "Skipping publisher trust check" for it): an optional kernel from the Hub; bitsandbytes' own CPU
  path runs instead;
- transformers' "Loading weights" progress bar when the output is not a terminal (a log file got one line
  per tensor, 272 of them for SmolLM2). Training's own progress bar stays.
"""

import logging
import os
import sys
import warnings

# (logger name, a part of the message) of each log line dropped
DROPPED_LOGS = (
    ("trl.trainer.sft_trainer", "You are using a per_device_train_batch_size of 1 with padding-free"),
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("kernels._internals.hf_hub", "Skipping publisher trust check for 'kernels-community/"),
)


class _DropMessages(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return self.start not in str(record.msg)  # accelerate's logger puts "[RANK 0] " in front


def quiet_third_party() -> None:
    warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning)
    for name, start in DROPPED_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.start == start for f in logger.filters):
            logger.addFilter(_DropMessages(start))
    if not sys.stderr.isatty():
        if "transformers.utils.logging" in sys.modules:
            sys.modules["transformers.utils.logging"].disable_progress_bar()
        else:  # read when transformers is imported; importing it here would slow every `--help`
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
