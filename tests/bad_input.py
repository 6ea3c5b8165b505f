"""The bad-input runner the tables share (tests/test_bad_inputs.py, test_bad_runs_and_outputs.py,
test_hostile_inputs.py): a `Case` is a command (through lima_lite.cli.main) or an app handler fed something
wrong; `check_case` runs it in its own folder and demands exit status 2 (or the handler's LimaError), no
traceback, one error line with the expected words, and every file that was in the folder before unchanged.
Also the sample inputs several tables use.
"""

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from helpers import snapshot
from lima_lite import LimaError

NESTED = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit: json raises RecursionError
BAD_UTF8 = b"\xff\xfe not text \xc3\x28"
QA = {"messages": [{"role": "user", "content": "How?"}, {"role": "assistant", "content": "Like this."}]}


def jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


@dataclass
class Case:
    name: str
    run: list | object  # argv for lima_lite.cli.main ({tmp}, {base}, {adapter} filled in), or a handler call
    expect: tuple  # substrings of the error line ({tmp} filled in)
    files: dict = field(default_factory=dict)  # name -> str or bytes, written into the case's folder
    prepare: object = None  # prepare(tmp, fixtures) after the files, e.g. copy and damage the adapter
    needs: tuple = ()  # fixtures: "base", "adapter"



WIKIHOW_HEADER = "headline,title,text\n"
ARTICLE = '"Step one.","How to Sell Art","' + "Paint, then sell. " * 40 + '"\n'


SUBMISSION = {"id": "s1", "subreddit": "WritingPrompts", "title": "[WP] A story", "score": 50}
COMMENT = {"id": "c1", "link_id": "t3_s1", "parent_id": "t3_s1", "body": "Once upon a time. " * 80, "score": 40}


PROMPTS = {"p.jsonl": jsonl({"id": "a", "prompt": "How?"})}
ANSWER = {"id": "a", "prompt": "How?", "answer": "So.", "model": "m", "finish_reason": "eot", "sample": 0}
JUDGE = "m@http://127.0.0.1:9/v1"


class NoModels:
    """Models that fail the case if any handler gets as far as loading or running one."""

    labels = ["m", "n"]

    def engine(self, label):
        raise Accepted("a model was loaded: the input was not refused first")

    def prepare(self, label, messages, max_new_tokens):
        raise Accepted("a model was loaded: the input was not refused first")

    def stream(self, label, messages, **sampling):
        raise Accepted("a model was asked to reply: the input was not refused first")


REFUSED = "error: "  # how the app's note starts when it refuses (lima_lite.app.ui.failed)


class Accepted(Exception):
    pass


VOTES_DIR = [""]  # the case's folder, set by the runner


def fill(text: str, tmp: Path, fixtures: dict) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{base}", str(fixtures.get("base", ""))).replace(
        "{adapter}", str(fixtures.get("adapter", "")))


def outcome(c: Case, tmp: Path, fixtures: dict) -> tuple[str, str]:
    """("clear" | "traceback" | "silent" | "vague" | "changed", detail) of one case, run in `tmp`."""
    from lima_lite.cli import main

    for name, content in c.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, bytes) else fill(content, tmp, fixtures).encode()
        (tmp / name).write_bytes(text)
    if c.prepare is not None:
        c.prepare(tmp, fixtures)
    before = snapshot(tmp)
    expect = [fill(e, tmp, fixtures) for e in c.expect]
    stderr, stdout = io.StringIO(), io.StringIO()
    VOTES_DIR[0] = str(tmp)
    if callable(c.run):
        try:
            result = c.run()
            outputs = list(result) if hasattr(result, "__next__") else [result]
            # the app refuses in its note ("error: ..."), leaving the page as it was; a handler may also raise
            notes = [part for out in outputs for part in (out if isinstance(out, tuple) else (out,))
                     if isinstance(part, str) and part.startswith(REFUSED)]
            if not notes:
                return "silent", "the handler accepted it"
            lines = notes[-1].removeprefix(REFUSED).splitlines()
        except Accepted as error:
            return "silent", str(error)
        except LimaError as error:
            lines = str(error).splitlines()
        except Exception as error:  # noqa: BLE001 - the point is to see what escapes
            return "traceback", f"{type(error).__name__}: {error}"[:300]
    else:
        argv = [fill(a, tmp, fixtures) for a in c.run]
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
                code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except Exception as error:  # noqa: BLE001
            return "traceback", f"{type(error).__name__}: {error}"[:300]
        err = stderr.getvalue()
        if "Traceback" in err:
            return "traceback", err[-300:]
        if code == 0:
            return "silent", f"exit 0: {stdout.getvalue()[-200:]}"
        if code != 2:
            return "vague", f"exit {code}: {err[-300:]}"
        lines = err.splitlines()
        first = next((i for i, line in enumerate(lines) if "error" in line), len(lines))
        lines = lines[first:]  # the error and the rows it lists (load_conversations names every bad row)
    if not any(all(e in line for e in expect) for line in lines):
        return "vague", f"no line with {expect}: {lines[:3]}"
    if snapshot(tmp) != {k: v for k, v in before.items()}:
        changed = sorted(k for k in set(before) | set(snapshot(tmp)) if before.get(k) != snapshot(tmp).get(k))
        if any(k in before for k in changed):
            return "changed", f"pre-existing files changed: {changed}"
    return "clear", ""


def check_case(c: Case, tmp_path, request) -> None:
    """Run one case with the fixtures it needs; it must fail in one clear line."""
    fixtures = {}
    if "base" in c.needs:
        fixtures["base"] = request.getfixturevalue("tiny_llama_tied")
    if "adapter" in c.needs:
        fixtures["adapter"] = request.getfixturevalue("tiny_adapter")
    folder = tmp_path / "case"
    folder.mkdir()
    kind, detail = outcome(c, folder, fixtures)
    assert kind == "clear", f"{kind}: {detail}"
