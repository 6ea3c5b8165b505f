"""A fake OpenAI-compatible server on 127.0.0.1 (a free port) with scripted replies: what the tests use for
endpoint judges and their failures (HTML pages, HTTP 500, hangs, trickles), and bench/judge_concurrency.py for
its timing.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def completion(content, finish_reason: str = "stop", model: str = "fake") -> tuple[int, dict, bytes]:
    """An OpenAI chat completion response with one choice."""
    body = {"id": "fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


class FakeEndpoint:
    """An OpenAI-compatible server on 127.0.0.1: `respond(request body, request number) -> (status, headers,
    bytes)` decides each answer after `latency` seconds. `requests` holds every request body received."""

    def __init__(self, respond, latency: float = 0.0):
        self.respond, self.latency, self.requests, self.lock = respond, latency, [], threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append(body)
                    number = len(endpoint.requests)
                time.sleep(endpoint.latency)
                status, headers, payload = endpoint.respond(body, number)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def longer_answer_wins(body: dict, number: int):
    """The verdict of a judge that prefers the longer answer (ties: tie), from the pairwise prompt alone."""
    prompt = body["messages"][-1]["content"]
    a = prompt.split("[Answer A]\n", 1)[1].split("\n\n[Answer B]", 1)[0]
    b = prompt.split("[Answer B]\n", 1)[1].split("\n\nWhich answer", 1)[0]
    return completion("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")


def answer_files(folder: Path, pairs: int) -> tuple[Path, Path]:
    ours, base = folder / "ours.jsonl", folder / "base.jsonl"
    ours.write_text("".join(json.dumps({"id": f"p{i:04d}", "prompt": f"Question {i}?", "answer": "yes " * (i % 7),
                                        "model": "ours"}) + "\n" for i in range(pairs)))
    base.write_text("".join(json.dumps({"id": f"p{i:04d}", "prompt": f"Question {i}?", "answer": "no " * 3,
                                        "model": "base"}) + "\n" for i in range(pairs)))
    return ours, base
