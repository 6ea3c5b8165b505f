"""`lima-lite data stats`: what a LIMA curator reads before training: counts, token lengths under the recipe,
cuts, duplicates and style flags of a training set; with a second file, the two side by side.

    $ lima-lite data stats lima-1k.jsonl --recipe llama-7b
    $ lima-lite data stats lima-1k.jsonl longest-1k.jsonl --out stats      # stats/stats.md + histograms
    $ lima-lite data stats alpaca.jsonl --json | jq .cut_at_max_length.count
    >>> summary, lengths = data_stats(conversations, tokenizer, template, max_length=2048)

Any file (or Hub dataset) `lima-lite train` reads, checked as train checks it (bad rows stop it with the same
file:line: field message), except that empty or whitespace-only turns are counted, not refused: train refuses
them, so fix them first.
- counts: examples, multi-turn ones (more than one user turn), turns per conversation, system turns, sources
  (the `source` field; the file's name where a row has none), empty turns;
- tokens, under the recipe's tokenizer and chat template (no --recipe: LIMA's defaults on the embedded
  SmolLM2-135M-Instruct: LIMA's format, max_length 2,048), encoded as train encodes them: response tokens are
  the trained ones (assistant turns and their turn ends), prompt tokens all the others (system and user turns,
  the template's own). p10/p50/p90/max per example, trained tokens per epoch (after the cut, without the
  examples train drops), and the examples longer than max_length (cut, or dropped with drop_too_long). An
  example longer than max_length x 16 characters is counted up to there, as train reads it;
- duplicates: user turns of one example that repeat a user turn of an earlier one, matched as `data overlap`
  matches (exact: the same words once lower-cased; near: word 2-gram Jaccard >= 0.5), each with the example
  it repeats;
- style flags LIMA's curation filtered for, on the assistant's turns: `as_an_ai` (opens with "As an AI ..."),
  `refusal` ("I'm sorry, but I can't ..." in its first 300 characters), `links` (a URL), `first_person` (the
  answerer speaks of themselves: curate's own rule), `short_answer` (under half as long as the prompt, in
  characters), `markdown_list` (two or more list items), `code_block` (a ``` or ~~~ fence); and
  `non_english` on any turn of 20 letters or more: mostly another script, or 12 words or more with under
  8 % of them English function words ("the", "of", "and", ...): a heuristic, so read the ids it lists;
- FILE2: both sets side by side, and how many examples of each have a prompt in the other (exact or near).

--json prints one JSON object and nothing else (every id; the progress bar goes to stderr): with FILE2,
{"files": [FILE's, FILE2's], "overlap": {"b_in_a": FILE2's examples found in FILE, "a_in_b": the reverse}}.
--out DIR writes DIR/stats.md with response_tokens.png, turns.png and sources.png.
"""

import argparse
import base64
import contextlib
import html
import io
import math
import multiprocessing
import os
import re
import sys
from collections import Counter
from pathlib import Path

from lima_lite import LimaError
from lima_lite.config import HUB_ID, load_recipe
from lima_lite.conversations import CHARS_PER_TOKEN, cut_chars, load_conversations
from lima_lite.curate.filters import first_person, prose
from lima_lite.data.overlap import THRESHOLD, duplicate_pairs, overlapping_pairs
from lima_lite.files import add_overwrite_flag, check_outputs, print_json, save_figure, write_text
from lima_lite.plots import pyplot
from lima_lite.recipe_yaml import resolve_recipe
from lima_lite.template import IGNORE, encode_conversation

PROGRESS_FROM = 2000  # examples: a smaller set is done before a bar would be worth drawing
LISTED_TERMINAL, LISTED_REPORT = 10, 100
SNIPPET = 120
REPORT, CHARTS = "stats.md", ("response_tokens.png", "turns.png", "sources.png")

# Apostrophes straight or curly: "I’m sorry" is as common as "I'm sorry".
_AS_AN_AI = re.compile(r"^\W*(?:as an? (?:ai|artificial intelligence|(?:large )?language model)|"
                       r"i(?:['’]m| am) (?:just |only )?an? (?:ai|artificial intelligence|(?:large )?language model))\b")
_REFUSAL = re.compile(
    r"\b(?:i(?:['’]m| am) (?:sorry|afraid),? (?:but )?i|i (?:can ?not|can['’]t|won['’]t|will not|am unable to|['’]m unable to|"
    r"am not able to|['’]m not able to) (?:help|assist|provide|answer|comply|fulfill|do that|create|write|give|generate|"
    r"share|support)|i must (?:decline|refuse))")
_LINK = re.compile(r"https?://|\bwww\.\w")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+\S", re.M)
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)", re.M)
_LETTER = re.compile(r"[^\W\d_]")
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_WORD = re.compile(r"[a-z]+")
# English words that are rare as words of other Latin-script languages ("a", "in", "no", "was" are not).
_ENGLISH = frozenset("""the of and to is are was were it its that this these those for you your with be been have has
had not or by at but from they them their we our he she his her which can could would should will there what
when how if about more out up some into than then only also other do does did just very""".split()) - {"was", "will"}
SHORT_ANSWER_RATIO = 0.5
FLAGS = ("as_an_ai", "refusal", "links", "first_person", "short_answer", "markdown_list", "code_block", "non_english")


def non_english(text: str) -> bool:
    """Mostly letters of another script, or (12+ words) under 8 % English function words; short text is not judged."""
    text = prose(text)
    if not text.isascii():  # ASCII text has no letters of another script: count them only otherwise
        letters = len(_LETTER.findall(text))
        if letters >= 20 and len(_ASCII_LETTER.findall(text)) < letters / 2:
            return True
    words = _WORD.findall(text.lower())
    return len(words) >= 12 and sum(w in _ENGLISH for w in words) < 0.08 * len(words)


def style_flags(messages: list[dict]) -> list[str]:
    """The FLAGS one conversation raises."""
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    prompt = sum(len(m["content"]) for m in messages if m["role"] == "user")
    lowered = [a.lower() for a in answers]
    found = {
        "as_an_ai": any(_AS_AN_AI.search(a) for a in lowered),
        "refusal": any(_REFUSAL.search(a[:300]) for a in lowered),
        "links": any(_LINK.search(a) for a in lowered),
        "first_person": any(first_person(a) for a in answers),
        "short_answer": sum(map(len, answers)) < SHORT_ANSWER_RATIO * prompt,
        "markdown_list": any(len(_LIST_ITEM.findall(prose(a))) >= 2 for a in answers),
        "code_block": any(_FENCE.search(a) for a in answers),
        "non_english": any(non_english(m["content"]) for m in messages),
    }
    return [flag for flag in FLAGS if found[flag]]


def example_tokens(tokenizer, template, messages: list[dict], max_length: int | None) -> tuple[int, int, int, bool]:
    """(prompt tokens, response tokens, tokens trained within max_length, cut) of one conversation, encoded as
    `lima-lite train` encodes it (lima_lite.train.encode_dataset): cut to characters first, then to tokens."""

    kept, chars_cut = cut_chars(messages, max_length * CHARS_PER_TOKEN) if max_length else (messages, False)
    labels = encode_conversation(tokenizer, template, kept)["labels"]
    response = sum(label != IGNORE for label in labels)
    cut = chars_cut or bool(max_length and len(labels) > max_length)
    trained = sum(label != IGNORE for label in labels[:max_length]) if cut else response
    return len(labels) - response, response, trained, cut


def quantiles(values: list[int]) -> dict:
    """p10, p50, p90 (nearest rank), max and mean of per-example counts."""
    ordered = sorted(values)
    rank = {p: ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in (10, 50, 90)}
    return {"p10": rank[10], "p50": rank[50], "p90": rank[90], "max": ordered[-1],
            "mean": round(sum(ordered) / len(ordered), 1)}


def prompt_rows(conversations: list[dict]) -> list[dict]:
    """Every user turn as a prompt to match (as `data overlap` reads a training set), grouped by conversation;
    ids are (example index, turn)."""
    rows = []
    for index, example in enumerate(conversations):
        users = [m["content"] for m in example["messages"] if m["role"] == "user"]
        rows += [{"id": (index, turn), "prompt": text, "group": index} for turn, text in enumerate(users, 1)]
    return rows


def prompt_name(conversations: list[dict], key: tuple[int, int]) -> str:
    """`ID`, or `ID#turn` for a turn of a multi-turn example (as `data overlap` names them)."""
    example = conversations[key[0]]
    users = sum(m["role"] == "user" for m in example["messages"])
    return str(example["id"]) if users == 1 else f"{example['id']}#{key[1]}"


def prompt_text(conversations: list[dict], key: tuple[int, int]) -> str:
    users = [m["content"] for m in conversations[key[0]]["messages"] if m["role"] == "user"]
    return " ".join(users[key[1] - 1].split())[:SNIPPET]


def measured(example: dict, tokenizer, template, max_length: int | None) -> tuple[int, int, int, bool, list[str]]:
    """What one example costs to read: example_tokens and style_flags."""
    return (*example_tokens(tokenizer, template, example["messages"], max_length), style_flags(example["messages"]))


_WORKER: tuple = ()  # (tokenizer, template, max_length) in a worker process


def _start_worker(*setup) -> None:
    global _WORKER
    _WORKER = setup


def _measure_in_worker(example: dict):
    return measured(example, *_WORKER)


def measure_all(conversations: list[dict], tokenizer, template, max_length: int | None, threshold: float,
                processes: int, desc: str | None):
    """(measured(...) of each example, in order, and the duplicate pairs). With processes > 1 (and 2,000
    examples or more) a pool shares the examples, one worker matching duplicates meanwhile: tokenizing is
    single-threaded, so a second core is otherwise left idle (docs/benchmarks.md, "data stats")."""
    from tqdm import tqdm


    bar = tqdm(total=len(conversations), desc=desc, unit=" examples", file=sys.stderr, mininterval=1.0,
               disable=desc is None or len(conversations) < PROGRESS_FROM)
    with bar:
        if processes < 2 or len(conversations) < PROGRESS_FROM:
            rows = []
            for example in conversations:
                rows.append(measured(example, tokenizer, template, max_length))
                bar.update()
            return rows, duplicate_pairs(prompt_rows(conversations), threshold)

        with multiprocessing.get_context().Pool(processes, _start_worker, (tokenizer, template, max_length)) as pool:
            pairs = pool.apply_async(duplicate_pairs, (prompt_rows(conversations), threshold))
            rows = []
            for row in pool.imap(_measure_in_worker, conversations, chunksize=64):
                rows.append(row)
                bar.update()
            return rows, pairs.get()


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def data_stats(conversations: list[dict], tokenizer, template, max_length: int | None, drop_too_long: bool = False,
               multi_turn: bool = True, threshold: float = THRESHOLD, desc: str | None = None,
               processes: int = 1) -> tuple[dict, list[int]]:
    """(summary, response tokens of each example) of conversations as lima_lite.conversations loads them; the summary's
    keys are those of `--json`. `desc` names the progress bar, drawn (on stderr) for 2,000 examples or more;
    `processes` > 1 shares the work of such a set among that many processes."""
    prompts, responses, trained, turns = [], [], 0, Counter()
    listed = {name: [] for name in ("multi_turn", "system", "empty", "cut", "dropped", *FLAGS)}
    rows, pairs = measure_all(conversations, tokenizer, template, max_length, threshold, processes, desc)
    for example, (prompt, response, kept_tokens, cut, flags) in zip(conversations, rows, strict=True):
        messages, name = example["messages"], str(example["id"])
        users = sum(m["role"] == "user" for m in messages)
        turns[sum(m["role"] != "system" for m in messages)] += 1
        prompts.append(prompt)
        responses.append(response)
        dropped = (users > 1 and not multi_turn) or (cut and drop_too_long) or not kept_tokens
        trained += 0 if dropped else kept_tokens
        marks = [*flags, *(["multi_turn"] if users > 1 else []), *(["cut"] if cut else []),
                 *(["dropped"] if dropped else []), *(["system"] if messages[0]["role"] == "system" else [])]
        marks += [f"empty:{i}" for i, m in enumerate(messages) if not m["content"].strip()]
        for mark in marks:
            listed[mark.split(":")[0]].append(name if ":" not in mark else f"{name} (turn {int(mark[6:]) + 1})")
    sources = Counter(str(e.get("source")) for e in conversations)
    summary = {
        "examples": len(conversations),
        "multi_turn": {"count": len(listed["multi_turn"]), "ids": listed["multi_turn"]},
        "turns": {"per_conversation": {str(n): turns[n] for n in sorted(turns)},
                  "system": len(listed["system"]), "empty": len(listed["empty"]), "empty_ids": listed["empty"]},
        "sources": dict(sorted(sources.items(), key=lambda kv: (-kv[1], kv[0]))),
        "prompt_tokens": quantiles(prompts),
        "response_tokens": quantiles(responses),
        "trained_tokens_per_epoch": trained,
        "cut_at_max_length": {"max_length": max_length, "count": len(listed["cut"]), "ids": listed["cut"]},
        "dropped_by_recipe": {"count": len(listed["dropped"]), "ids": listed["dropped"]},
        **{f"{kind}_duplicates": duplicates(conversations, [p for p in pairs if p["kind"] == kind])
           for kind in ("exact", "near")},
        "flags": {flag: {"count": len(listed[flag]), "ids": listed[flag]} for flag in FLAGS},
    }
    summary["near_duplicates"]["threshold"] = threshold
    return summary, responses


def duplicates(conversations: list[dict], pairs: list[dict]) -> dict:
    """How many examples repeat an earlier one (in this kind), and each pair, named and quoted."""
    named = [{"id": prompt_name(conversations, p["id"]), "of": prompt_name(conversations, p["of"]),
              "similarity": p["similarity"], "prompt": prompt_text(conversations, p["id"]),
              "of_prompt": prompt_text(conversations, p["of"])} for p in pairs]
    return {"count": len({p["id"][0] for p in pairs}), "pairs": named}


def shared_examples(first: list[dict], second: list[dict], threshold: float = THRESHOLD) -> dict:
    """How many examples of each set have a prompt (a user turn) in the other, exactly or nearly."""

    rows = prompt_rows(first), prompt_rows(second)
    found = {}
    for key, (inside, outside, conversations, others) in {
            "b_in_a": (rows[0], rows[1], second, first), "a_in_b": (rows[1], rows[0], first, second)}.items():
        pairs = overlapping_pairs(inside, outside, threshold)
        examples = {p["eval_id"][0] for p in pairs}
        exact = {p["eval_id"][0] for p in pairs if p["kind"] == "exact"}
        found[key] = {"examples": len(examples), "of": len(conversations), "exact": len(exact),
                      "near": len(examples - exact), "share": round(len(examples) / len(conversations), 4),
                      "pairs": [{"kind": p["kind"], "similarity": p["similarity"],
                                 "id": prompt_name(conversations, p["eval_id"]),
                                 "in_other": prompt_name(others, p["train_id"])} for p in pairs]}
    return found


# ---------------------------------------------------------------- the recipe's tokenizer and template


def recipe_tokenizer(recipe: str | None, overrides=()) -> tuple[object, object, dict]:
    """(tokenizer, template, settings) of a recipe, set up as `lima-lite train` sets them up; None: LIMA's
    defaults (the embedded SmolLM2-135M-Instruct, LIMA's format, max_length 2,048)."""
    from lima_lite.model import get_tokenizer, resolve_model

    path = resolve_recipe(recipe) if recipe else None
    read = load_recipe(path, overrides)
    sft_config, model_args, lima_args = read.sft_config, read.model_args, read.lima_args
    name = model_args.model_name_or_path
    base = hub_tokenizer(name) if HUB_ID.match(name) and not Path(name).expanduser().exists() else resolve_model(name)
    tokenizer, template, _ = get_tokenizer(base, lima_args.eot_token, sft_config.trust_remote_code,
                                           lima_args.chat_format)
    settings = {"recipe": str(path) if path else None, "model": model_args.model_name_or_path,
                "chat_format": template.chat_format, "eot_token": template.eot_token,
                "max_length": sft_config.max_length, "drop_too_long": lima_args.drop_too_long,
                "multi_turn": lima_args.multi_turn}
    return tokenizer, template, settings


def hub_tokenizer(name: str) -> str:
    """A local folder with the tokenizer files of Hub model `name`: resolve_model's snapshot would fetch the
    weights too, gigabytes, to count tokens."""
    from huggingface_hub import snapshot_download

    from lima_lite.model import HUB_FILES, ModelError, hub_failure

    try:
        return snapshot_download(name, allow_patterns=[p for p in HUB_FILES if p != "*.safetensors"])
    except Exception as error:  # huggingface_hub raises many types for offline / gated / missing
        raise ModelError(f"{name}: {hub_failure(name, error)}") from None


def file_stats(name: str, tokenizer, template, settings: dict, processes: int = 1) -> tuple[dict, list[dict], list[int]]:
    """(summary with the file and the settings, conversations, response tokens) of one data file."""

    conversations = load_conversations(name, empty_turns=True)
    summary, responses = data_stats(conversations, tokenizer, template, settings["max_length"],
                                    settings["drop_too_long"], settings["multi_turn"], desc=f"data stats: {name}",
                                    processes=processes)
    return {"file": name, "settings": settings, **summary}, conversations, responses


# ---------------------------------------------------------------- text: terminal, report, app, model card


def _ids(ids: list[str], listed: int) -> str:
    more = f" … and {len(ids) - listed:,} more" if len(ids) > listed else ""
    return ", ".join(f"`{i}`" for i in ids[:listed]) + more


def _q(q: dict) -> str:
    return f"{q['p10']:,} / {q['p50']:,} / {q['p90']:,} / {q['max']:,}"


def _sources(sources: dict, shown: int = 5) -> str:
    items = list(sources.items())
    more = f", … ({len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(f"{name} {n:,}" for name, n in items[:shown]) + more


def table_rows(s: dict) -> list[tuple[str, str]]:
    """(what, value) of one summary, the rows of the side-by-side table."""
    per = s["turns"]["per_conversation"]
    cut = s["cut_at_max_length"]
    rows = [("examples", f"{s['examples']:,}"), ("multi-turn", f"{s['multi_turn']['count']:,}"),
            ("turns per conversation", ", ".join(f"{n}: {c:,}" for n, c in per.items())),
            ("system turns", f"{s['turns']['system']:,}"), ("empty turns", f"{s['turns']['empty']:,}"),
            ("sources", _sources(s["sources"])),
            ("prompt tokens p10 / p50 / p90 / max", _q(s["prompt_tokens"])),
            ("response tokens p10 / p50 / p90 / max", _q(s["response_tokens"])),
            ("trained tokens per epoch", f"{s['trained_tokens_per_epoch']:,}"),
            (f"longer than max_length {cut['max_length']}", f"{cut['count']:,}"),
            ("dropped by the recipe", f"{s['dropped_by_recipe']['count']:,}"),
            ("exact duplicates", f"{s['exact_duplicates']['count']:,}"),
            ("near duplicates", f"{s['near_duplicates']['count']:,}")]
    return rows + [(f"flag: {flag}", f"{s['flags'][flag]['count']:,}") for flag in FLAGS]


def details(s: dict, listed: int) -> list[str]:
    """The ids behind each count of one summary, `listed` of each."""
    lines = []
    for what, ids in (("multi-turn", s["multi_turn"]["ids"]), ("empty turns (train refuses them)", s["turns"]["empty_ids"]),
                      (f"longer than max_length {s['cut_at_max_length']['max_length']}", s["cut_at_max_length"]["ids"]),
                      ("dropped by the recipe", s["dropped_by_recipe"]["ids"]),
                      *((f"flag {flag}", s["flags"][flag]["ids"]) for flag in FLAGS)):
        if ids:
            lines.append(f"- {what} ({len(ids):,}): {_ids(ids, listed)}")
    for kind in ("exact", "near"):
        pairs = s[f"{kind}_duplicates"]["pairs"]
        if pairs:
            lines.append(f"- {kind} duplicates ({len(pairs):,}):")
            lines += [f"  - `{p['id']}` repeats `{p['of']}`" + (f" ({p['similarity']:.2f})" if kind == "near" else "")
                      + f": {p['prompt']}" for p in pairs[:listed]]
            if len(pairs) > listed:
                lines.append(f"  - … and {len(pairs) - listed:,} more")
    return lines


def report_markdown(summaries: list[dict], shared: dict | None, listed: int, charts: bool) -> str:
    """The whole report: settings, the table (one column per file), what the files share, every list."""
    settings = summaries[0]["settings"]
    recipe = settings["recipe"] or "none: LIMA's defaults"
    lines = [f"# Data stats: {' vs '.join(s['file'] for s in summaries)}", "",
             f"Recipe {recipe}; model `{settings['model']}`, {settings['chat_format']} format, turn end "
             f"`{settings['eot_token']}`, max_length {settings['max_length']}. Response tokens are the trained ones "
             "(assistant turns and their turn ends), prompt tokens all the others.", "",
             "| | " + " | ".join(f"`{s['file']}`" for s in summaries) + " |", "|---|" + "---:|" * len(summaries)]
    columns = [table_rows(s) for s in summaries]
    lines += [f"| {row[0][0]} | " + " | ".join(c[1] for c in row) + " |" for row in zip(*columns, strict=True)]
    if shared:
        a, b = (s["file"] for s in summaries)
        lines += ["", "## In the other set", ""]
        for key, (mine, other) in (("b_in_a", (b, a)), ("a_in_b", (a, b))):
            found = shared[key]
            lines.append(f"- {found['examples']:,} of {found['of']:,} examples of `{mine}` ({100 * found['share']:.1f} %) "
                         f"have a prompt in `{other}` ({found['exact']:,} exact, {found['near']:,} near)")
    if charts:
        lines += ["", "## Histograms", "", *(f"![{name[:-4]}]({name})" for name in CHARTS)]
    for s in summaries:
        found = details(s, listed)
        if found:
            lines += ["", f"## `{s['file']}`: which examples", "", *found]
    return "\n".join(lines) + "\n"


def summary_html(s: dict, responses: list[int]) -> str:
    """The app's view of one summary: the table and the response-length histogram."""

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in table_rows(s))
    png = base64.b64encode(png_bytes(response_histogram([(s["file"], responses)]))).decode()
    return (f"<div id='data-stats'><p><b>{html.escape(s['file'])}</b> (<code>lima-lite data stats</code> under "
            "this recipe)</p>"
            f"<table>{rows}</table><img alt='response length histogram' src='data:image/png;base64,{png}' "
            "style='max-width: 100%'></div>")


def card_lines(s: dict) -> list[str]:
    """The model card's summary of the training set (lima_lite.push)."""
    cut = s["cut_at_max_length"]
    return [f"- examples: {s['examples']:,} ({s['multi_turn']['count']:,} multi-turn); sources: {_sources(s['sources'])}",
            f"- prompt tokens p10 / p50 / p90 / max: {_q(s['prompt_tokens'])}; response tokens: {_q(s['response_tokens'])}",
            f"- longer than max_length ({cut['max_length']} tokens): {cut['count']:,}; trained tokens per epoch: "
            f"{s['trained_tokens_per_epoch']:,}"]


# ---------------------------------------------------------------- charts


def response_histogram(sets: list[tuple[str, list[int]]]):

    figure, axis = pyplot().subplots(figsize=(7, 3.2))
    top = max(max(lengths) for _, lengths in sets) or 1
    bins = [top * i / 40 for i in range(41)]
    for name, lengths in sets:
        axis.hist(lengths, bins=bins, alpha=0.6 if len(sets) > 1 else 1.0, label=f"{name} (n = {len(lengths):,})")
    axis.set_xlabel("response length (trained tokens)")
    axis.set_ylabel("examples")
    axis.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    return figure


def bars(summaries: list[dict], key, xlabel: str, horizontal: bool):
    """One bar per category (turns per conversation, or source: the 20 largest), a group per file."""

    counts = [key(s) for s in summaries]
    names = list(dict.fromkeys(n for c in counts for n in c))[:20]
    figure, axis = pyplot().subplots(figsize=(7, 0.3 * len(names) + 1.5 if horizontal else 3.2))
    width = 0.8 / len(summaries)
    for i, (s, c) in enumerate(zip(summaries, counts, strict=True)):
        places = [j + i * width for j in range(len(names))]
        (axis.barh if horizontal else axis.bar)(places, [c.get(n, 0) for n in names], width, label=s["file"])
    ticks = [j + width * (len(summaries) - 1) / 2 for j in range(len(names))]
    if horizontal:
        axis.set_yticks(ticks, names, fontsize=8)
        axis.invert_yaxis()
    else:
        axis.set_xticks(ticks, names)
    axis.set_xlabel("examples" if horizontal else xlabel)
    (axis.set_ylabel if not horizontal else axis.set_title)(xlabel if horizontal else "examples")
    axis.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    return figure


def png_bytes(figure) -> bytes:

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    finally:
        pyplot().close(figure)
    return buffer.getvalue()


def write_report(out: Path, summaries: list[dict], responses: list[list[int]], shared: dict | None) -> Path:

    save_figure(response_histogram([(s["file"], r) for s, r in zip(summaries, responses, strict=True)]),
                out / CHARTS[0], dpi=90)
    save_figure(bars(summaries, lambda s: s["turns"]["per_conversation"], "turns per conversation", False),
                out / CHARTS[1], dpi=90)
    save_figure(bars(summaries, lambda s: s["sources"], "examples per source", True), out / CHARTS[2], dpi=90)
    return write_text(out / REPORT, report_markdown(summaries, shared, LISTED_REPORT, charts=True))


# ---------------------------------------------------------------- the command


def add_parser(sub) -> None:
    """`data stats` under `lima-lite data` (lima_lite.data.mix)."""


    s = sub.add_parser("stats", help="a training set at a glance: counts, token lengths, cuts, duplicates, style flags",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("file", metavar="FILE", help="training data (any form `lima-lite train` reads; a Hub dataset id too)")
    s.add_argument("file2", metavar="FILE2", nargs="?", help="a second set, to compare side by side")
    s.add_argument("--recipe", nargs="+", metavar=("RECIPE", "KEY=VALUE"),
                   help="count tokens with this recipe's tokenizer, template and max_length (a name from recipes/ or a "
                   "YAML path, then any key=value as `train` takes them: model_name_or_path=/models/llama-7b; default: "
                   "LIMA's defaults on the embedded SmolLM2-135M-Instruct; a Hub base: its tokenizer files only)")
    s.add_argument("--json", action="store_true", help="print one JSON object (every id) and nothing else on stdout")
    s.add_argument("--out", type=Path, metavar="DIR", help=f"write DIR/{REPORT} and its histograms ({', '.join(CHARTS)})")
    add_overwrite_flag(s)
    s.set_defaults(func=main)


def main(args) -> int:


    files = [f for f in (args.file, args.file2) if f]
    args.recipe = args.recipe or []
    if not_set := [word for word in args.recipe[1:] if "=" not in word]:
        raise LimaError(f"--recipe {args.recipe[0]}: expected key=value after the recipe, found {not_set[0]!r} "
                        "(put the data files before --recipe)")
    if args.out and args.out.exists() and not args.out.is_dir():
        raise LimaError(f"{args.out}: is a file; --out takes a folder")
    if args.out:
        check_outputs([args.out / name for name in (REPORT, *CHARTS)], files, args.overwrite)
    # Only the JSON goes to stdout with --json: anything a library prints while loading goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        tokenizer, template, settings = recipe_tokenizer(*(args.recipe[:1] or [None]), args.recipe[1:])
        found = [file_stats(name, tokenizer, template, settings, available_cores()) for name in files]
        summaries, responses = [f[0] for f in found], [f[2] for f in found]
        shared = shared_examples(found[0][1], found[1][1]) if len(found) == 2 else None
        if args.out:
            write_report(args.out, summaries, responses, shared)
    if args.json:
        print_json(summaries[0] if not shared else {"files": summaries, "overlap": shared})
        return 0
    print(report_markdown(summaries, shared, LISTED_TERMINAL, charts=False), end="")
    if args.out:
        print(f"\nreport: {args.out / REPORT} (every list up to {LISTED_REPORT}; --json for all)")
    return 0
