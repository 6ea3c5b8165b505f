"""`lima-lite serve` in transformers: an OpenAI-compatible endpoint over base + adapter that answers what the
generation core answers, streamed or not, refuses bad requests with a 400 that says why, asks for the key
when one is set, and serves `eval generate --model NAME@URL` (the GGUF side: test_export_llamacpp.py)."""

import json
import threading
import urllib.error
import urllib.request

import pytest

from lima_lite.serve import transformers_server

QUESTION = [{"role": "user", "content": "How do I water plant number 2?"}]


@pytest.fixture(scope="module")
def engine(tiny_run):
    from lima_lite.generate import load_engine

    return load_engine(adapter=tiny_run / "adapter")


@pytest.fixture(scope="module")
def served(engine):
    """(base URL, engine) of a server with the key "secret" on a free loopback port."""
    server = transformers_server(engine, "tiny", port=0, api_key="secret")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", engine
    server.shutdown()
    server.server_close()


def post(url: str, body, key: str | None = "secret", raw: bytes | None = None):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=raw if raw is not None else json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read().decode()


def refused(url: str, body, key: str | None = "secret", raw: bytes | None = None) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as error:
        post(url, body, key, raw)
    return error.value.code, json.loads(error.value.read())["error"]["message"]


def test_a_completion_is_the_engines_greedy_reply(served):
    url, engine = served
    expected = engine.reply(QUESTION, temperature=0, max_new_tokens=12)
    answer = json.loads(post(f"{url}/chat/completions", {"model": "tiny", "messages": QUESTION, "temperature": 0,
                                                          "max_tokens": 12}))
    choice = answer["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected.text}
    assert choice["finish_reason"] == ("stop" if expected.finish_reason == "eot" else "length")
    assert answer["usage"]["completion_tokens"] == expected.new_tokens > 0


def test_a_streamed_completion_adds_up_to_the_same_reply(served):
    url, engine = served
    expected = engine.reply(QUESTION, temperature=0, max_new_tokens=12)
    events = [line.removeprefix("data: ") for line in post(f"{url}/chat/completions", {
        "messages": QUESTION, "temperature": 0, "max_tokens": 12, "stream": True}).splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event)["choices"][0] for event in events[:-1]]
    assert "".join(c["delta"].get("content", "") for c in chunks) == expected.text
    assert chunks[-1]["finish_reason"] in ("stop", "length") and all(c["finish_reason"] is None for c in chunks[:-1])


def test_bad_requests_get_a_400_that_says_why(served):
    url, _ = served
    completions = f"{url}/chat/completions"
    assert refused(completions, {"messages": QUESTION, "temperature": -1}) == (400, "temperature: must be >= 0, not -1")
    assert refused(completions, {"messages": QUESTION, "max_tokens": "many"})[1] == 'max_tokens: expected a number, not "many"'
    assert refused(completions, {"messages": []})[0] == 400
    assert refused(completions, {"messages": [{"role": "user", "content": 3}]})[1].startswith("messages[0]: expected")
    assert refused(completions, None, raw=b"{not json")[0] == 400
    code, message = refused(completions, {"messages": [*QUESTION, {"role": "assistant", "content": "Often."}]})
    assert (code, message) == (400, "the conversation must end with the user's message")


def test_the_key_is_asked_for(served):
    url, _ = served
    assert refused(f"{url}/chat/completions", {"messages": QUESTION}, key=None)[0] == 401
    assert refused(f"{url}/chat/completions", {"messages": QUESTION}, key="wrong")[0] == 401
    request = urllib.request.Request(f"{url}/models", headers={"Authorization": "Bearer secret"})
    assert json.loads(urllib.request.urlopen(request, timeout=30).read())["data"][0]["id"] == "tiny"


def test_eval_generate_answers_through_it(served, tmp_path, monkeypatch, capsys):
    from lima_lite.entry import run

    url, engine = served
    monkeypatch.setenv("OPENAI_API_KEY", "secret")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"How do I water plant number {i}?"}) + "\n"
                               for i in range(3)))
    out = tmp_path / "answers.jsonl"
    assert run("lima_lite.evaluate.cli:main", ["generate", "--model", f"tiny@{url}", "--prompts", str(prompts),
                                               "--out", str(out), "--temperature", "0", "--max-new-tokens", "12"]) == 0, \
        capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [engine.reply([{"role": "user", "content": f"How do I water plant number {i}?"}], temperature=0,
                             max_new_tokens=12) for i in range(3)]
    assert [r["answer"] for r in rows] == [e.text.strip() for e in expected]
    assert [r["finish_reason"] for r in rows] == [e.finish_reason for e in expected]
