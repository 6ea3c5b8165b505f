"""The terminal chat fed what is not text: bytes that are not UTF-8 on a piped stdin, a NUL in a /save name; and
a /save into the folders its model was loaded from. Each is said in one line; the chat goes on.

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_chat.py -q
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])  # strict UTF-8 stdin, and Python's surrogateescape one
def test_bytes_that_are_not_utf8_and_a_save_into_the_model_are_each_one_line(tiny_run, tmp_path, locale):
    adapter, saved = tmp_path / "adapter", tmp_path / "chat.jsonl"
    shutil.copytree(tiny_run / "adapter", adapter)
    config = (adapter / "adapter_config.json").read_bytes()
    stdin = (b"hello\n\xff\xfe\x00 garbage \x80\n/save " + str(saved).encode() + b"\n"
             b"/save " + str(adapter / "adapter_config.json").encode() + b"\ny\n")  # the model's own file, and a yes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": locale, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONIOENCODING", None)
    done = subprocess.run([sys.executable, "-m", "lima_lite.chat", "--adapter", str(adapter),
                           "--max-new-tokens", "2", "--temperature", "0"], input=stdin, capture_output=True, env=env,
                          timeout=300)
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == 0 and "Traceback" not in err, err
    assert "(not sent: the line is not UTF-8 text (byte 0xff at character 0); nothing of it was kept)" in out
    assert (f"(not saved: {adapter / 'adapter_config.json'} is inside {adapter}, which this chat's model was loaded "
            "from; choose another file)") in out
    assert (adapter / "adapter_config.json").read_bytes() == config
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[0]["content"] == "hello"


def test_a_nul_in_a_save_name_is_said_and_the_chat_goes_on(tmp_path):
    import io

    from lima_lite.chat import Session

    class Engine:
        name = "e"

    out = io.StringIO()
    session = Session(Engine(), out=out)
    session.messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert session.handle(f"/save {tmp_path}/a\x00b.jsonl") is True
    assert out.getvalue() == f"(not saved: '{tmp_path}/a\\x00b.jsonl': embedded null byte)\n"
    assert list(tmp_path.iterdir()) == []
