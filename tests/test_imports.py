"""The package's import graph, read from the source: no cycle (function-local imports included), and no library
module imports a command module (the commands sit on top: cli.py's COMMANDS, curate's sources, `python -m`
entry points)."""

import ast
from pathlib import Path

from lima_lite.cli import COMMANDS
from lima_lite.curate import SOURCES

PACKAGE = Path(__file__).resolve().parents[1] / "lima_lite"
# `lima-lite`, `python -m lima_lite`, and the training process the Train tab starts (`python -m lima_lite.app.train_tab`)
ENTRY_POINTS = {"lima_lite.cli", "lima_lite.__main__", "lima_lite.app.train_tab"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
COMMAND_MODULES = ({target.split(":")[0] for target, _ in COMMANDS.values()} | {module for module, _ in SOURCES.values()}
                   | ENTRY_POINTS)


def type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported(path: Path) -> set[str]:
    """The package's modules that `path` imports, at the top or inside functions (not under TYPE_CHECKING)."""
    found, name = set(), module_name(path)
    pending = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and type_checking_only(node):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*package, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target not in ("lima_lite", name)}
    return found


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_package():
    assert {"lima_lite.train", "lima_lite.resolve", "lima_lite.evaluate.cli", "lima_lite.data.overlap"} <= set(MODULES)
    assert "lima_lite.resolve" in GRAPH["lima_lite.train"] and "lima_lite.conversations" in GRAPH["lima_lite.data.overlap"]
    assert COMMAND_MODULES <= set(MODULES)


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_no_library_module_imports_a_command():
    upward = sorted(f"{name} -> {target}" for name, targets in GRAPH.items() if name not in COMMAND_MODULES
                    for target in targets if target in COMMAND_MODULES)
    assert upward == []


TESTS = PACKAGE.parent / "tests"


def test_files_stand_on_their_own():
    """No test file imports another test file or a bench/ script, and none reaches them through sys.path:
    what several tests share lives in helpers.py, bad_input.py, conftest.py or the oracles package."""
    bench = {path.stem for path in (PACKAGE.parent / "bench").glob("*.py")}
    offenders = []
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name} imports {name}" for name in names
                          if name.split(".")[0].startswith("test_") or name.split(".")[0] in bench]
            if isinstance(node, ast.Attribute) and ast.unparse(node) in ("sys.path.insert", "sys.path.append"):
                offenders.append(f"{path.name} changes sys.path")
    assert bench and not offenders, offenders
