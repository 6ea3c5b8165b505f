"""Judges: anything that answers a judging prompt with text. Two kinds, one small interface.

    >>> judge = get_judge("runs/quickstart/adapter")                       # a local model (adapter or base)
    >>> judge = get_judge("gpt-4o@https://api.openai.com/v1")              # MODEL@URL: any OpenAI-compatible server
    >>> judge.complete("Rate this answer from 1 to 6: ...")
    '5'

Local judges run through the shared generation core, greedily (temperature 0), so verdicts repeat.
Endpoint judges read the key from OPENAI_API_KEY (a local server usually accepts any).
"""

import os
from dataclasses import dataclass
from typing import Protocol

from lima_lite import LimaError


class Judge(Protocol):
    name: str

    def complete(self, prompt: str) -> str: ...


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
    max_tokens: int = 256

    def complete(self, prompt: str) -> str:
        from openai import OpenAI

        client = OpenAI(base_url=self.base_url, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"))
        response = client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=self.max_tokens
        )
        return (response.choices[0].message.content or "").strip()


def get_judge(spec: str, max_new_tokens: int = 256) -> Judge:
    """`MODEL@http(s)://...` -> EndpointJudge; an adapter folder, base folder, Hub id or the embedded base -> LocalJudge."""
    model, at, url = spec.rpartition("@")
    if at and url.startswith(("http://", "https://")):
        if not model:
            raise LimaError(f"{spec}: an endpoint judge is MODEL@URL, e.g. gpt-4o@https://api.openai.com/v1")
        return EndpointJudge(model=model, base_url=url, name=spec, max_tokens=max_new_tokens)
    from lima_lite.generate import is_adapter, load_engine

    engine = load_engine(adapter=spec) if is_adapter(spec) else load_engine(base=spec)
    return LocalJudge(engine=engine, name=spec, max_new_tokens=max_new_tokens)
