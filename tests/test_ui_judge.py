"""The Judge tab on a phone (400 px) in a real headless Chromium: the two model pickers show names that differ
(each the whole width, the name not cut), the wait for the answers counts its seconds answer by answer, the
vote lands in the JSONL, and the round's chart is readable (not a 70-pixel strip). No console error.
"""

import json
import shutil
import time

from helpers import served_page
from lima_lite.app.ui import Models, build_app

RUN = "smollm2-135m-lima-quickstart"  # a run name as long as the quick start's


def test_a_judge_round_on_a_phone_in_a_real_browser(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "runs" / RUN)
    models = Models.discover(tmp_path / "runs", load_in_4bit=False)
    for label in (f"{RUN}/adapter", f"{RUN}/base"):  # ~20 tokens/s, so the wait can be watched
        engine, _ = models.engine(label)
        engine.model.register_forward_pre_hook(lambda *_: time.sleep(0.05))
    votes = tmp_path / "votes.jsonl"
    app = build_app(models, [{"id": "p1", "prompt": "How do I water a fern?"}], votes, max_input_chars=500,
                    sampling={"max_new_tokens": 24}, seed=0)
    with served_page(app, 400, 800) as (page, errors):
        page.get_by_role("tab", name="Judge").click()
        pickers = [page.locator(f"{picker} input") for picker in ("#judge-x", "#judge-y")]
        shown = [picker.input_value() for picker in pickers]
        assert shown == [f"{RUN}/adapter", f"{RUN}/base"]
        # as displayed: the whole name fits its box, so the two read differently
        assert all(picker.evaluate("(e) => e.scrollWidth <= e.clientWidth") for picker in pickers), shown

        page.evaluate("""() => {
            window.statuses = [];
            const status = document.querySelector('#judge-status');
            new MutationObserver(() => window.statuses.push(status.innerText.trim()))
                .observe(status, {subtree: true, childList: true, characterData: true});
        }""")
        page.locator("#judge-next").click()
        page.wait_for_function("() => !document.querySelector('#judge-vote-a').disabled", timeout=60_000)
        statuses = page.evaluate("window.statuses")
        waits = [s for s in statuses if s.startswith("generating answer")]
        assert any(s.startswith("generating answer A… (") for s in waits), statuses
        assert any(s.startswith("generating answer B… (") for s in waits), statuses
        assert waits.index(next(s for s in waits if "answer B" in s)) > 0  # A first, then B
        page.locator("#judge-vote-a").click()
        page.locator("#judge-status").get_by_text("end of the round").wait_for(timeout=30_000)
        chart = page.locator("#judge-chart img")
        chart.wait_for(timeout=30_000)
        page.wait_for_function("() => document.querySelector('#judge-chart img').complete", timeout=10_000)
        box = chart.bounding_box()
        assert box["height"] >= 150 and box["width"] <= 400, box
        page.screenshot(path=str(tmp_path / "ui-judge-phone.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})  # a laptop: the whole chart in the window
        page.wait_for_timeout(500)
        box = chart.bounding_box()
        assert 150 <= box["height"] <= 700 and box["width"] <= 1280, box
        page.screenshot(path=str(tmp_path / "ui-judge.png"), full_page=True)
    [vote] = [json.loads(line) for line in votes.read_text().splitlines()]
    assert vote["vote"] == "a" and {vote["model_a"], vote["model_b"]} == {f"{RUN}/adapter", f"{RUN}/base"}
    assert errors == [], errors
