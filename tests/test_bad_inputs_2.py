"""Bad input, second table: outputs that would replace inputs, resumes that would change a run, two runs in
one folder, a run that diverges, damaged bases and adapters, hostile data. Same runner and rules as
tests/test_bad_inputs.py: exit status 2, one line naming the file (and line, field), no traceback, every
file that was in the case's folder before byte-identical after.

    $ PYTHONPATH=$PWD python -m pytest tests/test_bad_inputs_2.py -q --tb=short
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from test_bad_inputs import ARTICLE, COMMENT, QA, SUBMISSION, WIKIHOW_HEADER, Case, jsonl, outcome, tiny_adapter  # noqa: F401

CASES: list[Case] = []


def case(*args, **kwargs) -> None:
    CASES.append(Case(*args, **kwargs))


# ---------------------------------------------------------------- outputs never replace inputs or existing files

POOL = {"pool.jsonl": jsonl(QA, QA)}
SELECT = ["select", "--strategy", "longest", "--k", "1"]
MIX = {"s.jsonl": jsonl(QA), "d.jsonl": jsonl({"conversations": ["q", "a", "q2", "a2"]})}


def hard_link(source: str, name: str):
    def prepare(tmp: Path, fixtures: dict) -> None:
        os.link(tmp / source, tmp / name)
    return prepare


case("select-out-is-input", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/pool.jsonl"], ("{tmp}/pool.jsonl", "input"),
     files=POOL)
case("select-out-is-input-overwrite", [*SELECT, "--overwrite", "{tmp}/pool.jsonl", "{tmp}/./pool.jsonl"],
     ("{tmp}/pool.jsonl", "input"), files=POOL)
case("select-out-is-input-hard-link", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/link.jsonl", "--overwrite"],
     ("{tmp}/link.jsonl", "input"), files=POOL, prepare=hard_link("pool.jsonl", "link.jsonl"))
case("select-out-exists", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/out.jsonl"], ("{tmp}/out.jsonl", "exists", "--overwrite"),
     files={**POOL, "out.jsonl": "mine\n"})
case("select-report-exists", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/out.jsonl"], ("{tmp}/out.report.md", "exists"),
     files={**POOL, "out.report.md": "my notes\n"})
case("select-out-folder", [*SELECT, "{tmp}/pool.jsonl", "{tmp}/outdir", "--overwrite"], ("{tmp}/outdir", "folder"),
     files={**POOL, "outdir/keep.txt": "mine\n"})
case("mix-out-is-single", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl", "--out",
                           "{tmp}/s.jsonl"], ("{tmp}/s.jsonl", "input"), files=MIX)
case("mix-out-is-dialogues", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl", "--out",
                              "{tmp}/d.jsonl", "--overwrite"], ("{tmp}/d.jsonl", "input"), files=MIX)
case("mix-out-exists", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl", "--out",
                        "{tmp}/m.jsonl"], ("{tmp}/m.jsonl", "exists"), files={**MIX, "m.jsonl": "mine\n"})
case("mix-out-folder", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl", "--out",
                        "{tmp}/m"], ("{tmp}/m", "folder"), files={**MIX, "m/keep.txt": "mine\n"})
WIKIHOW = {"w.csv": WIKIHOW_HEADER + ARTICLE}
case("wikihow-out-is-csv", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/w.csv"],
     ("{tmp}/w.csv", "input"), files=WIKIHOW)
case("wikihow-out-exists", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out.jsonl"],
     ("{tmp}/out.jsonl", "exists"), files={**WIKIHOW, "out.jsonl": "mine\n"})
case("wikihow-out-folder", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out"],
     ("{tmp}/out", "folder"), files={**WIKIHOW, "out/keep.txt": "mine\n"})
case("wikihow-keeps-nothing", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out.jsonl"],
     ("{tmp}/w.csv", "no example was kept", "answer_too_short"),
     files={"w.csv": WIKIHOW_HEADER + '"Step.","How to Sell Art","Too short."\n'})
REDDIT = {"rs.jsonl": jsonl(SUBMISSION), "rc.jsonl": jsonl(COMMENT)}
case("reddit-out-is-comments", ["curate", "reddit", "--submissions", "{tmp}/rs.jsonl", "--comments", "{tmp}/rc.jsonl",
                                "--out", "{tmp}/rc.jsonl"], ("{tmp}/rc.jsonl", "input"), files=REDDIT)
case("reddit-test-out-is-out", ["curate", "reddit", "--submissions", "{tmp}/rs.jsonl", "--comments", "{tmp}/rc.jsonl",
                                "--out", "{tmp}/o.jsonl", "--test-out", "{tmp}/o.jsonl"], ("{tmp}/o.jsonl", "two"),
     files=REDDIT)
case("reddit-keeps-nothing", ["curate", "reddit", "--submissions", "{tmp}/rs.jsonl", "--comments", "{tmp}/rc.jsonl",
                              "--out", "{tmp}/o.jsonl", "--min-score", "1000"], ("{tmp}/rs.jsonl", "no example was kept"),
     files=REDDIT)
case("stackexchange-out-exists", ["curate", "stackexchange", "--dump", "{tmp}/dump", "--out", "{tmp}/o.jsonl"],
     ("{tmp}/o.jsonl", "exists"), files={"dump/keep.txt": "x", "o.jsonl": "mine\n"})


# ---------------------------------------------------------------- the runner (tests/test_bad_inputs.py's)


def test_cases_are_named_once():
    from test_bad_inputs import CASES as FIRST

    names = [c.name for c in CASES + FIRST]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input(c: Case, tmp_path, request):
    fixtures = {}
    if "base" in c.needs:
        fixtures["base"] = request.getfixturevalue("tiny_llama_tied")
    if "adapter" in c.needs:
        fixtures["adapter"] = request.getfixturevalue("tiny_adapter")
    folder = tmp_path / "case"
    folder.mkdir()
    kind, detail = outcome(c, folder, fixtures)
    assert kind == "clear", f"{kind}: {detail}"


def test_overwrite_replaces_an_output_and_its_report(tmp_path):
    from lima_lite.cli import main

    (tmp_path / "pool.jsonl").write_text(jsonl(QA, {"messages": [QA["messages"][0], {"role": "assistant",
                                                                                     "content": "A longer answer."}]}))
    (tmp_path / "out.jsonl").write_text("old\n")
    (tmp_path / "out.report.md").write_text("old\n")
    argv = [*SELECT, str(tmp_path / "pool.jsonl"), str(tmp_path / "out.jsonl")]
    assert main(argv) == 2 and (tmp_path / "out.jsonl").read_text() == "old\n"
    assert main([*argv, "--overwrite"]) == 0
    assert "A longer answer." in (tmp_path / "out.jsonl").read_text()
    assert (tmp_path / "out.report.md").read_text() != "old\n"
