"""The app's Train tab: `lima-lite train` started, watched, stopped and resumed from the browser.

    $ lima-lite ui                       # the Train tab trains into runs/ (only from this machine, or with --auth)
    $ python -m lima_lite.app.train_tab recipes/quickstart.yaml output_dir=runs/quickstart   # what Start runs

Pick a recipe, edit a few values, check the data (the same one-line errors as `lima-lite inspect`, the
`lima-lite data stats` table and response-length histogram, and the first example as it will be trained, its
trained tokens highlighted), read the settings as `lima-lite train` resolves them on this machine (lima_lite.resolve,
each with its reason) with an estimate (a GPU's memory plan; a CPU's host memory and time per step and epoch) and
the equivalent `lima-lite train ...` command, then Start; its output folder is a free one (free_folder), and a
value in "more settings" that contradicts a field is refused. The run is a child process (a crash never takes the app
down), one at a time; Stop asks it to write a checkpoint at the end of the current step and exit; Resume runs
the same command again, which continues from that checkpoint, as after any interruption. Every few seconds
the tab reads the run's metrics.jsonl (step, epoch, ETA, tokens/s, the train and dev loss curves) and lists
the runs under --runs, those started from a terminal too; each epoch adapter joins the other tabs' model
lists, with its dev loss, as soon as it is written. Export merges a chosen adapter, exports it to GGUF or
writes its Hub folder (`lima-lite push --dry-run`), each the CLI command in a child process.

Every folder the tab writes or watches lies under --runs, once resolved (`..` and symlinks followed): the
output folder from its field or from "more settings" (output_dir=, logging_dir=), an export's output, the
run whose progress it reads; anything else is refused in the status line. The tab exists only where the page
is this machine's or behind a login (lima_lite.app.ui.app_from_args); there it reads the data and recipes the
user names, as `lima-lite train` does.
"""

import html
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from pathlib import Path

import lima_lite
from lima_lite import LimaError
from lima_lite.app.events import event
from lima_lite.config import load_recipe, writable
from lima_lite.conversations import load_conversations
from lima_lite.data.stats import data_stats, summary_html
from lima_lite.layout import METRICS_FILE, RUN_FILE, adapter_dir, read_metrics, read_run
from lima_lite.machine import available_host_gib, detect_machine
from lima_lite.memory.estimate import GIB, component_bytes, linear_shapes, read_shape, recipe_settings
from lima_lite.memory.fit import RECOMPUTE_COST
from lima_lite.memory.plan import detected_gpu_gib, format_plan, recipe_plan
from lima_lite.precision import matmul_flops
from lima_lite.recipe_yaml import resolve_recipe
from lima_lite.resolve import resolve
from lima_lite.template import IGNORE
from lima_lite.train import check_output, prepare, recipe_parser, train

TRAIN_LOG = "train.log"  # the child's output, appended to at every start
TICK_SECONDS = 2.0
# The settings the tab shows for editing: key -> label.
FIELDS = {
    "model_name_or_path": "base model (folder, Hub id or embedded:...)",
    "dataset_name": "training data (JSONL)",
    "dev_dataset": "dev data (JSONL; empty: no dev loss)",
    "num_train_epochs": "epochs",
    "learning_rate": "learning rate",
    "lora_r": "LoRA r",
    "lora_alpha": "LoRA alpha",
    "max_length": "max length (tokens)",
    "output_dir": "output folder",
}


# ---------------------------------------------------------------- the child process: `lima-lite train` + a clean stop


def stop_at_checkpoint():
    """A TrainerCallback that, once SIGTERM has arrived, saves a checkpoint at the end of the current step and
    then interrupts the run (train() marks it "interrupted"; the same command resumes from that checkpoint)."""
    from transformers import TrainerCallback

    requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: requested.set())
    # SIGINT (a second Stop) stops now, through Python's KeyboardInterrupt, even when the app was started with
    # SIGINT ignored (`nohup lima-lite ui ... &` does that), which this process would otherwise inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)

    class StopAtCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if requested.is_set():
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            if requested.is_set():
                print(f"Stopped at step {state.global_step}: run the same command again to resume", flush=True)
                raise KeyboardInterrupt

    return StopAtCheckpoint()


def main(argv=None) -> int:
    args = recipe_parser("python -m lima_lite.app.train_tab", "`lima-lite train`, stopped cleanly by SIGTERM (a checkpoint "
                         "at the end of the step), as the app's Train tab runs it.").parse_args(argv)
    train(resolve_recipe(args.recipe), args.overrides, callbacks=[stop_at_checkpoint()])
    return 0


# ---------------------------------------------------------------- the form: recipe, values, checks, plan, command


def recipe_names() -> list[str]:
    """The recipes shipped in recipes/ (next to the package, or in the checkout)."""
    here = Path(lima_lite.__file__).resolve().parent
    names = {p.stem for folder in (here / "recipes", here.parent / "recipes") for p in folder.glob("*.yaml")}
    return sorted(names, key=lambda name: (name != "quickstart", name))


def free_folder(path: Path) -> Path:
    """`path` when a run can start there (missing or empty), else the first free NAME-2, NAME-3, ...: after the
    quick start, runs/quickstart holds a finished run, and the tab proposes runs/quickstart-2."""
    candidate, number = path, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def recipe_values(recipe: str, runs_dir: Path) -> dict[str, str]:
    """The value of every FIELDS key that a run of the recipe gets on this machine with nothing changed, as text:
    the recipe's, or what lima_lite.resolve decides here (one epoch on a CPU without native bf16), so that a field
    shows what the run will do, and a value typed in it is one the run takes. The output folder is moved under
    the app's --runs, to a free name (free_folder) when the recipe's is taken."""
    resolved = resolve(load_recipe(resolve_recipe(recipe)), detect_machine())
    values = {key: resolved.value(key) for key in FIELDS}
    values["output_dir"] = str(free_folder(runs_dir / Path(values["output_dir"]).name))
    return {key: "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
            for key, value in values.items()}


def form_overrides(recipe: str, runs_dir: Path, values: dict[str, str], more: str) -> list[str]:
    """key=value for each field that differs from the recipe, then the `more` box's key=value words."""
    if not recipe or not str(recipe).strip():
        raise LimaError("recipe: choose one from the list or give a YAML path")
    start = recipe_values(recipe, runs_dir)
    overrides = [f"{key}={value.strip()}" for key, value in values.items()
                 if not same(value.strip(), start[key]) or key == "output_dir"]
    try:
        words = shlex.split(more or "")
    except ValueError as error:
        raise LimaError(f"more settings: {error}") from None
    for word in words:
        if "=" not in word:
            raise LimaError(f"more settings: expected key=value, found {word!r}")
    return overrides + words


# The settings that name a folder training writes to: from the page, each must lie under --runs.
WRITTEN_PATHS = ("output_dir", "logging_dir")


def under_runs(path: str | Path, runs_dir: Path, what: str) -> Path:
    """`path` when it lies under --runs once resolved (`..` and symlinks followed): every folder the page
    writes or watches does; anything else is refused, so a field or a typed key=value never trains, exports
    or reads run files elsewhere on the machine."""
    path = Path(path)
    resolved, root = path.resolve(), Path(runs_dir).resolve()
    if resolved == root or root not in resolved.parents:
        raise LimaError(f"{what}: {path} is not a folder under {runs_dir} (--runs); the page writes only there")
    return path


def output_dir_of(overrides: list[str], runs_dir: Path) -> Path:
    """The folder a start trains into: the last output_dir= among the overrides (fields, then more settings),
    each written path checked to lie under --runs."""
    found = None
    for word in overrides:
        key, _, value = word.partition("=")
        if key.strip() in WRITTEN_PATHS:
            path = under_runs(value.strip(), runs_dir, key.strip())
            found = path if key.strip() == "output_dir" else found
    if found is None:
        raise LimaError("output_dir: is empty; name a folder under --runs")
    return found


def check_conflicts(values: dict[str, str], more: str) -> None:
    """A key=value in "more settings" that gives a field's key another value is refused, naming both: neither
    wins silently (max_length=256 there against 1024 in the field trained at 256 before)."""
    for word in shlex.split(more or ""):
        key, _, value = word.partition("=")
        key, value = key.strip(), value.strip()
        if key in FIELDS and not same(value, values[key].strip()):
            raise LimaError(f"more settings: {key}={value} conflicts with the field \"{FIELDS[key]}\" "
                            f"({values[key].strip() or 'empty'}); change the field, or take {key} out of more settings")


def same(typed: str, recipe: str) -> bool:
    """The field still holds the recipe's value (5e-4 is 0.0005)."""
    try:
        return float(typed) == float(recipe)
    except ValueError:
        return typed == recipe


def command_line(recipe: str, overrides: list[str]) -> str:
    return shlex.join(["lima-lite", "train", str(recipe), *overrides])


def example_html(tokenizer, row: dict) -> str:
    """One encoded example as it is trained: the text of its tokens, the trained (labelled) ones highlighted."""
    pieces = []
    for trained, group in groupby(zip(row["input_ids"], row["labels"], strict=True), key=lambda pair: pair[1] != IGNORE):
        text = html.escape(tokenizer.decode([token for token, _ in group], skip_special_tokens=False))
        pieces.append(f"<mark>{text}</mark>" if trained else text)
    trained = sum(label != IGNORE for label in row["labels"])
    return (f"<p><b>{html.escape(str(row['id']))}</b>: {len(row['input_ids'])} tokens, {trained} trained "
            f"(highlighted)</p><pre style='white-space: pre-wrap'>{''.join(pieces)}</pre>")


def checked_data(setup) -> tuple[str, str]:
    """(summary, the data's stats and first example) of a run's setup (lima_lite.train.prepare: everything
    `lima-lite train` checks before loading the model)."""
    counts, dev = setup.report["train"], setup.report["dev"]
    summary = (f"data OK: {counts['read']} conversations read, {counts['kept']} kept ({counts['cut']} cut at "
               f"{setup.sft_config.max_length} tokens), {counts['dropped']} dropped; dev set {dev['kept']}; "
               f"{setup.template.chat_format} format, turn end {setup.template.eot_token!r}")
    return summary, data_stats_html(setup) + example_html(setup.tokenizer, setup.rows[0])


def data_stats_html(setup) -> str:
    """`lima-lite data stats` of the training file under the recipe's tokenizer and template: the table and the
    response-length histogram."""

    name = setup.script_args.dataset_name
    found, responses = data_stats(load_conversations(name, setup.script_args.dataset_train_split), setup.tokenizer,
                                  setup.template, setup.sft_config.max_length, setup.lima_args.drop_too_long,
                                  setup.lima_args.multi_turn)
    return summary_html({"file": name, **found}, responses)


def machine_text(setup, runs_dir: Path) -> str:
    """What the tab shows of the run on this machine before Start: the settings as `lima-lite train` resolves
    them here (lima_lite.resolve, the one code path of the CLI and the quick start), each with its reason; then
    on a GPU the memory plan of those settings, on a CPU the host memory and the time per step and epoch."""
    resolved = setup.resolved
    lines = [resolved.summary(), *resolved.notes, "", resolved.describe(), ""]
    if resolved.machine.cuda:
        return "\n".join(lines + [gpu_plan(setup)])
    return "\n".join(lines + cpu_estimate(setup, runs_dir))


def gpu_plan(setup) -> str:
    """`lima-lite plan`'s text for the resolved settings on this GPU."""
    sft_config, model_args, lima_args = setup.sft_config, setup.model_args, setup.lima_args
    if not model_args.load_in_4bit:
        return "Memory plan: skipped (it covers 4-bit QLoRA; load_in_4bit is false)"
    plan = recipe_plan(sft_config, model_args, lima_args, Path(setup.base), len(setup.added), detected_gpu_gib())
    return format_plan(plan, "this GPU", sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps)


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# The share of a single thread's matmul speed (lima_lite.precision.matmul_flops) times the threads that a
# CPU training step reaches: one LoRA step of SmolLM2-135M on 4 x 512 tokens took ~12 s in float32 on 2 cores
# (AVX-512), where 4 x 134.5 M x 2,048 FLOPs at 2 x 98 GFLOP/s (a 256^3 float32 matmul there) take 5.6 s.
STEP_EFFICIENCY = 0.47
# bitsandbytes' 4-bit layers on a CPU: a quick-start step cost 1.6x the CPU time of the same step on a plain
# float32 base (lima_lite.resolve.slow_cpu_choices, docs/benchmarks.md "Fast on every machine").
CPU_4BIT_COST = 1.6


def cpu_estimate(setup, runs_dir: Path) -> list[str]:
    """Host memory and time per step and per epoch of the resolved settings on this CPU: the step time measured
    by a finished run under --runs with the same base and settings, else estimated from the model's size, the
    data's tokens and a timed matmul."""
    sft = setup.sft_config
    shape = read_shape(Path(setup.base) / "config.json")
    micro, accumulation = sft.per_device_train_batch_size, sft.gradient_accumulation_steps
    steps = math.ceil(math.ceil(len(setup.rows) / micro) / accumulation)
    total = sft.max_steps if sft.max_steps > 0 else round(steps * sft.num_train_epochs)
    tokens = sum(len(row["input_ids"]) for row in setup.rows) / len(setup.rows) * micro * accumulation
    measured = measured_step_seconds(setup, runs_dir)
    if measured:
        seconds, source = measured
    else:
        import torch

        seconds = estimated_step_seconds(setup, tokens)
        source = (f"rough: from the model's size, the data's tokens and a timed matmul on {torch.get_num_threads()} "
                  "thread(s)")
    return [f"Estimate for this machine ({setup.resolved.machine.hardware.label}, no GPU):",
            f"  host memory  about {host_gib(setup, shape):.1f} GiB of tensors at the peak, of {available_host_gib():.1f} GiB "
            "available now (rough: the memory plan's count at the longest example; the process adds its libraries "
            "and the model's loading)",
            f"  time         about {seconds:,.1f} s per step of {micro} x {accumulation} examples (~{tokens:,.0f} tokens; "
            f"{source}), {duration(seconds * steps)} per epoch of {steps} steps, {duration(seconds * total)} for "
            f"{total} steps",
            "  the run's own step time replaces this estimate after its first steps (ETA in the progress line)"]


def estimated_step_seconds(setup, tokens: float) -> float:
    """One optimizer step from its FLOPs: forward and backward through the frozen base, 4 x parameters x tokens
    (no weight gradients but LoRA's), at STEP_EFFICIENCY of the matmul speed of this CPU in the run's dtype."""
    import torch

    sft, model = setup.sft_config, setup.model_args
    shape = read_shape(Path(setup.base) / "config.json")
    parameters = shape.layers * sum(out * inp for out, inp in linear_shapes(shape)) + shape.vocab * shape.hidden
    flops = 4 * parameters * tokens * (RECOMPUTE_COST if sft.gradient_checkpointing else 1.0)
    rate = matmul_flops(model.dtype or "float32") * torch.get_num_threads() * STEP_EFFICIENCY
    return flops / rate * (CPU_4BIT_COST if model.load_in_4bit else 1.0)


def measured_step_seconds(setup, runs_dir: Path) -> tuple[float, str] | None:
    """(seconds per step, where from) of a finished run under --runs, not resumed, with the same base, precision,
    length and examples per step: its training time over its steps (its dev losses included)."""
    sft, model = setup.sft_config, setup.model_args
    wanted = (model.model_name_or_path, model.load_in_4bit, model.dtype, sft.max_length,
              sft.per_device_train_batch_size, sft.gradient_accumulation_steps, sft.gradient_checkpointing)
    for run_file in sorted(Path(runs_dir).glob(f"*/{RUN_FILE}")):
        try:
            run = read_run(run_file.parent)
        except LimaError:
            continue
        if run is None or run.status != "finished" or not run.train_seconds or run.resumed_from or not run.total_steps:
            continue
        found = (run.base["name"], run.model["load_in_4bit"], run.model["dtype"], run.training["max_length"],
                 run.training["per_device_train_batch_size"], run.training["gradient_accumulation_steps"],
                 run.training.get("gradient_checkpointing"))
        if found == wanted:
            return (run.train_seconds / run.total_steps,
                    f"measured: {run_file.parent.name} took {run.train_seconds:,.0f} s for {run.total_steps} steps")
    return None


def host_gib(setup, shape) -> float:
    """GiB of tensors at the peak of a CPU run: the memory plan's weights, LoRA, gradients and optimizer state,
    and its activations and loss for a micro-batch of the longest example, in the run's dtype (the plan counts
    4-bit linear layers and bf16 activations)."""
    sft, model, lima = setup.sft_config, setup.model_args, setup.lima_args
    as_4bit = writable(model)
    as_4bit.load_in_4bit = True
    settings = recipe_settings(sft, as_4bit, lima, len(setup.added))
    longest = max(len(row["input_ids"]) for row in setup.rows)
    raw = component_bytes(shape, settings, tokens=settings.micro_batch * longest)
    size = DTYPE_BYTES.get(model.dtype or "float32", 4)
    linear = raw["weights_4bit"] if model.load_in_4bit else shape.layers * sum(o * i for o, i in linear_shapes(shape)) * size
    unquantized = raw["weights_16_32bit"] * (2 if size == 4 and not lima.fp32_layers else 1)
    moving = (raw["activations"] + raw["loss"] + raw["layer_backward"]) * size / 2
    return (linear + unquantized + raw["lora"] + raw["trainable_tokens"] + raw["gradients"] + raw["optimizer"] + moving) / GIB


def duration(seconds: float) -> str:
    return f"{seconds / 60:,.1f} min" if seconds >= 90 else f"{seconds:,.0f} s"


# ---------------------------------------------------------------- the run: one child process at a time


@dataclass
class Training:
    """The training the app runs: at most one child process `python -m lima_lite.app.train_tab RECIPE key=value ...`.

    `allowed` is False when the app is reachable beyond this machine without a login: then nothing starts."""

    runs_dir: Path
    allowed: bool = True
    process: subprocess.Popen | None = None
    command: list[str] | None = None  # recipe and overrides of the last start, for Resume
    output_dir: Path | None = None
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    pace: dict = field(default_factory=dict)  # run folder -> [(time, step, tokens)] seen by the tab

    def __post_init__(self):
        self.runs_dir = Path(self.runs_dir)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_free(self) -> None:
        """Refuse a start: from a public page without login, or while a run is going."""
        if not self.allowed:
            raise LimaError("training from the page is off: this app is reachable beyond this machine without a "
                            "login; restart it with --auth USER:PASSWORD")
        if self.running():
            raise LimaError(f"a training is already running ({self.output_dir}, pid {self.process.pid}); "
                            "one at a time: stop it first")

    def start(self, recipe: str, overrides: list[str], output_dir: Path) -> str:
        with self.lock:
            self.check_free()
            output_dir.mkdir(parents=True, exist_ok=True)
            with (output_dir / TRAIN_LOG).open("a", encoding="utf-8") as log:
                log.write(f"$ {command_line(recipe, overrides)}\n")
                log.flush()
                self.process = subprocess.Popen([sys.executable, "-m", "lima_lite.app.train_tab", str(recipe), *overrides],
                                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=child_env())
            self.command, self.output_dir, self.stopping = [str(recipe), *overrides], output_dir, False
            return f"started (pid {self.process.pid}): {command_line(recipe, overrides)}"

    def resume(self) -> str:
        if self.command is None:
            raise LimaError("nothing to resume: start a run first (Start on a folder with a checkpoint resumes it too)")
        return self.start(self.command[0], self.command[1:], self.output_dir)

    def stop(self) -> str:
        with self.lock:
            if not self.running():
                raise LimaError("no training is running")
            if self.stopping:  # asked twice: stop now, without waiting for the step to end
                self.process.send_signal(signal.SIGINT)
                return "stopping now (no checkpoint of this step)"
            self.process.send_signal(signal.SIGTERM)
            self.stopping = True
            return f"stopping: {self.finishing()}, then a checkpoint, then the run exits"

    def finishing(self) -> str:
        try:
            return finishing(progress(self.output_dir, self.pace))
        except LimaError:  # a damaged metrics file: the stop goes on without an estimate
            return "finishing the current step"

    def state(self, found: dict | None = None) -> str:
        """What the app's own run is doing, in one line; `found`: its progress, for the step a stop waits for."""
        if self.process is None:
            return "no run started from this page yet"
        code = self.process.poll()
        if code is None:
            if self.stopping:
                return f"stopping (pid {self.process.pid}): {finishing(found) if found else self.finishing()}"
            return f"running (pid {self.process.pid})"
        if code == 0:
            return f"finished: {adapter_dir(self.output_dir)}"
        if code == 130:
            return "stopped: Resume continues from its last checkpoint"
        return f"failed: {last_error(self.output_dir / TRAIN_LOG)}"


def child_env() -> dict:
    """The environment of a child `lima-lite` process: it imports this very lima_lite, wherever the app was
    started from, and prints as it goes."""
    package_root = str(Path(lima_lite.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}


def last_error(log: Path) -> str:
    """The child's `error: ...` line (the CLI's one-line message), else its last line."""
    return error_line(log.read_text(encoding="utf-8", errors="replace"))


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1] if lines else "no output")


# ---------------------------------------------------------------- export and share an adapter


EXPORTS = ("merge", "gguf", "push")


def export_command(kind: str, adapter: str, out: str, repo: str, base: str) -> list[str]:
    """The `lima-lite` arguments that merge, export to GGUF, or write the Hub folder of (push --dry-run) `adapter`;
    `base`: the base's Hub id for the model card, when it was trained from a local folder."""
    if kind == "push":
        if not repo.strip():
            raise LimaError("push: give the Hub repository, OWNER/NAME")
        return ["push", adapter, "--repo", repo.strip(), "--dry-run", *(["--out", out.strip()] if out.strip() else []),
                *(["--base-model", base.strip()] if base.strip() else [])]
    if not out.strip():
        raise LimaError(f"{kind}: give an output folder")
    return ["merge", adapter, "--out", out.strip()] if kind == "merge" else ["export", "gguf", adapter, "--out", out.strip()]


def export_adapter(models, kind: str, label: str, out: str, repo: str, base: str):
    """Merge / GGUF / Push (dry run) of the chosen adapter, as a child `lima-lite` process; yields the status."""
    if label not in models.specs or not models.specs[label][1]:
        raise LimaError(f"{label or 'nothing'}: choose an adapter (a run's adapter or epoch-NN), not a base model")
    words = export_command(kind, models.specs[label][0], out or "", repo or "", base or "")
    if "--out" in words:
        under_runs(words[words.index("--out") + 1], models.runs_dir, f"{kind}: output folder")
    elif not Path(models.specs[label][0]).resolve().is_relative_to(Path(models.runs_dir).resolve()):
        raise LimaError(f"{kind}: give an output folder under {models.runs_dir} (--runs)")
    yield f"running: {shlex.join(['lima-lite', *words])}"
    done = subprocess.run([sys.executable, "-m", "lima_lite.cli", *words], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=child_env())
    if done.returncode:
        yield error_line(done.stderr or done.stdout)
        return
    tail = "\n".join(done.stdout.strip().splitlines()[-12:])
    yield f"done: {shlex.join(['lima-lite', *words])}\n\n```\n{tail}\n```"


# ---------------------------------------------------------------- progress: metrics.jsonl, read every few seconds


# What progress() returns of a folder with no run yet.
NO_PROGRESS = {"step": 0, "total": None, "epoch": 0.0, "train": [], "dev": [], "eta_s": None, "tokens_per_s": None,
               "step_s": None, "last_logged": None}


def progress(run_dir: Path, pace: dict) -> dict:
    """Step, total, epoch, losses, step time, ETA and tokens/s of a run folder; `pace` keeps what earlier reads
    saw: (time, step, tokens) of each logged step, the time being when metrics.jsonl was written with it."""
    rows = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    dev = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    logged = [r for r in rows if "loss" in r]
    step = rows[-1]["step"] if rows else 0
    run = read_run(run_dir)
    found = {**NO_PROGRESS, "step": step, "total": run.total_steps if run else None,
             "epoch": rows[-1]["epoch"] if rows else 0.0, "train": train, "dev": dev}
    if not logged:
        return found
    seen = pace.setdefault(str(run_dir), [])
    point = ((run_dir / METRICS_FILE).stat().st_mtime, logged[-1]["step"], logged[-1].get("num_tokens"))
    if seen and point[1] < seen[-1][1]:  # trained again from the start in the same folder
        seen.clear()
    if not seen or seen[-1][1] != point[1]:
        seen.append(point)
        del seen[:-20]
    found["last_logged"] = seen[-1][0]
    found["step_s"], found["tokens_per_s"] = pace_of(seen)
    if found["step_s"] is not None and found["total"]:
        found["eta_s"] = max(0.0, (found["total"] - seen[-1][1]) * found["step_s"])
    return found


def pace_of(seen: list[tuple]) -> tuple[float | None, float | None]:
    """(seconds per step, tokens per second) of the logged steps seen: the median over the intervals between
    them, however long a step takes, so that one long pause (a stop and resume, a dev loss) does not count."""
    pairs = list(pairwise(seen))
    steps = sorted((t1 - t0) / (s1 - s0) for (t0, s0, _), (t1, s1, _) in pairs if t1 > t0 and s1 > s0)
    rates = sorted((n1 - n0) / (t1 - t0) for (t0, s0, n0), (t1, s1, n1) in pairs
                   if t1 > t0 and s1 > s0 and n0 is not None and n1 is not None)
    return (steps[len(steps) // 2] if steps else None), (rates[len(rates) // 2] if rates else None)


def finishing(found: dict) -> str:
    """The step a stop waits for, and how long it still takes by the measured step time."""
    step = f"finishing step {found['step'] + 1}"
    if found["step_s"] is None or found["last_logged"] is None:
        return f"{step} (its time is measured from the second logged step on)"
    left = found["step_s"] - (time.time() - found["last_logged"])
    return f"{step} (about {left:,.0f} s)" if left >= 1 else f"{step} (any moment: steps take about {found['step_s']:,.0f} s)"


def progress_text(state: str, run_dir: Path, found: dict) -> str:
    parts = [f"**{state}** · {run_dir}", f"step {found['step']}" + (f" / {found['total']}" if found["total"] else ""),
             f"epoch {found['epoch'] or 0:.2f}"]
    if found["step_s"] is not None:
        parts.append(f"{found['step_s']:,.1f} s/step")
    if found["eta_s"] is not None:
        parts.append(f"ETA {time.strftime('%H:%M:%S', time.gmtime(found['eta_s']))}")
    if found["tokens_per_s"] is not None:
        parts.append(f"{found['tokens_per_s']:,.0f} tokens/s")
    if found["train"]:
        parts.append(f"train loss {found['train'][-1][1]:.4f} ({len(found['train'])} points)")
    if found["dev"]:
        parts.append(f"dev loss {found['dev'][-1][1]:.4f} ({len(found['dev'])} points)")
    return " · ".join(parts)


# The curves' colours, the same on every page and in every state of the run: train loss blue, dev loss orange.
CURVES = {"train loss": "#1f77b4", "dev loss": "#ff7f0e"}
WIDTH, HEIGHT, MARGIN = 640, 260, (48, 16, 36, 56)  # the SVG's view box; margins: top, right, bottom, left


def loss_svg(found: dict) -> str:
    """The loss curves as an SVG drawn here, from the points the progress line counts: one polyline and its
    markers per curve (a single point shows), the x axis to the run's total steps, the legend inside the box.
    Each polyline carries its points in data-points="step:loss ...", as drawn."""
    curves = {"train loss": found["train"], "dev loss": found["dev"]}
    points = [point for curve in curves.values() for point in curve]
    top, right, bottom, left = MARGIN
    legend = "".join(
        f"<g class='legend'><line x1='{left + 10 + 130 * i}' y1='18' x2='{left + 34 + 130 * i}' y2='18' stroke='{color}' "
        f"stroke-width='3'/><text x='{left + 40 + 130 * i}' y='22' font-size='13'>{name}</text></g>"
        for i, (name, color) in enumerate(CURVES.items()))
    if not points:
        body = (f"<text x='{WIDTH / 2}' y='{HEIGHT / 2}' text-anchor='middle' font-size='13' fill='#757575'>the loss "
                "curves appear at the first logged step</text>")
        return svg_box(legend + body)
    x_max = max([found["total"] or 0, *(step for step, _ in points), 1])
    low, high = min(v for _, v in points), max(v for _, v in points)
    pad = (high - low) * 0.08 or 0.5
    low, high = low - pad, high + pad

    def x(step):
        return left + (WIDTH - left - right) * step / x_max

    def y(value):
        return top + (HEIGHT - top - bottom) * (high - value) / (high - low)

    ticks = "".join(
        f"<line x1='{left}' y1='{y(v):.1f}' x2='{WIDTH - right}' y2='{y(v):.1f}' stroke='#e0e0e0'/>"
        f"<text x='{left - 6}' y='{y(v) + 4:.1f}' text-anchor='end' font-size='11'>{v:.2f}</text>"
        for v in (low + (high - low) * k / 4 for k in range(5)))
    ticks += "".join(f"<text x='{x(step):.1f}' y='{HEIGHT - bottom + 16}' text-anchor='middle' font-size='11'>{step}</text>"
                     for step in sorted({round(x_max * k / 4) for k in range(5)}))
    axes = (f"<line x1='{left}' y1='{HEIGHT - bottom}' x2='{WIDTH - right}' y2='{HEIGHT - bottom}' stroke='#616161'/>"
            f"<text x='{(left + WIDTH - right) / 2}' y='{HEIGHT - 4}' text-anchor='middle' font-size='12'>step</text>"
            f"<text x='14' y='{(top + HEIGHT - bottom) / 2}' font-size='12' transform='rotate(-90 14 "
            f"{(top + HEIGHT - bottom) / 2})' text-anchor='middle'>loss</text>")
    lines = ""
    for name, curve in curves.items():
        color, css = CURVES[name], name.replace(" ", "-")
        drawn = " ".join(f"{x(step):.1f},{y(value):.1f}" for step, value in curve)
        data = " ".join(f"{step}:{value:.4f}" for step, value in curve)
        lines += (f"<polyline class='{css}' data-points='{data}' points='{drawn}' fill='none' stroke='{color}' "
                  f"stroke-width='2'/>")
        lines += "".join(f"<circle class='{css}' cx='{x(step):.1f}' cy='{y(value):.1f}' r='3' fill='{color}'/>"
                         for step, value in curve)
    return svg_box(ticks + axes + lines + legend)


def svg_box(inner: str) -> str:
    return (f"<svg id='train-curve' viewBox='0 0 {WIDTH} {HEIGHT}' width='100%' role='img' aria-label='loss curves' "
            f"xmlns='http://www.w3.org/2000/svg' style='max-width: {WIDTH * 1.25:g}px; font-family: sans-serif'>"
            f"{inner}</svg>")


def runs_text(runs_dir: Path, training: Training) -> str:
    """Every run folder under runs_dir with its status, those started from a terminal marked so."""
    lines = []
    for run_file in sorted(runs_dir.glob(f"*/{RUN_FILE}")) if runs_dir.is_dir() else []:
        run_dir = run_file.parent
        try:
            status = read_run(run_dir).status
        except LimaError as error:
            status = str(error)
        ours = training.output_dir is not None and run_dir.resolve() == training.output_dir.resolve()
        where = "" if ours else " (not started from this page)" if status == "running" else ""
        lines.append(f"- `{run_dir.name}`: {status}{where}")
    return "\n".join(["**Runs under** `" + str(runs_dir) + "`"] + (lines or ["- none yet"]))


# ---------------------------------------------------------------- the tab


def form_handler(training: Training, handler):
    """A Train-tab handler: its LimaError shown in the tab's status line as the CLI prints it (`error: ...`)."""
    import gradio as gr

    def called(*inputs):
        try:
            return handler(training, *inputs)
        except LimaError as error:
            return f"error: {error}", *[gr.skip()] * (OUTPUTS - 1)
    return called


OUTPUTS = 4  # status, first example, memory plan, command line


def form_inputs(training: Training, recipe: str, *values_and_more):
    *values, more = values_and_more
    values = dict(zip(FIELDS, values, strict=True))
    overrides = form_overrides(recipe, training.runs_dir, values, more)
    output_dir = output_dir_of(overrides, training.runs_dir)
    check_conflicts(values, more)
    return recipe, overrides, output_dir


def check_form(training: Training, recipe: str, *values_and_more):
    """Check: (status, the data's stats and first example, the resolved settings and this machine's estimate,
    command line)."""
    recipe, overrides, _ = form_inputs(training, recipe, *values_and_more)  # checks the written paths too
    setup = prepare(resolve_recipe(recipe), overrides)
    summary, example = checked_data(setup)
    return summary, example, machine_text(setup, training.runs_dir), command_line(recipe, overrides)


def start_form(training: Training, recipe: str, *values_and_more):
    """Start: the same checks, and those `lima-lite train` makes of the output folder (a finished run there is
    refused here, not by the child seconds later), then the child process."""
    recipe, overrides, output_dir = form_inputs(training, recipe, *values_and_more)
    training.check_free()  # before the checks, which take a while: a second Start is refused at once
    setup = prepare(resolve_recipe(recipe), overrides)
    check_output(setup)
    _, example = checked_data(setup)
    return (training.start(recipe, overrides, output_dir), example, machine_text(setup, training.runs_dir),
            command_line(recipe, overrides))


def fill_form(training: Training, recipe: str):
    """A recipe chosen: its values in the fields."""
    import gradio as gr

    try:
        values = recipe_values(recipe, training.runs_dir)
    except LimaError as error:
        return f"error: {error}", *[gr.skip()] * len(FIELDS)
    return "", *values.values()


def tick(training: Training, output_dir: str, announced: str | None = None):
    """Every TICK_SECONDS: (progress line, loss curves, runs list, the status line, the run state it says); the
    app's own timer keeps the model lists current. The status line follows the run from this page once it stops
    running (failed, stopping, stopped, finished), so that it never says "started" when the progress line
    says otherwise; `announced` is the state it said last."""
    import gradio as gr

    run_dir = training.output_dir if training.process is not None else Path(output_dir or ".")
    try:
        under_runs(run_dir, training.runs_dir, "output folder")
        found = progress(run_dir, training.pace)
        run = read_run(run_dir) if training.process is None else None
        state = training.state(found) if training.process is not None else run.status if run else "no run"
    except LimaError as error:  # a folder outside --runs, or a damaged run file: said, not read
        found, state = dict(NO_PROGRESS), f"error: {error}"
    ours = training.process is not None
    status = state if ours and state != announced and not state.startswith("running") else gr.skip()
    return (progress_text(state, run_dir, found), loss_svg(found), runs_text(training.runs_dir, training), status,
            state if ours else announced)


def train_tab(app, training: Training, models):
    """The Train tab's widgets; returns its adapter picker (Export), which the app keeps current with the others."""
    import gradio as gr


    names = recipe_names()
    start = recipe_values(names[0], training.runs_dir)
    with gr.Row():
        recipe = gr.Dropdown(names, value=names[0], allow_custom_value=True, label="recipe (a name, or a YAML path)",
                             elem_id="train-recipe")
        more = gr.Textbox(label="more settings (key=value ...)", placeholder="max_steps=50 report_to=tensorboard",
                          elem_id="train-more", scale=2)
    with gr.Row():
        values = [gr.Textbox(start[key], label=label, elem_id=f"train-{key}") for key, label in FIELDS.items()]
    with gr.Row():
        check = gr.Button("Check data and plan", elem_id="train-check")
        start_button = gr.Button("Start", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
        resume = gr.Button("Resume", elem_id="train-resume")
    status = gr.Markdown(elem_id="train-status")
    command = gr.Textbox(label="the same from a terminal", interactive=False, elem_id="train-command")
    progress_line = gr.Markdown(elem_id="train-progress")
    curves = gr.HTML(loss_svg(NO_PROGRESS), elem_id="train-loss")
    with gr.Row():
        example = gr.HTML(elem_id="train-example")
        plan = gr.Textbox(label="this machine: resolved settings and estimate", lines=14, max_lines=40,
                          interactive=False, elem_id="train-plan")
    runs_list = gr.Markdown(elem_id="train-runs")
    with gr.Accordion("Export or share an adapter", open=False):
        with gr.Row():
            exported = gr.Dropdown(models.choices(), label="adapter", elem_id="export-adapter")
            out = gr.Textbox(label="output folder (merge, GGUF; push: optional)", elem_id="export-out")
            repo = gr.Textbox(label="Hub repository (push)", placeholder="you/llama-7b-lima", elem_id="export-repo")
            base = gr.Textbox(label="the base's Hub id (push, when trained from a local folder)", elem_id="export-base")
        with gr.Row():
            buttons = [gr.Button(text, elem_id=f"export-{kind}")
                       for text, kind in zip(("Merge", "Export GGUF", "Push (dry run)"), EXPORTS, strict=True)]
        export_status = gr.Markdown(elem_id="export-status")
    announced, timer = gr.State(None), gr.Timer(TICK_SECONDS)
    for button, kind in zip(buttons, EXPORTS, strict=True):
        button.click(event(export_adapter, models, kind), [exported, out, repo, base], export_status)

    form = [recipe, *values, more]
    recipe.change(lambda name: fill_form(training, name), recipe, [status, *values])
    # Check runs when clicked and when a data field is left. The checks and Start run one at a time, in the
    # order asked; a Check asked while one runs runs again after it, on the form as it is then: the status
    # line ends on what the form says now, never on an older check that took longer.
    gr.on([check.click, values[1].blur, values[1].submit, values[2].blur], form_handler(training, check_form), form,
          [status, example, plan, command], trigger_mode="always_last", concurrency_limit=1, concurrency_id="form")
    start_button.click(form_handler(training, start_form), form, [status, example, plan, command],
                       concurrency_limit=1, concurrency_id="form")
    stop.click(form_handler(training, lambda t: (t.stop(), *[gr.skip()] * 3)), None, [status, example, plan, command])
    resume.click(form_handler(training, lambda t: (t.resume(), *[gr.skip()] * 3)), None,
                 [status, example, plan, command])
    timer.tick(lambda out, said: tick(training, out, said), [values[-1], announced],
               [progress_line, curves, runs_list, status, announced], show_progress="hidden")
    # a page loaded later proposes a free output folder then (the one proposed when the app started may be taken)
    app.load(lambda name: fill_form(training, name)[-1], recipe, values[-1])
    return exported


if __name__ == "__main__":
    from lima_lite.entry import run

    sys.exit(run("lima_lite.app.train_tab:main", sys.argv[1:]))
