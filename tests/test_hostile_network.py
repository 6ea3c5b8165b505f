"""Endpoint calls end in bounded time: a server that trickles its reply (one byte at a time, in the headers or
the body) trips the per-try deadline, and retries stop at the request's budget, each with one line. The
servers bind 127.0.0.1 on a free port and stop themselves.

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_network.py -q
"""

import json
import socket
import threading
import time

import pytest

from lima_lite import LimaError
from lima_lite.evaluate.answers import get_answerer
from lima_lite.judges import get_judge
from oracles.endpoint import FakeEndpoint, completion

REPLY = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "A"}}]}).encode()


class Trickle:
    """A server that answers every request one byte every `gap` seconds: the headers too (`where="headers"`),
    or a whole header and then the body. It stops itself after `life` seconds, whatever happens."""

    def __init__(self, where: str, gap: float = 0.2, life: float = 30.0):
        self.where, self.gap, self.life, self.stop, self.connections = where, gap, life, threading.Event(), 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def serve(self) -> None:
        end = time.monotonic() + self.life
        while not self.stop.is_set() and time.monotonic() < end:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by __exit__
                return
            self.connections += 1
            threading.Thread(target=self.answer, args=(conn, end), daemon=True).start()

    def answer(self, conn, end: float) -> None:
        with conn:
            conn.settimeout(2)
            try:
                conn.recv(65536)
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(REPLY)}\r\n\r\n").encode()
                slow = head + REPLY if self.where == "headers" else REPLY
                if self.where == "body":
                    conn.sendall(head)
                for byte in slow:
                    if self.stop.is_set() or time.monotonic() > end:
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(self.gap)
            except OSError:
                return

    def __enter__(self):
        threading.Thread(target=self.serve, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.sock.close()


@pytest.fixture
def quick_client(monkeypatch):
    import lima_lite.judges

    monkeypatch.setattr(lima_lite.judges, "ENDPOINT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(lima_lite.judges, "ENDPOINT_RETRIES", 1)


@pytest.mark.parametrize("where", ["headers", "body"])
@pytest.mark.parametrize("who", ["judge", "answerer"])
def test_a_trickling_server_trips_the_deadline_of_each_try(where, who, quick_client):
    with Trickle(where) as server:
        call = (lambda: get_judge(f"j@{server.url}").complete("Rate this.")) if who == "judge" else \
            (lambda: get_answerer(f"m@{server.url}").answer("Hello?"))
        start = time.perf_counter()
        with pytest.raises(LimaError, match="no answer within 1 s, 2 tries") as caught:
            call()
        took = time.perf_counter() - start
    # two tries of 1 s and openai's backoff between them (under 1 s); the trickle alone would take ~40 s
    assert took < 5, took
    # one connection a try; a third when the pool opens a fresh one beside a connection still being read
    assert server.connections in (2, 3) and "\n" not in str(caught.value) and server.url in str(caught.value)


def test_retries_stop_at_the_budget_of_the_request(monkeypatch):
    import lima_lite.judges

    monkeypatch.setattr(lima_lite.judges, "ENDPOINT_TIMEOUT_S", 5.0)
    monkeypatch.setattr(lima_lite.judges, "ENDPOINT_RETRIES", 50)
    monkeypatch.setattr(lima_lite.judges, "ENDPOINT_BUDGET_S", 2.0)
    busy = (503, {"Content-Type": "application/json", "Retry-After": "0.4"}, b'{"error": {"message": "busy"}}')
    with FakeEndpoint(lambda body, number: busy) as server:
        start = time.perf_counter()
        with pytest.raises(LimaError) as caught:
            get_judge(f"j@{server.url}").complete("Rate this.")
        took = time.perf_counter() - start
    # 51 tries of 0.4 s would take 20 s; the budget ends them after about 2 s (plus the last backoff)
    assert took < 12 and len(server.requests) < 10, (took, len(server.requests))
    assert "\n" not in str(caught.value)


def test_a_quick_server_is_answered_as_before(quick_client):
    with FakeEndpoint(lambda body, number: completion("tie"), latency=0.05) as server:
        assert get_judge(f"j@{server.url}").complete("Rate this.") == "tie"
        assert get_answerer(f"m@{server.url}").answer("Hello?") == ("tie", "eot")


@pytest.mark.parametrize("choices", [{}, [{}], [{"message": {"content": 5}}], [None]])
def test_malformed_choices_are_one_line_errors(choices, quick_client):
    body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": choices}).encode()
    with FakeEndpoint(lambda b, n: (200, {"Content-Type": "application/json"}, body)) as server:
        with pytest.raises(LimaError, match="choices") as caught:
            get_judge(f"j@{server.url}").complete("Rate this.")
    assert "\n" not in str(caught.value)
