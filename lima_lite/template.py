"""The LIMA chat template: every utterance is followed by the end-of-turn (EOT) token.

    >>> template = ChatTemplate(eot_token="<|eot|>")
    >>> example = encode_conversation(tokenizer, template, messages, max_length=2048)
    >>> example["labels"]  # -100 everywhere except assistant tokens and the EOT ending each assistant turn

No role words: roles alternate, so the EOT alone marks the change of speaker (LIMA §3). Each turn is
tokenized on its own with `split_special_tokens=True`, so a user who types "<|eot|>" gets the text,
never the token, and the trained spans come from token positions, not from searching strings.
The template is saved next to every adapter (`lima_template.json`) and chat, UI and evaluation
render with exactly what training used.
"""

import json
from itertools import groupby
from dataclasses import asdict, dataclass
from pathlib import Path

TEMPLATE_FILE = "lima_template.json"
IGNORE = -100  # label of tokens that are not trained


@dataclass
class ChatTemplate:
    eot_token: str
    bos_token: str | None = None  # prepended once, when the base model expects one (LLaMA's "<s>")

    def save(self, folder: str | Path) -> None:
        (Path(folder) / TEMPLATE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "ChatTemplate":
        return cls(**json.loads((Path(folder) / TEMPLATE_FILE).read_text()))

    def jinja(self) -> str:
        """The same template for `tokenizer.apply_chat_template` users (plain transformers/peft).

        `{% generation %}` marks the trained spans, so TRL's `assistant_only_loss` agrees with us.
        Unlike `encode_conversation`, a string template cannot keep special-token text typed by a user as text.
        """
        bos = "{{ bos_token }}" if self.bos_token else ""
        return (
            bos + "{% for message in messages %}"
            "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}"
            + self.eot_token + "{% endgeneration %}"
            "{% else %}{{ message['content'] }}" + self.eot_token + "{% endif %}{% endfor %}"
        )


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of plain text: no BOS/EOS added, special-token strings split into ordinary tokens."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def token_id(tokenizer, token: str) -> int:
    index = tokenizer.convert_tokens_to_ids(token)
    if index is None or index == tokenizer.unk_token_id and token != tokenizer.unk_token:
        raise ValueError(f"token {token!r} is not in the tokenizer's vocabulary")
    return index


def encode_conversation(tokenizer, template: ChatTemplate, messages: list[dict], max_length: int | None = None) -> dict:
    """input_ids and labels of a whole conversation, cut at the right to max_length.

    Returns {"input_ids", "labels", "full_length"}; full_length > len(input_ids) means the example was cut.
    """
    eot = token_id(tokenizer, template.eot_token)
    input_ids, labels = [], []
    if template.bos_token:
        input_ids.append(token_id(tokenizer, template.bos_token))
        labels.append(IGNORE)
    for message in messages:
        ids = encode_text(tokenizer, message["content"]) + [eot]
        input_ids += ids
        labels += ids if message["role"] == "assistant" else [IGNORE] * len(ids)
    full_length = len(input_ids)
    if max_length is not None and full_length > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels, "full_length": full_length}


def encode_prompt(tokenizer, template: ChatTemplate, messages: list[dict]) -> list[int]:
    """Ids of a history that ends with a user turn; the model's next tokens are the assistant's reply."""
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("a prompt must end with a user turn")
    return encode_conversation(tokenizer, template, messages)["input_ids"]


def mark_trained_spans(tokenizer, input_ids: list[int], labels: list[int], start: str = "[[", end: str = "]]") -> str:
    """Decoded text with the trained (labelled) spans between markers, for `lima-lite inspect`."""
    pieces = []
    for trained, group in groupby(zip(input_ids, labels), key=lambda pair: pair[1] != IGNORE):
        text = tokenizer.decode([token for token, _ in group], skip_special_tokens=False)
        pieces.append(f"{start}{text}{end}" if trained else text)
    return "".join(pieces)
