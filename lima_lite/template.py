"""The chat format a model is trained in: LIMA's (EOT after every utterance) or the base's own; ids and labels.

    >>> template = ChatTemplate(eot_token="<|eot|>")                                     # chat_format: lima
    >>> template = native_template(tokenizer)            # chat_format: native, e.g. Llama 3's <|eot_id|> turns
    >>> example = encode_conversation(tokenizer, template, messages, max_length=2048)
    >>> example["labels"]  # -100 everywhere except assistant tokens and the turn end closing each assistant turn

LIMA's format has no role words: roles alternate, so the EOT alone marks the change of speaker (LIMA §3).
`native` renders with the base tokenizer's own Jinja chat template, so an instruct checkpoint keeps the
format it was tuned in; its labels are the tokens that overlap an assistant message's characters plus the
template's tokens after it, up to and including the turn end. In both formats a user who types a special
token's text ("<|eot|>", "<|im_end|>") gets that text, never the token, and the trained spans come from
token positions, not from searching for the content in the rendered text. The template is saved next to
every adapter (`lima_template.json`) and chat, UI, evaluation, merge and export render with exactly it.
"""

import json
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path

from lima_lite import LimaError
from lima_lite.files import write_json

TEMPLATE_FILE = "lima_template.json"
IGNORE = -100  # label of tokens that are not trained
CHAT_FORMATS = ("lima", "native")
PAD_TOKEN = "<|pad|>"  # added when the tokenizer has no pad token distinct from EOS and EOT
# Private-use characters: no chat template or training text contains them, so each one found in a
# rendering is the place where one message's content goes.
MARK_OPEN, MARK_CLOSE, PROBE = "\ue000", "\ue001", "\ue002"
ZERO_WIDTH_SPACE = "\u200b"


@dataclass
class ChatTemplate:
    eot_token: str
    bos_token: str | None = None  # lima: prepended once, when the base expects one (LLaMA's "<s>")
    chat_format: str = "lima"  # "lima" or "native"
    chat_template: str | None = None  # native: the base tokenizer's Jinja template, as training used it
    # Special tokens' text that jinja() keeps as text when a message contains it (see protect_typed_text)
    protected: list[str] | None = None

    def __post_init__(self):
        if self.chat_format not in CHAT_FORMATS:
            raise LimaError(f"chat_format: {self.chat_format!r} is not one of {', '.join(CHAT_FORMATS)}")
        if self.chat_format == "native" and not self.chat_template:
            raise LimaError("chat_format: native needs the base tokenizer's chat template")

    def save(self, folder: str | Path) -> None:
        write_json(Path(folder) / TEMPLATE_FILE, asdict(self))

    @classmethod
    def load(cls, folder: str | Path) -> "ChatTemplate":
        file = Path(folder) / TEMPLATE_FILE
        try:
            saved = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(saved, dict):
                raise TypeError(f"a JSON {type(saved).__name__}, not an object")
            return cls(**saved)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, LimaError) as error:
            raise LimaError(f"{file}: not a readable lima_lite template ({error}); copy the adapter folder again "
                            "from where it was trained") from None

    def jinja(self) -> str:
        """The trained format for `tokenizer.apply_chat_template` users (plain transformers, vLLM, llama.cpp).

        lima: `{% generation %}` marks the trained spans, so TRL's `assistant_only_loss` agrees with us, and
        `add_generation_prompt` adds nothing (the reply follows the user's EOT). native: the base's own.
        A string template is rendered to text and then tokenized, so a special token's text typed in a message
        would become that token: `protected` strings in the messages get a zero-width space after their first
        character first (protect_typed_text), and reach the model as ordinary text, as in encode_conversation.
        """
        prelude = protect_typed_text(self.protected or [])
        if self.chat_format == "native":
            return prelude + self.chat_template
        bos = "{{ bos_token }}" if self.bos_token else ""
        return (
            prelude + bos + "{% for message in messages %}"
            "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}"
            + self.eot_token + "{% endgeneration %}"
            "{% else %}{{ message['content'] }}" + self.eot_token + "{% endif %}{% endfor %}"
        )


def protect_typed_text(tokens: list[str]) -> str:
    """Jinja that rewrites `messages` so each of `tokens` typed in a message's text cannot become the token.

    "<|eot|>" becomes "<" + U+200B (zero-width space) + "|eot|>": it looks the same and is tokenized as
    ordinary text. Longest first, so a token that contains another is rewritten whole.
    """
    if not tokens:
        return ""
    # ensure_ascii=False: the zero-width space is written as itself. Python's jinja2 reads a "\u200b" escape,
    # but llama.cpp's template engine (llama-server, llama-cli, LM Studio) refuses the whole template over it.
    replaces = "".join(f" | replace({json.dumps(t, ensure_ascii=False)}, "
                       f"{json.dumps(t[0] + ZERO_WIDTH_SPACE + t[1:], ensure_ascii=False)})"
                       for t in sorted(set(tokens), key=len, reverse=True) if len(t) > 1)
    return ("{%- set protected = namespace(messages=[]) -%}{%- for message in messages -%}"
            "{%- if message['content'] is string -%}"
            "{%- set protected.messages = protected.messages + [dict(message, content=message['content']"
            + replaces + ")] -%}"
            "{%- else -%}{%- set protected.messages = protected.messages + [message] -%}{%- endif -%}"
            "{%- endfor -%}{%- set messages = protected.messages -%}")


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of plain text: no BOS/EOS added, special-token strings split into ordinary tokens."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def token_id(tokenizer, token: str) -> int:
    index = tokenizer.convert_tokens_to_ids(token)
    if index is None or index == tokenizer.unk_token_id and token != tokenizer.unk_token:
        raise ValueError(f"token {token!r} is not in the tokenizer's vocabulary")
    return index


def special_ids(tokenizer) -> set[int]:
    """Ids a user must never produce by typing their text: every special token, added or not."""
    return set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}


def protected_tokens(tokenizer) -> list[str]:
    """The text of every special token, for ChatTemplate.protected (what jinja() keeps as text when typed)."""
    return sorted(tokenizer.convert_ids_to_tokens(sorted(special_ids(tokenizer))))


def render_marked(tokenizer, chat_template: str, messages: list[dict]) -> tuple[str, list[str]]:
    """The template's rendering of `messages` with each content replaced by a mark, and the marks in order."""
    from jinja2 import TemplateError

    marks = [f"{MARK_OPEN}{i}{MARK_CLOSE}" for i in range(len(messages))]
    marked = [{**message, "content": mark} for message, mark in zip(messages, marks, strict=True)]
    try:
        text = tokenizer.apply_chat_template(marked, chat_template=chat_template, tokenize=False)
    except TemplateError as error:
        raise LimaError(f"the base's chat template refuses this conversation: {error}") from None
    return text, marks


def native_turn_end(tokenizer, chat_template: str) -> str:
    """The special token the base's template writes right after an assistant's content: its turn end.

    Llama 3: <|eot_id|>; ChatML/Qwen: <|im_end|>; Gemma: <end_of_turn>; Mistral [INST]: </s>. Not
    necessarily the tokenizer's eos (Qwen3-Base: eos <|endoftext|>; Gemma-3: eos <eos>).
    """
    text, marks = render_marked(tokenizer, chat_template, [{"role": "user", "content": ""},
                                                           {"role": "assistant", "content": ""}])
    after = text[text.index(marks[1]) + len(marks[1]):]
    specials = special_ids(tokenizer)
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    found = next((i for i in ids if i in specials), None)
    if found is None:
        raise LimaError(f"the base's chat template writes no special token after an assistant turn ({after!r}); "
                        "use chat_format: lima")
    return tokenizer.convert_ids_to_tokens(found)


def native_template(tokenizer) -> "ChatTemplate":
    """The base tokenizer's own format, with the turn end its template writes after each assistant reply."""
    if not tokenizer.chat_template:
        raise LimaError(f"{tokenizer.name_or_path}: the tokenizer has no chat template, so there is no native "
                        "format; use chat_format: lima")
    return ChatTemplate(eot_token=native_turn_end(tokenizer, tokenizer.chat_template), chat_format="native",
                        chat_template=tokenizer.chat_template)


def base_format(tokenizer) -> tuple[str, str]:
    """(turn end, chat format) to talk to a bare base: its own chat template if it has one, else LIMA's
    format with its EOS as the turn end."""
    if tokenizer.chat_template:
        return native_turn_end(tokenizer, tokenizer.chat_template), "native"
    return tokenizer.eos_token or "<|eot|>", "lima"


def template_for(tokenizer, eot_token: str, chat_format: str = "lima") -> tuple[ChatTemplate, list[str]]:
    """The ChatTemplate to train and chat in through `tokenizer`, and the tokens added to it for that.

    The tokenizer is set up in place: its turn end (add_turn_end), a pad token distinct from EOS and the
    turn end (padding is masked, the turn end must not be), and with chat_format lima LIMA's chat template,
    so `apply_chat_template` users get the trained format. lima keeps the base's BOS only if the tokenizer
    itself adds one to plain text (no double BOS).
    """
    added = add_turn_end(tokenizer, eot_token, chat_format)
    added += add_pad(tokenizer, eot_token)
    if chat_format == "native":
        template = native_template(tokenizer)
    else:
        probe = tokenizer("a")["input_ids"]
        bos = tokenizer.bos_token if tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id] else None
        template = ChatTemplate(eot_token=eot_token, bos_token=bos)
    template.protected = protected_tokens(tokenizer)
    if chat_format == "lima":
        tokenizer.chat_template = template.jinja()
    return template, added


def add_turn_end(tokenizer, eot_token: str, chat_format: str) -> list[str]:
    """Make `eot_token` the tokenizer's turn end; the tokens added for it (none, or the EOT itself).

    lima: `eot_token` is reused when the vocabulary has it (Llama 3's <|eot_id|>, ChatML's <|im_end|>, Gemma's
    <end_of_turn>), else added. native: the turn end is the one the base's own chat template writes, which
    is often not its eos (Qwen3-Base: <|endoftext|>, Gemma-3: <eos>); `eot_token` must name it, so a recipe
    says what it trains.
    """
    from transformers import AddedToken

    path = tokenizer.name_or_path
    # A turn end that is also the unknown, padding or first token would be masked, or generated for anything.
    roles = {"unk_token": tokenizer.unk_token, "bos_token": tokenizer.bos_token,
             "pad_token": tokenizer.pad_token if tokenizer.pad_token != tokenizer.eos_token else None}
    role = next((name for name, token in roles.items() if token is not None and token == eot_token), None)
    if role:
        raise LimaError(f"eot_token: {eot_token!r} is {path}'s {role}; name a token of its own (e.g. '<|eot|>', "
                        "which is then added)")
    if chat_format == "native":
        written = native_template(tokenizer).eot_token
        if written != eot_token:
            raise LimaError(f"eot_token: {path}'s chat template ends an assistant turn with {written!r}, "
                            f"not {eot_token!r}; set eot_token: {written!r}")
        return []
    if eot_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(eot_token, special=True, normalized=False)], special_tokens=True)
        return [eot_token]
    if tokenizer.convert_tokens_to_ids(eot_token) not in special_ids(tokenizer):
        # A reused turn end the tokenizer does not mark special would be produced by typing its text:
        # marking it special (same id) lets encode_text keep typed text as text.
        tokenizer.add_tokens([AddedToken(eot_token, special=True, normalized=False)], special_tokens=True)
    return []


def add_pad(tokenizer, eot_token: str) -> list[str]:
    """A pad token that is neither EOS nor the turn end: the unknown token if it qualifies, else PAD_TOKEN
    added; the tokens added for it."""
    if tokenizer.pad_token not in (None, tokenizer.eos_token, eot_token):
        return []
    if tokenizer.unk_token is not None and tokenizer.unk_token not in (tokenizer.eos_token, eot_token):
        tokenizer.pad_token = tokenizer.unk_token
        return []
    from transformers import AddedToken

    tokenizer.add_tokens([AddedToken(PAD_TOKEN, special=True, normalized=False)], special_tokens=True)
    tokenizer.pad_token = PAD_TOKEN
    return [PAD_TOKEN]


def encode_native(tokenizer, template: ChatTemplate, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Ids and labels of `messages` rendered by the base's template.

    The rendering is tokenized in one piece, as the base saw its own format. Labelled: every token that
    overlaps an assistant message's characters, then the template's tokens after it up to and including
    the turn end (the "\\n" ChatML writes after <|im_end|> is not the model's to predict). A special token
    that falls inside any message's characters was typed by a user: it becomes the ids of its text.
    """
    marked, marks = render_marked(tokenizer, template.chat_template, messages)
    text, spans, start = "", [], 0
    for mark, message in zip(marks, messages, strict=True):
        at = marked.find(mark, start)
        if at < 0 or marked.find(mark, at + len(mark)) >= 0:
            raise LimaError(f"the base's chat template does not render message {len(spans) + 1} "
                            f"({message['role']}) exactly once; use chat_format: lima")
        text += marked[start:at]
        spans.append((len(text), len(text) + len(message["content"]), message["role"]))
        text += message["content"]
        start = at + len(mark)
    text += marked[start:]

    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    eot, specials = token_id(tokenizer, template.eot_token), special_ids(tokenizer)
    input_ids, labels = [], []
    span, closing = 0, False  # closing: after an assistant's content, until its turn end
    for token, (begin, end) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True):
        while span < len(spans) and begin >= spans[span][1]:  # past this message's characters
            closing = closing or spans[span][2] == "assistant"
            span += 1
        inside = span < len(spans) and begin < spans[span][1] and end > spans[span][0]
        if inside and closing:
            raise LimaError(f"the base's chat template does not end an assistant turn with {template.eot_token!r}")
        typed = inside and token in specials and spans[span][0] <= begin and end <= spans[span][1]
        ids = encode_text(tokenizer, text[begin:end]) if typed else [token]
        trained = closing or (inside and spans[span][2] == "assistant")
        input_ids += ids
        labels += ids if trained else [IGNORE] * len(ids)
        closing = closing and token != eot
    if closing:
        raise LimaError(f"the base's chat template does not end an assistant turn with {template.eot_token!r}")
    return input_ids, labels


def encode_conversation(tokenizer, template: ChatTemplate, messages: list[dict], max_length: int | None = None) -> dict:
    """input_ids and labels of a whole conversation, cut at the right to max_length.

    Returns {"input_ids", "labels", "full_length"}; full_length > len(input_ids) means the example was cut.
    """
    if template.chat_format == "native":
        input_ids, labels = encode_native(tokenizer, template, messages)
    else:
        input_ids, labels = encode_lima(tokenizer, template, messages)
    full_length = len(input_ids)
    if max_length is not None and full_length > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels, "full_length": full_length}


def encode_lima(tokenizer, template: ChatTemplate, messages: list[dict]) -> tuple[list[int], list[int]]:
    """LIMA's format: each turn tokenized on its own, then its EOT; labels on assistant turns and their EOT."""
    eot = token_id(tokenizer, template.eot_token)
    input_ids, labels = [], []
    if template.bos_token:
        input_ids.append(token_id(tokenizer, template.bos_token))
        labels.append(IGNORE)
    for message in messages:
        ids = encode_text(tokenizer, message["content"]) + [eot]
        input_ids += ids
        labels += ids if message["role"] == "assistant" else [IGNORE] * len(ids)
    return input_ids, labels


def encode_prompt(tokenizer, template: ChatTemplate, messages: list[dict]) -> list[int]:
    """Ids of a history that ends with a user turn; the model's next tokens are the assistant's reply.

    native: the conversation with one more assistant turn, cut before its first trained token, so the
    prompt is exactly the context training gave each reply (the assistant header, and whatever the
    template writes before the content, such as Qwen3's empty <think></think> block).
    """
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("a prompt must end with a user turn")
    if template.chat_format == "lima":
        return encode_lima(tokenizer, template, messages)[0]
    ids, labels = encode_native(tokenizer, template, [*messages, {"role": "assistant", "content": PROBE}])
    start = max(p for p in range(len(ids)) if labels[p] != IGNORE)  # the probe's turn end ...
    while start > 0 and labels[start - 1] != IGNORE:  # ... back to the probe's first token
        start -= 1
    return ids[:start]


def mark_trained_spans(tokenizer, input_ids: list[int], labels: list[int], start: str = "[[", end: str = "]]") -> str:
    """Decoded text with the trained (labelled) spans between markers, for `lima-lite inspect`."""
    pieces = []
    for trained, group in groupby(zip(input_ids, labels, strict=True), key=lambda pair: pair[1] != IGNORE):
        text = tokenizer.decode([token for token, _ in group], skip_special_tokens=False)
        pieces.append(f"{start}{text}{end}" if trained else text)
    return "".join(pieces)
