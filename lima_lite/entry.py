"""Running one command's `main(argv)` as a program: what `lima-lite COMMAND` and `python -m lima_lite.MODULE` share.

    >>> sys.exit(run("lima_lite.chat:main", sys.argv[1:]))

A LimaError becomes one line on stderr and exit status 2, Ctrl-C the status 130, and third-party messages a
user cannot act on are silenced first. Every module with a `main` ends with this, so no module imports
the dispatcher (lima_lite/cli.py) back.
"""

import importlib
import sys

from lima_lite import LimaError
from lima_lite.quiet import quiet_third_party


def run(target: str, argv: list[str]) -> int:
    """Call `module:function` with argv; a LimaError becomes one line on stderr and exit status 2."""
    module, function = target.split(":")
    quiet_third_party()
    try:
        return getattr(importlib.import_module(module), function)(argv) or 0
    except LimaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
