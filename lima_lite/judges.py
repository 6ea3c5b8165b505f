"""Judges: anything that answers a judging prompt with text. Two kinds, one small interface.

    >>> judge = get_judge("runs/quickstart/adapter")                       # a local model (adapter or base)
    >>> judge = get_judge("gpt-4o@https://api.openai.com/v1")              # MODEL@URL: any OpenAI-compatible server
    >>> judge.complete("Rate this answer from 1 to 6: ...")
    '5'
    >>> parse_endpoint("gpt-4o@https://api.openai.com/v1")                 # None for anything but MODEL@URL
    ('gpt-4o', 'https://api.openai.com/v1')

Local judges run through the shared generation core, greedily (temperature 0), so verdicts repeat.
Endpoint judges (and endpoint answerers in lima_lite.evaluate.answers) talk to the server through
`openai_client(url)`, which reads the key from OPENAI_API_KEY (a local server usually accepts any).
Used by `lima-lite select --strategy quality` and by `lima-lite eval`.
"""

import os
from dataclasses import dataclass
from typing import Protocol

from lima_lite import LimaError


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


def openai_client(url: str):
    """An OpenAI client for an OpenAI-compatible server at `url`; the key from OPENAI_API_KEY, else "EMPTY"."""
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"))


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
        response = openai_client(self.base_url).chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0,
            max_tokens=self.max_new_tokens)  # the OpenAI API's name for max_new_tokens
        return (response.choices[0].message.content or "").strip()


def get_judge(spec: str, max_new_tokens: int = 256) -> Judge:
    """`MODEL@http(s)://...` -> EndpointJudge; an adapter folder, base folder, Hub id or the embedded base -> LocalJudge."""
    endpoint = parse_endpoint(spec)
    if endpoint:
        return EndpointJudge(model=endpoint[0], base_url=endpoint[1], name=spec, max_new_tokens=max_new_tokens)
    from lima_lite.generate import load_engine
    from lima_lite.layout import is_adapter

    engine = load_engine(adapter=spec) if is_adapter(spec) else load_engine(base=spec)
    return LocalJudge(engine=engine, name=spec, max_new_tokens=max_new_tokens)
