"""Judges: anything that answers a judging prompt with text. Two kinds, one small interface.

    >>> judge = get_judge("runs/quickstart/adapter")                       # a local model (adapter or base)
    >>> judge = get_judge("gpt-4o@https://api.openai.com/v1")              # MODEL@URL: any OpenAI-compatible server
    >>> judge.complete("Rate this answer from 1 to 6: ...")
    '5'
    >>> parse_endpoint("gpt-4o@https://api.openai.com/v1")                 # None for anything but MODEL@URL
    ('gpt-4o', 'https://api.openai.com/v1')

Local judges run through the shared generation core, greedily (temperature 0), so verdicts repeat.
Endpoint judges (and endpoint answerers in lima_lite.evaluate.answers) talk to the server through
`chat_completion`, which reads the key from OPENAI_API_KEY (a local server usually accepts any), times out
a hung server, retries 429/5xx with backoff (honouring Retry-After), and turns every failure into a one-line
LimaError. Endpoint judges may be called from several threads (`--concurrency`).
Used by `lima-lite select --strategy quality` and by `lima-lite eval`.
"""

import functools
import importlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from lima_lite import LimaError
from lima_lite.layout import is_adapter


class Judge(Protocol):
    name: str

    def complete(self, prompt: str) -> str: ...


def parse_endpoint(spec: str) -> tuple[str, str] | None:
    """(model, url) for `MODEL@http(s)://HOST/v1`; None for any other spec (a folder, a Hub id, embedded:...)."""
    model, at, url = spec.rpartition("@")
    if not at or not url.startswith(("http://", "https://")):
        return None
    if not model:
        raise LimaError(f"{spec}: an endpoint is MODEL@URL, e.g. gpt-4o@https://api.openai.com/v1")
    return model, url


# A verdict of 256 tokens, or a 2,048-token answer, from a busy local server takes well under two minutes;
# a server that has not answered by then is hung, not slow.
ENDPOINT_TIMEOUT_S = 120.0
# chat_completion retries timeouts, connection errors, 408/409/429 and 5xx with exponential backoff from
# 0.5 s (capped at 8 s), waiting for the server's Retry-After instead when it gives one (up to 60 s).
ENDPOINT_RETRIES = 3
# All tries of one request end within this: a try is not started after it, a try under way is cut at it.
ENDPOINT_BUDGET_S = 300.0

_call = threading.local()  # .end: the monotonic time by which the current thread's request and retries end


def openai_client(url: str):
    """An OpenAI client for an OpenAI-compatible server at `url`; the key from OPENAI_API_KEY, else "EMPTY".
    One per URL, shared by threads (its connection pool is thread-safe)."""
    return _client(url, os.environ.get("OPENAI_API_KEY", "EMPTY"), ENDPOINT_TIMEOUT_S, ENDPOINT_RETRIES)


@functools.cache
def _client(url: str, key: str, timeout: float, retries: int):
    from openai import DefaultHttpxClient, OpenAI

    httpx = openai_httpx()
    return OpenAI(base_url=url, api_key=key, timeout=timeout, max_retries=0,  # chat_completion retries, in bounded time
                  http_client=DefaultHttpxClient(transport=deadline_transport(timeout), timeout=httpx.Timeout(timeout)))


def openai_httpx():
    """The HTTP library the installed openai is built on (httpx, or its successor httpx2 in openai 3), whose
    transport and exception classes its client expects."""
    from openai import DefaultHttpxClient

    base = next(c for c in DefaultHttpxClient.__mro__[1:] if c.__name__ == "Client")
    return importlib.import_module(base.__module__.split(".")[0])


def deadline_transport(seconds: float):
    """An httpx transport whose every request is whole (connected, answered, its body read to the end) within
    `seconds`, and within what is left of the request's budget (ENDPOINT_BUDGET_S, all tries together).

    httpx's own timeouts bound each wait on the socket, not their sum: a server that sends one byte every
    ten seconds never trips a 120 s read timeout. Here the exchange runs in a helper thread and the caller
    stops waiting at the deadline; the helper stops reading at its next byte."""
    httpx = openai_httpx()

    class DeadlineTransport(httpx.HTTPTransport):
        def handle_request(self, request):
            end = getattr(_call, "end", None)
            limit = seconds if end is None else min(seconds, end - time.monotonic())
            if limit <= 0:
                raise httpx.ConnectTimeout("the request's time is spent", request=request)
            deadline = time.monotonic() + limit
            request.extensions["timeout"] = dict.fromkeys(("connect", "read", "write", "pool"), limit)
            done, box = threading.Event(), {}

            def exchange():
                try:
                    response = httpx.HTTPTransport.handle_request(self, request)
                    body = bytearray()
                    try:
                        for chunk in response.stream:
                            body += chunk
                            if time.monotonic() > deadline:
                                raise httpx.ReadTimeout("the reply is still arriving at the deadline", request=request)
                    finally:
                        response.stream.close()
                    box["response"] = httpx.Response(response.status_code, headers=response.headers, content=bytes(body),
                                                     extensions=response.extensions, request=request)
                except BaseException as error:  # noqa: BLE001 - handed to the caller's thread as it is
                    box["error"] = error
                finally:
                    done.set()

            threading.Thread(target=exchange, daemon=True, name="lima-lite endpoint request").start()
            if not done.wait(max(0.0, deadline - time.monotonic())):
                raise httpx.ReadTimeout(f"no whole reply within {limit:.0f} s", request=request)
            if "error" in box:
                raise box["error"]
            return box["response"]

    return DeadlineTransport()


def chat_completion(url: str, model: str, messages: list[dict], **settings) -> tuple[str | None, str | None]:
    """(content, finish_reason) of one chat completion from an OpenAI-compatible server. Every way a server
    can fail (unreachable, hung, HTTP errors after the retries, a page that is not the API, no choices) is a
    one-line LimaError naming the URL; content is None when the server sent `content: null`."""
    import openai

    where = f"{model}@{url}"
    tries, end = 0, time.monotonic() + ENDPOINT_BUDGET_S
    while True:
        tries += 1
        _call.end = end
        try:
            response = openai_client(url).chat.completions.create(model=model, messages=messages, **settings)
            break
        except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError) as error:
            wait = retry_wait(error, tries)
            if wait is None or tries > ENDPOINT_RETRIES or time.monotonic() + wait >= end:
                raise endpoint_error(where, error, tries) from None
            time.sleep(wait)
        except json.JSONDecodeError as error:  # a body that is not JSON under an application/json header
            raise LimaError(f"{where}: the reply is not JSON ({one_line(str(error))}); is this an OpenAI-compatible "
                            "/v1 URL?") from None
        finally:
            _call.end = None
    from openai.types.chat import ChatCompletion

    if not isinstance(response, ChatCompletion):  # openai hands back a non-JSON body (an HTML page) as text
        raise LimaError(f"{where}: the reply is not a chat completion but {one_line(str(response))[:80]!r}; "
                        "is this an OpenAI-compatible /v1 URL?")
    if not response.choices:
        raise LimaError(f"{where}: the reply has no choices (choices: []); check the server's log")
    try:
        choice = response.choices[0]
        content, finish = choice.message.content, choice.finish_reason
    except (AttributeError, TypeError, KeyError, IndexError):
        content, finish = (), None
    if not isinstance(content, str | None):
        raise LimaError(f"{where}: the reply's choices[0] holds no message text ({one_line(str(response.choices))[:80]!r}); "
                        "check the server's log")
    return content, finish


RETRIED = {408, 409, 429} | set(range(500, 600))


def retry_wait(error, tries: int) -> float | None:
    """Seconds before the next try after `error` (the server's Retry-After up to 60 s, else 0.5 s doubling to
    8 s, as openai's own client waits); None when the error is not worth another try."""
    import openai

    if isinstance(error, openai.APIStatusError):
        if error.status_code not in RETRIED:
            return None
        try:
            return min(60.0, max(0.0, float(error.response.headers.get("retry-after", ""))))
        except ValueError:
            pass
    return min(8.0, 0.5 * 2 ** (tries - 1))


def endpoint_error(where: str, error, tries: int) -> LimaError:
    """The one line for a request that failed after `tries` tries."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return LimaError(f"{where}: no answer within {ENDPOINT_TIMEOUT_S:.0f} s, {tries} tries (a try ends when its "
                         f"whole reply has not arrived in {ENDPOINT_TIMEOUT_S:.0f} s, all tries within "
                         f"{ENDPOINT_BUDGET_S:.0f} s); is the server up and the model loaded?")
    if isinstance(error, openai.APIConnectionError):
        return LimaError(f"{where}: cannot connect ({one_line(str(error.__cause__ or error))}); check the host, "
                         "port and /v1 path, and that the server is running")
    return LimaError(f"{where}: HTTP {error.status_code} ({status_detail(error)})"
                     f"{' after ' + str(tries) + ' tries' if error.status_code in RETRIED else ''}; "
                     "check the model name, the key (OPENAI_API_KEY) and the server's log")


def one_line(text: str) -> str:
    return " ".join(text.split())


def status_detail(error) -> str:
    """The server's own words for an HTTP error: the API's error message, else the start of the body."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return one_line(body["message"])[:200]
    return one_line(error.response.text)[:200] or "empty body"


@dataclass
class LocalJudge:
    engine: object  # lima_lite.generate.Engine
    name: str
    max_new_tokens: int = 256

    def complete(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        return self.engine.reply(messages, temperature=0, max_new_tokens=self.max_new_tokens).text.strip()


@dataclass
class EndpointJudge:
    model: str
    base_url: str
    name: str
    max_new_tokens: int = 256

    def complete(self, prompt: str) -> str:
        """The reply, "" for `content: null` (then counted as an unreadable verdict, asked again once)."""
        content, _ = chat_completion(self.base_url, self.model, [{"role": "user", "content": prompt}],
                                     temperature=0, max_tokens=self.max_new_tokens)  # the API's max_new_tokens
        return (content or "").strip()


def get_judge(spec: str, max_new_tokens: int = 256) -> Judge:
    """`MODEL@http(s)://...` -> EndpointJudge; an adapter folder, base folder, Hub id or the embedded base -> LocalJudge."""
    endpoint = parse_endpoint(spec)
    if endpoint:
        return EndpointJudge(model=endpoint[0], base_url=endpoint[1], name=spec, max_new_tokens=max_new_tokens)
    from lima_lite.generate import load_engine

    engine = load_engine(adapter=spec) if is_adapter(spec) else load_engine(base=spec)
    return LocalJudge(engine=engine, name=spec, max_new_tokens=max_new_tokens)
