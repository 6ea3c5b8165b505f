"""The one way lima_lite writes files and folders: atomically, with the usual permissions.

    >>> write_jsonl(rows, "data/lima-1k.jsonl")        # a temporary file beside it, then a rename
    >>> write_json("runs/x/run.json", {"status": "running"})
    >>> with atomic_dir("runs/x/adapter") as tmp:      # fill tmp; it becomes runs/x/adapter on success
    ...     model.save_pretrained(tmp)
    >>> rows = read_jsonl("answers.jsonl")             # [(line number, row), ...]; bad lines name file:line
    >>> check_outputs([out, report], inputs=[source], overwrite=args.overwrite)  # before any work

A crash or an error leaves the previous file or folder as it was and no half-written one. Files come out
0644 and folders 0755 under the usual umask 022 (the umask is respected), so another user, a container or a
web server can read a shared run: `tempfile` alone would leave them 0600 and 0700.
"""

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from lima_lite import LimaError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(path: Path, mode: int) -> None:
    os.chmod(path, mode & ~_umask())


@contextmanager
def atomic_file(path: str | Path, mode: str = "w"):
    """Yield an open temporary file beside `path`; when the block succeeds it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as out:
            yield out
        _publish(Path(tmp), 0o666)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path) as out:
        out.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path, "wb") as out:
        out.write(data)
    return Path(path)


def write_json(path: str | Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(rows, path: str | Path) -> Path:
    """Rows as JSONL, one object a line, UTF-8."""
    with atomic_file(path) as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """A matplotlib figure as PNG, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path, "wb") as out:
            fig.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


@contextmanager
def atomic_dir(target: str | Path, replace: bool = True):
    """Yield a temporary folder beside `target`; when the block succeeds it becomes `target` by a rename.

    replace=False refuses (before anything is written) when `target` already exists, for folders a
    command must not overwrite. The folder and everything in it get the usual permissions.
    """
    target = Path(target)
    if not replace and target.exists():
        raise LimaError(f"{target}: already exists; choose another path or delete it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        _publish(tmp, 0o777)
        for folder, dirs, files in os.walk(tmp):
            for name in dirs:
                _publish(Path(folder) / name, 0o777)
            for name in files:
                file = Path(folder) / name
                if not file.is_symlink():
                    _publish(file, 0o777 if os.access(file, os.X_OK) else 0o666)
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, old / target.name)  # moved aside, deleted only once the new one is in place
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def add_overwrite_flag(parser) -> None:
    """--overwrite, for every command that writes files the user names (see check_outputs)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs (and their reports) that already exist; an input is never replaced")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # a hard link, or the same file under another mount
    except OSError:
        return False


def check_outputs(outputs, inputs=(), overwrite: bool = False) -> None:
    """The one rule for the files a command writes, checked before it reads or computes anything: an output
    is never one of its inputs (even with --overwrite: the input would be gone before it was read), never a
    folder, never named twice, and a file that exists is replaced only with `overwrite`."""
    seen = []
    for output in map(Path, outputs):
        for source in map(Path, inputs):
            if _same_file(output, source):
                raise LimaError(f"{output}: is also an input ({source}); write the output to another file")
        if output.is_dir():
            raise LimaError(f"{output}: is a folder; give the output a file name")
        check_parent(output)
        if any(_same_file(output, other) for other in seen):
            raise LimaError(f"{output}: named for two outputs; give each its own file")
        if output.exists() and not overwrite:
            raise LimaError(f"{output}: already exists; choose another name, or pass --overwrite to replace it")
        seen.append(output)


def check_parent(output: Path) -> None:
    """Refuse an output whose folder would have to be made where a file is (`notes.txt/out.jsonl`)."""
    for parent in Path(output).parents:
        if parent.exists():
            if not parent.is_dir():
                raise LimaError(f"{output}: {parent} is a file, not a folder; choose another path")
            return


def inside(path: Path, folder: Path) -> bool:
    """`path` is `folder` or lies under it, by resolved path (through `..` and symlinks)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output_dir(folder, inputs=(), protected=(), own=(), overwrite: bool = False, how: str = "--out",
                     writes=None) -> Path:
    """The one rule for a folder a command writes (train, merge, export, push), checked before any work: never
    an input, inside one or holding one (by resolved path, through symlinks); never a `protected` folder (the
    base model's) or inside it; never under a file; an existing non-empty folder only when it is the command's
    own (it holds one of the names in `own`) or with `overwrite`. `how` says how the user names the folder.
    `writes` (glob patterns): a command that only adds its own names to a folder (train) may use a foreign one
    that holds none of them; nothing of the user's is then replaced."""
    folder = Path(folder)
    for source in map(Path, (p for p in inputs if p)):
        if source.exists() and (inside(folder, source) or inside(source, folder)):
            raise LimaError(f"{folder}: is or holds an input ({source}); choose another {how}")
    for guarded in map(Path, (p for p in protected if p)):
        if guarded.exists() and inside(folder, guarded):
            raise LimaError(f"{folder}: is inside the base model's folder ({guarded}); choose another {how}")
    if folder.exists() and not folder.is_dir():
        raise LimaError(f"{folder}: is a file, not a folder; choose another {how}")
    check_parent(folder)
    if folder.is_dir() and not overwrite and not any((folder / name).exists() for name in own):
        found = sorted(p.name for p in folder.iterdir()) if writes is None else \
            sorted({p.name for pattern in writes for p in folder.glob(pattern)})
        if found:
            raise LimaError(f"{folder}: already exists and holds files this command did not write ({', '.join(found[:3])}"
                            f"{', ...' if len(found) > 3 else ''}); choose another {how} or empty that folder")
    return folder


def own_regular_file(path: Path, root: Path) -> Path:
    """`path` when it is a regular file of `root` (a symlink only when it stays inside `root`): what an upload
    may hold. A symlink out of the folder (a private key, another run's files) is refused by name."""
    path = Path(path)
    if path.is_symlink() and not inside(path, root):
        raise LimaError(f"{path}: is a link to {os.path.realpath(path)}, outside {root}; an upload holds only the "
                        "folder's own files: replace the link by the file or remove it")
    if not path.is_file():
        raise LimaError(f"{path}: is not a regular file; an upload holds only the folder's own files")
    return path


JSON_STDOUT: list = []  # the real stdout while a --json command runs (lima_lite.entry.json_only)


def print_json(data, indent: int | None = None) -> None:
    """A --json command's one JSON document, on stdout even while its notes go to stderr (entry.json_only)."""
    out = JSON_STDOUT[-1] if JSON_STDOUT else sys.stdout
    out.write(json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
    out.flush()


class JsonlError(LimaError):
    pass


class DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    found = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(key)
        found[key] = value
    return found


def loads_strict(text: str):
    """json.loads, refusing what it would otherwise read silently wrong: a key set twice in one object
    (json keeps the last, so a whole conversation can vanish). Raises json's errors, RecursionError (nested
    too deeply), DuplicateKey, or ValueError (an integer longer than Python converts, 4,300 digits)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def loads_line(line: str):
    """loads_strict of one JSONL line, its line end left out: a line cut short then fails at the column after
    its last character, not at column 1 of the "next line" that the line end would start."""
    return loads_strict(line.rstrip("\r\n"))


def json_problem(error: Exception) -> str:
    """What loads_strict found wrong, for a `file:line: ...` message."""
    if isinstance(error, json.JSONDecodeError):
        line = error.doc.rstrip()
        end = " (the end of the line: is it cut short?)" if error.pos >= len(line) and "\n" not in line else ""
        return f"invalid JSON at column {error.colno}{end}: {error.msg}"
    if isinstance(error, RecursionError):
        return "invalid JSON: nested too deeply"
    if isinstance(error, DuplicateKey):
        return f"{error.args[0]}: set twice in one object (JSON would keep only the last); keep one"
    return f"invalid JSON: a number longer than {sys.get_int_max_str_digits():,} digits"


def no_file(path: Path, kind: str = "") -> str:
    """Why `path`, which is not a regular file, cannot be read: absent ("not found"), or a folder, a broken link, a
    FIFO or a device in its place (a read of a FIFO would wait forever, so none is tried)."""
    label = f"{kind} file" if kind else "file"
    if not os.path.lexists(path):
        return f"{path}: {label} not found"
    what = "a folder" if path.is_dir() else "a broken link" if not path.exists() else "a FIFO or a device"
    return f"{path}: the {label} is {what}, not a regular file"


def read_jsonl(path: str | Path) -> list[tuple[int, object]]:
    """(line number, parsed row) for every non-blank line; the first bad line raises with file:line."""
    path = Path(path)
    if not path.is_file():
        raise JsonlError(no_file(path))
    rows = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, loads_line(line)))
                except (ValueError, RecursionError) as error:
                    raise JsonlError(f"{path}:{number}: {json_problem(error)}") from None
    except UnicodeDecodeError as error:
        raise JsonlError(f"{path}: not UTF-8 text (byte {error.start} of the file cannot be decoded)") from None
    return rows
