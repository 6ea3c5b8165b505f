"""The Gradio app (ui/app.py, lima-lite ui): model discovery, vote bookkeeping, and the three tabs driven
in a real headless Chromium through Playwright: a streamed chat reply, a side-by-side comparison, a
blind vote that lands in the JSONL. A screenshot is saved in the test's tmp dir.
"""

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from lima_lite.ui import Models, Votes, build_app, find_adapters, parse_auth, vote_counts
from test_chat import qa, train_tiny

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


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


def test_no_adapters_is_an_input_error(tmp_path):
    from lima_lite import LimaError

    with pytest.raises(LimaError, match="no adapters found"):
        Models.discover(tmp_path)


def test_auth_and_vote_counts(tmp_path):
    from lima_lite import LimaError
    from lima_lite.evaluate.protocols import human_vote_record

    assert parse_auth("me:se:cret") == ("me", "se:cret") and parse_auth(None) is None
    with pytest.raises(LimaError, match="USER:PASSWORD"):
        parse_auth("nopassword")
    votes = Votes(tmp_path / "votes.jsonl")
    for shown, vote in [(("x", "y"), "a"), (("y", "x"), "a"), (("y", "x"), "tie"), (("x", "z"), "b")]:
        votes.add(human_vote_record("p", *shown, "ans a", "ans b", vote, "me"))
    assert vote_counts(votes.read(), "x", "y") == {"win": 1, "tie": 1, "loss": 1}
    assert len((tmp_path / "votes.jsonl").read_text().splitlines()) == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(runs, tmp_path):
    """The app on 127.0.0.1:FREE_PORT, its tiny model slowed to ~20 tokens/s so streaming is visible."""
    prompts = [{"id": "p1", "prompt": "How do I water a fern?"}, {"id": "p2", "prompt": "Name a fast bird."}]
    models = Models.discover(runs, load_in_4bit=False)
    engine, _ = models.engine("tiny/adapter")
    hook = engine.model.register_forward_pre_hook(lambda *_: time.sleep(0.05))
    votes = tmp_path / "votes.jsonl"
    app = build_app(models, prompts, votes, max_input_chars=500, max_new_tokens=24, seed=0)
    app.queue(max_size=8, default_concurrency_limit=1)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False)
    yield f"http://127.0.0.1:{port}", votes, models
    app.close()
    hook.remove()


def test_three_tabs_in_a_real_browser(served, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    url, votes_file, models = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
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
    print(f"screenshot: {tmp_path / 'ui.png'}")
