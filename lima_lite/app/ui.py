"""The Gradio app over the generation core: chat, compare two models side by side, judge blind, train.

    $ lima-lite ui                                    # adapters under runs/, http://127.0.0.1:7860
    $ python ui/app.py --runs runs --prompts embedded:dev.jsonl --votes votes.jsonl
    $ lima-lite ui --adapter someone/llama-7b-lima --auth me:secret --share

Chat: multi-turn, streamed, Stop, Retry and Undo, sampling sliders (LIMA's settings unless the sampling flags
say otherwise), a picker of every adapter found under --runs (the final `adapter/` and each `epoch-NN/`, with
its dev loss) and the base model of each run. Every page's lists follow --runs (a timer of the app, with or
without the Train tab): a new epoch adapter joins them, a deleted one leaves them; runs reached through a
symlink are listed when it stays under --runs (one that leads out is named at start). Stop, New
conversation, the chatbot's trash icon and a closed tab cancel the reply (its generation stops); user
messages are shown as typed, as text. A refused message or a model that does not load is one line in the
note (and a toast): the conversation stays as it was and the message stays in the box; a model loading says
so with its seconds. Compare: one conversation answered by two models side by side (base vs adapter,
epoch 5 vs epoch 10). Judge: LIMA's human study: a prompt from --prompts, two answers in random order with
their sources hidden, A / B / tie, each vote appended to --votes (JSONL that records which model was which),
and the win / tie / loss chart at the end of the rater's round (earlier, it would tell which side was which).
Train: lima_lite/app/train_tab.py.
Safe by default: binds 127.0.0.1, no share link unless --share, optional --auth (also on the two routes
gradio leaves open, see Guard), a bounded queue whose refusals say "busy, try again", caps on the message and
on the whole history, a history checked like a data file (alternating user/assistant, text only), and one
generation at a time per model (each model's Engine.lock). The app's API is its page: reachable beyond this
machine (--host, --share) without --auth, the Train tab is not built, so no event that reads or writes a path
exists to be called; the other tabs touch only the models listed under --runs (or named at start) and the
votes file, fixed at start.
Each tab's handlers (chat_turn, chat_retry, chat_undo, compare_turn, judge_next, judge_vote) are plain
functions of plain values; build_app only lays out the widgets and wires them to the handlers.
"""

import argparse
import html
import json
import random
import string
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lima_lite import LimaError
from lima_lite.app.events import event
from lima_lite.app.train_tab import Training, train_tab
from lima_lite.conversations import read_prompts
from lima_lite.evaluate.protocols import human_vote_record
from lima_lite.files import read_jsonl, write_jsonl
from lima_lite.flags import LIMA_SAMPLING, REPLY_SEED, SAMPLING_TYPES, add_sampling_args, bounded, length_note, sampling_args
from lima_lite.layout import EPOCH, METRICS_FILE, find_adapters, links_out_of, read_metrics, run_of
from lima_lite.plots import pyplot, stacked_percent_bars

BASE = "base"
VOTE_KEYS = ("a", "tie", "b")


@dataclass
class Models:
    """The models the app offers, each loaded once on first use: label -> (adapter folder or Hub id, adapter on?).

    `refresh` looks under `runs_dir` again (the app's pages at most every LIST_SECONDS, however many they are):
    an epoch adapter written by a training run joins the lists, a deleted one leaves them."""

    specs: dict[str, tuple[str, bool]]
    load_in_4bit: bool | None = None
    engines: dict = field(default_factory=dict)
    loading: threading.Lock = field(default_factory=threading.Lock)
    runs_dir: Path | None = None
    extra: tuple[str, ...] = ()
    listed: list[tuple[str, str]] | None = None  # choices() as of the last refresh
    refreshed: float = float("-inf")  # time.monotonic() of the last refresh
    listing: threading.Lock = field(default_factory=threading.Lock)
    dev_losses: dict = field(default_factory=dict)  # run folder -> ((mtime, size) of metrics.jsonl, {epoch: loss})

    @classmethod
    def discover(cls, runs_dir: str | Path, extra: list[str] = (), load_in_4bit: bool | None = None) -> "Models":
        models = cls({}, load_in_4bit, runs_dir=Path(runs_dir), extra=tuple(extra))
        models.refresh()
        return models

    def refresh(self, max_age: float = 0.0) -> None:
        """Look under runs_dir again, unless the last look is less than `max_age` seconds old."""
        with self.listing:
            if time.monotonic() - self.refreshed < max_age:
                return
            found = find_adapters(self.runs_dir) if self.runs_dir and self.runs_dir.is_dir() else {}
            specs = {label: (str(path), True) for label, path in found.items()}
            # Each run's base model: its final adapter (listed last) loaded once, with the adapter switched off.
            for label, path in found.items():
                specs[f"{label.rsplit('/', 1)[0]}/{BASE}"] = (str(path), False)
            for name in self.extra:
                specs[name] = (name, True)
                specs[f"{name} · {BASE}"] = (name, False)
            # A label keeps the folder it had while that folder is still there (a base already loaded from
            # epoch-01/ is not loaded again from epoch-02/); a deleted folder leaves the list.
            present = {path for path, _ in specs.values()}
            self.specs = {label: self.specs[label] if self.specs.get(label, ("",))[0] in present else spec
                          for label, spec in specs.items()}
            self.listed = self.shown_choices()
            self.refreshed = time.monotonic()

    @property
    def labels(self) -> list[str]:
        return list(self.specs)

    def choices(self) -> list[tuple[str, str]]:
        """(shown, label) of every model, an adapter shown with its dev loss when its run logged one."""
        return self.listed if self.listed is not None else self.shown_choices()

    def shown_choices(self) -> list[tuple[str, str]]:
        return [(f"{label} · dev loss {loss:.3f}" if (loss := self.dev_loss(path) if on else None) is not None
                 else label, label) for label, (path, on) in self.specs.items()]

    def dev_loss(self, adapter: str) -> float | None:
        """The dev loss its run logged for an epoch-NN/ adapter (that epoch's) or adapter/ (the last one).

        A run's metrics.jsonl is read again only when it changed (a look under 20 runs of 16 adapters read
        each file 16 times: 2 s; bench/list_refresh.py); a damaged one shows no dev loss (the Train tab's
        progress names the line)."""
        run = run_of(adapter)
        try:
            stat = (run / METRICS_FILE).stat() if run is not None else None
        except FileNotFoundError:
            stat = None
        if stat is None:
            return None
        seen, losses = self.dev_losses.get(run, (None, {}))
        if seen != (stat.st_mtime_ns, stat.st_size):
            try:
                losses = {round(r["epoch"] or 0): r["eval_loss"] for r in read_metrics(run) if "eval_loss" in r}
            except LimaError:
                losses = {}
            self.dev_losses[run] = ((stat.st_mtime_ns, stat.st_size), losses)
        match = EPOCH.match(Path(adapter).name)
        if match:
            return losses.get(int(match[1]))
        return losses[max(losses)] if losses else None

    def engine(self, label: str):
        """(the loaded Engine, adapter on?) of `label`; a model that does not load is a LimaError in one line."""
        from lima_lite.generate import load_engine

        if not self.specs:
            raise LimaError("no model yet: train one in the Train tab (its epoch adapters appear here), "
                            "or pass --adapter DIR_OR_HUB_ID")
        if label not in self.specs:
            raise LimaError(f"model {label!r}: not in the list any more (deleted?): choose another one")
        path, use_adapter = self.specs[label]
        with self.loading:
            if path not in self.engines:
                try:
                    self.engines[path] = load_engine(adapter=path, load_in_4bit=self.load_in_4bit)
                except LimaError as error:
                    raise LimaError(f"model {label!r} did not load: {error}") from None
                except Exception as error:  # noqa: BLE001 - a damaged or vanished folder fails in many ways
                    raise LimaError(f"model {label!r} did not load from {path}: {type(error).__name__}: "
                                    f"{first_line(error)}") from None
        return self.engines[path], use_adapter

    def prepare(self, label: str, messages: list[dict], max_new_tokens: int):
        """Load `label`'s model if it is not loaded yet, yielding the whole seconds waited once a second
        meanwhile, then check that `messages` fit its context; a LimaError says what failed."""
        path = self.specs.get(label, (None,))[0]
        if path not in self.engines:
            done = {}

            def load():
                try:
                    done["engine"] = self.engine(label)
                except LimaError as error:
                    done["error"] = error

            loader = threading.Thread(target=load, daemon=True)
            start = time.monotonic()
            loader.start()
            loader.join(0.2)
            while loader.is_alive():
                yield int(time.monotonic() - start)
                loader.join(1.0)
            if "error" in done:
                raise done["error"]
        engine, _ = self.engine(label)
        engine.prompt_ids(messages, max_new_tokens)

    def stream(self, label: str, messages: list[dict], **sampling):
        """Yield the reply so far (the whole text each time), then the finished Reply as the last item."""
        engine, use_adapter = self.engine(label)
        text = ""
        for piece in engine.stream(messages, use_adapter=use_adapter, **sampling):
            text += piece
            yield text
        yield engine.last


def plain(history) -> list[dict]:
    """Chatbot messages -> {"role", "content": str}, the form the generation core takes.

    The history comes from the browser, so it is checked like a data file: a list of user/assistant
    messages whose content is text (gr.Chatbot sends a string or a list of {"type": "text"} parts)."""
    if not isinstance(history, list):
        raise LimaError(f"history: expected a list of messages, got {type(history).__name__}")
    messages = []
    for i, message in enumerate(history):
        if not isinstance(message, dict) or "content" not in message:
            raise LimaError(f"history[{i}]: expected a {{role, content}} message")
        if message.get("role") not in ("user", "assistant"):
            raise LimaError(f"history[{i}].role: expected 'user' or 'assistant', found {message.get('role')!r}")
        content = message["content"]
        if isinstance(content, list) and all(isinstance(part, dict) for part in content):
            content = "".join(str(part.get("text", "")) for part in content)
        if not isinstance(content, str):
            raise LimaError(f"history[{i}].content: expected text, got {type(content).__name__}")
        if message["role"] == "user":
            content = html.unescape(content)  # shown() escaped it for the page
        messages.append({"role": message["role"], "content": content})
    return messages


# Every ASCII punctuation mark of a user message becomes a character reference, so the page shows the
# message as typed: `</s>`, `<script>` and `<img src=x>` as text (not tags to run or strip), `**x**` as stars
# (not bold). The chatbot renders markdown for the model's replies; plain() undoes this on the way back.
AS_TEXT = {ord(c): f"&#{ord(c)};" for c in string.punctuation}


def shown(messages: list[dict]) -> list[dict]:
    """The history as the chatbot shows it: user messages as literal text, replies as markdown."""
    return [{**m, "content": m["content"].translate(AS_TEXT)} if m["role"] == "user" else m for m in messages]


# The whole history is capped too, not only the new message: 100 messages of --max-input-chars (400,000
# characters by default, ~100k tokens, 50 times a 2,048-token context). What does not fit the context is
# dropped before generating anyway; the cap bounds what one request can make the server tokenize.
HISTORY_MESSAGES = 100
RATER_MAX_CHARS = 80


def checked_history(history: list[dict], max_input_chars: int, side: str = "") -> list[dict]:
    """`history` if its turns alternate user/assistant from the user and it is within the length cap."""
    for i, message in enumerate(history):
        expected = ("user", "assistant")[i % 2]
        if message["role"] != expected:
            raise LimaError(f"{side}history[{i}].role: expected {expected!r}, found {message['role']!r} (turns "
                            "alternate user/assistant, starting with the user)")
    total, cap = sum(len(m["content"]) for m in history), HISTORY_MESSAGES * max_input_chars
    if total > cap:
        raise LimaError(f"{side}history: {total:,} characters; the limit is {cap:,}: start a new conversation")
    return history


def with_message(history: list[dict], message: str, max_input_chars: int, side: str = "") -> list[dict]:
    """The checked history, which must end with a reply, and the user's new message after it."""
    history = checked_history(history, max_input_chars, side)
    if history and history[-1]["role"] == "user":
        raise LimaError(f"{side}history[{len(history) - 1}]: ends with a user message that has no reply; "
                        "two user turns in a row: press Retry or Undo first")
    return checked_history(history + [{"role": "user", "content": checked(message, max_input_chars)}],
                           max_input_chars, side)


def note(reply, max_new_tokens: int) -> str:
    notes = []
    if reply.dropped_turns:
        notes.append(f"the history outgrew the context: the oldest {reply.dropped_turns} turns were left out")
    if reply.finish_reason == "length":
        notes.append(length_note(reply.new_tokens, max_new_tokens))
    return "; ".join(notes)


def vote_counts(votes: list[dict], first: str, second: str) -> dict:
    """win / tie / loss of `first` against `second`, over the votes on that pair (either order shown)."""
    counts = {"win": 0, "tie": 0, "loss": 0}
    for vote in votes:
        if {vote["model_a"], vote["model_b"]} == {first, second}:
            counts["tie" if vote["winner"] == "tie" else "win" if vote["winner"] == first else "loss"] += 1
    return counts


def vote_chart(counts: dict, first: str, second: str):
    """The report's stacked bar (LIMA's Figure 1) for one pair: win / tie / loss of `first` as % of the votes.

    Drawn to fit the page: gradio saves the figure as it is (no tight bounding box) and scales it to the
    column's width, so every label lies inside the figure (the names, wrapped, in the title; the legend under
    the bar) and the figure is 2:1, small in inches so that its text stays legible scaled down to a phone's
    width (about 170 pixels tall there)."""
    total = sum(counts.values())
    title = f"{first} vs {second}: {total} vote{'' if total == 1 else 's'}"
    fig = stacked_percent_bars([("", {**counts, "n": total})], ("win", "tie", "loss"), "% of votes",
                               textwrap.fill(title, 48, break_on_hyphens=False), annotate=True)
    fig.set_size_inches(5, 2.5)
    ax = fig.axes[0]
    ax.set_yticks([])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, frameon=False)
    fig.set_layout_engine("constrained")
    pyplot().close(fig)  # gradio draws it from the figure; pyplot need not keep it open
    return fig


class Votes:
    """The Judge tab's JSONL: read all, append one, rewrite atomically; one writer at a time."""

    def __init__(self, path: str | Path):
        self.path, self.lock = Path(path), threading.Lock()

    def read(self) -> list[dict]:
        return [row for _, row in read_jsonl(self.path)] if self.path.is_file() else []

    def add(self, record: dict) -> int:
        with self.lock:
            rows = self.read() + [record]
            write_jsonl(rows, self.path)
            return len(rows)


# ---------------------------------------------------------------- the tabs' handlers: plain values in and out
# The sliders' values arrive as (temperature, top_p, repetition_penalty, max_new_tokens) at the end of
# each handler's arguments; an input error is a LimaError, which build_app shows as a gradio error.


def checked(text: str, max_input_chars: int) -> str:
    if not text or not text.strip():
        raise LimaError("type a message first")
    if len(text) > max_input_chars:
        raise LimaError(f"the message is {len(text):,} characters; the limit is {max_input_chars:,}")
    return text


def slider_sampling(temperature: float, top_p: float, repetition_penalty: float, max_new_tokens) -> dict:
    """The sliders' values, refused out of range by the flags' own parsers (an API client is not held by a
    slider's bounds)."""
    given = {"temperature": temperature, "top_p": top_p, "repetition_penalty": repetition_penalty,
             "max_new_tokens": max_new_tokens}
    values = {}
    for key, value in given.items():
        text = str(int(value)) if key == "max_new_tokens" and isinstance(value, float) and value.is_integer() else str(value)
        try:
            values[key] = SAMPLING_TYPES[key](text)
        except argparse.ArgumentTypeError as error:
            raise LimaError(f"{key}: {error}") from None
    return values


def stream_reply(models: Models, label: str, history: list[dict], sampling: dict):
    """Stream one model's reply to `history` (ending with the user); yields (history + the reply so far, note).
    A failure while generating keeps what was written and says so in the note."""
    page = shown(history)
    so_far = page + [{"role": "assistant", "content": ""}]
    try:
        for item in models.stream(label, history, **sampling):
            if isinstance(item, str):
                so_far = page + [{"role": "assistant", "content": item}]  # a new list each time: gradio diffs them
                yield so_far, WRITING
            else:
                yield so_far, note(item, sampling["max_new_tokens"])
    except LimaError as error:
        yield so_far, failed(error)
    except Exception as error:  # noqa: BLE001 - said in the note; the conversation stays on the page
        yield so_far, failed(f"{label}: the reply failed: {type(error).__name__}: {first_line(error)}")


# The note while a reply streams. The input box is emptied once, when the message is taken, and left alone
# after that: what the user types meanwhile stays there, to send when the reply ends (or after Stop).
WRITING = "writing… (Stop interrupts; you can type your next message meanwhile)"


def loading_note(seconds: int, which: str = "the model") -> str:
    return f"loading {which} ({seconds} s)…"


def untouched():
    """A handler's output for a widget it leaves as the user has it."""
    import gradio as gr

    return gr.skip()


def input_box(value=None, interactive: bool = True):
    """The input box's update: read-only (its text kept) while a model loads, editable again after; `value`
    None leaves its text as it is."""
    import gradio as gr

    return gr.update(interactive=interactive) if value is None else gr.update(value=value, interactive=interactive)


def first_line(error) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


def failed(error) -> str:
    """The note an error leaves: one line, also shown as a toast. Nothing else on the page changes (gradio's
    own error state would cover the conversation and the input box until dismissed)."""
    import gradio as gr

    gr.Warning(str(error), duration=5)
    return f"error: {error}"


def chat_turn(models: Models, max_input_chars: int, message: str, history: list, label: str, *sliders):
    """Chat's Send: yields (input box, history, note). The message stays in the box (read-only while the
    model loads, "loading the model (N s)") until the model is ready and the conversation fits its context;
    then it joins the history, the box is emptied and the reply streams. A refusal or a model that does not
    load changes nothing but the note: the history as it was, the message still in the box."""
    try:
        turn = with_message(plain(history or []), message, max_input_chars)
        sampling = slider_sampling(*sliders)
        for seconds in models.prepare(label, turn, sampling["max_new_tokens"]):
            yield input_box(interactive=False), untouched(), loading_note(seconds)
    except LimaError as error:
        yield input_box(), untouched(), failed(error)
        return
    yield input_box(""), shown(turn), WRITING
    for updated, text in stream_reply(models, label, turn, sampling):
        yield untouched(), updated, text


def chat_retry(models: Models, max_input_chars: int, history: list, label: str, *sliders):
    """Chat's Retry: the last reply drawn again (or the reply a failed turn never got); yields (history, note)."""
    try:
        turn = plain(history or [])
        if turn and turn[-1]["role"] == "assistant":
            turn = turn[:-1]
        if not turn:
            raise LimaError("nothing to retry")
        checked_history(turn, max_input_chars)
        sampling = slider_sampling(*sliders)
        for seconds in models.prepare(label, turn, sampling["max_new_tokens"]):
            yield untouched(), loading_note(seconds)
    except LimaError as error:
        yield untouched(), failed(error)
        return
    yield from stream_reply(models, label, turn, sampling)


def chat_undo(history: list) -> list[dict]:
    """Chat's Undo: the history without its last exchange (the user's message and the reply)."""
    return shown(plain(history or [])[:-2])


def compare_turn(models: Models, max_input_chars: int, seed: int | None, message: str, left: list, right: list,
                 model_a: str, model_b: str, *sliders):
    """Compare's Ask both: the same message to A then B, each streamed; yields (input box, A, B, note). As in
    Chat, the message leaves the box only once both models are loaded, and an error changes only the note."""
    try:
        left = with_message(plain(left or []), message, max_input_chars, "A: ")
        right = with_message(plain(right or []), message, max_input_chars, "B: ")
        sampling = slider_sampling(*sliders)
        for side, label, history in (("A", model_a, left), ("B", model_b, right)):
            for seconds in models.prepare(label, history, sampling["max_new_tokens"]):
                yield input_box(interactive=False), untouched(), untouched(), loading_note(seconds, f"model {side}")
    except LimaError as error:
        yield input_box(), untouched(), untouched(), failed(error)
        return
    yield input_box(""), shown(left), shown(right), WRITING
    # The same seed for both, so the comparison is of the models, not of the dice.
    sampling["seed"] = seed if seed is not None else random.randrange(2**31)
    left_now, text = shown(left), ""
    for left_now, text in stream_reply(models, model_a, left, sampling):
        yield untouched(), left_now, shown(right), text
    notes = [f"A: {text}" if text and text != WRITING else ""]
    for right_now, text in stream_reply(models, model_b, right, sampling):
        yield untouched(), left_now, right_now, " ".join(notes + [f"B: {text}" if text else ""]).strip()


def judge_next(models: Models, prompts: list[dict], rng: random.Random, index: int, x: str, y: str, *sliders):
    """Judge's Next prompt: both answers to prompt `index`, X and Y in a random order. Yields (prompt text,
    answer A, answer B, the pending record or None, next index, three vote-button updates, status, the
    chart hidden: the tally so far would tell which side was which model). The status counts the seconds of
    each wait: the models loading, answer A, answer B. An error says so in the status and changes nothing else."""
    import gradio as gr

    keep = [untouched()] * 8
    try:
        if x == y:
            raise LimaError("choose two different models")
        item = prompts[index % len(prompts)]
        shown = [x, y]
        rng.shuffle(shown)
        messages = [{"role": "user", "content": item["prompt"]}]
        sampling = slider_sampling(*sliders)
        for label in shown:
            for seconds in models.prepare(label, messages, sampling["max_new_tokens"]):
                yield *keep, loading_note(seconds, "the models"), untouched()
    except LimaError as error:
        yield *keep, failed(error), untouched()
        return
    heading = f"**Prompt {index % len(prompts) + 1} of {len(prompts)}** ({item['id']})\n\n{item['prompt']}"
    hidden = gr.update(visible=False)
    answers = []
    for side, label in zip("AB", shown, strict=True):
        start, said = time.monotonic(), None
        try:
            for piece in models.stream(label, messages, **sampling):
                if not isinstance(piece, str):
                    answers.append(piece.text.strip())
                elif (seconds := int(time.monotonic() - start)) != said:
                    said = seconds
                    yield (heading, *answers, *[""] * (2 - len(answers)), None, index,
                           *[gr.update(interactive=False)] * 3, f"generating answer {side}… ({seconds} s)", hidden)
        except LimaError as error:
            yield *keep, failed(error), untouched()
            return
    record = {"prompt": item["prompt"], "id": item["id"], "model_a": shown[0], "model_b": shown[1],
              "answer_a": answers[0], "answer_b": answers[1], "ends_round": index % len(prompts) == len(prompts) - 1}
    yield (heading, answers[0], answers[1], record, index + 1, *[gr.update(interactive=True)] * 3,
           "which answer is better?", hidden)


def judge_vote(votes: Votes, choice: str, record: dict | None, x: str, y: str, rater: str):
    """A / Tie / B: the vote appended to the JSONL. Returns (no pending record, three vote-button updates,
    status, the chart of X against Y: shown once the rater's round (every prompt once) ends, hidden before)."""
    import gradio as gr

    if record is None:
        raise LimaError("press Next prompt first")
    if len(rater or "") > RATER_MAX_CHARS:  # the textbox's max_length is the browser's; this is the server's
        raise LimaError(f"rater: your name is {len(rater):,} characters; the limit is {RATER_MAX_CHARS}")
    vote = human_vote_record(record["prompt"], record["model_a"], record["model_b"], record["answer_a"],
                             record["answer_b"], choice, (rater or "anonymous").strip())
    total = votes.add({**vote, "id": record["id"]})
    status = f"vote {total} saved to {votes.path}"
    if not record["ends_round"]:
        return None, *[gr.update(interactive=False)] * 3, status, gr.update(visible=False)
    return None, *[gr.update(interactive=False)] * 3, status + "; end of the round", judge_results(votes, x, y)


def judge_results(votes: Votes, x: str, y: str):
    """The chart of X against Y, shown (End my round, or the round's last vote)."""
    import gradio as gr

    return gr.update(value=pair_chart(votes, x, y), visible=True)


def pair_chart(votes: Votes, x: str, y: str):
    return vote_chart(vote_counts(votes.read(), x, y), x, y)


# ---------------------------------------------------------------- the layout


def build_app(models: Models, prompts: list[dict], votes_path: str | Path, max_input_chars: int = 4000,
              sampling: dict | None = None, seed: int | None = None, training=None):
    """The gr.Blocks app: widgets wired to the handlers above; `sampling` sets the sliders (LIMA's otherwise).
    `training`: a lima_lite.app.train_tab.Training to add the Train tab with (None: no Train tab)."""
    import gradio as gr

    adapters = [label for label, (_, on) in models.specs.items() if on]
    bases = [label for label in models.labels if label not in adapters]
    tuned = adapters[-1] if adapters else (models.labels[0] if models.labels else None)
    base = bases[0] if bases else (models.labels[-1] if models.labels else None)
    with gr.Blocks(title="lima_lite") as app:
        gr.Markdown("## lima_lite: train your LIMA adapter, talk to it, compare, judge")
        sliders = sampling_sliders({**LIMA_SAMPLING, **(sampling or {})})
        with gr.Tab("Chat", id="chat"):
            pickers = [chat_tab(models, tuned, sliders, max_input_chars)]
        with gr.Tab("Compare", id="compare"):
            pickers += compare_tab(models, base, tuned, sliders, max_input_chars, seed)
        with gr.Tab("Judge", id="judge"):
            pickers += judge_tab(app, models, tuned, base, sliders, prompts, Votes(votes_path), seed)
        if training is not None:
            with gr.Tab("Train", id="train"):
                pickers.append(train_tab(app, training, models))
        # The model lists follow --runs on every page, whichever tab it shows and with or without the Train
        # tab: when the page loads, then every LIST_SECONDS. Outside the queue: a tick never waits behind a
        # reply, nor takes a place a person's request needs; the look under --runs is shared by all pages.
        # The page says which picker has the focus (its list is open, or being typed into): that list is left
        # as it is until the picker loses the focus, so an option never moves under the pointer.
        sent, timer, focused = gr.State(None), gr.Timer(LIST_SECONDS), gr.JSON(None, visible=False)
        for trigger in (app.load, timer.tick):
            trigger(event(model_lists, models), [focused, sent, *pickers], [sent, *pickers], queue=False,
                    show_progress="hidden", js=focused_js([picker.elem_id for picker in pickers]))
    return app


def focused_js(elem_ids: list[str]) -> str:
    """The browser's side of the list refresh: the event's inputs with the first (`focused`) replaced by, for
    each picker in `elem_ids`, whether the focus is inside it."""
    return (f"(focused, ...rest) => [{json.dumps(elem_ids)}.map(id => {{ const picker = document.getElementById(id);"
            f" return !!picker && picker.contains(document.activeElement); }}), ...rest.slice(0, {len(elem_ids) + 1})]")


# How often every page's model lists look again; the look itself is shared (Models.refresh's max_age).
LIST_SECONDS = 3.0
GONE = "no longer on disk"


def model_lists(models: Models, focused: list | None, sent: list | None, *selected: str) -> tuple:
    """The model lists as --runs holds them now: (the choices each picker has, then each picker's update,
    nothing when its list did not change). A model a picker still shows as chosen stays in that picker's list,
    marked as gone, until another is chosen: its conversation stays on the page, and a send says what happened.
    A picker that has the focus (`focused[i]`) keeps the list it has until it loses it: an option must not move
    under the pointer (and gradio's open list fails on one that shrinks under it)."""
    import gradio as gr

    models.refresh(max_age=LIST_SECONDS)
    choices = [list(choice) for choice in models.choices()]
    labels = {label for _, label in choices}
    lists = [choices + ([[f"{value} · {GONE}", value]] if value and value not in labels else []) for value in selected]
    if sent and focused:
        lists = [sent[i] if i < len(focused) and focused[i] else mine for i, mine in enumerate(lists)]
    updates = [gr.skip() if sent and sent[i] == mine else gr.update(choices=[tuple(c) for c in mine])
               for i, mine in enumerate(lists)]
    return lists, *updates


def sampling_sliders(start: dict) -> list:
    """temperature, top_p, repetition_penalty, max_new_tokens: the order every handler takes them in."""
    import gradio as gr

    with gr.Accordion("Sampling (LIMA's defaults)", open=False), gr.Row():
        return [gr.Slider(0, 2, start["temperature"], step=0.05, label="temperature"),
                gr.Slider(0.05, 1, start["top_p"], step=0.05, label="top_p"),
                gr.Slider(1, 2, start["repetition_penalty"], step=0.05, label="repetition_penalty"),
                gr.Slider(1, max(2048, start["max_new_tokens"]), start["max_new_tokens"], step=1,
                          label="max_new_tokens")]


# The input boxes have no max_length: the browser would cut a long paste silently; the handlers refuse it
# with the message's length and the limit, and the text stays in the box to shorten.
def chat_tab(models: Models, tuned: str, sliders: list, max_input_chars: int):
    """The Chat tab; returns its model picker (the app's timer keeps its list current)."""
    import gradio as gr

    chat_model = gr.Dropdown(models.choices(), value=tuned, label="model", elem_id="chat-model")
    chatbot = gr.Chatbot(label="conversation", elem_id="chat-history", height=420)
    chat_note = gr.Markdown(elem_id="chat-note")
    # min_width: on a phone the box takes the whole width and Send goes below it
    with gr.Row():
        chat_box = gr.Textbox(placeholder=f"Type a message and press Enter (at most {max_input_chars:,} characters)",
                              show_label=False, scale=5, min_width=320, elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
    with gr.Row():
        stop = gr.Button("Stop", elem_id="chat-stop")
        retry, undo = gr.Button("Retry", elem_id="chat-retry"), gr.Button("Undo")
        clear = gr.Button("New conversation", elem_id="chat-new")
    replies = [trigger(event(chat_turn, models, max_input_chars), [chat_box, chatbot, chat_model, *sliders],
                       [chat_box, chatbot, chat_note]) for trigger in (chat_box.submit, send.click)]
    replies.append(retry.click(event(chat_retry, models, max_input_chars), [chatbot, chat_model, *sliders],
                               [chatbot, chat_note]))
    # Stop and New conversation cancel the reply: gradio closes its generator, which stops generate()
    # (Engine.stream); a closed tab does the same when its session ends. The box, read-only while a model
    # loads, is editable again with its text.
    stop.click(None, None, None, cancels=replies).then(lambda: ("stopped", input_box()), None, [chat_note, chat_box])
    undo.click(event(chat_undo), chatbot, chatbot, cancels=replies)
    # the chatbot's own trash icon (it empties the page's history at once) is New conversation too: without the
    # cancel, the reply being written would stream back in
    for trigger in (clear.click, chat_model.change, chatbot.clear):  # a new model starts a new conversation
        # cancel first, as Stop does, then clear: a clear that also cancels could land before the cancel took
        trigger(None, None, None, cancels=replies).then(lambda: ([], "", input_box()), None,
                                                        [chatbot, chat_note, chat_box])
    return chat_model


def compare_tab(models: Models, base: str, tuned: str, sliders: list, max_input_chars: int, seed: int | None) -> list:
    import gradio as gr

    with gr.Row():
        model_a = gr.Dropdown(models.choices(), value=base, label="model A", min_width=320, elem_id="compare-model-a")
        model_b = gr.Dropdown(models.choices(), value=tuned, label="model B", min_width=320, elem_id="compare-model-b")
    with gr.Row():
        left = gr.Chatbot(label="A", elem_id="compare-a", height=380)
        right = gr.Chatbot(label="B", elem_id="compare-b", height=380)
    compare_note = gr.Markdown(elem_id="compare-note")
    with gr.Row():
        compare_box = gr.Textbox(placeholder="One prompt, or the next turn of the conversation", show_label=False,
                                 scale=5, min_width=320, elem_id="compare-input")
        send = gr.Button("Ask both", variant="primary", scale=1, elem_id="compare-send")
    with gr.Row():
        stop, clear = gr.Button("Stop"), gr.Button("New conversation")
    replies = [trigger(event(compare_turn, models, max_input_chars, seed),
                       [compare_box, left, right, model_a, model_b, *sliders], [compare_box, left, right, compare_note])
               for trigger in (compare_box.submit, send.click)]
    stop.click(None, None, None, cancels=replies).then(lambda: ("stopped", input_box()), None,
                                                       [compare_note, compare_box])
    for trigger in (clear.click, model_a.change, model_b.change, left.clear, right.clear):
        trigger(None, None, None, cancels=replies).then(lambda: ([], [], "", input_box()), None,
                                                        [left, right, compare_note, compare_box])
    return [model_a, model_b]


def judge_tab(app, models: Models, tuned: str, base: str, sliders: list, prompts: list[dict], votes: Votes,
              seed: int | None) -> list:
    import gradio as gr

    gr.Markdown("Blind side-by-side, as in LIMA's human study: which answer is better? The order is random and "
                f"the models are hidden. A round is the {len(prompts)} prompts once each; the win / tie / loss "
                "chart shows at its end (or at End my round), since a running tally tells which side was which.")
    with gr.Row():  # min_width: on a phone each takes the whole width, so long names stay readable
        first = gr.Dropdown(models.choices(), value=tuned, label="model X", min_width=320, elem_id="judge-x")
        second = gr.Dropdown(models.choices(), value=base, label="model Y", min_width=320, elem_id="judge-y")
        rater = gr.Textbox(value="anonymous", label="your name (rater)", max_length=RATER_MAX_CHARS, min_width=200)
    next_prompt = gr.Button("Next prompt", variant="primary", elem_id="judge-next")
    judge_prompt = gr.Markdown(elem_id="judge-prompt")
    with gr.Row():
        answer_a = gr.Textbox(label="Answer A", lines=10, interactive=False, elem_id="judge-a")
        answer_b = gr.Textbox(label="Answer B", lines=10, interactive=False, elem_id="judge-b")
    with gr.Row():
        buttons = [gr.Button(text, interactive=False, elem_id=f"judge-vote-{key}")
                   for text, key in zip(("A is better", "Tie", "B is better"), VOTE_KEYS, strict=True)]
    status = gr.Markdown(elem_id="judge-status")
    end_round = gr.Button("End my round: show the chart", elem_id="judge-end")
    # no label over the chart: it would cover the chart's own title, which names X and Y
    chart = gr.Plot(show_label=False, visible=False, elem_id="judge-chart")
    pending, position = gr.State(None), gr.State(0)
    next_prompt.click(event(judge_next, models, prompts, random.Random(seed)), [position, first, second, *sliders],
                      [judge_prompt, answer_a, answer_b, pending, position, *buttons, status, chart])
    for button, key in zip(buttons, VOTE_KEYS, strict=True):
        button.click(event(judge_vote, votes, key), [pending, first, second, rater], [pending, *buttons, status, chart])
    end_round.click(event(judge_results, votes), [first, second], chart)
    for trigger in (first.change, second.change):
        trigger(lambda: gr.update(visible=False), None, chart)
    return [first, second]


# gradio 6 (6.31) serves two routes without its login check: /gradio_api/cancel (stops an event, given its
# session hash and event id) and /gradio_api/reset (a no-op). With --auth both answer only a logged-in browser.
UNGUARDED_ROUTES = ("/gradio_api/cancel", "/gradio_api/reset")
QUEUE_JOIN = "/gradio_api/queue/join"


class Guard:
    """ASGI middleware around the gradio app: the login check on the routes gradio leaves open, and a
    refusal by the full queue (HTTP 503) that says "busy, try again" to API clients too (the page's
    own client already shows "This application is currently busy. Please try again.").

    It reads the login the way gradio's own check does (routes.py get_current_user): the cookie
    `access-token-<cookie_id>` (or `access-token-unsecure-...`) must name a token of `app.tokens`."""

    def __init__(self, app, queue_size: int = 0):
        self.app, self.queue_size = app, queue_size

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/")
        if path in UNGUARDED_ROUTES and not self.logged_in(scope):
            from starlette.responses import JSONResponse

            return await JSONResponse({"detail": "Not authenticated"}, status_code=401)(scope, receive, send)
        if path != QUEUE_JOIN:
            return await self.app(scope, receive, send)
        refused = {}

        async def busy(message):
            if message["type"] == "http.response.start" and message["status"] == 503:
                refused["start"] = message
                return None
            if refused and message["type"] == "http.response.body":
                body = json.dumps({"detail": f"busy: {self.queue_size} requests are already waiting; "
                                             "try again in a minute"}).encode()
                headers = [(k, v) for k, v in refused["start"]["headers"] if k.lower() != b"content-length"]
                await send({**refused["start"], "headers": headers + [(b"content-length", str(len(body)).encode())]})
                return await send({"type": "http.response.body", "body": body})
            return await send(message)
        return await self.app(scope, receive, busy)

    @staticmethod
    def logged_in(scope) -> bool:
        from starlette.requests import Request

        app = scope["app"]
        if app.auth is None and app.auth_dependency is None:
            return True
        cookies = Request(scope).cookies
        token = cookies.get(f"access-token-{app.cookie_id}") or cookies.get(f"access-token-unsecure-{app.cookie_id}")
        return app.tokens.get(token) is not None


def launch(app, host: str, port: int, share: bool, auth, queue_size: int, **kwargs):
    """app.launch with a bounded queue, one generation at a time, and the Guard around it."""
    from starlette.middleware import Middleware

    app.queue(max_size=queue_size, default_concurrency_limit=1)
    return app.launch(server_name=host, server_port=port, share=share, auth=auth,
                      app_kwargs={"middleware": [Middleware(Guard, queue_size=queue_size)]}, **kwargs)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise LimaError("--auth: expected USER:PASSWORD")
    return user, password


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lima-lite ui", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Also: python ui/app.py [ARGS]. Models load on first use, once each.")
    p.add_argument("--runs", default="runs", help="folder of training runs to list adapters from (default runs)")
    p.add_argument("--adapter", action="append", default=[], help="one more adapter folder or Hub id (repeatable)")
    p.add_argument("--prompts", default="embedded:dev.jsonl", help="Judge tab prompts file (default embedded:dev.jsonl)")
    p.add_argument("--votes", help="Judge tab votes JSONL (default RUNS/human_votes.jsonl)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require this login")
    p.add_argument("--queue-size", type=bounded(int, 1), default=16,
                   help="requests waiting at most (default 16); more are refused")
    p.add_argument("--max-input-chars", type=bounded(int, 1), default=4000, help="longest message accepted (default 4000)")
    p.add_argument("--load-in-4bit", dest="load_in_4bit", action=argparse.BooleanOptionalAction, default=None,
                   help="4-bit NF4 base (default: on with CUDA, off on a CPU)")
    p.add_argument("--seed", type=REPLY_SEED,
                   help="seed the Judge tab's order and the Compare tab's sampling")
    p.add_argument("--no-train", dest="train", action="store_false",
                   help="no Train tab (it starts `lima-lite train` runs; with --share or a --host other than "
                        "this machine it needs --auth)")
    add_sampling_args(p)  # the sliders' initial values
    return p


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def trusted(host: str, share: bool, auth) -> bool:
    """Whether whoever reaches the app may name files: a page of this machine only, or one behind a login."""
    return (host in LOOPBACK and not share) or auth is not None


def app_from_args(args):
    """The gr.Blocks app `lima-lite ui ARGS` serves. Beyond this machine without a login the Train tab (the
    events that read and write paths: data check, start, export, run progress) is not built at all, so its
    events do not exist in the app's API either; what stays (Chat, Compare, Judge) touches only the models
    listed (adapters under --runs and those named by --adapter) and the votes file fixed when the app starts."""
    auth = parse_auth(args.auth)
    train = args.train and trusted(args.host, args.share, auth)
    if args.train and not train:
        print("note: no Train tab: this app is reachable beyond this machine without a login (--auth USER:PASSWORD "
              "adds it)", file=sys.stderr)
    models = Models.discover(args.runs, args.adapter, args.load_in_4bit)
    for link in links_out_of(args.runs) if Path(args.runs).is_dir() else []:
        print(f"note: {link} leads out of {args.runs} (to {link.resolve()}): its adapters are not listed "
              "(--adapter DIR lists one)", file=sys.stderr)
    if not models.specs and not train:
        raise LimaError(f"{args.runs}: no adapters found (adapter/ or epoch-NN/ folders); train one with "
                        "`lima-lite quickstart` or pass --adapter DIR_OR_HUB_ID")
    prompts = read_prompts(args.prompts)
    votes = args.votes or str(Path(args.runs) / "human_votes.jsonl")
    training = None
    if train:
        training = Training(args.runs)
    app = build_app(models, prompts, votes, args.max_input_chars, sampling_args(args), args.seed, training)
    print(f"{len(models.labels)} models: {', '.join(models.labels) or 'none yet (Train tab)'}; votes -> {votes}")
    return app


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    app = app_from_args(args)
    launch(app, args.host, args.port, args.share, parse_auth(args.auth), args.queue_size)
    return 0
