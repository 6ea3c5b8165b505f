"""The dispatcher sits on top: every command module runs through lima_lite.entry, none imports lima_lite.cli."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lima_lite"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_no_module_imports_the_dispatcher_back():
    upward = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if p.name != "__main__.py" and "lima_lite.cli" in imported_modules(p)}
    assert upward == set(), f"{sorted(upward)} import lima_lite.cli; import `run` from lima_lite.entry instead"
