"""Endpoint judges and answerers: bounded concurrency, prompt order, retries, resuming after a kill, and
one-line errors for every way a server can fail. The fake server (bench/judge_concurrency.py) binds
127.0.0.1 on a free port."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lima_lite import LimaError
from lima_lite.evaluate import steps
from lima_lite.evaluate.answers import generate_answers, get_answerer
from lima_lite.judges import get_judge
from oracles.endpoint import FakeEndpoint, answer_files, completion, longer_answer_wins

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def quick_client(monkeypatch):
    """Short timeouts and one retry, so the failure tests take a second or two, not minutes."""
    import lima_lite.judges

    monkeypatch.setattr(lima_lite.judges, "ENDPOINT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(lima_lite.judges, "ENDPOINT_RETRIES", 1)


def verdicts(path: Path) -> list[tuple]:
    return [(r["id"], r["verdicts"], r["outcome"]) for r in map(json.loads, path.read_text().splitlines())]


def test_concurrent_judging_is_faster_and_identical_in_prompt_order(tmp_path):
    ours, base = answer_files(tmp_path, 24)
    with FakeEndpoint(longer_answer_wins, latency=0.15) as server:
        judge = get_judge(f"judge@{server.url}")
        start = time.perf_counter()
        steps.pairwise_file(judge, ours, base, tmp_path / "one.jsonl", concurrency=1)
        one = time.perf_counter() - start
        start = time.perf_counter()
        steps.pairwise_file(judge, ours, base, tmp_path / "eight.jsonl", concurrency=8)
        eight = time.perf_counter() - start
        assert len(server.requests) == 2 * 2 * 24  # both orders, twice
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "eight.jsonl").read_bytes()
    assert [v[0] for v in verdicts(tmp_path / "eight.jsonl")] == [f"p{i:04d}" for i in range(24)]
    assert one / eight > 3, (one, eight)  # 48 requests of 0.15 s: 7.2 s in a row, about 1 s eight at a time


def test_records_finishing_out_of_order_are_saved_in_prompt_order(tmp_path):
    ours, base = answer_files(tmp_path, 6)

    def slow_first(body, number):
        prompt = body["messages"][-1]["content"]
        time.sleep(0.4 if "Question 0?" in prompt else 0)  # the first prompt finishes last
        return longer_answer_wins(body, number)

    with FakeEndpoint(slow_first) as server:
        records = steps.pairwise_file(get_judge(f"judge@{server.url}"), ours, base, tmp_path / "j.jsonl", concurrency=3)
    saved = [v[0] for v in verdicts(tmp_path / "j.jsonl")]
    assert [r["id"] for r in records] == saved == [f"p{i:04d}" for i in range(6)]


def test_429_and_503_are_retried_honouring_retry_after(tmp_path, quick_client):
    seen = []

    def busy_then_fine(body, number):
        prompt = body["messages"][-1]["content"]
        seen.append(prompt)
        if seen.count(prompt) == 1 and prompt == "first":
            return 429, {"Content-Type": "application/json", "Retry-After": "1"}, b'{"error": {"message": "slow down"}}'
        if seen.count(prompt) == 1 and prompt == "second":
            return 503, {"Content-Type": "application/json", "Retry-After": "0.3"}, b'{"error": {"message": "busy"}}'
        return completion("tie")

    with FakeEndpoint(busy_then_fine) as server:
        judge = get_judge(f"judge@{server.url}")
        start = time.perf_counter()
        assert judge.complete("first") == "tie"  # 429, then retried after Retry-After: 1
        assert time.perf_counter() - start >= 1.0
        assert judge.complete("second") == "tie"  # 503, retried
        assert len(server.requests) == 4


def html_page(body, number):
    return 200, {"Content-Type": "text/html"}, b"<html><body><h1>Welcome to nginx!</h1></body></html>"


FAILURES = {
    "html": (html_page, "not a chat completion"),
    "json-html": (lambda b, n: (200, {"Content-Type": "application/json"}, b"<html>oops</html>"), "not JSON"),
    "http-500": (lambda b, n: (500, {"Content-Type": "application/json"},
                               b'{"error": {"message": "CUDA out of memory"}}'),
                 r"HTTP 500 \(CUDA out of memory\) after 2 tries"),
    "http-404": (lambda b, n: (404, {"Content-Type": "text/html"}, b"<html>not found</html>"), "HTTP 404"),
    "no-choices": (lambda b, n: (200, {"Content-Type": "application/json"},
                                 b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m",'
                                 b' "choices": []}'),
                   "no choices"),
}


@pytest.mark.parametrize("name", FAILURES)
def test_server_failures_are_one_line_errors(name, quick_client, tmp_path):
    respond, expected = FAILURES[name]
    ours, base = answer_files(tmp_path, 3)
    with FakeEndpoint(respond) as server:
        for call in (lambda: get_judge(f"judge@{server.url}").complete("Rate this."),
                     lambda: get_answerer(f"m@{server.url}").answer("Hello?"),
                     lambda: steps.pairwise_file(get_judge(f"judge@{server.url}"), ours, base, tmp_path / "p.jsonl",
                                                 concurrency=2)):
            with pytest.raises(LimaError, match=expected) as caught:
                call()
            assert "\n" not in str(caught.value) and server.url in str(caught.value)
    assert not (tmp_path / "p.jsonl").exists()  # nothing judged, nothing written


def test_unreachable_and_hung_servers_are_one_line_errors(quick_client):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(LimaError, match="cannot connect") as caught:
        get_judge(f"judge@http://127.0.0.1:{closed}/v1").complete("Rate this.")
    assert "\n" not in str(caught.value)
    with FakeEndpoint(lambda b, n: completion("A"), latency=30) as server:
        start = time.perf_counter()
        with pytest.raises(LimaError, match="no answer within 1 s, 2 tries"):
            get_judge(f"judge@{server.url}").complete("Rate this.")
        assert time.perf_counter() - start < 10 and len(server.requests) == 2


def test_null_content_is_not_recorded_as_an_answer_that_ended(tmp_path, quick_client):
    def null_for_the_second(body, number):
        return completion(None if "second" in body["messages"][-1]["content"] else "Hello.")

    prompts = [{"id": "a", "prompt": "first"}, {"id": "b", "prompt": "second"}]
    with FakeEndpoint(null_for_the_second) as server:
        with pytest.raises(LimaError, match="content: null"):
            generate_answers(get_answerer(f"m@{server.url}"), prompts, tmp_path / "answers.jsonl")
        saved = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
        assert [(r["id"], r["answer"], r["finish_reason"]) for r in saved] == [("a", "Hello.", "eot")]
        # a judge's null reply is an unreadable verdict: asked again once, then counted as unparsed
        assert get_judge(f"judge@{server.url}").complete("second") == ""


def test_local_models_refuse_concurrency():
    from lima_lite.evaluate.cli import main

    with pytest.raises(LimaError, match="--concurrency 4: .* local model"):
        main(["likert", "--judge", "embedded:SmolLM2-135M-Instruct", "--answers", "a.jsonl", "--out", "o.jsonl",
              "--concurrency", "4"])


def settled_count(requests: list, quiet_s: float = 1.0, limit_s: float = 10.0) -> int:
    """How many requests the server has recorded once no new one has arrived for quiet_s seconds."""
    count, since, deadline = len(requests), time.time(), time.time() + limit_s
    while time.time() - since < quiet_s and time.time() < deadline:
        time.sleep(0.05)
        if len(requests) != count:
            count, since = len(requests), time.time()
    return count


def test_a_killed_judging_run_resumes_without_judging_anything_twice(tmp_path):
    ours, base = answer_files(tmp_path, 40)
    out = tmp_path / "pairwise.jsonl"
    with FakeEndpoint(longer_answer_wins, latency=0.1) as server:
        argv = [sys.executable, "-m", "lima_lite", "eval", "pairwise", "--judge", f"judge@{server.url}", "--ours",
                str(ours), "--baseline", str(base), "--out", str(out), "--concurrency", "4"]
        process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while not (out.exists() and len(out.read_text().splitlines()) >= 8):
            assert process.poll() is None and time.time() < deadline, process.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = verdicts(out)
        assert 8 <= len(before) < 40
        sent = settled_count(server.requests)  # requests the killed run had in flight still land after the kill

        from lima_lite.evaluate.cli import main

        assert main(argv[4:]) == 0
        asked = [r["messages"][-1]["content"] for r in server.requests[sent:]]
    after = verdicts(out)
    done = {pid for pid, _, _ in before}
    # the rerun asked only about the prompts not yet saved, each in both orders, once
    assert len(asked) == 2 * (40 - len(done))
    assert not any(f"Question {int(pid[1:])}?" in prompt for prompt in asked for pid in done)
    assert [pid for pid, _, _ in after] == [f"p{i:04d}" for i in range(40)]
    assert all(record in after for record in before)  # what was saved before the kill is kept as it was


def test_a_failing_prompt_keeps_what_was_judged_and_a_rerun_does_only_the_rest(tmp_path, quick_client):
    ours, base = answer_files(tmp_path, 8)
    broken = {"on": True}

    def fails_on_question_3(body, number):
        if broken["on"] and "Question 3?" in body["messages"][-1]["content"]:
            return 400, {"Content-Type": "application/json"}, b'{"error": {"message": "bad request"}}'
        return longer_answer_wins(body, number)

    out = tmp_path / "pairwise.jsonl"
    with FakeEndpoint(fails_on_question_3) as server:
        judge = get_judge(f"judge@{server.url}")
        with pytest.raises(LimaError, match="HTTP 400 \\(bad request\\); check"):  # not retried: a client error
            steps.pairwise_file(judge, ours, base, out, concurrency=2)
        saved = [pid for pid, _, _ in verdicts(out)]
        assert "p0003" not in saved and saved == sorted(saved) and len(saved) >= 2
        broken["on"] = False
        sent = len(server.requests)
        steps.pairwise_file(judge, ours, base, out, concurrency=2)
        assert len(server.requests) - sent == 2 * (8 - len(saved))
    assert [pid for pid, _, _ in verdicts(out)] == [f"p{i:04d}" for i in range(8)]
