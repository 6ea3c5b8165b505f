"""A training run's folder, in one place: what `lima-lite train` writes and every other command reads.

    runs/llama-7b/
      adapter/          the final adapter (+ tokenizer, lima_template.json): `adapter_dir(run)`
      epoch-01/ ...     one adapter per finished epoch: `epoch_dir(run, 1)`, `epoch_adapters(run)`
      checkpoint-N/     the Trainer's state, to resume: `last_complete_checkpoint(run)`
      run.json          resolved recipe, versions, data hash, counts: a `RunRecord`, `read_run(run)` and `.save(run)`
      train.lock        while `train` writes the folder: its host and pid (`run_lock(run)`)
      .train.lock.takeover  taken in turn by processes replacing the lock of a run that was killed
      metrics.jsonl     every logged step: `read_metrics(run)`; loss.png its plot

An adapter folder holds ADAPTER_FILES (config, weights, lima_template.json) and its tokenizer's files.

    >>> adapter, run = find_run("runs/llama-7b")          # (runs/llama-7b/adapter, runs/llama-7b)
    >>> adapter, run = find_run("runs/llama-7b/epoch-07")  # (runs/llama-7b/epoch-07, runs/llama-7b)
"""

import json
import os
import re
import shutil
import socket
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from lima_lite import LimaError
from lima_lite.files import write_json
from lima_lite.template import (
    TEMPLATE_FILE,  # the template owns its file name
    ChatTemplate,
)

FINAL_ADAPTER = "adapter"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, TEMPLATE_FILE)  # what every adapter lima_lite writes holds
# A folder holds a tokenizer when it has one of these (a fast tokenizer's JSON, a SentencePiece model, the config)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
LOCK_FILE = "train.lock"
EPOCH = re.compile(r"^epoch-(\d+)$")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
CHECKPOINT_STATE = "trainer_state.json"  # the last file the Trainer writes into a checkpoint
CHECKPOINT_WEIGHTS = (ADAPTER_WEIGHTS, "model.safetensors")  # a checkpoint of an adapter, or of a whole model


def epoch_name(epoch: int) -> str:
    return f"epoch-{epoch:02d}"


def epoch_dir(run: str | Path, epoch: int) -> Path:
    return Path(run) / epoch_name(epoch)


def adapter_dir(run: str | Path) -> Path:
    return Path(run) / FINAL_ADAPTER


def is_adapter(path: str | Path) -> bool:
    """A PEFT adapter folder (adapter_config.json), whoever trained it."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def is_run(path: str | Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def check_lima_adapter(path: str | Path) -> Path:
    """`path` if it is a whole adapter trained by lima_lite (adapter_config.json, readable weights and
    lima_template.json), else one clear error: what chat, merge, export and push check before they start."""
    path = Path(path)
    if not is_adapter(path):
        raise LimaError(f"{path}: not an adapter folder (no {ADAPTER_CONFIG})")
    check_adapter_config(path / ADAPTER_CONFIG)
    if not (path / TEMPLATE_FILE).is_file():
        raise LimaError(f"{path}: no {TEMPLATE_FILE}; was it trained with lima_lite?")
    ChatTemplate.load(path)
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise LimaError(f"{path}: no {ADAPTER_WEIGHTS}; copy the whole adapter folder")
    damaged = damaged_weights(path)
    if damaged:
        raise LimaError(f"{damaged[0][0]}: damaged safetensors file ({damaged[0][1]}); copy or download it again")
    return path


def check_adapter_config(file: Path) -> None:
    """adapter_config.json is a JSON object whose trainable_token_indices, if any, are token ids (a list, or
    one list per layer name): what lima_lite reads of it besides the base's name."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LimaError(f"{file}: not a readable adapter config ({type(error).__name__}); copy the adapter again") from None
    if not isinstance(config, dict):
        raise LimaError(f"{file}: not a JSON object but {type(config).__name__}; copy the adapter again")
    indices = config.get("trainable_token_indices")
    lists = indices.values() if isinstance(indices, dict) else [indices] if indices is not None else []
    if not all(isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
               for ids in lists):
        raise LimaError(f"{file}: trainable_token_indices: expected token ids (whole numbers >= 0), got {indices!r:.80}")


def adapter_base(path: str | Path) -> str:
    """The base model an adapter names in its adapter_config.json."""
    config_file = Path(path) / ADAPTER_CONFIG
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LimaError(f"{config_file}: not a readable adapter config ({type(error).__name__})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        raise LimaError(f"{config_file}: base_model_name_or_path: missing; pass the base model with --base")
    return base


def damaged_weights(folder: str | Path) -> list[tuple[Path, str]]:
    """(file, safetensors' complaint) for each .safetensors file in `folder` whose header or length is wrong
    (a copy or download cut short, a full disk); opening one reads only its header."""
    from safetensors import SafetensorError, safe_open

    damaged = []
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(file, "pt"):
                pass
        except SafetensorError as error:
            damaged.append((file, str(error)))
    return damaged


@contextmanager
def readable_weights(folder: str | Path):
    """Around loading a model or adapter from `folder`: a damaged .safetensors file (truncated by a copy
    or a full disk) becomes one LimaError naming the file, instead of safetensors' header error."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as error:
        names = ", ".join(str(file) for file, _ in damaged_weights(folder)) or f"a .safetensors file in {folder}"
        raise LimaError(f"{names}: damaged safetensors file ({error}); copy or download it again") from None


@contextmanager
def adapter_for_base(adapter: str | Path, base: str):
    """Around loading `adapter` onto `base`: an adapter trained on another base (other layer sizes) becomes
    one LimaError naming the base it needs, instead of torch's list of size mismatches."""
    try:
        yield
    except RuntimeError as error:
        if "size mismatch" not in str(error):
            raise
        raise LimaError(f"{adapter}: trained on {adapter_base(adapter)}, and its weights do not fit the base "
                        f"{base} (other layer sizes); load it with the base it was trained on (--base)") from None


@dataclass
class RunRecord:
    """run.json: what was trained, on what, how, with which library versions; rewritten as the run goes.

    Written (`save`) and read (`read_run`) only here; read_run checks every field below and RECORD_KEYS once,
    so a reader uses the fields as they are. The sections (base, data, model, training, ...) are the settings
    objects as dicts (TRL's SFTConfig.to_dict, dataclasses.asdict)."""

    recipe: str | None
    command: list
    base: dict  # name (as the user gave it), path (the local folder), revision
    data: dict  # dataset_name, sha256, dev_dataset
    counts: dict
    effective_batch: float
    steps_per_epoch: int
    processes: int  # data-parallel processes (GPUs); effective_batch = per_device x accumulation x processes
    residual_dropout_per_layer: list
    trainable_parameters: int
    lima: dict
    model: dict
    script: dict
    training: dict
    template: dict
    versions: dict
    status: str = "running"
    train_seconds: float | None = None
    resumed_from: str | None = None
    final_train_loss: float | None = None
    fit: dict | None = None  # auto_fit's choice (lima_lite/memory/plan.py) and its step down after an out-of-memory first step

    def save(self, run: str | Path) -> None:
        write_json(Path(run) / RUN_FILE, asdict(self))

    @property
    def total_steps(self) -> int | None:
        """Optimizer steps the run takes: max_steps, else epochs x steps per epoch."""
        if self.training["max_steps"] > 0:
            return self.training["max_steps"]
        return round(self.steps_per_epoch * self.training["num_train_epochs"]) or None


NUMBER, TEXT, NONE = (int, float), (str,), (type(None),)
# The values inside the sections that readers use (merge, push's card, eval, the Train tab, resume), and their types.
RECORD_KEYS = {
    "model": {"load_in_4bit": (bool,), "dtype": TEXT + NONE, "lora_r": (int,), "lora_alpha": NUMBER,
              "lora_dropout": NUMBER, "lora_target_modules": TEXT + (list,) + NONE, "use_bnb_nested_quant": (bool,)},
    "base": {"name": TEXT, "path": TEXT},
    "data": {"dataset_name": TEXT, "sha256": TEXT + NONE, "dev_dataset": TEXT + NONE},
    "training": {"learning_rate": NUMBER, "lr_scheduler_type": TEXT, "warmup_steps": NUMBER,
                 "num_train_epochs": NUMBER, "max_steps": (int,), "per_device_train_batch_size": (int,),
                 "gradient_accumulation_steps": (int,), "optim": TEXT, "adam_beta1": NUMBER, "adam_beta2": NUMBER,
                 "weight_decay": NUMBER, "max_length": (int,) + NONE, "seed": (int,)},
    "lima": {"residual_dropout": NUMBER, "eot_token": TEXT},
    "counts": {"train": (dict,), "added_tokens": (list,)},
    "script": {"dataset_name": TEXT},
}
FIELD_TYPES = {"recipe": TEXT + NONE, "command": (list,), "effective_batch": NUMBER, "steps_per_epoch": (int,),
               "processes": (int,), "residual_dropout_per_layer": (list,), "trainable_parameters": (int,),
               "counts": (dict,), "template": (dict,), "versions": (dict,), "status": TEXT,
               "train_seconds": NUMBER + NONE, "resumed_from": TEXT + NONE, "final_train_loss": NUMBER + NONE,
               "fit": (dict,) + NONE}


def is_a(value, types: tuple) -> bool:
    """isinstance, where a JSON true/false is not a number."""
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def record_problems(raw) -> list[str]:
    """What is missing or of the wrong type in a run.json's content, one `field: problem` each, sections first."""
    if not isinstance(raw, dict):
        return [f"not a run record (a JSON {type(raw).__name__}, expected an object)"]
    problems = []
    for section, keys in RECORD_KEYS.items():
        values = raw.get(section)
        for key, types in keys.items():
            if not isinstance(values, dict) or key not in values:
                problems.append(f"{section}.{key}: missing")
            elif not is_a(values[key], types):
                problems.append(f"{section}.{key}: {values[key]!r} is not {' or '.join(t.__name__ for t in types)}")
    for f in fields(RunRecord):
        if f.name in RECORD_KEYS:
            continue  # checked key by key above
        if f.name not in raw:
            if f.default is MISSING:
                problems.append(f"{f.name}: missing")
        elif not is_a(raw[f.name], FIELD_TYPES[f.name]):
            problems.append(f"{f.name}: {raw[f.name]!r} is not {' or '.join(t.__name__ for t in FIELD_TYPES[f.name])}")
    return problems


def present(file: Path) -> bool:
    """`file` is there to be read: a regular file (through a symlink too); absent, False. Anything else in its place
    (a FIFO, a device, a folder) is one LimaError: a read of a FIFO waits forever, of a device never ends."""
    if file.is_file():
        return True
    if os.path.lexists(file):
        raise LimaError(f"{file}: not a regular file (a FIFO, a device, a folder or a broken link); lima_lite writes "
                        "it as a file: delete it, or choose another folder")
    return False


def read_run(run: str | Path) -> RunRecord | None:
    """run.json of a run folder, checked, or None when there is none. A damaged one, or one written by an older
    lima_lite, is one LimaError naming the file and the first wrong field."""
    file = Path(run) / RUN_FILE
    if not present(file):
        return None
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LimaError(f"{file}: not valid JSON ({error})") from None
    problems = record_problems(raw)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LimaError(f"{file}: {problems[0]}{more}: damaged, or written by another version of lima_lite")
    known = {f.name for f in fields(RunRecord)}
    return RunRecord(**{key: value for key, value in raw.items() if key in known})


def run_of(adapter: str | Path) -> Path | None:
    """The run folder an adapter folder belongs to (its parent with a run.json), or None."""
    parent = Path(adapter).parent
    return parent if is_run(parent) else None


def find_run(path: str | Path) -> tuple[Path, Path | None]:
    """(adapter folder, run folder or None) for a run folder, its adapter/ or an epoch-NN/ folder."""
    path = Path(path).expanduser()
    if is_run(path) and not is_adapter(path):
        adapter = adapter_dir(path)
        if not is_adapter(adapter):
            raise LimaError(f"{path}: a run folder without a finished adapter ({adapter} is missing)")
        return adapter, path
    if is_adapter(path):
        return path, run_of(path)
    raise LimaError(f"{path}: neither a run folder ({RUN_FILE}) nor an adapter folder ({ADAPTER_CONFIG})")


def epoch_adapters(run: str | Path) -> dict[int, Path]:
    """{epoch: folder} of a run's saved epoch adapters, in order."""
    run = Path(run)
    found = {}
    for folder in run.glob("epoch-*"):
        match = EPOCH.match(folder.name)
        if match and is_adapter(folder):
            found[int(match[1])] = folder
    return dict(sorted(found.items()))


def read_metrics(run: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (none without one); a line cut short by a kill is skipped."""
    file = Path(run) / METRICS_FILE
    rows = []
    if present(file):
        for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            problem = metrics_problem(row)
            if problem:
                raise LimaError(f"{file}:{number}: {problem}; the file is damaged: delete that line (or the file, "
                                "which only the progress and loss curves read)")
            rows.append(row)
    return rows


def metrics_problem(row) -> str | None:
    """What is wrong with one metrics.jsonl row that its readers would trip over; None when nothing is."""
    if not isinstance(row, dict):
        return f"a {type(row).__name__}, not a JSON object"
    if "step" in row and (isinstance(row["step"], bool) or not isinstance(row["step"], int)):
        return f"step is {json.dumps(row['step'])[:40]}, not a whole number"
    for key in ("epoch", "loss", "eval_loss", "num_tokens"):
        if key in row and (isinstance(row[key], bool) or not isinstance(row[key], int | float | None)):
            return f"{key} is {json.dumps(row[key])[:40]}, not a number"
    return None


def checkpoints(run: str | Path) -> dict[int, Path]:
    """{step: folder} of a run's checkpoint-N folders, finished or not, in order."""
    found = {}
    for folder in Path(run).glob("checkpoint-*"):
        match = CHECKPOINT.match(folder.name)
        if match and folder.is_dir():
            found[int(match[1])] = folder
    return dict(sorted(found.items()))


def is_complete_checkpoint(folder: Path) -> bool:
    """The Trainer finished writing `folder`: its trainer_state.json (written last) is whole, its weights there."""
    if os.path.lexists(folder / CHECKPOINT_STATE) and not (folder / CHECKPOINT_STATE).is_file():
        return True  # something else in its place: not for removal as unfinished, checkpoint_damage names it
    try:
        json.loads((folder / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return any((folder / name).is_file() for name in CHECKPOINT_WEIGHTS)


# trainer_state.json fields the Trainer reads on resume, and the types it needs them in.
TRAINER_STATE_TYPES = {"global_step": (int,), "epoch": (int, float), "max_steps": (int,), "log_history": (list,),
                       "num_train_epochs": (int, float), "total_flos": (int, float), "train_batch_size": (int,),
                       "best_metric": (int, float, type(None)), "stateful_callbacks": (dict,)}


def checkpoint_damage(folder: Path) -> str | None:
    """What in a finished checkpoint-N would stop a resume with a traceback, in a few words (the file named);
    None when every file the Trainer reads back loads: trainer_state.json with its fields' types, the
    weights (safetensors headers and sizes), optimizer, scheduler and RNG states (read as the Trainer reads
    them, weights only, memory-mapped so a large optimizer state is not read twice)."""
    for name in (CHECKPOINT_STATE, *CHECKPOINT_WEIGHTS, "optimizer.pt", "scheduler.pt"):
        if os.path.lexists(folder / name) and not (folder / name).is_file():
            return f"{name} is not a regular file"
    try:
        state = json.loads((folder / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return f"{CHECKPOINT_STATE} is not readable JSON"
    if not isinstance(state, dict):
        return f"{CHECKPOINT_STATE} is not a JSON object"
    for key, kinds in TRAINER_STATE_TYPES.items():
        if key in state and (isinstance(state[key], bool) or not isinstance(state[key], kinds)):
            return f"{CHECKPOINT_STATE}: {key} is {json.dumps(state[key])[:40]}, not a {' or '.join(k.__name__ for k in kinds)}"
    if not all(isinstance(row, dict) for row in state.get("log_history", [])):
        return f"{CHECKPOINT_STATE}: log_history holds something other than objects"
    from safetensors import safe_open

    for name in CHECKPOINT_WEIGHTS:
        if (folder / name).is_file():
            try:
                with safe_open(folder / name, "pt") as weights:
                    weights.keys()
            except Exception as error:  # noqa: BLE001 - safetensors' own error types, any of them means damaged
                return f"{name} cannot be read ({str(error).splitlines()[0][:120]})"
    import torch
    from transformers.trainer import safe_globals

    for path in sorted([folder / "optimizer.pt", folder / "scheduler.pt", *folder.glob("rng_state*.pth")]):
        if not path.is_file():
            continue
        try:
            with safe_globals():
                loaded = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
        except Exception as error:  # noqa: BLE001 - torch's errors for a cut or foreign file vary by version
            return f"{path.name} cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:100]})"
        if path.name.startswith("rng_state") and not (isinstance(loaded, dict) and {"python", "numpy", "cpu"} <= set(loaded)):
            return f"{path.name} is not a random-number state (python, numpy, cpu)"
    return None


def last_complete_checkpoint(run: str | Path) -> Path | None:
    """The newest checkpoint-N the Trainer finished writing.

    A run killed while writing a checkpoint leaves one without trainer_state.json, or with a cut one: it is
    removed (it holds nothing that the previous checkpoint and a rerun do not give back) and the one before is used.
    """
    for folder in reversed(checkpoints(run).values()):
        if is_complete_checkpoint(folder):
            return folder
        print(f"Removing {folder.name}/: the interrupted run did not finish writing it")
        shutil.rmtree(folder)
    return None


def find_adapters(runs_dir: str | Path) -> dict[str, Path]:
    """{"RUN/epoch-03": path, ..., "RUN/adapter": path} for every run under runs_dir, epochs in order, final last.

    A folder reached through a symlink is searched too when it lies under runs_dir once resolved, the rule the
    app applies to every folder its Train tab reads (lima_lite.app.train_tab.under_runs); a link that leads out of
    runs_dir, or back up to a folder above itself (a loop), is not followed."""
    runs_dir = Path(runs_dir)
    root = runs_dir.resolve()
    found = []
    for top, dirs, files in os.walk(runs_dir, followlinks=True):
        here = Path(top).resolve()
        dirs[:] = sorted(d for d in dirs if _walkable(Path(top, d).resolve(), root, here))
        folder = Path(top)
        match = EPOCH.match(folder.name)
        if ADAPTER_CONFIG not in files or (folder.name != FINAL_ADAPTER and not match):
            continue  # checkpoints, Hub upload folders
        run = folder.parent.relative_to(runs_dir).as_posix()
        found.append(((run, int(match[1]) if match else float("inf")), f"{run}/{folder.name}".lstrip("./"), folder))
    return {label: folder for _, label, folder in sorted(found)}


def links_out_of(runs_dir: str | Path) -> list[Path]:
    """The symlinks under runs_dir that find_adapters does not follow because they lead out of runs_dir."""
    runs_dir = Path(runs_dir)
    root = runs_dir.resolve()
    links = []
    for top, dirs, _ in os.walk(runs_dir, followlinks=True):
        here = Path(top).resolve()
        for name in dirs:
            target = Path(top, name).resolve()
            if Path(top, name).is_symlink() and target != root and root not in target.parents:
                links.append(Path(top, name))
        dirs[:] = sorted(d for d in dirs if _walkable(Path(top, d).resolve(), root, here))
    return sorted(links)


def _walkable(target: Path, root: Path, here: Path) -> bool:
    """A subfolder (its resolved path `target`) of the folder resolved as `here`: under root, and no loop."""
    return root in target.parents and target != here and target not in here.parents


def _lock_holder(lock: Path) -> dict | None:
    """{"host", "pid"} of the run holding `lock`, or None when that run is gone (a dead pid on this host,
    or an unreadable lock file left by a kill while it was being written)."""
    try:
        if not present(lock):
            return None
        holder = json.loads(lock.read_text(encoding="utf-8"))
        pid, host = int(holder["pid"]), str(holder["host"])
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return holder  # another machine's process: it cannot be checked from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return holder


@contextmanager
def _takeover_turn(lock: Path):
    """Exclusive right to replace a dead `lock`, one process at a time. Held with flock on a file beside it,
    which the kernel releases when its process ends however it ends, so this guard can never go stale itself.
    (The file stays: removing it while another process waits on it would let a third lock a new one.)"""
    import fcntl  # noqa: PLC0415 (not on every platform)

    with open(lock.with_name(f".{LOCK_FILE}.takeover"), "a") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)  # a takeover is a read, an unlink and a link: milliseconds
        yield


def _refused(run, lock: Path, holder: dict | None) -> LimaError:
    who = f"pid {holder['pid']} on {holder['host']}" if holder else "another process"
    return LimaError(f"{run}: another `lima-lite train` ({who}) is writing this run; wait for it to end, or choose "
                     f"another output_dir (delete {lock} only if no such run is going on)")


@contextmanager
def run_lock(run: str | Path, take: bool = True):
    """Hold `run`/train.lock while training writes the folder: a second `train` on the same folder is refused
    in one line; a lock left by a killed run (its pid is gone) is taken over. `take=False` (the non-main
    processes of a multi-GPU run) does nothing.

    Two processes that find the same dead lock take it over in turn (_takeover_turn), each reading the lock
    again once it is its turn: the first replaces it, the second finds the first's live lock and is refused.
    Without turns the second would delete the first's new lock and both would train.
    """
    if not take:
        yield
        return
    lock = Path(run) / LOCK_FILE
    # Written beside it, then hard-linked into place: the lock appears whole, and only one process can create it.
    mine = lock.with_name(f".{LOCK_FILE}.{os.getpid()}")
    mine.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}), encoding="utf-8")
    try:
        try:
            os.link(mine, lock)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                raise _refused(run, lock, holder) from None
            with _takeover_turn(lock):
                holder = _lock_holder(lock)  # again: another process may have taken it over meanwhile
                if holder is not None:
                    raise _refused(run, lock, holder) from None
                print(f"Taking over {lock}: the run that held it has ended")
                lock.unlink(missing_ok=True)
                try:
                    os.link(mine, lock)
                except FileExistsError:  # a process that found no lock at all created it in between
                    raise _refused(run, lock, _lock_holder(lock)) from None
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
