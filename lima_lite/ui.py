"""The Gradio app over the generation core: chat, compare two models side by side, judge blind.

    $ lima-lite ui                                    # adapters under runs/, http://127.0.0.1:7860
    $ python ui/app.py --runs runs --prompts embedded:dev.jsonl --votes votes.jsonl
    $ lima-lite ui --adapter someone/llama-7b-lima --auth me:secret --share

Chat: multi-turn, streamed, sampling sliders, a picker of every adapter found under --runs (the final
`adapter/` and each `epoch-NN/`) and the base model of each run. Compare: one conversation answered by
two models side by side (base vs adapter, epoch 5 vs epoch 10). Judge: LIMA's human study: a prompt from
--prompts, two answers in random order with their sources hidden, A / B / tie, each vote appended to
--votes (JSONL that records which model was which), and a live win / tie / loss chart.
Safe by default: binds 127.0.0.1, no share link unless --share, optional --auth, a bounded queue,
a cap on input length, and one generation at a time per model (each model's Engine.lock).
"""

import argparse
import random
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lima_lite import LimaError
from lima_lite.config import LIMA_SAMPLING

EPOCH = re.compile(r"^epoch-(\d+)$")
BASE = "base"


def find_adapters(runs_dir: str | Path) -> dict[str, Path]:
    """{"RUN/adapter": path, "RUN/epoch-03": path, ...} for every run under runs_dir, epochs in order, final last."""
    runs_dir = Path(runs_dir)
    found = []
    for config in runs_dir.rglob("adapter_config.json"):
        folder = config.parent
        match = EPOCH.match(folder.name)
        if folder.name != "adapter" and not match:
            continue  # checkpoints, Hub upload folders
        run = folder.parent.relative_to(runs_dir).as_posix()
        found.append(((run, int(match[1]) if match else float("inf")), f"{run}/{folder.name}".lstrip("./"), folder))
    return {label: folder for _, label, folder in sorted(found)}


@dataclass
class Models:
    """The models the app offers, each loaded once on first use: label -> (adapter folder or Hub id, adapter on?)."""

    specs: dict[str, tuple[str, bool]]
    load_in_4bit: bool | None = None
    engines: dict = field(default_factory=dict)
    loading: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def discover(cls, runs_dir: str | Path, extra: list[str] = (), load_in_4bit: bool | None = None) -> "Models":
        found = find_adapters(runs_dir) if Path(runs_dir).is_dir() else {}
        specs = {label: (str(path), True) for label, path in found.items()}
        # Each run's base model: its final adapter (listed last) loaded once, with the adapter switched off.
        for label, path in found.items():
            specs[f"{label.rsplit('/', 1)[0]}/{BASE}"] = (str(path), False)
        for name in extra:
            specs[name] = (name, True)
            specs[f"{name} · {BASE}"] = (name, False)
        if not specs:
            raise LimaError(f"{runs_dir}: no adapters found (adapter/ or epoch-NN/ folders); train one with "
                            "`lima-lite quickstart` or pass --adapter DIR_OR_HUB_ID")
        return cls(specs, load_in_4bit)

    @property
    def labels(self) -> list[str]:
        return list(self.specs)

    def engine(self, label: str):
        from lima_lite.generate import load_engine

        if label not in self.specs:
            raise LimaError(f"unknown model {label!r}")
        path, use_adapter = self.specs[label]
        with self.loading:
            if path not in self.engines:
                self.engines[path] = load_engine(adapter=path, load_in_4bit=self.load_in_4bit)
        return self.engines[path], use_adapter

    def stream(self, label: str, messages: list[dict], **sampling):
        """Yield the reply so far (the whole text each time), then the finished Reply as the last item."""
        engine, use_adapter = self.engine(label)
        text = ""
        for piece in engine.stream(messages, use_adapter=use_adapter, **sampling):
            text += piece
            yield text
        yield engine.last


def plain(history: list) -> list[dict]:
    """Chatbot messages -> {"role", "content": str}, the form the generation core takes."""
    messages = []
    for message in history:
        content = message["content"]
        if isinstance(content, list):
            content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
        messages.append({"role": message["role"], "content": str(content)})
    return messages


def note(reply, max_new_tokens: int) -> str:
    notes = []
    if reply.dropped_turns:
        notes.append(f"the history outgrew the context: the oldest {reply.dropped_turns} turns were left out")
    if reply.finish_reason == "length":
        notes.append(f"stopped at max_new_tokens={max_new_tokens}")
    return "; ".join(notes)


def vote_counts(votes: list[dict], first: str, second: str) -> dict:
    """win / tie / loss of `first` against `second`, over the votes on that pair (either order shown)."""
    counts = {"win": 0, "tie": 0, "loss": 0}
    for vote in votes:
        if {vote["model_a"], vote["model_b"]} == {first, second}:
            counts["tie" if vote["winner"] == "tie" else "win" if vote["winner"] == first else "loss"] += 1
    return counts


def vote_chart(counts: dict, first: str, second: str):
    """One stacked horizontal bar, like LIMA's Figure 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.8), dpi=100)
    total = sum(counts.values())
    left = 0
    for key, color in (("win", "#2e7d32"), ("tie", "#9e9e9e"), ("loss", "#c62828")):
        share = counts[key] / total if total else 0
        ax.barh([0], [share], left=left, color=color, label=f"{key} {counts[key]}")
        if share:
            ax.text(left + share / 2, 0, f"{share:.0%}", ha="center", va="center", color="white")
        left += share
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_title(f"{first} vs {second}: {total} vote{'' if total == 1 else 's'}", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    fig.tight_layout()
    plt.close(fig)
    return fig


class Votes:
    """The Judge tab's JSONL: read all, append one, rewrite atomically; one writer at a time."""

    def __init__(self, path: str | Path):
        self.path, self.lock = Path(path), threading.Lock()

    def read(self) -> list[dict]:
        import json

        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def add(self, record: dict) -> int:
        from lima_lite.io import write_jsonl

        with self.lock:
            rows = self.read() + [record]
            write_jsonl(rows, self.path)
            return len(rows)


def build_app(models: Models, prompts: list[dict], votes_path: str | Path, max_input_chars: int = 4000,
              max_new_tokens: int = LIMA_SAMPLING["max_new_tokens"], seed: int | None = None):
    """The gr.Blocks app: widgets only; every answer comes from the generation core through `models`."""
    import gradio as gr
    import torch

    from lima_lite.evaluate.protocols import human_vote_record

    votes = Votes(votes_path)
    labels = models.labels
    adapters = [label for label, (_, on) in models.specs.items() if on]
    bases = [label for label in labels if label not in adapters]
    rng = random.Random(seed)

    def checked(text: str) -> str:
        if not text or not text.strip():
            raise gr.Error("type a message first")
        if len(text) > max_input_chars:
            raise gr.Error(f"the message is {len(text):,} characters; the limit is {max_input_chars:,}")
        return text

    def sampling(temperature, top_p, repetition_penalty, new_tokens):
        return {"temperature": temperature, "top_p": top_p, "repetition_penalty": repetition_penalty,
                "max_new_tokens": int(new_tokens)}

    def answer(label, history, settings):
        """Stream one model's reply to `history` (ending with the user); yields (history, note)."""
        history = history + [{"role": "assistant", "content": ""}]
        try:
            for item in models.stream(label, plain(history[:-1]), **settings):
                if isinstance(item, str):
                    history[-1]["content"] = item
                    yield history, ""
                else:
                    yield history, note(item, settings["max_new_tokens"])
        except LimaError as error:
            raise gr.Error(str(error)) from None

    with gr.Blocks(title="lima_lite") as app:
        gr.Markdown("## lima_lite: talk to your LIMA adapter, compare, judge")
        with gr.Accordion("Sampling (LIMA's defaults)", open=False):
            with gr.Row():
                temperature = gr.Slider(0, 2, LIMA_SAMPLING["temperature"], step=0.05, label="temperature")
                top_p = gr.Slider(0.05, 1, LIMA_SAMPLING["top_p"], step=0.05, label="top_p")
                repetition = gr.Slider(1, 2, LIMA_SAMPLING["repetition_penalty"], step=0.05, label="repetition_penalty")
                new_tokens = gr.Slider(1, max(2048, max_new_tokens), max_new_tokens, step=1, label="max_new_tokens")
        knobs = [temperature, top_p, repetition, new_tokens]

        with gr.Tab("Chat", id="chat"):
            chat_model = gr.Dropdown(labels, value=adapters[-1] if adapters else labels[0], label="model")
            chatbot = gr.Chatbot(label="conversation", elem_id="chat-history", height=420)
            chat_note = gr.Markdown(elem_id="chat-note")
            with gr.Row():
                chat_box = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=5,
                                      max_length=max_input_chars, elem_id="chat-input")
                chat_send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            with gr.Row():
                chat_retry = gr.Button("Retry")
                chat_undo = gr.Button("Undo")
                chat_clear = gr.Button("New conversation")

            def chat_turn(message, history, label, *knob_values):
                history = plain(history or []) + [{"role": "user", "content": checked(message)}]
                yield "", history, ""
                for updated, text in answer(label, history, sampling(*knob_values)):
                    yield "", updated, text

            def chat_again(history, label, *knob_values):
                history = plain(history or [])
                if history and history[-1]["role"] == "assistant":
                    history = history[:-1]
                if not history:
                    raise gr.Error("nothing to retry")
                for updated, text in answer(label, history, sampling(*knob_values)):
                    yield updated, text

            inputs = [chat_box, chatbot, chat_model, *knobs]
            chat_box.submit(chat_turn, inputs, [chat_box, chatbot, chat_note])
            chat_send.click(chat_turn, inputs, [chat_box, chatbot, chat_note])
            chat_retry.click(chat_again, [chatbot, chat_model, *knobs], [chatbot, chat_note])
            chat_undo.click(lambda h: plain(h or [])[:-2], chatbot, chatbot)
            chat_clear.click(lambda: ([], ""), None, [chatbot, chat_note])
            chat_model.change(lambda: ([], ""), None, [chatbot, chat_note])  # a new model starts a new conversation

        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                left_model = gr.Dropdown(labels, value=bases[0] if bases else labels[0], label="model A")
                right_model = gr.Dropdown(labels, value=adapters[-1] if adapters else labels[-1], label="model B")
            with gr.Row():
                left_chat = gr.Chatbot(label="A", elem_id="compare-a", height=380)
                right_chat = gr.Chatbot(label="B", elem_id="compare-b", height=380)
            compare_note = gr.Markdown()
            with gr.Row():
                compare_box = gr.Textbox(placeholder="One prompt, or the next turn of the conversation", show_label=False,
                                         scale=5, max_length=max_input_chars, elem_id="compare-input")
                compare_send = gr.Button("Ask both", variant="primary", scale=1, elem_id="compare-send")
            compare_clear = gr.Button("New conversation")

            def compare_turn(message, left, right, a, b, *knob_values):
                message = checked(message)
                settings = sampling(*knob_values)
                left = plain(left or []) + [{"role": "user", "content": message}]
                right = plain(right or []) + [{"role": "user", "content": message}]
                yield "", left, right, ""
                # The same seed for both, so the comparison is of the models, not of the dice.
                draw = seed if seed is not None else random.randrange(2**31)
                notes = []
                for left_now, text in answer(a, left, {**settings, "seed": draw}):
                    yield "", left_now, right, text
                notes.append(f"A: {text}" if text else "")
                for right_now, text in answer(b, right, {**settings, "seed": draw}):
                    yield "", left_now, right_now, " ".join(notes + [f"B: {text}" if text else ""]).strip()

            compare_inputs = [compare_box, left_chat, right_chat, left_model, right_model, *knobs]
            compare_outputs = [compare_box, left_chat, right_chat, compare_note]
            compare_box.submit(compare_turn, compare_inputs, compare_outputs)
            compare_send.click(compare_turn, compare_inputs, compare_outputs)
            compare_clear.click(lambda: ([], [], ""), None, [left_chat, right_chat, compare_note])
            for dropdown in (left_model, right_model):
                dropdown.change(lambda: ([], [], ""), None, [left_chat, right_chat, compare_note])

        with gr.Tab("Judge", id="judge"):
            gr.Markdown("Blind side-by-side, as in LIMA's human study: which answer is better? "
                        "The order is random and the models are hidden.")
            with gr.Row():
                first = gr.Dropdown(labels, value=adapters[-1] if adapters else labels[0], label="model X")
                second = gr.Dropdown(labels, value=bases[0] if bases else labels[-1], label="model Y")
                rater = gr.Textbox(value="anonymous", label="your name (rater)", max_length=80)
            next_prompt = gr.Button("Next prompt", variant="primary", elem_id="judge-next")
            judge_prompt = gr.Markdown(elem_id="judge-prompt")
            with gr.Row():
                answer_a = gr.Textbox(label="Answer A", lines=10, interactive=False, elem_id="judge-a")
                answer_b = gr.Textbox(label="Answer B", lines=10, interactive=False, elem_id="judge-b")
            with gr.Row():
                vote_buttons = [gr.Button(text, interactive=False, elem_id=f"judge-vote-{key}")
                                for text, key in (("A is better", "a"), ("Tie", "tie"), ("B is better", "b"))]
            judge_status = gr.Markdown(elem_id="judge-status")
            chart = gr.Plot(label="win / tie / loss of model X against model Y")
            pending = gr.State(None)
            position = gr.State(0)

            def deal(index, x, y, *knob_values):
                if x == y:
                    raise gr.Error("choose two different models")
                item = prompts[index % len(prompts)]
                messages = [{"role": "user", "content": item["prompt"]}]
                settings = sampling(*knob_values)
                shown = [x, y]
                rng.shuffle(shown)
                yield (f"**Prompt {index % len(prompts) + 1} of {len(prompts)}** ({item['id']})\n\n{item['prompt']}",
                       "", "", None, index, *[gr.update(interactive=False)] * 3, "generating both answers…")
                texts = []
                for label in shown:
                    try:
                        texts.append(models.engine(label)[0].reply(messages, use_adapter=models.specs[label][1],
                                                                   **settings).text.strip())
                    except LimaError as error:
                        raise gr.Error(str(error)) from None
                record = {"prompt": item["prompt"], "id": item["id"], "model_a": shown[0], "model_b": shown[1],
                          "answer_a": texts[0], "answer_b": texts[1]}
                yield (gr.update(), texts[0], texts[1], record, index + 1, *[gr.update(interactive=True)] * 3,
                       "which answer is better?")

            def cast(choice, record, x, y, who):
                if record is None:
                    raise gr.Error("press Next prompt first")
                vote = human_vote_record(record["prompt"], record["model_a"], record["model_b"], record["answer_a"],
                                         record["answer_b"], choice, (who or "anonymous").strip())
                total = votes.add({**vote, "id": record["id"]})
                counts = vote_counts(votes.read(), x, y)
                return (None, *[gr.update(interactive=False)] * 3, f"vote {total} saved to {votes.path}",
                        vote_chart(counts, x, y))

            next_prompt.click(deal, [position, first, second, *knobs],
                              [judge_prompt, answer_a, answer_b, pending, position, *vote_buttons, judge_status])
            for button, key in zip(vote_buttons, ("a", "tie", "b")):
                button.click(lambda record, x, y, who, key=key: cast(key, record, x, y, who),
                             [pending, first, second, rater], [pending, *vote_buttons, judge_status, chart])
            show_chart = lambda x, y: vote_chart(vote_counts(votes.read(), x, y), x, y)  # noqa: E731
            for dropdown in (first, second):
                dropdown.change(show_chart, [first, second], chart)
            app.load(show_chart, [first, second], chart)
    return app


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
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (default 16); more are refused")
    p.add_argument("--max-input-chars", type=int, default=4000, help="longest message accepted (default 4000)")
    p.add_argument("--max-new-tokens", type=int, default=LIMA_SAMPLING["max_new_tokens"],
                   help=f"initial reply length limit (default {LIMA_SAMPLING['max_new_tokens']}, LIMA's)")
    p.add_argument("--load-in-4bit", dest="load_in_4bit", action=argparse.BooleanOptionalAction, default=None,
                   help="4-bit NF4 base (default: on with CUDA, off on a CPU)")
    p.add_argument("--seed", type=int, help="seed the Judge tab's order and the Compare tab's sampling")
    return p


def main(argv=None) -> int:
    from lima_lite.evaluate.answers import read_prompts

    args = parser().parse_args(argv)
    auth = parse_auth(args.auth)
    models = Models.discover(args.runs, args.adapter, args.load_in_4bit)
    prompts = read_prompts(args.prompts)
    votes = args.votes or str(Path(args.runs) / "human_votes.jsonl")
    app = build_app(models, prompts, votes, args.max_input_chars, args.max_new_tokens, args.seed)
    app.queue(max_size=args.queue_size, default_concurrency_limit=1)
    print(f"{len(models.labels)} models: {', '.join(models.labels)}; votes -> {votes}")
    app.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth)
    return 0
