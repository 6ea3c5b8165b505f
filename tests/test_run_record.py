"""run.json is written and read only through lima_lite.layout's RunRecord, checked once on read."""

import json
import re
from pathlib import Path

import pytest

from helpers import write_run
from lima_lite import LimaError
from lima_lite.layout import RunRecord, read_run

ROOT = Path(__file__).resolve().parents[1]


def test_a_record_reads_back_as_written(tmp_path):
    write_run(tmp_path, status="finished", processes=2, fit={"chosen": {}})
    run = read_run(tmp_path)
    assert isinstance(run, RunRecord) and run.status == "finished" and run.processes == 2 and run.fit == {"chosen": {}}
    assert run.total_steps == 2 and read_run(tmp_path / "none") is None


def set_in(section: str, key: str, value):
    def change(record: dict) -> None:
        (record[section] if section else record)[key] = value
    return change


@pytest.mark.parametrize("change, problem", [
    (lambda record: [1, 2], "not a run record (a JSON list, expected an object)"),
    (lambda record: {}, "model.load_in_4bit: missing (and "),
    (set_in("model", "load_in_4bit", "yes"), "model.load_in_4bit: 'yes' is not bool"),
    (set_in("", "processes", 2.5), "processes: 2.5 is not int"),
    (set_in("", "status", None), "status: None is not str"),
    (lambda record: record.pop("steps_per_epoch") and None, "steps_per_epoch: missing"),
])
def test_a_damaged_or_older_record_is_one_line_naming_the_file_and_field(tmp_path, change, problem):
    record = json.loads((write_run(tmp_path / "whole") / "run.json").read_text())
    changed = change(record)
    (tmp_path / "run.json").write_text(json.dumps(record if changed is None else changed))
    with pytest.raises(LimaError) as error:
        read_run(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'run.json'}: {problem}") and "\n" not in message


def test_run_json_is_read_only_through_layout():
    """No module but layout.py opens run.json or indexes a run record as a dict."""
    raw = re.compile(r"RUN_FILE\)?\.read_text|run\.json.*json\.load|\brun(?:_info|_record)?\[\"|settings\.get\(\"(?:base|data)")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in sorted((ROOT / "lima_lite").rglob("*.py"))
             if path.name != "layout.py" for n, line in enumerate(path.read_text().splitlines(), 1) if raw.search(line)]
    assert found == []
