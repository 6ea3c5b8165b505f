"""Errors in Chat and Compare leave the page readable: an empty send, a model that does not load (a damaged
adapter folder), each said in one line in the note (and a toast) while the conversation stays on the page, the
typed message stays in the box, and the next message gets its reply. A model that takes a while to load says
"loading the model (N s)" with the message held, read-only, in the box. On a phone the input box takes the
whole width. Driven in a real headless Chromium with every console error collected; screenshots in the test's
tmp dir.
"""

import shutil
import time
from pathlib import Path

import pytest

from helpers import served_page
from lima_lite.app.ui import Models, build_app, chat_turn, compare_turn, input_box, loading_note, untouched
from lima_lite.layout import ADAPTER_WEIGHTS

GREEDY = (0.0, 1.0, 1.0, 6)  # temperature, top_p, repetition_penalty, max_new_tokens


@pytest.fixture
def runs(tiny_run, tmp_path) -> Path:
    """--runs with the tiny run and a damaged copy of its adapter (the weights file gone): listed, not loadable."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    shutil.copytree(tiny_run / "adapter", runs / "broken" / "adapter")
    (runs / "broken" / "adapter" / ADAPTER_WEIGHTS).unlink()
    return runs


@pytest.fixture
def slow_load(monkeypatch):
    """Every model takes 3.5 s longer to load, as a 7B does minutes."""
    from lima_lite import generate

    real = generate.load_engine

    def load_engine(*args, **kwargs):
        time.sleep(3.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "load_engine", load_engine)


def test_a_slow_load_holds_the_message_and_counts_the_seconds(runs, slow_load):
    models = Models.discover(runs, load_in_4bit=False)
    held = (input_box(interactive=False), untouched())  # (gradio imported here, not while the seconds count)
    steps = list(chat_turn(models, 500, "How do I water a fern?", [], "tiny/adapter", *GREEDY))
    loading = [step for step in steps if step[2].startswith("loading")]
    # the box read-only with its text, the history untouched, the seconds counted: 0, 1, 2
    assert loading == [(*held, loading_note(s)) for s in range(len(loading))]
    assert len(loading) >= 3
    box, history, _ = steps[len(loading)]
    assert box == input_box("") and [m["role"] for m in history] == ["user"]  # then taken, and answered
    assert [m["role"] for m in steps[-1][1]] == ["user", "assistant"]


def test_a_model_that_does_not_load_changes_only_the_note(runs):
    models = Models.discover(runs, load_in_4bit=False)
    history = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    [(box, kept, note)] = chat_turn(models, 500, "Still there?", history, "broken/adapter", *GREEDY)
    assert box == input_box() and kept == untouched()  # the box keeps "Still there?", the history stays
    assert note.startswith("error: model 'broken/adapter' did not load") and "\n" not in note
    [(box, left, right, note)] = compare_turn(models, 500, 0, "Still there?", history, history, "tiny/adapter",
                                              "broken/base", *GREEDY)
    assert (box, left, right) == (input_box(), untouched(), untouched())
    assert note.startswith("error: model 'broken/base' did not load")
    # and the next message, to a model that loads, is answered: no half turn was left behind
    *_, (_, answered, _) = chat_turn(models, 500, "Still there?", history, "tiny/adapter", *GREEDY)
    assert [m["role"] for m in answered] == ["user", "assistant"] * 2



def readable(page, selector: str) -> bool:
    """The element is on top where it is drawn: nothing (an error badge, an overlay) covers its middle."""
    return page.locator(selector).evaluate("""(element) => {
        const box = element.getBoundingClientRect();
        const top = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
        return element === top || element.contains(top);
    }""")


def choose(page, picker: str, label: str) -> None:
    page.locator(f"{picker} input").click()
    page.get_by_role("option", name=label, exact=True).click()


def test_errors_keep_the_conversation_in_a_real_browser(runs, slow_load, tmp_path):
    models = Models.discover(runs, load_in_4bit=False)
    app = build_app(models, [{"id": "p", "prompt": "x"}], tmp_path / "votes.jsonl", max_input_chars=500,
                    sampling={"max_new_tokens": 6})
    box, note = "#chat-input textarea", "#chat-note"
    user, bot = "#chat-history [data-testid='user']", "#chat-history [data-testid='bot']"
    with served_page(app) as (page, errors):
        # the first message loads the model: the note counts the seconds, the message waits in the box
        page.locator(box).fill("How do I water a fern?")
        page.locator(box).press("Enter")
        page.locator(note).get_by_text("loading the model (1 s)").wait_for(timeout=30_000)
        assert page.locator(box).is_disabled() and page.locator(box).input_value() == "How do I water a fern?"
        page.locator(bot).first.wait_for(timeout=60_000)
        page.wait_for_function(f"() => document.querySelector('{box}').value === '' && "
                               f"!document.querySelector('{box}').disabled", timeout=60_000)

        # an empty send: one line in the note, the conversation readable, nothing covering it
        page.locator("#chat-send").click()
        page.locator(note).get_by_text("error: type a message first").wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        assert page.locator(user).count() == 1 and page.locator(bot).count() == 1
        assert readable(page, user) and readable(page, bot) and readable(page, box)
        assert page.locator("#chat-history, #chat-input").get_by_text("Error", exact=True).count() == 0

        # a model that does not load: said in one line; the typed message stays in the box, editable
        choose(page, "#chat-model", "broken/adapter")  # a new model: a new conversation
        page.wait_for_function(f"() => !document.querySelector(\"{bot}\")", timeout=30_000)
        page.locator(box).fill("Still there?")
        page.locator(box).press("Enter")
        page.locator(note).get_by_text("error: model 'broken/adapter' did not load").wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        assert page.locator(box).input_value() == "Still there?" and page.locator(box).is_editable()
        assert readable(page, box) and page.locator(user).count() == 0
        assert page.locator("#chat-history, #chat-input").get_by_text("Error", exact=True).count() == 0
        page.screenshot(path=str(tmp_path / "ui-chat-error.png"), full_page=True)

        # the next message, to a model that loads, gets its reply
        choose(page, "#chat-model", "tiny/adapter")
        page.locator(box).press("Enter")
        page.locator(bot).first.wait_for(timeout=60_000)
        assert page.locator(user).first.inner_text().strip() == "Still there?"
        page.wait_for_function(f"() => document.querySelector('{box}').value === ''", timeout=60_000)

        # Compare: the same for a model that does not load
        page.get_by_role("tab", name="Compare").click()
        choose(page, "#compare-model-b", "broken/base")
        page.locator("#compare-input textarea").fill("Name a fast bird.")
        page.locator("#compare-send").click()
        page.locator("#compare-note").get_by_text("error: model 'broken/base' did not load").wait_for(timeout=30_000)
        assert page.locator("#compare-input textarea").input_value() == "Name a fast bird."
        assert page.locator("#compare-a, #compare-b, #compare-input").get_by_text("Error", exact=True).count() == 0

        # on a phone the input box takes the whole width (Send goes below it)
        page.get_by_role("tab", name="Chat").click()
        page.set_viewport_size({"width": 400, "height": 800})
        page.wait_for_timeout(500)
        width = page.locator("#chat-input").bounding_box()["width"]
        assert width >= page.locator("#chat-history").bounding_box()["width"] - 4, width
        page.screenshot(path=str(tmp_path / "ui-chat-phone.png"), full_page=True)
    assert errors == [], errors
