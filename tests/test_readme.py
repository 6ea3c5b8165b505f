"""The README's commands exist and take the flags it shows, and CI runs its test command verbatim."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GROUPS = {"curate", "eval", "data"}  # commands whose first argument is a sub-step


def readme_commands() -> list[list[str]]:
    """Every `lima-lite ...` / `python -m lima_lite...` invocation in code blocks and `inline code`."""
    snippets = re.findall(r"```bash\n(.*?)```", README, re.S) + re.findall(r"`([^`\n]+)`", README)
    commands = []
    for snippet in snippets:
        for part in re.split(r"&&|\n", snippet):
            words = shlex.split(part.replace("…", "").strip())
            if words[:1] == ["lima-lite"] and len(words) > 1:
                commands.append(words)
            elif words[:3] == ["python", "-m", "lima_lite.chat"]:
                commands.append(["lima-lite", "chat", *words[3:]])
    return commands


def test_every_readme_command_parses_its_flags():
    commands = readme_commands()
    assert len(commands) >= 12
    for words in commands:
        name = words[1:3] if words[1] in GROUPS and len(words) > 2 else words[1:2]
        result = subprocess.run([sys.executable, "-m", "lima_lite", *name, "--help"], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, (words, result.stderr)
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in result.stdout, f"README uses {flag} with `lima-lite {' '.join(name)}`, which lacks it"


def test_ci_runs_the_readme_test_command_verbatim():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    quick_start, tests = blocks[0], blocks[1]
    assert "lima-lite quickstart" in quick_start and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_recipes_named_in_the_readme_exist():
    for name in set(re.findall(r"recipes/([\w.-]+)\.yaml", README)):
        assert (ROOT / "recipes" / f"{name}.yaml").is_file(), name
