"""`lima-lite serve`: a tuned model behind an OpenAI-compatible endpoint on this machine, for other apps and
as an `eval` answerer or judge.

    $ lima-lite serve runs/quickstart                     # base + adapter, in transformers (the generation core)
    $ lima-lite serve qs-gguf --port 8081                 # an `export gguf` folder or a .gguf file, in llama.cpp
    $ lima-lite eval generate --model quickstart@http://127.0.0.1:8080/v1 --prompts embedded:dev.jsonl --out a.jsonl

A GGUF runs in llama.cpp's own server (the `xllamacpp` wheel: `pip install -e ".[export]"`), with the chat
template embedded in the file and the sampling the export wrote in its Modelfile. Anything else (a run, its
adapter/ or epoch-NN/, a merged model, a base) runs in transformers through lima_lite.generate: the template
saved with the adapter, LIMA's sampling unless a request sets it, the repetition penalty on generated tokens
only, a stop at the trained turn end. Both answer POST /v1/chat/completions (streamed with "stream": true)
and GET /v1/models; `finish_reason` is "stop" at the turn end and "length" at max_tokens.

The server binds 127.0.0.1 unless told otherwise; with another --host, --api-key makes it ask every request
for `Authorization: Bearer KEY`.
"""

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lima_lite import LimaError
from lima_lite.evaluate.answers import resolve_spec
from lima_lite.export import EXPORT_SAMPLING
from lima_lite.flags import LIMA_SAMPLING, SAMPLING_TYPES
from lima_lite.layout import is_adapter

# The request fields the transformers server reads (OpenAI's names) and the Engine's name for each.
REQUEST_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_new_tokens",
                    "max_completion_tokens": "max_new_tokens", "repetition_penalty": "repetition_penalty"}


def find_gguf(source: str | Path) -> Path | None:
    """The GGUF file `source` names: the file itself, or the one .gguf in an `export gguf` folder; None when
    `source` is not a GGUF (a run, an adapter, a model folder, a Hub id)."""
    path = Path(source)
    if path.is_file() and path.suffix == ".gguf":
        return path
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) > 1:
        raise LimaError(f"{path}: holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); name one")
    return found[0] if found else None


def llamacpp_server(gguf: Path, host: str = "127.0.0.1", port: int = 0, context: int = 0, threads: int | None = None,
                    api_key: str | None = None, name: str | None = None):
    """llama.cpp's HTTP server (xllamacpp) over `gguf`, listening once this returns (`.listening_address`).

    Jinja chat templates are on, as in llama-server; port 0 takes a free port. Sampling defaults are the
    export's (lima_lite.export.EXPORT_SAMPLING); a request's own values win."""
    try:
        import xllamacpp
    except ImportError:
        raise LimaError("serving a GGUF needs llama.cpp's server: pip install xllamacpp (from a checkout: "
                        "pip install -e \".[export]\")") from None

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.hostnames = [host]
    params.port = port
    params.n_ctx = context  # 0: the context length the GGUF was trained with
    params.use_jinja = True
    params.verbosity = -1  # llama.cpp's own log only for errors
    if name:
        params.model_alias = {name}
    if threads:
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
    if api_key:
        params.api_keys = [api_key]
    params.sampling.temp = EXPORT_SAMPLING["temperature"]
    params.sampling.top_p = EXPORT_SAMPLING["top_p"]
    params.sampling.top_k = EXPORT_SAMPLING["top_k"]
    params.sampling.min_p = EXPORT_SAMPLING["min_p"]
    params.sampling.penalty_repeat = EXPORT_SAMPLING["repeat_penalty"]
    params.sampling.penalty_last_n = EXPORT_SAMPLING["repeat_last_n"]
    params.n_predict = EXPORT_SAMPLING["num_predict"]
    try:
        return xllamacpp.Server(params)
    except Exception as error:  # llama.cpp's loader: a file that is not a GGUF, an unknown architecture
        raise LimaError(f"{gguf}: llama.cpp could not load it ({' '.join(str(error).split())[:200]})") from None


class RequestError(ValueError):
    """A request the server refuses with HTTP 400 and this message."""


def sampling_of(request: dict) -> dict:
    """The Engine's sampling keywords from an OpenAI request, each checked as the command line checks it."""
    sampling = {}
    for field, setting in REQUEST_SAMPLING.items():
        value = request.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"{field}: expected a number, not {json.dumps(value)}")
        try:
            sampling[setting] = SAMPLING_TYPES[setting](str(value))
        except argparse.ArgumentTypeError as error:
            raise RequestError(f"{field}: {error}") from None
    return sampling


def messages_of(request: dict) -> list[dict]:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: expected a non-empty list of {role, content}")
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or \
                message.get("role") not in ("system", "user", "assistant"):
            raise RequestError(f"messages[{k}]: expected {{\"role\": system|user|assistant, \"content\": text}}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def completion(engine, name: str, request: dict) -> dict:
    """One OpenAI chat completion from the Engine (non-streamed)."""
    messages, sampling = messages_of(request), sampling_of(request)
    try:
        reply = engine.reply(messages, seed=request.get("seed"), **sampling)
    except LimaError as error:  # turns that do not alternate, a conversation that ends with the assistant
        raise RequestError(str(error)) from None
    prompt_tokens = len(engine.prompt_ids(messages, sampling.get("max_new_tokens", LIMA_SAMPLING["max_new_tokens"]))[0])
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": name, "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                                        "finish_reason": finish_reason(reply)}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": reply.new_tokens,
                      "total_tokens": prompt_tokens + reply.new_tokens}}


def finish_reason(reply) -> str:
    return "stop" if reply.finish_reason == "eot" else "length"


def chunk(name: str, ident: str, delta: dict, finish: str | None = None) -> bytes:
    body = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


def handler_for(engine, name: str, api_key: str | None):
    """The request handler class of a transformers server over `engine` (one generation at a time: the
    Engine's lock queues the others)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's name
            print(f"{self.address_string()} {format % args}", file=sys.stderr)

        def send_json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, status: int, message: str) -> None:
            self.send_json(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

        def authorized(self) -> bool:
            if api_key is None or self.headers.get("Authorization") == f"Bearer {api_key}":
                return True
            self.error(401, "missing or wrong API key (Authorization: Bearer KEY)")
            return False

        def do_GET(self):  # noqa: N802 - http.server's name
            if not self.authorized():
                return
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self.send_json(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "lima_lite"}]})
            elif self.path.rstrip("/") == "/health":
                self.send_json(200, {"status": "ok"})
            else:
                self.error(404, f"{self.path}: not found (POST /v1/chat/completions, GET /v1/models)")

        def do_POST(self):  # noqa: N802
            if not self.authorized():
                return
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self.error(404, f"{self.path}: not found (POST /v1/chat/completions)")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"null")
                if not isinstance(request, dict):
                    raise RequestError("the body must be a JSON object")
                if request.get("stream"):
                    self.stream(request)
                else:
                    self.send_json(200, completion(engine, name, request))
            except (RequestError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
                self.error(400, str(error))

        def stream(self, request: dict) -> None:
            messages, sampling = messages_of(request), sampling_of(request)
            pieces = engine.stream(messages, seed=request.get("seed"), **sampling)
            try:
                first = next(pieces, "")  # errors in the conversation surface here, before the 200
            except LimaError as error:
                raise RequestError(str(error)) from None
            ident = f"chatcmpl-{uuid.uuid4().hex}"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                self.wfile.write(chunk(name, ident, {"role": "assistant", "content": first}))
                for piece in pieces:
                    self.wfile.write(chunk(name, ident, {"content": piece}))
                self.wfile.write(chunk(name, ident, {}, finish_reason(engine.last)))
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):  # the client left: stop generating
                pieces.close()

    return Handler


def transformers_server(engine, name: str, host: str = "127.0.0.1", port: int = 0,
                        api_key: str | None = None) -> ThreadingHTTPServer:
    """An HTTP server over `engine`, bound but not yet serving: call serve_forever() (in a thread for tests)."""
    try:
        return ThreadingHTTPServer((host, port), handler_for(engine, name, api_key))
    except OSError as error:
        raise LimaError(f"{host}:{port}: cannot listen there ({error.strerror or error})") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lima-lite serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a tuned model on an OpenAI-compatible endpoint (POST /v1/chat/completions, GET\n"
                    "/v1/models), for other apps and as an eval answerer or judge (NAME@http://HOST:PORT/v1).\n"
                    "A .gguf (or an `export gguf` folder) runs in llama.cpp; a run, adapter or model in transformers.",
        epilog="Then: lima-lite eval generate --model NAME@http://127.0.0.1:8080/v1 --prompts P.jsonl --out A.jsonl")
    parser.add_argument("model", metavar="MODEL", help="a .gguf file or `export gguf` folder (llama.cpp), or a run, its "
                        "adapter/ or epoch-NN/, a merged model, a base folder or Hub id (transformers)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--name", help="the model name clients send and see (default: the folder's name)")
    parser.add_argument("--api-key", help="ask every request for `Authorization: Bearer KEY` (use it with --host)")
    parser.add_argument("--context", type=int, default=0, help="llama.cpp's context length (default: the GGUF's)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port: must be 0 to 65535, not {args.port}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: {args.host} may be reachable from other machines and no --api-key is set: anyone who "
              "reaches it can use the model", file=sys.stderr)
    name = args.name or Path(args.model.rstrip("/")).name.removesuffix(".gguf")
    gguf = find_gguf(args.model)
    if gguf is not None:
        server = llamacpp_server(gguf, args.host, args.port, args.context, api_key=args.api_key, name=name)
        print(f"Serving {gguf} in llama.cpp as {name!r} on {server.listening_address}/v1 (Ctrl-C stops)", flush=True)
        threading.Event().wait()  # llama.cpp serves in its own threads until Ctrl-C ends the process
        return 0
    from lima_lite.generate import load_engine

    spec = resolve_spec(args.model)
    engine = load_engine(adapter=spec) if is_adapter(spec) else load_engine(base=spec)
    server = transformers_server(engine, name, args.host, args.port, args.api_key)
    host, port = server.server_address[:2]
    print(f"Serving {spec} in transformers as {name!r} on http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    from lima_lite.entry import run

    sys.exit(run("lima_lite.serve:main", sys.argv[1:]))
