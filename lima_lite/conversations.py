"""Read conversations in the forms LIMA-style data comes in, check them, and write them back safely.

    >>> conversations = load_conversations("embedded:train.jsonl")
    >>> conversations[0]["messages"][0]
    {'role': 'user', 'content': '...'}

The canonical form is TRL's conversational one, one conversation per JSONL line:
`{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}], "source": ..., "id": ...}`.
Also read: GAIR/lima (`conversations`: a list of strings, user first), ShareGPT (`conversations`:
`from`/`value`), Alpaca (`instruction`/`input`/`output`) and Dolly (`instruction`/`context`/`response`).
Every problem is reported as `file:line: field: what is wrong`; nothing is dropped silently.
"""

import hashlib
import json
import re
from pathlib import Path

import lima_lite.template
from lima_lite import LimaError
from lima_lite.files import json_problem, loads_line, loads_strict, no_file, read_jsonl
from lima_lite.template import IGNORE

SAMPLES = Path(__file__).resolve().parent / "samples"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MAX_ERRORS_SHOWN = 20
# Half of a UTF-16 pair alone ("\\ud800" in JSON): Python keeps it in a str, but no tokenizer or file can encode it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class DataError(LimaError):
    pass


def resolve_data_path(name: str) -> Path | None:
    """`embedded:train.jsonl` -> the sample shipped with lima_lite; a local path -> itself; else None (Hub id)."""
    if name.startswith("embedded:"):
        return SAMPLES / name.removeprefix("embedded:")
    path = Path(name).expanduser()
    return path if path.exists() or path.suffix in (".jsonl", ".json") or name.startswith((".", "/", "~")) else None


def local_data_file(name: str, kind: str) -> Path:
    """The local file `name` names (a path, or `embedded:NAME`); a missing one is an error naming it a `kind` file."""
    path = resolve_data_path(name) or Path(name)
    if not path.is_file():
        raise LimaError(no_file(path, kind))
    return path


def to_messages(row: dict, where: str) -> list[dict]:
    """Convert one row of any supported form into a list of {role, content}; raise DataError if unknown.

    Alpaca/Dolly fields must be strings (a null `input`/`context` counts as none): a null, a list or an
    object would otherwise be trained as its Python text ("None", "['a']").
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: a line must hold a JSON object, not {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise DataError(f"{where}: messages: must be a list of {{role, content}} objects")
        return [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    if "conversations" in row:
        turns = row["conversations"]
        if not isinstance(turns, list):
            raise DataError(f"{where}: conversations: must be a list")
        if not any(isinstance(t, dict) for t in turns):  # GAIR/lima: strings, alternating, user first
            return [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]
        messages = []
        for i, turn in enumerate(turns):  # ShareGPT
            if not isinstance(turn, dict):
                raise DataError(f"{where}: conversations[{i}]: must be a {{from, value}} object like the others")
            if not isinstance(turn.get("from"), str) or turn["from"] not in SHAREGPT_ROLES:
                raise DataError(f"{where}: conversations[{i}].from: expected one of {sorted(SHAREGPT_ROLES)}")
            messages.append({"role": SHAREGPT_ROLES[turn["from"]], "content": turn.get("value")})
        return messages
    if "instruction" in row and ("output" in row or "response" in row):  # Alpaca, Dolly
        answer, extra = ("output", "input") if "output" in row else ("response", "context")
        for name in ("instruction", extra, answer):
            value = row.get(name)
            if not isinstance(value, str) and not (name == extra and value is None):
                found = "null" if value is None else type(value).__name__
                raise DataError(f"{where}: {name}: must be a string, not {found}")
        context = row.get(extra) or ""
        prompt = row["instruction"] if not context.strip() else f"{row['instruction']}\n\n{context}"
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": row[answer]}]
    raise DataError(
        f"{where}: unknown form (keys {sorted(row)}); expected 'messages', 'conversations', "
        "'instruction'+'output' (Alpaca) or 'instruction'+'response' (Dolly)"
    )


def turn_fields(row: dict, count: int) -> list[tuple[str, str]]:
    """(content field, role field) of each turn, as the user's own file names them: `messages[1].content`,
    ShareGPT's `conversations[1].value`, GAIR/lima's `conversations[1]`, Alpaca's `output`."""
    if "messages" in row:
        return [(f"messages[{i}].content", f"messages[{i}].role") for i in range(count)]
    if "conversations" in row:
        if any(isinstance(t, dict) for t in row["conversations"]):
            return [(f"conversations[{i}].value", f"conversations[{i}].from") for i in range(count)]
        return [(f"conversations[{i}]", f"conversations[{i}]") for i in range(count)]
    answer = "output" if "output" in row else "response"
    return [("instruction", "instruction"), (answer, answer)]


def read_row(row, where: str, empty_turns: bool = False) -> list[dict]:
    """The messages of one row, checked; errors name the field as the row has it."""
    messages = to_messages(row, where)
    fields = turn_fields(row, len(messages))
    container = "messages" if "messages" in row else "conversations" if "conversations" in row else "instruction"
    check_messages(messages, where, container, fields, empty_turns)
    return messages


def check_messages(messages: list[dict], where: str, field_name: str = "messages",
                   fields: list[tuple[str, str]] | None = None, empty_turns: bool = False) -> None:
    """Turns alternate user/assistant (after an optional leading system turn) and end with the assistant.

    `fields` names each turn's content and role field (default `messages[i].content` / `.role`); `empty_turns`
    lets empty or whitespace-only turns through, for `data stats` to count."""
    fields = fields or [(f"{field_name}[{i}].content", f"{field_name}[{i}].role") for i in range(len(messages))]
    if not messages:
        raise DataError(f"{where}: {field_name}: no turns")
    start = 1 if messages[0]["role"] == "system" else 0
    if start == len(messages):
        raise DataError(f"{where}: {field_name}: only a system turn")
    for i, message in enumerate(messages):
        content, (content_field, role_field) = message.get("content"), fields[i]
        if content is None:
            raise DataError(f"{where}: {content_field}: missing or null; it must be a string")
        if not isinstance(content, str):
            raise DataError(f"{where}: {content_field}: must be a string, not {type(content).__name__}")
        if not content.strip() and not empty_turns:
            raise DataError(f"{where}: {content_field}: empty turn")
        if surrogate := LONE_SURROGATE.search(content):
            raise DataError(f"{where}: {content_field}: a lone surrogate \\u{ord(surrogate.group()):x} at character "
                            f"{surrogate.start()}, which is not text; fix that escape in the file")
        if i < start:
            continue
        expected = ("user", "assistant")[(i - start) % 2]
        if message.get("role") != expected:
            raise DataError(
                f"{where}: {role_field}: expected {expected!r}, found {message.get('role')!r} "
                "(turns must alternate user/assistant, starting with the user)"
            )
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: {fields[-1][1]}: the conversation ends with the user; "
                        "it must end with an assistant turn")


def _json_row(text: bytes, path: Path, number: int | None = None):
    """One parsed JSON value (a .jsonl line `number`, or a whole .json file), or the DataError that says
    why not: not UTF-8, invalid JSON, nested too deeply."""
    where = f"{path}:{number}" if number is not None else str(path)
    try:
        text = text.decode("utf-8")
        return loads_strict(text) if number is None else loads_line(text)
    except UnicodeDecodeError as error:
        return DataError(f"{where}: not UTF-8 text (byte {error.start} cannot be decoded)")
    except json.JSONDecodeError as error:
        return DataError(f"{path}:{number or error.lineno}: {json_problem(error)}")
    except (ValueError, RecursionError) as error:  # a key set twice, an integer too long, nested too deeply
        return DataError(f"{where}: {json_problem(error)}")


def _rows_from_file(path: Path, digest):
    """Yield (line number, row or DataError) for a .jsonl (or a .json list) file; every byte read goes into
    `digest` (a hashlib object), so the hash is of the rows read, even if the file changes while it is read."""
    if path.suffix == ".json":
        text = path.read_bytes()
        digest.update(text)
        rows = _json_row(text, path)
        if isinstance(rows, DataError):
            yield 1, rows
            return
        for i, row in enumerate(rows if isinstance(rows, list) else [rows]):
            yield i + 1, row
        return
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            digest.update(line)
            if line.strip():
                yield number, _json_row(line, path, number)


def _rows_from_hub(name: str, split: str):
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, split=split)
    except Exception as error:  # datasets raises many types for "not found" / offline / gated
        raise DataError(
            f"{name}: not a local file, and loading it from the Hugging Face Hub failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). If it is a Hub dataset, log in (`hf auth login`) and check "
            "your network, or download it and pass the local .jsonl path."
        ) from None
    for i, row in enumerate(dataset):
        yield i + 1, row


def load_conversations(name: str, split: str = "train", empty_turns: bool = False) -> list[dict]:
    """All conversations of a JSONL/JSON file or Hub dataset, in canonical form, after checking every row.

    Raises one DataError listing every bad row (file:line: field: problem), so a user fixes them all at once;
    `empty_turns` keeps rows whose only fault is an empty turn (`data stats` counts them).
    """
    return read_conversations(name, split, empty_turns)[0]


def read_conversations(name: str, split: str = "train", empty_turns: bool = False) -> tuple[list[dict], str | None]:
    """load_conversations, and the sha256 of the very bytes its rows were read from (None for a Hub dataset):
    what run.json records, never the file hashed again later, which may have been edited in between."""
    path = resolve_data_path(name)
    if path is not None and not path.is_file():
        raise DataError(no_file(path, "data"))
    digest = hashlib.sha256()
    rows = _rows_from_file(path, digest) if path is not None else _rows_from_hub(name, split)
    label = str(path) if path is not None else f"{name}[{split}]"
    conversations, errors = [], []
    for number, row in rows:
        where = f"{label}:{number}"
        try:
            if isinstance(row, DataError):
                raise row
            messages = read_row(row, where, empty_turns)
        except DataError as error:
            errors.append(str(error))
            continue
        conversations.append({
            "messages": messages,
            "source": row.get("source", label),
            "id": str(row.get("id", f"{Path(label).stem}-{number}")),
        })
    if errors:
        shown = "\n  ".join(errors[:MAX_ERRORS_SHOWN])
        more = f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise DataError(f"{len(errors)} bad row(s) in {label}; nothing was trained:\n  {shown}{more}")
    if not conversations:
        raise DataError(f"{label}: no conversations")
    return conversations, digest.hexdigest() if path is not None else None


# Text longer than max_length x 16 characters is cut before it is tokenized: tokenizers average 3-5
# characters a token on English and code, so a 2,048-token example needs ~10 KB and 32 KB is a generous
# bound. Without it a 50 MB example is tokenized in full before the token cut (88 s and 9.4 GB measured).
CHARS_PER_TOKEN = 16


def cut_chars(messages: list[dict], max_chars: int) -> tuple[list[dict], bool]:
    """The conversation's first `max_chars` characters (turns past them left out, the last one cut) and
    whether anything was cut; the result is then cut to max_length tokens as usual."""
    kept, left = [], max_chars
    for message in messages:
        if left <= 0:
            return kept, True
        if len(message["content"]) > left:
            return kept + [{**message, "content": message["content"][:left]}], True
        kept.append(message)
        left -= len(message["content"])
    return kept, False


def file_sha256(name: str) -> str | None:
    """Hash of a local data file (recorded in run.json); None for a Hub dataset."""
    path = resolve_data_path(name)
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def encode_dataset(conversations, tokenizer, template, max_length: int, drop_too_long: bool = False,
                   multi_turn: bool = True):
    """Token ids and labels of every conversation, with counts of what was kept, cut and dropped."""
    rows, counts, dropped = [], {"read": len(conversations), "kept": 0, "cut": 0, "dropped": 0}, []
    for conversation in conversations:
        if not multi_turn and sum(m["role"] == "user" for m in conversation["messages"]) > 1:
            counts["dropped"] += 1
            dropped.append({"id": conversation["id"], "tokens": None, "reason": "multi-turn (multi_turn: false)"})
            continue
        messages, chars_cut = (cut_chars(conversation["messages"], max_length * CHARS_PER_TOKEN) if max_length
                               else (conversation["messages"], False))
        example = lima_lite.template.encode_conversation(tokenizer, template, messages, max_length)  # `template` is an argument
        cut = chars_cut or example["full_length"] > len(example["input_ids"])
        if (cut and drop_too_long) or all(label == IGNORE for label in example["labels"]):
            counts["dropped"] += 1
            dropped.append({"id": conversation["id"], "tokens": example["full_length"],
                            "reason": "longer than max_length" if drop_too_long else "no trained token left after the cut"})
            continue
        counts["cut"] += cut
        counts["kept"] += 1
        rows.append({"input_ids": example["input_ids"], "labels": example["labels"], "id": conversation["id"]})
    return rows, counts, dropped


# ---------------------------------------------------------------- prompts (eval, the app, data overlap)


def read_prompts(name: str) -> list[dict]:
    """[{"id", "prompt"}] from a prompts file; errors name file:line and field. A prompts file is one of:
    JSONL with a `prompt` string per line (and an optional `id`); JSONL conversations in any form lima_lite reads
    (`messages`, GAIR/lima `conversations`, ...), the first user turn the prompt and the conversation's `id` its
    id; any other file: plain text, one prompt per non-empty line. Ids default to `<file stem>-<line>`."""
    path = local_data_file(name, "prompts")
    if path.suffix in (".jsonl", ".json"):
        found = [(number, *json_prompt(row, path, number)) for number, row in read_jsonl(path)]
    else:
        try:
            # lines end at \n (and \r\n) only: str.splitlines would also cut a prompt at U+2028, U+0085 or a form feed
            lines = enumerate(path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n"), 1)
        except UnicodeDecodeError as error:
            raise LimaError(f"{path}: not UTF-8 text (byte {error.start} of the file cannot be decoded)") from None
        found = [(number, f"{path.stem}-{number}", line.strip()) for number, line in lines if line.strip()]
    prompts, seen = [], {}
    for number, pid, prompt in found:
        claim_id(seen, pid, path, number)
        prompts.append({"id": pid, "prompt": prompt})
    if not prompts:
        raise LimaError(f"{path}: no prompts")
    return prompts


def claim_id(seen: dict[str, int], row_id: str, path: Path, number: int) -> None:
    """Record that line `number` of `path` uses `row_id`; an id a file already used is an error naming both lines
    (answers and judgments are matched by id: two prompts with one id would share one answer)."""
    if row_id in seen:
        raise LimaError(f"{path}:{number}: id: {row_id!r} already used on line {seen[row_id]}")
    seen[row_id] = number


def json_prompt(row, path: Path, number: int) -> tuple[str, str]:
    """(id, prompt) of one JSONL line: a `prompt` string, or the first user turn of a conversation."""
    where = f"{path}:{number}"
    if isinstance(row, dict) and "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise LimaError(f"{where}: prompt: must be a non-empty string")
    else:
        messages = to_messages(row, where)
        first = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first is None:
            raise LimaError(f"{where}: messages: no user turn to use as the prompt")
        prompt = messages[first]["content"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise LimaError(f"{where}: {turn_fields(row, len(messages))[first][0]}: must be a non-empty string")
    return str(row.get("id", f"{path.stem}-{number}")), prompt
