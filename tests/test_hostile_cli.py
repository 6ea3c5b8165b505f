"""Every command, found by walking `lima-lite --help` and each command's sub-commands: the ones that write go
through the output guard (an output is never an input, also through a symlink; never an existing file or a
foreign folder without --overwrite; never the base model's folder), and the ones that offer --json print one
JSON document on stdout and nothing else.

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_cli.py -q
"""

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import qa, write_jsonl
from lima_lite.cli import COMMANDS, main

QA = {"messages": [{"role": "user", "content": "How?"}, {"role": "assistant", "content": "Like this."}]}
DIALOGUE = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."},
                         {"role": "user", "content": "And?"}, {"role": "assistant", "content": "Then."}]}


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def sub_commands(command: str) -> list[str]:
    """`command` itself, or `command SUB` for each sub-command its --help lists ({a,b,...} or curate's sources)."""
    if command == "curate":
        from lima_lite.curate import SOURCES

        return [f"curate {name}" for name in SOURCES]
    _, out, _ = run([command, "--help"])
    section = out.split("positional arguments:")[-1].split("options:")[0] if "positional arguments:" in out else ""
    names = re.findall(r"^    ([a-z][a-z-]*)(?:\s|$)", section, flags=re.M)  # argparse's sub-parser list
    return [f"{command} {name}" for name in names] or [command]


def every_command() -> list[str]:
    return [name for command in COMMANDS for name in sub_commands(command)]


def snapshot(folder: Path) -> dict:
    return {str(p): (p.read_bytes() if p.is_file() else "dir") for p in sorted(folder.rglob("*")) if not p.is_symlink()}


def files(tmp: Path) -> dict:
    (tmp / "d.jsonl").write_text(json.dumps(QA) + "\n" + json.dumps(QA) + "\n")
    (tmp / "dd.jsonl").write_text(json.dumps(DIALOGUE) + "\n")
    (tmp / "p.jsonl").write_text(json.dumps({"id": "a", "prompt": "How?"}) + "\n")
    (tmp / "a.jsonl").write_text(json.dumps({"id": "a", "prompt": "How?", "answer": "So.", "model": "m"}) + "\n")
    (tmp / "dump.xml").write_text("<posts/>\n")
    (tmp / "w.csv").write_text("headline,title,text\n")
    (tmp / "s.ndjson").write_text("{}\n")
    (tmp / "mine").mkdir()
    (tmp / "mine" / "README.md").write_text("my notes\n")
    return {}


# command -> (argv with {tmp}, {base}, {adapter}; what it is refused for). Each writes an output that is an
# input through a symlink ({tmp}/link -> the input), or an existing folder it did not write.
WRITES = {
    "train": (["train", "quickstart", "model_name_or_path={base}", "dataset_name={tmp}/d.jsonl", "output_dir={base}",
               "chat_format=lima"], "base model"),
    "train-foreign": (["train", "quickstart", "model_name_or_path={base}", "dataset_name={tmp}/d.jsonl",
                       "output_dir={tmp}/mine", "chat_format=lima"], "did not write"),
    "push": (["push", "{adapter}", "--repo", "me/x", "--base-model", "me/base", "--dry-run", "--out", "{tmp}/mine"],
             "not written by"),
    "merge": (["merge", "{adapter}", "--out", "{tmp}/d.jsonl/merged"], "is a file"),
    "export gguf": (["export", "gguf", "{adapter}", "--out", "{tmp}/mine"], "exists"),
    "curate stackexchange": (["curate", "stackexchange", "--dump", "{tmp}/dump.xml", "--out", "{tmp}/link"], "input"),
    "curate wikihow": (["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/link"], "input"),
    "curate reddit": (["curate", "reddit", "--submissions", "{tmp}/s.ndjson", "--comments", "{tmp}/d.jsonl",
                       "--out", "{tmp}/link"], "input"),
    "select": (["select", "--strategy", "longest", "--k", "1", "{tmp}/d.jsonl", "{tmp}/link"], "input"),
    "data mix": (["data", "mix", "--single", "{tmp}/d.jsonl", "--dialogues", "{tmp}/dd.jsonl", "--out", "{tmp}/link"],
                 "input"),
    "data stats": (["data", "stats", "{tmp}/d.jsonl", "--out", "{tmp}/d.jsonl"], "d.jsonl"),
    "data overlap": (["data", "overlap", "{tmp}/d.jsonl", "{tmp}/p.jsonl", "--out", "{tmp}/link"], "input"),
    "eval generate": (["eval", "generate", "--model", "{adapter}", "--prompts", "{tmp}/p.jsonl", "--out", "{tmp}/link"],
                      "input"),
    "eval pairwise": (["eval", "pairwise", "--judge", "j@http://127.0.0.1:9/v1", "--ours", "{tmp}/a.jsonl", "--baseline",
                       "{tmp}/a.jsonl", "--out", "{tmp}/link"], "input"),
    "eval likert": (["eval", "likert", "--judge", "j@http://127.0.0.1:9/v1", "--answers", "{tmp}/a.jsonl", "--out",
                     "{tmp}/link"], "input"),
    "eval absolute": (["eval", "absolute", "--judge", "j@http://127.0.0.1:9/v1", "--answers", "{tmp}/a.jsonl", "--out",
                       "{tmp}/link"], "input"),
    "eval knowledge": (["eval", "knowledge", "--model", "{adapter}", "--questions", "{tmp}/p.jsonl", "--out", "{tmp}/link"],
                       "input"),
    "eval dialogue": (["eval", "dialogue", "--model", "{adapter}", "--dialogues", "{tmp}/dd.jsonl", "--judge",
                       "j@http://127.0.0.1:9/v1", "--out", "{tmp}/link"], "input"),
    "eval human": (["eval", "human", "{tmp}/a.jsonl", "--out", "{tmp}/link"], "input"),
    "eval report": (["eval", "report", "{tmp}/a.jsonl", "--out", "{tmp}/rep"], "input"),
    "eval select-epoch": (["eval", "select-epoch", "{run}", "--judge", "j@http://127.0.0.1:9/v1", "--epochs", "1",
                           "--out", "{tmp}/mine"], "did not write"),
}
# where each case's {tmp}/link points (an input), or the report's output that is an input
LINKS = {"curate stackexchange": "dump.xml", "curate wikihow": "w.csv", "curate reddit": "s.ndjson",
         "select": "d.jsonl", "data mix": "d.jsonl", "data overlap": "d.jsonl", "eval generate": "p.jsonl",
         "eval pairwise": "a.jsonl", "eval likert": "a.jsonl", "eval absolute": "a.jsonl", "eval knowledge": "p.jsonl",
         "eval dialogue": "dd.jsonl", "eval human": "a.jsonl"}
# The commands that write nothing the user names, or write through another command's guard.
NO_OUTPUT = {"plan": "prints a plan", "inspect": "prints examples", "env": "prints the machine",
             "chat": "/save asks before replacing (test_hostile_cli.test_chat_save_asks)",
             "ui": "the app: tests/test_hostile_app.py", "quickstart": "trains through train's guard (runs/quickstart)",
             "serve": "serves a model over HTTP; writes no file"}


def test_every_command_is_classified():
    found = set(every_command())
    assert {"eval generate", "data overlap", "export gguf", "curate reddit"} <= found  # the walk finds sub-commands
    classified = {name.removesuffix("-foreign") for name in WRITES} | set(NO_OUTPUT)
    assert found <= classified, f"commands that write outside the guard's tests: {sorted(found - classified)}"


@pytest.fixture(scope="module")
def made(tiny_llama_tied, tmp_path_factory) -> dict:
    from helpers import train_tiny

    run = train_tiny(tiny_llama_tied, tmp_path_factory.mktemp("guard") / "run", [qa(i) for i in range(4)],
                     save_strategy="epoch")
    return {"base": str(tiny_llama_tied), "adapter": str(run / "adapter"), "run": str(run)}


@pytest.mark.parametrize("name", WRITES)
def test_every_writing_command_goes_through_the_guard(name, made, tmp_path):
    argv, expected = WRITES[name]
    files(tmp_path)
    if name in LINKS:
        (tmp_path / "link").symlink_to(tmp_path / LINKS[name])
    if name == "eval report":
        (tmp_path / "rep").mkdir()
        (tmp_path / "rep" / "report.md").symlink_to(tmp_path / "a.jsonl")
    base_before = snapshot(Path(made["base"]))
    before = snapshot(tmp_path)
    code, out, err = run([a.format(tmp=tmp_path, **made) for a in argv])
    assert code == 2 and "Traceback" not in err, (code, out[-300:], err[-500:])
    assert expected in err, err
    assert snapshot(tmp_path) == before and snapshot(Path(made["base"])) == base_before


@pytest.mark.parametrize("answer, kept", [("", True), ("n", True), ("y", False)])
def test_chat_save_asks_before_replacing_and_says_why_it_did_not_save(tmp_path, answer, kept):
    from lima_lite.chat import Session

    class Engine:
        name = "m"

    said = io.StringIO()
    session = Session(Engine(), out=said)
    session.ask = lambda question: answer
    session.messages = list(QA["messages"])
    (tmp_path / "mine.jsonl").write_text("mine\n")
    session.handle(f"/save {tmp_path / 'mine.jsonl'}")
    assert ((tmp_path / "mine.jsonl").read_text() == "mine\n") == kept
    assert ("(not saved)" in said.getvalue()) == kept
    session.handle(f"/save {tmp_path}")
    session.handle(f"/save {tmp_path / 'mine.jsonl' / 'x.jsonl'}")
    lines = said.getvalue().splitlines()
    assert any("is a folder" in line for line in lines) and any("is a file, not a folder" in line for line in lines)


def test_training_writes_no_readme_into_its_folder(made):
    assert not (Path(made["run"]) / "README.md").exists()


# ---------------------------------------------------------------- --json: one JSON document on stdout


def no_tokenizer_base(tmp: Path, base: str) -> Path:
    folder = tmp / "config-only"
    folder.mkdir()
    shutil.copy(Path(base) / "config.json", folder / "config.json")
    return folder


JSON = {
    "plan": lambda tmp, made: ["plan", "quickstart", f"model_name_or_path={no_tokenizer_base(tmp, made['base'])}", "--json"],
    "plan --fit": lambda tmp, made: ["plan", "quickstart", f"model_name_or_path={no_tokenizer_base(tmp, made['base'])}",
                                     "--fit", "--json"],
    "inspect": lambda tmp, made: ["inspect", "quickstart", f"model_name_or_path={made['base']}",
                                  f"dataset_name={write_jsonl(tmp / 'd.jsonl', [qa(0)])}", "chat_format=lima", "--json"],
    "env": lambda tmp, made: ["env", "--json"],
    "data stats": lambda tmp, made: ["data", "stats", str(write_jsonl(tmp / "d.jsonl", [qa(0)])), "--json"],
}


def test_every_command_offering_json_is_tested():
    offering = {name for name in every_command() if "--json" in run([*name.split(), "--help"])[1]}
    assert offering and offering <= {name.removesuffix(" --fit") for name in JSON}, offering


@pytest.mark.parametrize("name", JSON)
def test_json_is_one_document_on_stdout(name, made, tmp_path):
    code, out, err = run(JSON[name](tmp_path, made))
    assert code in (0, 1), err[-500:]
    json.loads(out)  # the whole of stdout: nothing before or after the document
    if name.startswith("plan"):
        assert "no tokenizer files" in err  # the note went to stderr


# ---------------------------------------------------------------- a disk that refuses: one line


@pytest.mark.parametrize("code, words", [("ENOSPC", "disk is full"), ("EROFS", "read-only"), ("EACCES", "permission"),
                                         ("ENOENT", "deleted or moved")])
def test_a_disk_that_refuses_the_write_is_one_line(tmp_path, monkeypatch, code, words):
    import errno
    import os

    import lima_lite.files

    files(tmp_path)

    def refused(*args, dir=None, **kwargs):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(dir))

    monkeypatch.setattr(lima_lite.files.tempfile, "mkstemp", refused)  # every atomic write starts here
    before = snapshot(tmp_path)
    exit_code, out, err = run(["select", "--strategy", "longest", "--k", "1", str(tmp_path / "d.jsonl"),
                               str(tmp_path / "o.jsonl")])
    assert exit_code == 2 and "Traceback" not in err and words in err, err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert snapshot(tmp_path) == before


SEEDED = {  # every command that draws with a seed numpy takes (MinHash, k-means): argv before --seed
    "select": ["select", "--strategy", "random", "--k", "1", "{tmp}/in.jsonl", "{tmp}/out.jsonl"],
    "data mix": ["data", "mix", "--single", "{tmp}/in.jsonl", "--dialogues", "{tmp}/in.jsonl", "--out", "{tmp}/out.jsonl"],
    "curate wikihow": ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out.jsonl"],
    "curate reddit": ["curate", "reddit", "--submissions", "{tmp}/rs.jsonl", "--comments", "{tmp}/rc.jsonl",
                      "--out", "{tmp}/out.jsonl"],
    "curate stackexchange": ["curate", "stackexchange", "--dump", "{tmp}", "--out", "{tmp}/out.jsonl"],
}


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
@pytest.mark.parametrize("command", SEEDED)
def test_a_seed_numpy_cannot_take_is_a_usage_error_naming_the_flag(command, seed, tmp_path):
    """A negative seed or one of 2**32 used to reach numpy (MinHash in every curation's dedupe, k-means in
    `select --strategy diversity`) and end in its traceback; every seeded command now says so at the flag."""
    from helpers import run_cli

    write_jsonl(tmp_path / "in.jsonl", [qa(0)])
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in SEEDED[command]]
    done = run_cli(*argv, "--seed", seed)
    assert done.returncode == 2 and "--seed" in done.stderr and f"must be >= 0 and <= {2**32 - 1}" in done.stderr, \
        done.stderr[-500:]
    assert "Traceback" not in done.stderr and not (tmp_path / "out.jsonl").exists()
    assert run_cli(*argv, "--seed", str(2**32 - 1), "--help").returncode == 0  # the top of the range is taken


FIFO_INPUTS = {  # command -> argv with {fifo} where the command reads a file
    "train data": ["inspect", "quickstart", "dataset_name={fifo}"],
    "recipe": ["inspect", "{fifo}"],
    "select input": ["select", "--strategy", "longest", "--k", "1", "{fifo}", "{tmp}/out.jsonl"],
    "data stats": ["data", "stats", "{fifo}"],
}


@pytest.mark.parametrize("what", FIFO_INPUTS)
def test_a_fifo_given_as_an_input_is_named_as_such_not_as_missing(what, tmp_path):
    """A FIFO where a data, recipe or select file is expected is refused before any read (a read would wait for a
    writer forever) and the line says what is there instead of "file not found"."""
    import os

    from helpers import run_cli

    fifo = tmp_path / "input.jsonl"
    os.mkfifo(fifo)
    argv = [arg.replace("{fifo}", str(fifo)).replace("{tmp}", str(tmp_path)) for arg in FIFO_INPUTS[what]]
    done = run_cli(*argv)
    assert done.returncode == 2 and f"{fifo}: the " in done.stderr and "is a FIFO or a device, not a regular file" \
        in done.stderr, done.stderr[-500:]
    assert "not found" not in done.stderr and "Traceback" not in done.stderr
