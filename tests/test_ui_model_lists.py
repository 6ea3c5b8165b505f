"""The app's model lists follow --runs on every page: a new epoch adapter joins them and a deleted one leaves
them without the Train tab ever being opened (or built: --no-train), runs reached through a symlink that stays
under --runs are listed (a link out of --runs or a loop is not followed), and a page whose chosen model was
deleted keeps it, marked, until another is chosen; a send with it says so and keeps the conversation.
Driven in a real headless Chromium as well, with every console error collected.
"""

import shutil
import time
from pathlib import Path

import pytest

from helpers import served_page
from lima_lite.app.ui import GONE, Models, app_from_args, model_lists, parser
from lima_lite.layout import find_adapters


@pytest.fixture
def runs(tiny_run, tmp_path) -> Path:
    """--runs with one tiny run (epoch-01/ and adapter/), a symlink to it, a link out of --runs, and a loop."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "archive" / "tiny")
    (runs / "latest").symlink_to(runs / "archive" / "tiny")  # a run reached through a link inside --runs
    shutil.copytree(tiny_run, tmp_path / "elsewhere" / "outside")
    (runs / "outside").symlink_to(tmp_path / "elsewhere" / "outside")  # leads out of --runs: not followed
    (runs / "archive" / "tiny" / "loop").symlink_to(runs / "archive")  # back up to its own parent: not followed
    return runs


def test_symlinked_runs_are_listed_when_they_stay_under_runs(runs):
    assert list(find_adapters(runs)) == ["archive/tiny/epoch-01", "archive/tiny/adapter", "latest/epoch-01",
                                         "latest/adapter"]
    assert find_adapters(runs)["latest/adapter"] == runs / "latest" / "adapter"


def test_a_link_out_of_runs_is_said_at_start(runs, capsys):
    app_from_args(parser().parse_args(["--runs", str(runs), "--no-train"]))
    err = capsys.readouterr().err
    assert f"note: {runs / 'outside'} leads out of {runs} (to {runs.parent / 'elsewhere' / 'outside'})" in err
    assert "latest" not in err and "loop" not in err  # a link that stays under --runs, a loop: listed, skipped


def test_the_lists_gain_new_adapters_and_lose_deleted_ones(runs):
    import gradio as gr

    models = Models.discover(runs, load_in_4bit=False)
    first = [list(c) for c in models.choices()]
    assert [label for _, label in first] == ["archive/tiny/epoch-01", "archive/tiny/adapter", "latest/epoch-01",
                                             "latest/adapter", "archive/tiny/base", "latest/base"]
    shutil.copytree(runs / "archive" / "tiny" / "epoch-01", runs / "archive" / "tiny" / "epoch-02")
    models.refresh()
    sent, *updates = model_lists(models, None, [first, first], "archive/tiny/adapter", "latest/base")
    assert [label for _, label in sent[0]][:3] == ["archive/tiny/epoch-01", "archive/tiny/epoch-02",
                                                   "archive/tiny/adapter"]
    assert [label for _, label in updates[0]["choices"]] == [label for _, label in sent[0]]
    # nothing new: nothing sent again (one look under --runs shared by every page within LIST_SECONDS)
    assert model_lists(models, None, sent, "archive/tiny/adapter", "latest/base")[1:] == (gr.skip(), gr.skip())

    shutil.rmtree(runs / "archive" / "tiny" / "epoch-01")
    models.refresh()
    sent, *updates = model_lists(models, [False, False], sent, "archive/tiny/epoch-01", "latest/base")
    # gone from every list, except the picker that still has it chosen: there it is marked, until changed
    assert "archive/tiny/epoch-01" not in models.labels
    assert [f"archive/tiny/epoch-01 · {GONE}", "archive/tiny/epoch-01"] in sent[0]
    assert all(label != "archive/tiny/epoch-01" for _, label in sent[1])


def test_a_picker_with_the_focus_keeps_its_list_until_it_loses_it(runs):
    import gradio as gr

    models = Models.discover(runs, load_in_4bit=False)
    first = [list(c) for c in models.choices()]
    shutil.rmtree(runs / "archive" / "tiny" / "epoch-01")
    models.refresh()
    # the first picker is open: its list stays as the page has it; the second one's loses the deleted model
    sent, *updates = model_lists(models, [True, False], [first, first], "latest/adapter", "latest/base")
    assert sent[0] == first and updates[0] == gr.skip()
    assert [list(choice) for choice in updates[1]["choices"]] == sent[1]
    assert "archive/tiny/epoch-01" not in [label for _, label in sent[1]]
    # closed: it gets the list of now
    sent, *updates = model_lists(models, [False, False], sent, "latest/adapter", "latest/base")
    assert sent[0] == sent[1] and [list(choice) for choice in updates[0]["choices"]] == sent[1]
    assert updates[1] == gr.skip()
    # the page's first look (nothing sent yet) fills every list, open or not
    assert model_lists(models, [True, True], None, "latest/adapter", "latest/base")[0] == [sent[1], sent[1]]


def test_a_runs_base_keeps_its_folder_while_that_folder_is_there(tiny_run, tmp_path):
    run = tmp_path / "runs" / "r"
    shutil.copytree(tiny_run / "epoch-01", run / "epoch-01")
    models = Models.discover(tmp_path / "runs")
    assert models.specs["r/base"] == (str(run / "epoch-01"), False)
    shutil.copytree(tiny_run / "adapter", run / "adapter")  # the run goes on: its base is not loaded again
    models.refresh()
    assert models.specs["r/base"] == (str(run / "epoch-01"), False)
    shutil.rmtree(run / "epoch-01")  # that folder deleted: the base comes from the one that is left
    models.refresh()
    assert models.specs["r/base"] == (str(run / "adapter"), False) and models.labels == ["r/adapter", "r/base"]


def test_a_deleted_model_still_chosen_is_refused_in_one_line_and_the_conversation_stays(runs):
    from lima_lite.app.ui import chat_turn, input_box, untouched

    models = Models.discover(runs, load_in_4bit=False)
    history = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    shutil.rmtree(runs / "archive" / "tiny" / "epoch-01")
    models.refresh()
    steps = list(chat_turn(models, 500, "Still there?", history, "archive/tiny/epoch-01", 0.0, 1.0, 1.0, 4))
    assert steps == [(input_box(), untouched(), "error: model 'archive/tiny/epoch-01': not in the list any more "
                                                "(deleted?): choose another one")]



def chat_options(page) -> list[str]:
    """The Chat tab's model list as the page shows it (the dropdown opened, read, closed)."""
    open_chat_list(page)
    options = shown_options(page)
    page.locator("#chat-model input").blur()
    page.locator("[role='option']").first.wait_for(state="detached", timeout=10_000)
    return options


def open_chat_list(page) -> None:
    page.locator("#chat-model input").click()
    page.locator("[role='option']").first.wait_for(timeout=10_000)


def shown_options(page) -> list[str]:
    return [text.strip().splitlines()[-1] for text in page.locator("[role='option']").all_inner_texts()]  # no ✓


def list_sent(page, refreshes: list, since: int, picker: int, wanted) -> list[list[str]]:
    """The first list a refresh after `refreshes[since]` sent to picker `picker` (0: Chat's, then Compare's A)
    for which `wanted(list)` holds, as [shown, value] pairs; waits for it at most 60 s (the lists refresh every
    3 s; a loaded machine can take longer). `refreshes`: the page's responses to the list refresh. The test
    opens a list only once the change it looks for has reached the page: a list can change on its way to the
    page, while the page says the picker was closed (gradio's open list fails on a list that shrinks under it).
    """
    deadline = time.time() + 60
    while time.time() < deadline:
        for response in refreshes[since:]:
            update = response.json()["data"][1 + picker]
            if "choices" in update and wanted(update["choices"]):
                return update["choices"]
        page.wait_for_timeout(500)
    raise AssertionError(f"no list refresh sent picker {picker} the list looked for")


def values(choices: list[list[str]]) -> list[str]:
    return [value for _, value in choices]


@pytest.mark.parametrize("train", [True, False], ids=["train-tab-never-opened", "no-train"])
def test_a_page_that_never_opens_train_sees_a_new_epoch_in_a_real_browser(runs, tmp_path, train):
    args = parser().parse_args(["--runs", str(runs), "--max-new-tokens", "4", *([] if train else ["--no-train"])])
    app = app_from_args(args)
    with served_page(app) as (page, errors):
        refreshes = []
        page.on("response", lambda response: refreshes.append(response) if "/run/predict" in response.url else None)
        page.locator("#chat-input textarea").wait_for(timeout=30_000)
        assert (page.get_by_role("tab", name="Train").count() == 1) == train
        options = chat_options(page)
        assert "latest/adapter" in options and not any("outside" in o or "loop" in o for o in options), options
        # a new epoch adapter appears on disk: the open page lists it within a few seconds, no reload
        since = len(refreshes)
        shutil.copytree(runs / "archive" / "tiny" / "epoch-01", runs / "archive" / "tiny" / "epoch-02")
        list_sent(page, refreshes, since, 0, lambda choices: "archive/tiny/epoch-02" in values(choices))
        assert "archive/tiny/epoch-02" in (options := chat_options(page)), options
        # deleted while the Chat list is open: that list stays as it is (Compare's loses it), and no error;
        # once closed, it loses it too
        open_chat_list(page)
        since = len(refreshes)
        shutil.rmtree(runs / "archive" / "tiny" / "epoch-02")
        list_sent(page, refreshes, since, 1, lambda choices: "archive/tiny/epoch-02" not in values(choices))
        assert all(response.json()["data"][1] == {"__type__": "update"} for response in refreshes[since:])
        assert shown_options(page) == options and errors == [], errors
        page.locator("#chat-model input").blur()
        list_sent(page, refreshes, since, 0, lambda choices: "archive/tiny/epoch-02" not in values(choices))
        assert "archive/tiny/epoch-02" not in (options := chat_options(page)), options
        if not train:
            # the symlinked run answers; then its folder is deleted while chosen: the send is refused in the
            # note, the conversation and the typed text stay
            page.locator("#chat-model input").click()
            page.get_by_role("option", name="latest/epoch-01", exact=True).click()
            page.locator("#chat-input textarea").fill("How do I water a fern?")
            page.locator("#chat-input textarea").press("Enter")
            page.locator("#chat-history [data-testid='bot']").first.wait_for(timeout=60_000)
            page.wait_for_function("() => document.querySelector('#chat-input textarea').value === '' && "
                                   "!document.querySelector('#chat-history .pending')", timeout=60_000)
            since = len(refreshes)
            shutil.rmtree(runs / "archive" / "tiny" / "epoch-01")  # latest/epoch-01 with it
            list_sent(page, refreshes, since, 0, lambda choices: "archive/tiny/epoch-01" not in values(choices))
            options = chat_options(page)
            assert f"latest/epoch-01 · {GONE}" in options and "archive/tiny/epoch-01" not in options, options
            page.locator("#chat-input textarea").fill("Still there?")
            page.locator("#chat-input textarea").press("Enter")
            page.locator("#chat-note").get_by_text("not in the list any more").wait_for(timeout=30_000)
            assert page.locator("#chat-input textarea").input_value() == "Still there?"
            assert page.locator("#chat-history [data-testid='user']").count() == 1
            assert page.locator("#chat-history [data-testid='bot']").count() == 1
            page.screenshot(path=str(tmp_path / "ui-deleted-model.png"), full_page=True)
    assert errors == [], errors


def test_the_dev_loss_shown_follows_metrics_jsonl_and_a_damaged_file_hides_it(tiny_run, tmp_path):
    run = tmp_path / "runs" / "r"
    shutil.copytree(tiny_run, run)
    metrics = run / "metrics.jsonl"
    metrics.write_text('{"step": 2, "epoch": 1.0, "eval_loss": 1.5}\n')
    models = Models.discover(tmp_path / "runs")
    assert models.choices()[0] == ("r/epoch-01 · dev loss 1.500", "r/epoch-01")
    metrics.write_text('{"step": 2, "epoch": 1.0, "eval_loss": 1.25}\n')  # read again once it changed
    models.refresh()
    assert models.choices()[0] == ("r/epoch-01 · dev loss 1.250", "r/epoch-01")
    metrics.write_text('{"step": 2, "epoch": 1.0, "eval_loss": 1.25}\n{"step": "two"}\n')
    models.refresh()  # the lists still build; the Train tab's progress names the damaged line
    assert models.choices()[0] == ("r/epoch-01", "r/epoch-01")
