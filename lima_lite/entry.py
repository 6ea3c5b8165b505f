"""Running one command's `main(argv)` as a program: what `lima-lite COMMAND` and `python -m lima_lite.MODULE` share.

    >>> sys.exit(run("lima_lite.chat:main", sys.argv[1:]))

A LimaError becomes one line on stderr and exit status 2, Ctrl-C the status 130, and third-party messages a
user cannot act on are silenced first. Every module with a `main` ends with this, so no module imports
the dispatcher (lima_lite/cli.py) back.
"""

import errno
import importlib
import sys
from contextlib import contextmanager

from lima_lite import LimaError, files
from lima_lite.quiet import quiet_third_party

# What the machine, not lima_lite, refused: a read-only or full disk, a quota, no permission, a folder
# deleted or moved while the command ran, an input/output error. Said in one line, like a LimaError.
DISK_ERRORS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EIO,
               errno.ENOTDIR, errno.EISDIR}
DISK_HINTS = {errno.EROFS: "the disk is read-only: write elsewhere", errno.ENOSPC: "the disk is full: free space or "
              "write elsewhere", errno.EDQUOT: "over the disk quota", errno.ENOENT: "was it deleted or moved while the "
              "command ran?", errno.EACCES: "no permission: check the folder's owner and mode",
              errno.EPERM: "not permitted: check the folder's owner and mode"}


def disk_error(error: OSError) -> str:
    """One line for an OSError: the file, the system's words, what to do."""
    where = error.filename if error.filename is not None else "a file"
    hint = DISK_HINTS.get(error.errno)
    return f"{where}: {error.strerror or error}" + (f" ({hint})" if hint else "")


@contextmanager
def json_only(on: bool):
    """With --json, stdout carries one JSON document and nothing else: while the command runs, everything
    printed (notes, warnings, a library's messages) goes to stderr, and files.print_json writes to the real
    stdout. Every command that offers --json gets this here, so a script's `| jq` never meets a note."""
    if not on:
        yield
        return
    files.JSON_STDOUT.append(sys.stdout)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = files.JSON_STDOUT.pop()


def asks_json(argv: list[str]) -> bool:
    """--json, or what argparse also reads as --json: `--js`, `--jso` (not `--j`, which is `select`'s --judge)."""
    return any(len(arg) >= 4 and "--json".startswith(arg) for arg in argv if isinstance(arg, str))


def run(target: str, argv: list[str]) -> int:
    """Call `module:function` with argv; a LimaError becomes one line on stderr and exit status 2."""
    module, function = target.split(":")
    quiet_third_party()
    try:
        with json_only(asks_json(argv)):
            return getattr(importlib.import_module(module), function)(argv) or 0
    except LimaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in DISK_ERRORS:
            raise
        print(f"error: {disk_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
