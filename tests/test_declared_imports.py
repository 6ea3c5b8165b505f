"""Every third-party module the tests and the package import is declared in pyproject.toml, so the README's
test command passes in a fresh environment and not only where a package was installed by hand.

The tests' imports must come from `dependencies` or the `test` extra (what `pip install -e ".[test]"`
installs); the package's from `dependencies` or any extra (each optional feature says what to install).
"""

import ast
import importlib.metadata
import re
import sys

import tomllib

from helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# modules whose distribution is named otherwise, for those not installed here (found by name when installed)
DISTRIBUTIONS = {"llama_cpp": "llama-cpp-python"}
# the package, the tests' own modules and their support packages (oracles); not bench/: no test imports a script
LOCAL = {p.stem for p in (ROOT / "tests").glob("*.py")} | {p.parent.name for p in (ROOT / "tests").glob("*/__init__.py")} \
    | {"lima_lite"}


def distribution_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def imported_modules(files) -> dict[str, str]:
    """Top-level module -> the first file:line that imports it (function-local imports included)."""
    found = {}
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                shown = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file.relative_to(file.parents[1])
                found.setdefault(name.split(".")[0], f"{shown}:{node.lineno}")
    return found


def undeclared(files, declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(imported_modules(files).items()):
        if module in sys.stdlib_module_names or module in LOCAL:
            continue
        names = {distribution_name(d) for d in distributions.get(module, [DISTRIBUTIONS.get(module, module)])}
        if not names & declared:
            missing.append(f"{where}: imports {module} (from {', '.join(sorted(names))}), which pyproject.toml does not declare")
    return missing


def test_every_module_the_tests_import_is_installed_by_the_test_extra():
    declared = {distribution_name(r) for r in PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["test"]}
    assert undeclared(sorted((ROOT / "tests").glob("*.py")), declared) == []


def test_every_module_the_package_imports_is_declared():
    declared = {distribution_name(r) for group in [PYPROJECT["dependencies"], *PYPROJECT["optional-dependencies"].values()]
                for r in group}
    assert undeclared(sorted((ROOT / "lima_lite").rglob("*.py")), declared) == []


def test_the_check_sees_an_undeclared_import(tmp_path):
    file = tmp_path / "tests" / "test_probe.py"
    file.parent.mkdir()
    file.write_text("import pytest\n\n\ndef test_it():\n    import pexpect\n")
    assert undeclared([file], {"pytest"}) == [
        "tests/test_probe.py:5: imports pexpect (from pexpect), which pyproject.toml does not declare"]
