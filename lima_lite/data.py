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
from pathlib import Path

from lima_lite import LimaError

SAMPLES = Path(__file__).resolve().parent / "samples"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MAX_ERRORS_SHOWN = 20


class DataError(LimaError):
    pass


def resolve_data_path(name: str) -> Path | None:
    """`embedded:train.jsonl` -> the sample shipped with lima_lite; a local path -> itself; else None (Hub id)."""
    if name.startswith("embedded:"):
        return SAMPLES / name.removeprefix("embedded:")
    path = Path(name).expanduser()
    return path if path.exists() or path.suffix in (".jsonl", ".json") or name.startswith((".", "/", "~")) else None


def to_messages(row: dict, where: str) -> list[dict]:
    """Convert one row of any supported form into a list of {role, content}; raise DataError if unknown."""
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
        if all(isinstance(t, str) for t in turns):  # GAIR/lima: alternating, user first
            return [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]
        messages = []
        for i, turn in enumerate(turns):  # ShareGPT
            if not isinstance(turn, dict) or turn.get("from") not in SHAREGPT_ROLES:
                raise DataError(f"{where}: conversations[{i}].from: expected one of {sorted(SHAREGPT_ROLES)}")
            messages.append({"role": SHAREGPT_ROLES[turn["from"]], "content": turn.get("value")})
        return messages
    if "instruction" in row and ("output" in row or "response" in row):  # Alpaca, Dolly
        context = row.get("input") or row.get("context") or ""
        prompt = row["instruction"] if not context else f"{row['instruction']}\n\n{context}"
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": row.get("output", row.get("response"))}]
    raise DataError(
        f"{where}: unknown form (keys {sorted(row)}); expected 'messages', 'conversations', "
        "'instruction'+'output' (Alpaca) or 'instruction'+'response' (Dolly)"
    )


def check_messages(messages: list[dict], where: str, field_name: str = "messages") -> None:
    """Turns alternate user/assistant (after an optional leading system turn) and end with the assistant."""
    if not messages:
        raise DataError(f"{where}: {field_name}: no turns")
    start = 1 if messages[0]["role"] == "system" else 0
    if start == len(messages):
        raise DataError(f"{where}: {field_name}: only a system turn")
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, str):
            raise DataError(f"{where}: {field_name}[{i}].content: missing or not a string")
        if not content.strip():
            raise DataError(f"{where}: {field_name}[{i}].content: empty turn")
        if i < start:
            continue
        expected = ("user", "assistant")[(i - start) % 2]
        if message.get("role") != expected:
            raise DataError(
                f"{where}: {field_name}[{i}].role: expected {expected!r}, found {message.get('role')!r} "
                "(turns must alternate user/assistant, starting with the user)"
            )
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: {field_name}[{len(messages) - 1}].role: the conversation ends with the user; "
                        "it must end with an assistant turn")


def _rows_from_file(path: Path):
    """Yield (line number, row or DataError) for a .jsonl (or a .json list) file."""
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            yield error.lineno, DataError(f"{path}:{error.lineno}: invalid JSON: {error.msg}")
            return
        for i, row in enumerate(rows if isinstance(rows, list) else [rows]):
            yield i + 1, row
        return
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, DataError(f"{path}:{number}: invalid JSON at column {error.colno}: {error.msg}")


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


def load_conversations(name: str, split: str = "train") -> list[dict]:
    """All conversations of a JSONL/JSON file or Hub dataset, in canonical form, after checking every row.

    Raises one DataError listing every bad row (file:line: field: problem), so a user fixes them all at once.
    """
    path = resolve_data_path(name)
    if path is not None and not path.is_file():
        raise DataError(f"{path}: data file not found")
    rows = _rows_from_file(path) if path is not None else _rows_from_hub(name, split)
    label = str(path) if path is not None else f"{name}[{split}]"
    conversations, errors = [], []
    for number, row in rows:
        where = f"{label}:{number}"
        try:
            if isinstance(row, DataError):
                raise row
            messages = to_messages(row, where)
            check_messages(messages, where)
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
    return conversations


def file_sha256(name: str) -> str | None:
    """Hash of a local data file (recorded in run.json); None for a Hub dataset."""
    path = resolve_data_path(name)
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()
