"""The endpoint judge and endpoint answers against a real OpenAI-compatible server on loopback.

The server is `transformers serve` (FastAPI + Uvicorn, installed from PyPI with transformers; no compiling)
serving the tiny random LLaMA fixture on 127.0.0.1; it answers nonsense, which is what the unparsed
counting needs. Nothing leaves the machine.
"""

import importlib.util
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from lima_lite.evaluate import steps
from lima_lite.evaluate.answers import generate_answers, get_answerer
from lima_lite.evaluate.protocols import win_tie_loss
from lima_lite.judges import get_judge

missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(missing) or shutil.which("transformers") is None,
    reason=f"no OpenAI-compatible server here: `transformers serve` needs {missing or 'the transformers CLI'} "
           "(pip install 'transformers[serving]' openai)")


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    """`transformers serve` on a free loopback port, serving the tiny LLaMA with a minimal chat template."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("served") / "tiny"
    shutil.copytree(tiny_llama, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}</s>{% endfor %}"
    tokenizer.save_pretrained(folder)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (folder.parent / "serve.log").open("w")
    process = subprocess.Popen(["transformers", "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
                                "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    log_tail = (folder.parent / "serve.log").read_text()[-2000:]
                    pytest.fail(f"transformers serve did not come up: {log_tail}")
                time.sleep(0.5)
        yield f"{folder}@http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_endpoint_judge_counts_nonsense_verdicts_as_unparsed(server, tmp_path):
    judge = get_judge(server, max_new_tokens=6)
    assert type(judge).__name__ == "EndpointJudge" and judge.name == server
    rows = [{"id": str(i), "prompt": f"Name a colour {i}.", "answer": a, "model": m, "finish_reason": "eot"}
            for i in range(2) for a, m in (("Red.", "ours"), ("Blue.", "theirs"))]
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    ours.write_text("".join(json.dumps(r) + "\n" for r in rows if r["model"] == "ours"))
    theirs.write_text("".join(json.dumps(r) + "\n" for r in rows if r["model"] == "theirs"))
    records = steps.pairwise_file(judge, ours, theirs, tmp_path / "pairwise.jsonl")
    # a random model's six tokens are never exactly A, B or tie: every order unreadable, asked twice
    assert win_tie_loss(records) == {"win": 0, "tie": 0, "loss": 0, "unparsed": 2, "n": 2}
    for record in records:
        assert record["verdicts"] == [None, None] and record["outcome"] is None
        assert [len(replies) for replies in record["raw"]] == [2, 2]  # the reply, then the retry with a reminder
        assert all(isinstance(reply, str) for replies in record["raw"] for reply in replies)


class Recording:
    """An answerer that passes every prompt on to `model` and remembers which prompts it was asked."""

    def __init__(self, model):
        self.model, self.name, self.prompts = model, model.name, []

    def answer(self, prompt: str, **sampling):
        self.prompts.append(prompt)
        return self.model.answer(prompt, **sampling)


def test_endpoint_answers_are_generated_and_resumed(server, tmp_path):
    """A rerun with one prompt more asks the server only for that one and keeps the stored answer as it was."""
    model = Recording(get_answerer(server, name="served"))
    prompts = [{"id": "a", "prompt": "Say hello."}, {"id": "b", "prompt": "Say goodbye."}]
    out = tmp_path / "answers.jsonl"
    first = generate_answers(model, prompts[:1], out, max_new_tokens=4)
    assert model.prompts == ["Say hello."]
    rows = generate_answers(model, prompts, out, max_new_tokens=4)
    assert model.prompts == ["Say hello.", "Say goodbye."]  # "a" was not asked again
    assert rows[0] == first[0]
    assert [(r["id"], r["model"], r["finish_reason"]) for r in rows] == [("a", "served", "length"),
                                                                         ("b", "served", "length")]
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert saved == rows and all(isinstance(r["answer"], str) for r in saved)
