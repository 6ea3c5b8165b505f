"""The Gradio app (ui/app.py, lima-lite ui): model discovery, vote bookkeeping, each tab's handlers called
directly on a tiny model (chat, Retry, Undo, Compare's shared seed, Judge's deal and vote, the chart),
and the three tabs driven in a real headless Chromium through Playwright: a streamed chat reply, a
side-by-side comparison, a blind vote that lands in the JSONL. A screenshot is saved in the test's tmp dir.
Without /usr/bin/chromium the browser test is skipped, except under CI (CI=true), where it fails.
"""

import json
import random
import shutil
import time
from pathlib import Path

import pytest

import helpers
from helpers import CHROMIUM, CHROMIUM_ARGS, browser_tools, console_errors, free_port, qa, train_tiny
from lima_lite import LimaError
from lima_lite.app.ui import (
    WRITING,
    Models,
    Votes,
    build_app,
    chat_retry,
    chat_turn,
    chat_undo,
    compare_turn,
    event,
    input_box,
    judge_next,
    judge_vote,
    parse_auth,
    plain,
    shown,
    untouched,
    vote_chart,
    vote_counts,
)
from lima_lite.layout import find_adapters


@pytest.fixture(scope="module")
def runs(tiny_llama_tied, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    train_tiny(tiny_llama_tied, runs / "tiny", [qa(i) for i in range(4)])
    return runs


def test_find_adapters_lists_final_and_every_epoch_only(runs):
    shutil.copytree(runs / "tiny" / "adapter", runs / "tiny" / "hub" / "me--tiny")  # an upload folder: not a model
    found = find_adapters(runs)
    assert list(found) == ["tiny/epoch-01", "tiny/adapter"]
    models = Models.discover(runs, load_in_4bit=False)
    assert models.specs["tiny/base"] == (str(runs / "tiny" / "adapter"), False)
    assert models.labels == ["tiny/epoch-01", "tiny/adapter", "tiny/base"]


def test_no_adapters_yet_is_an_empty_list_that_says_what_to_do(tmp_path):
    from lima_lite.app.ui import main

    models = Models.discover(tmp_path)
    assert models.labels == [] and models.choices() == []
    with pytest.raises(LimaError, match="no model yet: train one in the Train tab"):
        models.engine(None)
    with pytest.raises(LimaError, match="no adapters found"):  # without the Train tab there is nothing to do
        main(["--runs", str(tmp_path), "--no-train"])


def test_auth_and_vote_counts(tmp_path):
    from lima_lite.evaluate.protocols import human_vote_record

    assert parse_auth("me:se:cret") == ("me", "se:cret") and parse_auth(None) is None
    with pytest.raises(LimaError, match="USER:PASSWORD"):
        parse_auth("nopassword")
    votes = Votes(tmp_path / "votes.jsonl")
    for pair, vote in [(("x", "y"), "a"), (("y", "x"), "a"), (("y", "x"), "tie"), (("x", "z"), "b")]:
        votes.add(human_vote_record("p", *pair, "ans a", "ans b", vote, "me"))
    assert vote_counts(votes.read(), "x", "y") == {"win": 1, "tie": 1, "loss": 1}
    assert len((tmp_path / "votes.jsonl").read_text().splitlines()) == 4


# ---------------------------------------------------------------- the handlers, called as the widgets call them

GREEDY = (0.0, 1.0, 1.0, 6)  # temperature, top_p, repetition_penalty, max_new_tokens: the same reply every time
SAMPLED = (1.0, 1.0, 1.0, 12)  # the full distribution: two unseeded draws differ
FERN = "How do I water a fern?"


@pytest.fixture(scope="module")
def models(runs) -> Models:
    return Models.discover(runs, load_in_4bit=False)


def core_reply(models, label, messages, sliders, seed=None):
    """The generation core's own reply, for the handler's output to be compared with."""
    engine, use_adapter = models.engine(label)
    temperature, top_p, repetition_penalty, max_new_tokens = sliders
    return engine.reply(messages, use_adapter=use_adapter, seed=seed, temperature=temperature, top_p=top_p,
                        repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens)


def test_chat_turn_streams_the_reply_into_the_history(models):
    models.engine("tiny/adapter")  # loaded (a load's "loading the model (N s)" steps: tests/test_ui_chat_errors.py)
    steps = list(chat_turn(models, 500, FERN, [], "tiny/adapter", *GREEDY))
    # shown at once, the box emptied
    assert steps[0] == (input_box(""), shown([{"role": "user", "content": FERN}]), WRITING)
    expected = core_reply(models, "tiny/adapter", [{"role": "user", "content": FERN}], GREEDY)
    box, history, note_text = steps[-1]
    assert plain(history) == [{"role": "user", "content": FERN}, {"role": "assistant", "content": expected.text}]
    # after the first step the box is left alone: what the user types during the reply stays there
    assert all(box == untouched() for box, _, _ in steps[1:])
    assert note_text == ("stopped at max_new_tokens=6" if expected.finish_reason == "length" else "")
    replies = [h[-1]["content"] for _, h, _ in steps[1:]]
    assert all(expected.text.startswith(text) for text in replies)  # each step a longer piece of the one reply
    # a refusal changes only the note: the box keeps its text (editable), the history is left as it is
    assert list(chat_turn(models, 500, "  ", [], "tiny/adapter", *GREEDY)) == [
        (input_box(), untouched(), "error: type a message first")]
    [(box, history, note_text)] = chat_turn(models, 500, "x" * 501, steps[-1][1], "tiny/adapter", *GREEDY)
    assert history == untouched() and note_text == "error: the message is 501 characters; the limit is 500"


def test_retry_replaces_the_last_reply_and_undo_drops_the_last_exchange(models):
    earlier = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    page = earlier + [{"role": "user", "content": [{"type": "text", "text": FERN}]},  # as gr.Chatbot sends it
                      {"role": "assistant", "content": "a reply the user did not like"}]
    expected = core_reply(models, "tiny/adapter", earlier + [{"role": "user", "content": FERN}], GREEDY).text
    history, _ = list(chat_retry(models, 500, page, "tiny/adapter", *GREEDY))[-1]
    assert plain(history) == earlier + [{"role": "user", "content": FERN}, {"role": "assistant", "content": expected}]
    assert page[-1]["content"] == "a reply the user did not like"  # the widget's value is not changed in place
    # a turn whose reply failed ends with the user: Retry answers it
    history, _ = list(chat_retry(models, 500, earlier + [{"role": "user", "content": FERN}], "tiny/adapter", *GREEDY))[-1]
    assert history[-1] == {"role": "assistant", "content": expected} and len(history) == 4
    assert list(chat_retry(models, 500, [{"role": "assistant", "content": "alone"}], "tiny/adapter", *GREEDY)) == [
        (untouched(), "error: nothing to retry")]

    assert plain(chat_undo(page)) == earlier
    assert chat_undo(earlier) == [] and chat_undo(None) == []


def test_user_messages_are_shown_as_typed_and_read_back_unchanged():
    typed = "a </s> <script>alert(1)</script> <img src=x> **not bold** &lt; 1. x"
    page = shown([{"role": "user", "content": typed}, {"role": "assistant", "content": "**bold** reply"}])
    assert "<" not in page[0]["content"] and "*" not in page[0]["content"] and "&lt;" not in page[0]["content"]
    assert page[1]["content"] == "**bold** reply"  # replies stay markdown
    assert plain(page) == [{"role": "user", "content": typed}, {"role": "assistant", "content": "**bold** reply"}]


@pytest.mark.parametrize("seed", [0, None])
def test_compare_gives_both_models_the_same_seed(models, seed):
    *_, (box, left, right, _) = compare_turn(models, 500, seed, "Name a fast bird.", [], [], "tiny/adapter",
                                             "tiny/adapter", *SAMPLED)
    assert box == untouched() and [m["role"] for m in left] == [m["role"] for m in right] == ["user", "assistant"]
    assert left[-1]["content"] == right[-1]["content"]  # one model, one seed: one reply, whatever the seed
    messages = [{"role": "user", "content": "Name a fast bird."}]
    if seed is not None:
        *_, (_, left, right, _) = compare_turn(models, 500, seed, "Name a fast bird.", [], [], "tiny/adapter",
                                               "tiny/base", *SAMPLED)
        assert left[-1]["content"] == core_reply(models, "tiny/adapter", messages, SAMPLED, seed=seed).text
        assert right[-1]["content"] == core_reply(models, "tiny/base", messages, SAMPLED, seed=seed).text
    else:  # unseeded draws of the same model differ, so the equality above came from the shared seed
        draws = {core_reply(models, "tiny/adapter", messages, SAMPLED).text for _ in range(3)}
        assert len(draws) > 1, draws


def test_judge_deals_a_blind_pair_and_saves_the_vote(models, tmp_path):
    prompts = [{"id": "p1", "prompt": FERN}, {"id": "p2", "prompt": "Name a fast bird."}]
    [refused] = judge_next(models, prompts, random.Random(0), 0, "tiny/adapter", "tiny/adapter", *GREEDY)
    assert refused == (*[untouched()] * 8, "error: choose two different models", untouched())
    models.engine("tiny/adapter")  # loaded: no "loading the models (N s)" steps first
    steps = list(judge_next(models, prompts, random.Random(0), 2, "tiny/adapter", "tiny/base", *GREEDY))
    heading, a, b, record, index, *buttons, status, chart = steps[0]
    assert FERN in heading and "Prompt 1 of 2" in heading and record is None and index == 2
    assert [u["interactive"] for u in buttons] == [False] * 3 and chart["visible"] is False
    heading, a, b, record, index, *buttons, status, chart = steps[-1]
    order = ["tiny/adapter", "tiny/base"]
    random.Random(0).shuffle(order)  # the order the app's own Random(0) shows them in
    assert (record["model_a"], record["model_b"]) == tuple(order) and index == 3
    messages = [{"role": "user", "content": FERN}]
    assert (a, b) == tuple(core_reply(models, label, messages, GREEDY).text.strip() for label in order)
    assert record["answer_a"] == a and record["answer_b"] == b and record["id"] == "p1"
    assert [u["interactive"] for u in buttons] == [True] * 3

    votes = Votes(tmp_path / "votes.jsonl")
    with pytest.raises(LimaError, match="press Next prompt first"):
        judge_vote(votes, "a", None, "tiny/adapter", "tiny/base", "ann")
    pending, *buttons, status, chart = judge_vote(votes, "b", record, "tiny/adapter", "tiny/base", " ann ")
    assert pending is None and [u["interactive"] for u in buttons] == [False] * 3 and status.startswith("vote 1 saved")
    assert chart == {"__type__": "update", "visible": False}  # prompt 1 of 2: the round goes on, the tally stays hidden
    saved = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert len(saved) == 1 and saved[0]["vote"] == "b" and saved[0]["winner"] == order[1]
    assert saved[0]["rater"] == "ann" and saved[0]["id"] == "p1" and saved[0]["answer_b"] == b
    # the round's last prompt: its vote shows the chart. B won the first vote: a win for X (tiny/adapter) if B
    # was the adapter, else a loss; the second is a tie.
    *_, record, _, _, _, _, _, _ = list(judge_next(models, prompts, random.Random(0), 3, "tiny/adapter", "tiny/base",
                                                   *GREEDY))[-1]
    *_, status, chart = judge_vote(votes, "tie", record, "tiny/adapter", "tiny/base", "ann")
    assert chart["visible"] is True and status.endswith("end of the round")
    widths = [round(bar.get_width()) for bar in chart["value"].axes[0].patches]
    assert widths == ([50, 50, 0] if order[1] == "tiny/adapter" else [0, 50, 50])


def test_vote_chart_is_the_stacked_percent_bar():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    chart = vote_chart({"win": 1, "tie": 1, "loss": 2}, "x", "y")
    ax = chart.axes[0]
    assert [round(bar.get_width()) for bar in ax.patches] == [25, 25, 50]
    assert [round(bar.get_x()) for bar in ax.patches] == [0, 25, 50]  # stacked, left to right
    assert ax.get_title() == "x vs y: 4 votes" and ax.get_xlim() == (0, 100)
    # long names: every label inside the figure as gradio saves it (no tight bounding box), legend included
    long_x, long_y = "smollm2-135m-lima-quickstart-run/epoch-03", "smollm2-135m-lima-quickstart-run/base"
    chart = vote_chart({"win": 3, "tie": 1, "loss": 2}, long_x, long_y)
    canvas = FigureCanvasAgg(chart)  # what savefig draws with
    canvas.draw()
    ax, renderer = chart.axes[0], canvas.get_renderer()
    texts = [ax.title, ax.xaxis.label, *ax.get_xticklabels(), *ax.get_legend().get_texts(), *ax.texts]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["win", "tie", "loss"]
    figure = chart.bbox
    for text in texts:
        box = text.get_window_extent(renderer)
        assert figure.x0 <= box.x0 and box.x1 <= figure.x1 and figure.y0 <= box.y0 and box.y1 <= figure.y1, text
    assert " ".join(ax.get_title().split("\n")) == f"{long_x} vs {long_y}: 6 votes"
    assert chart.get_figwidth() / chart.get_figheight() == 2  # ~170 pixels tall on a 400-pixel phone
    empty = vote_chart({"win": 0, "tie": 0, "loss": 0}, "x", "y")  # before the first vote
    assert [bar.get_width() for bar in empty.axes[0].patches] == [0, 0, 0]


def test_input_errors_reach_the_page_as_gradio_errors(models, tmp_path):
    import gradio as gr

    with pytest.raises(gr.Error, match="press Next prompt first"):
        event(judge_vote, Votes(tmp_path / "v.jsonl"), "a")(None, "x", "y", "me")




def test_the_sliders_start_at_limas_settings_unless_told_otherwise(models, tmp_path):
    import gradio as gr

    app = build_app(models, [{"id": "p", "prompt": "x"}], tmp_path / "v.jsonl", sampling={"max_new_tokens": 24})
    sliders = {block.label: block.value for block in app.blocks.values() if isinstance(block, gr.Slider)}
    assert sliders == {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "max_new_tokens": 24}

def test_chat_eval_and_ui_share_one_definition_of_the_sampling_flags():
    from lima_lite.app.ui import parser as ui_parser
    from lima_lite.chat import parser as chat_parser
    from lima_lite.evaluate.cli import build_parser
    from lima_lite.flags import sampling_args

    def flags(p):
        group = next(g for g in p._action_groups if g.title == "sampling (LIMA's by default)")
        return [(a.option_strings, a.type, a.default, a.help) for a in group._group_actions]

    steps = next(a for a in build_parser()._actions if a.choices and "generate" in a.choices).choices
    assert flags(chat_parser()) == flags(ui_parser()) == flags(steps["generate"]) == flags(steps["select-epoch"])
    assert [f[0] for f in flags(ui_parser())] == [["--temperature"], ["--top-p"], ["--repetition-penalty"],
                                                  ["--max-new-tokens"]]
    args = ui_parser().parse_args(["--top-p", "0.5", "--max-new-tokens", "64"])
    assert sampling_args(args) == {"top_p": 0.5, "max_new_tokens": 64}  # flags left out: LIMA's, in the handlers


@pytest.fixture
def served(runs, tmp_path):
    """The app on 127.0.0.1:FREE_PORT, its tiny model slowed to ~20 tokens/s so streaming is visible."""
    prompts = [{"id": "p1", "prompt": "How do I water a fern?"}, {"id": "p2", "prompt": "Name a fast bird."}]
    models = Models.discover(runs, load_in_4bit=False)
    engine, _ = models.engine("tiny/adapter")
    hook = engine.model.register_forward_pre_hook(lambda *_: time.sleep(0.05))
    votes = tmp_path / "votes.jsonl"
    app = build_app(models, prompts, votes, max_input_chars=500, sampling={"max_new_tokens": 24}, seed=0)
    app.queue(max_size=8, default_concurrency_limit=1)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False)
    yield f"http://127.0.0.1:{port}", votes, models
    app.close()
    hook.remove()


@pytest.fixture
def playwright():
    return browser_tools()


def test_a_missing_browser_fails_under_ci_and_is_skipped_elsewhere(monkeypatch):
    monkeypatch.setattr(helpers, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed: /nonexistent/chromium"):
        browser_tools()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed: /nonexistent/chromium"):
        browser_tools()


def test_three_tabs_in_a_real_browser(playwright, served, tmp_path):
    url, votes_file, models = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = console_errors(page)
        page.goto(url)

        # Chat: type, press Enter, watch the reply grow in the DOM.
        page.locator("#chat-input textarea").fill("How do I water a fern?")
        page.evaluate("""() => {
            window.snapshots = [];
            const history = document.querySelector('#chat-history');
            new MutationObserver(() => {
                const bots = history.querySelectorAll('[data-testid="bot"]');
                if (bots.length) window.snapshots.push(bots[bots.length - 1].innerText);
            }).observe(history, {subtree: true, childList: true, characterData: true});
        }""")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#chat-history [data-testid='user']").first.wait_for(timeout=30_000)
        assert "How do I water a fern?" in page.locator("#chat-history [data-testid='user']").first.inner_text()
        bot = page.locator("#chat-history [data-testid='bot']").last
        bot.wait_for(timeout=30_000)
        page.wait_for_function("() => document.querySelector('#chat-input textarea').value === '' && "
                               "!document.querySelector('#chat-history .pending, #chat-history [class*=generating]')",
                               timeout=60_000)
        page.wait_for_timeout(500)
        final = bot.inner_text().strip()
        partial = [s.strip() for s in page.evaluate("window.snapshots") if s.strip()]
        assert final and len(set(partial)) >= 3, partial  # streamed: several growing versions were shown
        assert all(final.startswith(s) or s.startswith(final[: len(s)]) for s in partial[:3])
        page.screenshot(path=str(tmp_path / "ui-chat.png"), full_page=True)

        # Compare: one prompt, two models side by side.
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-input textarea").fill("Name a fast bird.")
        page.locator("#compare-send").click()
        for side in ("#compare-a", "#compare-b"):
            page.locator(f"{side} [data-testid='bot']").last.wait_for(timeout=60_000)
        page.wait_for_function("() => document.querySelector('#compare-input textarea').value === ''", timeout=60_000)

        # Judge: deal a prompt, vote A, find the vote in the JSONL.
        page.get_by_role("tab", name="Judge").click()
        page.locator("#judge-next").click()
        vote_a = page.locator("#judge-vote-a")
        page.wait_for_function("() => !document.querySelector('#judge-vote-a').disabled", timeout=60_000)
        shown_a = page.locator("#judge-a textarea").input_value()
        assert "How do I water a fern?" in page.locator("#judge-prompt").inner_text()
        vote_a.click()
        page.locator("#judge-status").get_by_text("vote 1 saved").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
        browser.close()

    rows = [json.loads(line) for line in votes_file.read_text().splitlines()]
    assert len(rows) == 1
    vote = rows[0]
    assert vote["vote"] == "a" and vote["winner"] == vote["model_a"] and vote["rater"] == "anonymous"
    assert {vote["model_a"], vote["model_b"]} == {"tiny/adapter", "tiny/base"}  # X and Y, in a random order
    assert vote["prompt"] == "How do I water a fern?" and vote["answer_a"] == shown_a.strip()
    assert (tmp_path / "ui.png").stat().st_size > 10_000
    assert errors == [], errors
    print(f"screenshot: {tmp_path / 'ui.png'}")


def test_a_refused_user_is_told_busy_try_again_in_the_page(playwright, tmp_path):
    """The queue full (1 running, 1 waiting, queue size 1): the third user's page says busy, try again."""
    import httpx
    from gradio_client import Client

    from lima_lite.app.ui import launch
    from lima_lite.generate import Reply

    class Slow(Models):
        def prepare(self, label, messages, max_new_tokens):
            yield from ()  # nothing to load

        def stream(self, label, messages, **sampling):
            time.sleep(15)  # long enough for a loaded machine to reach the refusals below meanwhile
            yield "slow answer"
            yield Reply(text="slow answer", finish_reason="eot")

    app = build_app(Slow({"m": ("unused", True)}), [{"id": "1", "prompt": "p"}], tmp_path / "votes.jsonl")
    port = free_port()
    launch(app, "127.0.0.1", port, False, None, 1, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}"
    try:
        config = httpx.get(f"{url}/config").json()
        box = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "chat-input")
        send = next(i for i, d in enumerate(config["dependencies"]) if box in d["inputs"])
        for _ in range(2):
            Client(url, verbose=False).submit("hi", [], "m", 0.7, 0.9, 1.2, 8, fn_index=send)
            time.sleep(0.5)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.locator("#chat-input textarea").fill("am I served?")
            page.locator("#chat-input textarea").press("Enter")
            page.get_by_text("currently busy. Please try again").first.wait_for(timeout=5_000)
            browser.close()
        refused = httpx.post(f"{url}/gradio_api/queue/join", json={"data": ["hi", [], "m", 0.7, 0.9, 1.2, 8],
                                                                   "fn_index": send, "session_hash": "x"})
        assert refused.status_code == 503 and "busy" in refused.json()["detail"]  # API clients: the Guard's words
    finally:
        app.close()


def test_closing_a_reply_stops_the_generation(models):
    """Stop, New conversation and a closed tab close the reply's stream: generate() must stop there, not run
    on to max_new_tokens holding the model's lock."""
    engine, _ = models.engine("tiny/base")
    calls = []
    hook = engine.model.get_base_model().register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        messages = [{"role": "user", "content": FERN}]
        full = engine.reply(messages, use_adapter=False, temperature=1.0, seed=0, max_new_tokens=40)
        assert full.finish_reason == "length" and len(calls) == 40  # the uninterrupted reply: 40 forwards
        calls.clear()
        stream = engine.stream(messages, use_adapter=False, temperature=1.0, seed=0, max_new_tokens=40)
        next(stream)
        stream.close()
        assert len(calls) < 10, len(calls)  # stopped a token or two after the first piece
        assert not engine.lock.locked()
    finally:
        hook.remove()


class Endless(Models):
    """A model that writes a word every 0.1 s for 30 s, and records each reply whose stream was closed early."""

    closed: list = []

    def prepare(self, label, messages, max_new_tokens):
        yield from ()  # nothing to load

    def stream(self, label, messages, **sampling):
        from lima_lite.generate import Reply

        text = ""
        try:
            for i in range(300):
                time.sleep(0.1)
                text += f"w{i} "
                yield text
        except GeneratorExit:
            self.closed.append(text)
            raise
        yield Reply(text=text, finish_reason="length")


def test_stop_new_conversation_and_typing_during_a_reply_in_a_real_browser(playwright, tmp_path):
    models = Endless({"m": ("unused", True)})
    app = build_app(models, [{"id": "1", "prompt": "p"}], tmp_path / "votes.jsonl", max_input_chars=500)
    app.queue(max_size=8, default_concurrency_limit=1)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    typed = "a </s> b <script>alert(1)</script> c <img src=x> d **e**"
    box = "#chat-input textarea"
    bot = "#chat-history [data-testid='bot']"
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            errors = console_errors(page)
            page.goto(f"http://127.0.0.1:{port}")
            page.locator(box).fill(typed)
            page.locator(box).press("Enter")
            page.locator(bot).get_by_text("w3").wait_for(timeout=30_000)
            # shown as typed, as text
            assert page.locator("#chat-history [data-testid='user']").first.inner_text().strip() == typed
            assert page.locator("#chat-history script, #chat-history img[src='x']").count() == 0

            # typing during the reply: kept while a dozen more words stream in
            page.locator(box).fill("my next question")
            before = len(page.locator(bot).last.inner_text())
            page.wait_for_timeout(1500)
            assert len(page.locator(bot).last.inner_text()) > before + 20
            assert page.locator(box).input_value() == "my next question"
            page.locator(box).press("Enter")  # sent mid-reply: not taken, and not lost
            page.wait_for_timeout(1000)
            assert page.locator(box).input_value() == "my next question"
            assert page.locator("#chat-history [data-testid='user']").count() == 1

            # Stop: the reply stops growing, the server's stream is closed
            page.locator("#chat-stop").click()
            page.locator("#chat-note").get_by_text("stopped").wait_for(timeout=30_000)
            stopped = page.locator(bot).last.inner_text()
            page.wait_for_timeout(1000)
            assert page.locator(bot).last.inner_text() == stopped and len(models.closed) == 1

            # the kept message sent; New conversation during its reply: nothing streams back in
            page.locator(box).press("Enter")
            page.wait_for_function(f"() => document.querySelectorAll(\"{bot}\").length === 2 && "
                                   f"document.querySelectorAll(\"{bot}\")[1].innerText.includes('w3')", timeout=30_000)
            page.locator("#chat-new").click()
            shown = "#chat-history [data-testid='user'], " + bot
            page.wait_for_function(f"() => document.querySelectorAll(\"{shown}\").length === 0", timeout=30_000)
            page.wait_for_timeout(1500)  # and nothing of the cancelled reply streams back in
            assert page.locator(shown).count() == 0
            assert len(models.closed) == 2

            # the chatbot's own trash icon during a reply: the same as New conversation
            page.locator(box).fill("and again")
            page.locator(box).press("Enter")
            page.locator(bot).get_by_text("w3").wait_for(timeout=30_000)
            page.locator("#chat-history").get_by_role("button", name="Clear").click()
            page.wait_for_function(f"() => document.querySelectorAll(\"{shown}\").length === 0", timeout=30_000)
            page.wait_for_timeout(1500)
            assert page.locator(shown).count() == 0
            assert len(models.closed) == 3

            # a paste over the cap: refused with a message, the text left in the box to shorten
            page.locator(box).fill("x" * 501)
            page.locator(box).press("Enter")
            page.get_by_text("the message is 501 characters; the limit is 500").first.wait_for(timeout=10_000)
            assert page.locator(box).input_value() == "x" * 501

            # closing the tab during a reply closes its stream too
            page.locator(box).fill("one more")
            page.locator(box).press("Enter")
            page.locator(bot).get_by_text("w3").wait_for(timeout=30_000)
            page.close()
            deadline = time.time() + 30
            while len(models.closed) < 4 and time.time() < deadline:
                time.sleep(0.2)
            assert len(models.closed) == 4
            browser.close()
    finally:
        app.close()
    assert errors == [], errors
