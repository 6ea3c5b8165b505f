"""The README's commands exist and take the flags it shows, and CI runs its test command verbatim.

Each command's own argparse parser judges its flags: the parser is caught as the command's `main` is about
to parse (nothing runs), every `--flag` must be one of its options by its exact name (not a prefix, not a
substring of its help), and a command written out in full (no `…`) must parse as a whole: values of the right
type and choice, every required argument given.
"""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from lima_lite.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GROUPS = {"curate", "eval", "data", "export"}  # commands whose first argument is a sub-step


def readme_commands() -> list[tuple[list[str], bool]]:
    """Every `lima-lite ...`, `python -m lima_lite.chat ...` and `... -m lima_lite.cli ...` invocation in code
    blocks and `inline code`, as (words from the command name on, whether it is written out in full)."""
    snippets = re.findall(r"```bash\n(.*?)```", README, re.S) + re.findall(r"`([^`\n]+)`", README)
    commands = []
    for snippet in snippets:
        for part in re.split(r"&&|\n", snippet):
            words = shlex.split(part.replace("…", "").strip())
            complete = "…" not in part
            if words[:1] == ["lima-lite"] and len(words) > 1:
                commands.append((words[1:], complete))
            elif words[:3] == ["python", "-m", "lima_lite.chat"]:
                commands.append((["chat", *words[3:]], complete))
            elif "lima_lite.cli" in words and words[words.index("lima_lite.cli") - 1] == "-m":
                commands.append((words[words.index("lima_lite.cli") + 1:], complete))
    return commands


class Parsing(Exception):
    """Raised instead of parsing: carries the parser a command's main was about to use."""

    def __init__(self, parser):
        self.parser = parser


def command_parser(name: str, args: list[str], monkeypatch) -> argparse.ArgumentParser:
    """The parser `lima-lite NAME ARGS` builds, caught when its main first parses (a group's main may first
    pick the sub-step's module by ARGS[0])."""
    import importlib

    def catch(self, args=None, namespace=None):
        raise Parsing(self)

    module, function = COMMANDS[name][0].split(":")
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(Parsing) as caught:
            getattr(importlib.import_module(module), function)(args)
    return caught.value.parser


def sub_steps(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for name, sub in a.choices.items()}


def flags(words: list[str]) -> list[str]:
    """The options a command line names: `--flag value` and `--flag=value` alike."""
    return [w.split("=", 1)[0] for w in words if w.startswith("-") and not re.fullmatch(r"-\d[\d.]*", w)]


def parse_error(parser: argparse.ArgumentParser, words: list[str], monkeypatch) -> str | None:
    """argparse's message for `words`, or None when they parse."""
    def error(self, message):
        raise Parsing(message)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "error", error)
        try:
            parser.parse_args(words)
        except Parsing as failed:
            return failed.parser
        except SystemExit as done:  # --help prints and exits 0
            return None if done.code == 0 else f"exit {done.code}"
    return None


def test_readme_commands_are_found():
    commands = readme_commands()
    assert len(commands) >= 12
    names = {words[0] for words, _ in commands}
    assert {"quickstart", "train", "chat", "select", "eval", "push", "merge", "export", "plan"} <= names
    assert sum(complete for _, complete in commands) >= 8  # most are written out in full, and parsed whole


@pytest.mark.parametrize("words,complete", readme_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_readme_command_parses_its_flags(words, complete, monkeypatch):
    assert words[0] in COMMANDS, f"README runs `lima-lite {words[0]}`, which is not a command"
    args = words[1:]
    parser = command_parser(words[0], args, monkeypatch)
    if words[0] in GROUPS:  # the sub-step: a sub-parser of the caught one, or the caught one itself
        steps = sub_steps(parser)
        assert args[0] in steps or not steps, f"`lima-lite {words[0]}` has no step {args[0]!r}: {sorted(steps)}"
        parser, args = steps.get(args[0], parser), args[1:]
    for flag in flags(args):
        assert flag in parser._option_string_actions, (
            f"README uses {flag} with `lima-lite {' '.join(words[:2])}`, whose options are "
            f"{sorted(o for o in parser._option_string_actions if o.startswith('--'))}")
    if complete:
        assert parse_error(parser, args, monkeypatch) is None, (words, parse_error(parser, args, monkeypatch))


def test_the_check_catches_a_prefix_a_bad_value_and_a_missing_argument(monkeypatch):
    """The check itself: a prefix of a real option, a misspelt value and a missing argument are caught."""
    parser = command_parser("select", [], monkeypatch)
    assert "--k" in parser._option_string_actions and "--strat" not in parser._option_string_actions
    assert "invalid choice" in parse_error(parser, ["--strategy", "longer", "a.jsonl", "b.jsonl"], monkeypatch)
    assert "required" in parse_error(parser, ["--strategy", "longest"], monkeypatch)
    assert parse_error(parser, ["--strategy", "longest", "a.jsonl", "b.jsonl"], monkeypatch) is None


def test_ci_runs_the_readme_test_command_verbatim():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    quick_start, tests = blocks[0], blocks[1]
    assert "lima-lite quickstart" in quick_start and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_recipes_named_in_the_readme_exist():
    for name in set(re.findall(r"recipes/([\w.-]+)\.yaml", README)):
        assert (ROOT / "recipes" / f"{name}.yaml").is_file(), name


def test_ci_runs_the_test_command_in_a_virtual_environment_it_makes():
    """Not in whatever this machine has installed: a venv made by the script, activated before the command."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = re.findall(r"```bash\n(.*?)\n```", README, re.S)[1]
    made = next(k for k, line in enumerate(lines) if re.match(r"python3? -m venv ", line))
    activated = next(k for k, line in enumerate(lines) if re.match(r'\. "?\$venv/bin/activate', line))
    assert made < activated < lines.index(test_command)
