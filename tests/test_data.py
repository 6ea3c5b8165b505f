"""Reading and checking conversations: every supported form, and every malformed case named by file:line."""

import json
import subprocess
import sys

import pytest

from lima_lite import LimaError
from lima_lite.conversations import DataError, load_conversations
from lima_lite.files import read_jsonl, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("row, expected", [
    (GOOD, GOOD["messages"]),
    ({"conversations": ["Q1", "A1", "Q2", "A2"], "source": "multi_turn"},  # GAIR/lima
     [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
      {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]),
    ({"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Q"},
                        {"from": "gpt", "value": "A"}]},  # ShareGPT
     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"},
      {"role": "assistant", "content": "A"}]),
    ({"instruction": "Sum", "input": "2 and 3", "output": "5"},  # Alpaca
     [{"role": "user", "content": "Sum\n\n2 and 3"}, {"role": "assistant", "content": "5"}]),
    ({"instruction": "Name it", "context": "", "response": "Rex", "category": "open_qa"},  # Dolly
     [{"role": "user", "content": "Name it"}, {"role": "assistant", "content": "Rex"}]),
], ids=["messages", "gair-lima", "sharegpt", "alpaca", "dolly"])
def test_every_form_becomes_messages(tmp_path, row, expected):
    conversations = load_conversations(str(write(tmp_path, [row])))
    assert conversations[0]["messages"] == expected


@pytest.mark.parametrize("line, message", [
    ('{"messages": [', r"data\.jsonl:2: invalid JSON"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]},
     r"data\.jsonl:2: messages\[0\]\.content: empty turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     r"data\.jsonl:2: messages\[1\]\.role: expected 'assistant', found 'user'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}]},
     r"data\.jsonl:2: messages\[2\]\.role: the conversation ends with the user"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]},
     r"data\.jsonl:2: messages\[0\]\.content: missing"),
    ({"prompt": "x", "completion": "y"}, r"data\.jsonl:2: unknown form"),
], ids=["malformed-json", "empty-turn", "not-alternating", "ends-with-user", "missing-field", "unknown-form"])
def test_bad_rows_are_named_by_file_line_and_field(tmp_path, line, message):
    path = write(tmp_path, [GOOD, line, GOOD])
    with pytest.raises(DataError, match=message):
        load_conversations(str(path))


def test_a_json_error_names_its_true_column(tmp_path):
    """A line cut short fails after its last character (JSON would say column 1 of the line its line end
    starts); a problem inside the line is at its own column; CRLF line ends are no problem either."""
    good = json.dumps({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]})
    cut, inner = good[:56], good.replace('"A"', "A")
    path = tmp_path / "data.jsonl"
    path.write_bytes(f"{good}\r\n{cut}\r\n{inner}\n".encode())
    with pytest.raises(DataError) as error:
        load_conversations(str(path))
    assert ("data.jsonl:2: invalid JSON at column 57 (the end of the line: is it cut short?): Expecting value"
            in str(error.value)), str(error.value)
    assert f"data.jsonl:3: invalid JSON at column {inner.index('A}') + 1}: Expecting value" in str(error.value)
    with pytest.raises(LimaError, match=r"data\.jsonl:2: invalid JSON at column 57 \(the end of the line"):
        read_jsonl(path)


def test_all_bad_rows_are_reported_at_once(tmp_path):
    path = write(tmp_path, [GOOD, "{oops", GOOD, {"messages": []}])
    with pytest.raises(DataError) as error:
        load_conversations(str(path))
    assert "2 bad row(s)" in str(error.value)
    assert "data.jsonl:2:" in str(error.value) and "data.jsonl:4:" in str(error.value)


def test_missing_file_and_offline_hub_id_are_clear(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_conversations(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="hf auth login"):
        load_conversations("someone/not-a-real-dataset-xyz")  # HF_HUB_OFFLINE=1 in the tests


def test_cli_reports_bad_data_without_traceback(tmp_path):
    path = write(tmp_path, [GOOD, {"messages": [{"role": "assistant", "content": "first"}]}])
    result = subprocess.run([sys.executable, "-m", "lima_lite", "inspect", "quickstart", f"dataset_name={path}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert f"{path}:2: messages[0].role: expected 'user', found 'assistant'" in result.stderr
    assert "Traceback" not in result.stderr


def test_write_jsonl_is_atomic_and_keeps_the_old_file_on_failure(tmp_path):
    path = write_jsonl([GOOD], tmp_path / "out.jsonl")
    before = path.read_text()

    def rows():
        yield GOOD
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(rows(), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left behind


def test_missing_model_path_and_offline_hub_model_are_clear(tmp_path):
    from lima_lite import LimaError
    from lima_lite.train import prepare

    data = write(tmp_path, [GOOD])
    with pytest.raises(LimaError, match="model path does not exist"):
        prepare(None, {"model_name_or_path": str(tmp_path / "no-such-model"), "dataset_name": str(data)})
    with pytest.raises(LimaError, match=r"someone/no-such-model: .*Hugging Face Hub.*hf download"):
        prepare(None, {"model_name_or_path": "someone/no-such-model", "dataset_name": str(data)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(LimaError, match="not a model folder"):
        prepare(None, {"model_name_or_path": str(tmp_path / "empty"), "dataset_name": str(data)})


def test_atomic_dir_keeps_the_previous_folder_when_writing_fails(tmp_path):
    from lima_lite.files import atomic_dir

    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half of v2")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
