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
import json
import os
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
# openai's client retries timeouts, connection errors, 408/409/429 and 5xx with exponential backoff from
# 0.5 s (capped at 8 s), waiting for the server's Retry-After instead when it gives one (up to 60 s).
ENDPOINT_RETRIES = 3


def openai_client(url: str):
    """An OpenAI client for an OpenAI-compatible server at `url`; the key from OPENAI_API_KEY, else "EMPTY".
    One per URL, shared by threads (its connection pool is thread-safe)."""
    return _client(url, os.environ.get("OPENAI_API_KEY", "EMPTY"), ENDPOINT_TIMEOUT_S, ENDPOINT_RETRIES)


@functools.cache
def _client(url: str, key: str, timeout: float, retries: int):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=key, timeout=timeout, max_retries=retries)


def chat_completion(url: str, model: str, messages: list[dict], **settings) -> tuple[str | None, str | None]:
    """(content, finish_reason) of one chat completion from an OpenAI-compatible server. Every way a server
    can fail (unreachable, hung, HTTP errors after the retries, a page that is not the API, no choices) is a
    one-line LimaError naming the URL; content is None when the server sent `content: null`."""
    import openai

    where = f"{model}@{url}"
    try:
        response = openai_client(url).chat.completions.create(model=model, messages=messages, **settings)
    except openai.APITimeoutError:
        raise LimaError(f"{where}: no answer within {ENDPOINT_TIMEOUT_S:.0f} s, {ENDPOINT_RETRIES + 1} tries; "
                        "is the server up and the model loaded?") from None
    except openai.APIConnectionError as error:
        raise LimaError(f"{where}: cannot connect ({one_line(str(error.__cause__ or error))}); check the host, "
                        "port and /v1 path, and that the server is running") from None
    except openai.APIStatusError as error:
        raise LimaError(f"{where}: HTTP {error.status_code} ({status_detail(error)})"
                        f"{' after ' + str(ENDPOINT_RETRIES + 1) + ' tries' if error.status_code in RETRIED else ''}; "
                        "check the model name, the key (OPENAI_API_KEY) and the server's log") from None
    except json.JSONDecodeError as error:  # a body that is not JSON under an application/json header
        raise LimaError(f"{where}: the reply is not JSON ({one_line(str(error))}); is this an OpenAI-compatible "
                        "/v1 URL?") from None
    from openai.types.chat import ChatCompletion

    if not isinstance(response, ChatCompletion):  # openai hands back a non-JSON body (an HTML page) as text
        raise LimaError(f"{where}: the reply is not a chat completion but {one_line(str(response))[:80]!r}; "
                        "is this an OpenAI-compatible /v1 URL?")
    if not response.choices:
        raise LimaError(f"{where}: the reply has no choices (choices: []); check the server's log")
    choice = response.choices[0]
    return choice.message.content, choice.finish_reason


RETRIED = {408, 409, 429} | set(range(500, 600))


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
