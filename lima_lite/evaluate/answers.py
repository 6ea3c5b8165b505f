"""Answers to evaluate: read prompts, resolve a model SPEC, answer each prompt once, resumably.

    >>> prompts = read_prompts("embedded:dev.jsonl")                 # [{"id": "dev-001", "prompt": "..."}, ...]
    >>> model = get_answerer("runs/quickstart/epoch-03")             # or a run, a base, MODEL@URL
    >>> rows = generate_answers(model, prompts, "answers/epoch-03.jsonl", max_new_tokens=256)

A prompts file is read by lima_lite.conversations.read_prompts. An answers file has one JSONL line per answer:
`{"id", "prompt", "answer", "model", "finish_reason", "sample", "sampling", "source"}` (finish_reason "eot":
the model ended its turn; "length": it hit max_new_tokens; sampling: the settings it was drawn with; source:
what answered). Rerunning skips the (id, sample) pairs already answered, and goes on with the file's settings.
A local model can answer `batch_size` prompts at a time (`generate_answers(..., batch_size=8)`).
"""

import argparse
import itertools
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from lima_lite import LimaError
from lima_lite.files import read_jsonl, write_jsonl
from lima_lite.flags import LIMA_SAMPLING, SAMPLING_TYPES
from lima_lite.judges import chat_completion, parse_endpoint
from lima_lite.layout import ADAPTER_CONFIG, adapter_base, adapter_dir, is_adapter


def model_label(spec: str) -> str:
    """A short name for charts: `gpt-4o` for `gpt-4o@URL`, `quickstart/epoch-03` for a path."""
    endpoint = parse_endpoint(spec)
    if endpoint:
        return endpoint[0]
    parts = Path(spec).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else spec


@dataclass
class LocalModel:
    engine: object  # lima_lite.generate.Engine
    name: str
    use_adapter: bool = True  # False: the adapter's base model, rendered with the adapter's template

    def answer(self, prompt: str, seed: int = 0, **sampling) -> tuple[str, str]:
        return self.chat([{"role": "user", "content": prompt}], seed=seed, **sampling)

    def chat(self, messages: list[dict], seed: int = 0, **sampling) -> tuple[str, str]:
        """The next assistant turn of a conversation (the whole history rendered with the saved template)."""
        reply = self.engine.reply(messages, use_adapter=self.use_adapter, seed=seed, **sampling)
        return reply.text.strip(), reply.finish_reason

    def answers(self, prompts: list[str], seed: int = 0, **sampling) -> list[tuple[str, str]]:
        """An answer to each prompt, generated together in one left-padded batch (Engine.replies): greedy
        answers equal answer()'s; a sampled one depends on the batch it is in."""
        replies = self.engine.replies([[{"role": "user", "content": p}] for p in prompts],
                                      use_adapter=self.use_adapter, seed=seed, **sampling)
        return [(reply.text.strip(), reply.finish_reason) for reply in replies]


@dataclass
class EndpointModel:
    """An OpenAI-compatible chat endpoint. Sampling is LIMA's except the repetition penalty, which the
    OpenAI API has no field for; a server's own default applies."""
    model: str
    base_url: str
    name: str

    def answer(self, prompt: str, seed: int = 0, **sampling) -> tuple[str, str]:
        return self.chat([{"role": "user", "content": prompt}], seed=seed, **sampling)

    def chat(self, messages: list[dict], seed: int = 0, temperature: float = LIMA_SAMPLING["temperature"],
             top_p: float = LIMA_SAMPLING["top_p"], max_new_tokens: int = LIMA_SAMPLING["max_new_tokens"],
             repetition_penalty: float | None = None) -> tuple[str, str]:
        content, finish = chat_completion(self.base_url, self.model, messages,
                                          temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                          seed=seed)  # max_tokens: the OpenAI API's name
        if content is None:  # recording "" as an answer that ended would judge a blank as the model's reply
            raise LimaError(f"{self.model}@{self.base_url}: the reply has no content (content: null, finish_reason "
                            f"{finish!r}); a reasoning model may need a larger --max-new-tokens; rerun to resume")
        return content.strip(), "length" if finish == "length" else "eot"


def resolve_spec(spec: str) -> str:
    """A run folder means its final adapter (`RUN/adapter`); anything else is returned as is."""
    path = Path(spec)
    if path.is_dir() and not is_adapter(path) and is_adapter(adapter_dir(path)):
        return str(adapter_dir(path))
    if path.is_dir() and not is_adapter(path) and not (path / "config.json").is_file():
        raise LimaError(f"{spec}: a folder, but not an adapter (no {ADAPTER_CONFIG}), a run (no adapter/) "
                        "or a model (no config.json)")
    return spec


def answerer_name(spec: str, name: str | None = None, use_adapter: bool = True) -> str:
    """The name get_answerer(spec, name, use_adapter) gives its answerer, known before the model is loaded."""
    endpoint = parse_endpoint(spec)
    if endpoint:
        return name or endpoint[0]
    spec = resolve_spec(spec)
    if not use_adapter and not is_adapter(spec):
        raise LimaError(f"{spec}: --no-adapter needs an adapter; this is a base model already")
    return name or (model_label(spec) if use_adapter else f"base of {model_label(spec)}")


def answerer_source(spec: str, use_adapter: bool = True) -> str:
    """What answers: the resolved folder (with the adapter switched off, its base's), MODEL@URL or a Hub id;
    recorded with every answer, so a rerun under the same --name by another model is refused, not taken up."""
    if parse_endpoint(spec):
        return spec
    path = Path(resolve_spec(spec))
    if not use_adapter and is_adapter(path):
        path = Path(adapter_base(path)).expanduser()
    return str(path.resolve()) if path.exists() else str(path)


def get_answerer(spec: str, name: str | None = None, use_adapter: bool = True):
    """SPEC -> something with `.answer(prompt, seed, **sampling) -> (text, finish_reason)` and `.name`.

    SPEC: an adapter folder, a run's `epoch-NN`, a run folder (its final adapter), a base model (folder,
    Hub id, `embedded:SmolLM2-135M-Instruct`) or `MODEL@http(s)://HOST/v1` for an OpenAI-compatible server.
    `use_adapter=False` answers with an adapter's base model (the adapter switched off)."""
    endpoint = parse_endpoint(spec)
    if endpoint:
        return EndpointModel(model=endpoint[0], base_url=endpoint[1], name=name or endpoint[0])
    from lima_lite.generate import load_engine

    spec, name = resolve_spec(spec), answerer_name(spec, name, use_adapter)  # a base with --no-adapter: refused
    if is_adapter(spec):
        return LocalModel(engine=load_engine(adapter=spec), name=name, use_adapter=use_adapter)
    return LocalModel(engine=load_engine(base=spec), name=name)


def answer_seed(pid: str, sample: int) -> int:
    """The same seed for the same prompt and sample every time, so a resumed run equals an uninterrupted one."""
    return zlib.crc32(f"{pid}:{sample}".encode())


def read_records(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for every record already in `path`: none if it does not exist yet (a step not
    started); a line that is not a JSON object is an error naming file:line."""
    if not Path(path).is_file():
        return []
    rows = read_jsonl(path)
    for number, row in rows:
        if not isinstance(row, dict):
            raise LimaError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return rows


def resume(out: str | Path, key, todo: list[tuple[tuple, object]], desc: str, concurrency: int = 1) -> list[dict]:
    """Run each `(key, make)` whose key no record in `out` has yet, up to `concurrency` at a time (for
    endpoints: each call waits on the network); rewrite `out` atomically after every record, in the order of
    `todo` whatever order they finish in, so an interrupted run loses at most the records in progress and
    a rerun does none twice."""
    if concurrency == 1:
        return resume_batches(out, key, [([k], lambda missing, make=make: [make()]) for k, make in todo], desc)
    records, left, bar, in_order = resume_state(out, key, [k for k, _ in todo], desc)
    queue, error = iter([(k, make) for k, make in todo if k in left]), None
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        # no more than `concurrency` submitted at a time: after a failure nothing new starts, the
        # records in progress finish and are saved, then the first error is raised
        running = {pool.submit(make) for _, make in itertools.islice(queue, concurrency)}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            finished = len(records)
            for future in done:
                try:
                    records.append(future.result())
                except Exception as failure:  # noqa: BLE001 (raised below, once the others are saved)
                    error = error or failure
                    continue
                bar.update()
                following = None if error else next(queue, None)
                if following is not None:
                    running.add(pool.submit(following[1]))
            if len(records) > finished:
                write_jsonl(in_order(records), out)
    bar.close()
    if error is not None:
        raise error
    return in_order(records)


def resume_batches(out: str | Path, key, batches: list[tuple[list[tuple], object]], desc: str) -> list[dict]:
    """resume() a batch at a time: each `(keys, make)` with a key no record in `out` has yet runs
    `make(missing)`, which returns the records of the `missing` keys (in `keys`' order); `out` is rewritten
    atomically after every batch, so an interrupted run loses at most the batch in progress."""
    records, pending, bar, in_order = resume_state(out, key, [k for keys, _ in batches for k in keys], desc)
    try:
        for keys, make in batches:
            missing = [k for k in keys if k in pending]
            if missing:
                records.extend(make(missing))
                write_jsonl(in_order(records), out)
                bar.update(len(missing))
    finally:
        bar.close()
    return in_order(records)


def resume_state(out: str | Path, key, keys: list[tuple], desc: str):
    """(records already in `out`, the set of `keys` still to do, a progress bar over them, a function that
    sorts records into the order of `keys`, any others first); says how many were already done."""
    from tqdm.auto import tqdm

    records = [row for _, row in read_records(out)]
    have = {key(r) for r in records}
    pending = {k for k in keys if k not in have}
    if len(pending) < len(keys):
        print(f"{out}: {len(keys) - len(pending)} of {len(keys)} already done; {len(pending)} to go")
    position = {k: i for i, k in enumerate(keys)}
    in_order = lambda rows: sorted(rows, key=lambda r: position.get(key(r), -1))  # noqa: E731 (stable: others first)
    return records, pending, tqdm(total=len(pending), desc=desc, unit="item"), in_order


def answer_key(row: dict) -> tuple:
    return row["id"], row.get("sample", 0)


def check_resumable(out: str | Path, prompts: list[dict], model: str, sampling: dict | None = None,
                    source: str | None = None) -> dict:
    """The sampling settings to answer with, once every answer in `out` is known to belong to this run: the same
    model (its name, and its `source` when given: answerer_source), the same prompt text under its id, and the
    same settings. A setting not given (`sampling` holds the
    flags given) is the one the file was made with, so a rerun of the same command without its sampling flags
    goes on as it started; one given that differs is refused, as another model or prompt is, by file:line before
    anything is generated: answers drawn at another temperature or length are other answers, and mixing them in
    one file, or keeping them under the new settings, would compare what was not asked for."""
    given = dict(sampling or {})
    texts = {item["id"]: item["prompt"] for item in prompts}
    rows = read_records(out)
    made = next(((number, row["sampling"]) for number, row in rows if isinstance(row.get("sampling"), dict)), None)
    made = recorded_settings(out, *made) if made else {}
    settings = {**LIMA_SAMPLING, **made, **given}
    for number, row in rows:
        where = f"{out}:{number}"
        if row.get("model") != model:
            raise LimaError(f"{where}: an answer by {row.get('model')!r}, not {model!r}: the file would hold answers "
                            "from several models; use one file per model (another --out)")
        if source is not None and row.get("source", source) != source:
            raise LimaError(f"{where}: answered by {row['source']}, not {source}, under the same name {model!r}: the "
                            "file would hold two models' answers as one's; use one file per model (another --out)")
        if row.get("id") in texts and row.get("prompt") != texts[row["id"]]:
            raise LimaError(f"{where}: the answer to {row['id']!r} was made for another prompt text; the prompts file "
                            "changed since: choose another --out, or delete this file to answer anew")
        recorded = row.get("sampling")
        if recorded is None:
            if given:  # a file from before answers recorded their settings
                raise LimaError(f"{where}: no record of the sampling settings this answer was made with, so "
                                f"{flag_names(given)} cannot be checked against it: rerun without sampling flags to go "
                                "on with this file, or choose another --out to answer with these settings")
            continue
        if not isinstance(recorded, dict):
            raise LimaError(f"{where}: sampling: expected a JSON object of settings, got {type(recorded).__name__}")
        changed = [key for key in settings if recorded.get(key) != settings[key]]
        if changed:
            key = changed[0]
            raise LimaError(f"{where}: answered with {key} {recorded.get(key)!r}, not {settings[key]!r}: rerun without "
                            f"{flag_names({key: None})} to go on with the file's settings, or choose another --out "
                            "(or delete this file) to answer anew with these")
    return settings


def recorded_settings(out: str | Path, number: int, recorded: dict) -> dict:
    """An answers file's sampling settings, read by the flags' own parsers (a hand-edited value is refused)."""
    settings = {}
    for key, value in recorded.items():
        if key not in SAMPLING_TYPES:
            raise LimaError(f"{out}:{number}: sampling: unknown setting {key!r}; expected {', '.join(SAMPLING_TYPES)}")
        try:
            settings[key] = SAMPLING_TYPES[key](str(value))
        except argparse.ArgumentTypeError as error:
            raise LimaError(f"{out}:{number}: sampling: {key}: {error}") from None
    return settings


def flag_names(settings: dict) -> str:
    return ", ".join(f"--{key.replace('_', '-')}" for key in settings)


def generate_answers(model, prompts: list[dict], out: str | Path, samples: int = 1, concurrency: int = 1,
                     batch_size: int = 1, source: str | None = None, **sampling) -> list[dict]:
    """`samples` answers per prompt with LIMA's sampling (override with temperature=, max_new_tokens=, ...;
    in a file already begun, what is not overridden is the file's: check_resumable). `source`
    (answerer_source), when given, is recorded with each answer and must match the file's.

    batch_size > 1 (a LocalModel): the (prompt, sample) pairs, in order, are answered `batch_size` at a time,
    each batch in one left-padded generation seeded from its first pair, and saved together; so the batches
    are the same on every run, and a rerun skips the batches already saved. Greedy answers equal those of
    batch_size 1; a sampled answer depends on its batch."""
    pairs = [(item, s) for item in prompts for s in range(samples)]
    given, sampling = sampling, check_resumable(out, prompts, model.name, sampling, source)
    kept = {k: v for k, v in sampling.items() if k not in given and v != LIMA_SAMPLING[k]}  # the file's own
    if kept:
        print(f"{out}: going on with the settings it was made with ({', '.join(f'{k} {v}' for k, v in kept.items())})")

    def record(item, sample, text, finish):
        return {"id": item["id"], "prompt": item["prompt"], "answer": text, "model": model.name,
                "finish_reason": finish, "sample": sample, "sampling": sampling, **({"source": source} if source else {})}

    def make(item, sample):
        def run():
            return record(item, sample, *model.answer(item["prompt"], seed=answer_seed(item["id"], sample),
                                                      **sampling))
        return run

    def make_batch(batch):
        def run(missing):
            todo = [(item, s) for item, s in batch if (item["id"], s) in missing]
            seed = answer_seed(batch[0][0]["id"], batch[0][1])
            answers = model.answers([item["prompt"] for item, _ in todo], seed=seed, **sampling)
            return [record(item, s, *answer) for (item, s), answer in zip(todo, answers, strict=True)]
        return run

    desc = f"answering ({model.name})"
    if batch_size == 1:
        todo = [((item["id"], s), make(item, s)) for item, s in pairs]
        records = resume(out, answer_key, todo, desc=desc, concurrency=concurrency)
    else:
        batches = [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)]
        records = resume_batches(out, answer_key, [([(item["id"], s) for item, s in batch], make_batch(batch))
                                                   for batch in batches], desc=desc)
    names = {r["model"] for r in records}
    if len(names) > 1:
        raise LimaError(f"{out}: holds answers from several models ({sorted(names)}); use one file per model")
    return records


def answers_by_id(path: str | Path) -> dict[str, list[dict]]:
    """An answers file as {id: [rows by sample]}; errors name file:line and the missing field."""
    rows = read_records(path)
    if not rows:
        raise LimaError(f"{path}: no answers (run `lima-lite eval generate` first)")
    grouped: dict[str, list[dict]] = {}
    for number, row in rows:
        for name in ("id", "prompt", "answer", "model"):
            if not isinstance(row.get(name), str):
                raise LimaError(f"{path}:{number}: {name}: missing or not a string")
        sample = row.get("sample", 0)
        if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
            raise LimaError(f"{path}:{number}: sample: expected a whole number >= 0, got {sample!r}")
        grouped.setdefault(row["id"], []).append(row)
    for group in grouped.values():
        group.sort(key=lambda r: r.get("sample", 0))
    return grouped
