"""curate reddit and wikihow over fixtures in the real formats, and `data mix` for the 1,030 variant."""

import json
import shutil
from pathlib import Path

import pytest

from lima_lite import LimaError
from lima_lite.cli import main as cli_main
from lima_lite.conversations import load_conversations
from lima_lite.curate import main as curate_main
from lima_lite.curate.reddit import curate_reddit
from lima_lite.curate.wikihow import curate_wikihow, prompt_from_title
from lima_lite.data import main as data_main

ASSETS = Path(__file__).parent / "assets" / "curate"
RS, RC = ASSETS / "reddit" / "RS_2019-01.ndjson", ASSETS / "reddit" / "RC_2019-01.ndjson"


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reddit_keeps_top_story_and_askreddit_prompts_only_for_test(tmp_path):
    kept = curate_reddit([RS], [RC], tmp_path / "wp.jsonl", tmp_path / "ask.jsonl", n=10)
    stories = {e["id"]: e for e in read(tmp_path / "wp.jsonl")}
    assert set(stories) == {"reddit/writingprompts/wp1", "reddit/writingprompts/wp2"} == {e["id"] for e in kept}
    lighthouse = stories["reddit/writingprompts/wp1"]["messages"]
    assert lighthouse[0]["content"] == "A lighthouse turns on years after its keeper died."
    # c2 (score 640) wins: the bot (900), the deleted comment (700) and the nested reply (2000) are not stories
    assert lighthouse[1]["content"].startswith("The lighthouse keeper had been dead")
    assert "reddit.com" not in lighthouse[1]["content"] and "more stories" in lighthouse[1]["content"]
    report = json.loads((tmp_path / "wp.report.json").read_text())
    assert report["dropped_ids"] == {
        "not_a_writing_prompt": ["reddit/writingprompts/wp5"],
        "askreddit_title_not_self_contained": ["reddit/askreddit/ar2"],
        "no_story": ["reddit/writingprompts/wp4"],
        "story_too_short": ["reddit/writingprompts/wp3"],
        "comment_score_low": ["reddit/writingprompts/wp6"],
    }
    assert read(tmp_path / "ask.jsonl") == [{"id": "reddit/askreddit/ar1", "source": "reddit/askreddit",
                                             "prompt": "What is the best advice you have ever received?"}]
    assert all("askreddit" not in e["source"] for e in kept)  # AskReddit answers never become training data


def test_reddit_reads_zst(tmp_path):
    import zstandard

    for source in (RS, RC):
        (tmp_path / f"{source.stem}.zst").write_bytes(zstandard.ZstdCompressor().compress(source.read_bytes()))
    curate_reddit([tmp_path / "RS_2019-01.zst"], [tmp_path / "RC_2019-01.zst"], tmp_path / "wp.jsonl", None, n=10)
    curate_reddit([RS], [RC], tmp_path / "plain.jsonl", None, n=10)
    assert (tmp_path / "wp.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes() != b""


def test_reddit_corrupted_line_stops_or_is_skipped(tmp_path):
    broken = tmp_path / "RC.ndjson"
    lines = RC.read_text().splitlines(keepends=True)
    broken.write_text("".join(lines[:4]) + '{"id": "cX", "link_id": "t3_wp2", "bo\n' + "".join(lines[4:]))
    out = tmp_path / "wp.jsonl"
    out.write_text("old\n")
    with pytest.raises(LimaError, match=r"RC\.ndjson:5: invalid JSON"):
        curate_reddit([RS], [broken], out, None, n=10, on_error="stop")
    assert out.read_text() == "old\n"
    assert curate_main(["reddit", "--submissions", str(RS), "--comments", str(broken), "--out", str(out),
                        "--on-error", "skip", "--overwrite"]) == 0
    report = json.loads((tmp_path / "wp.report.json").read_text())
    assert report["bad_lines"]["count"] == 1 and report["bad_lines"]["first"][0].startswith(f"{broken}:5: invalid JSON")
    assert len(read(out)) == 2  # the good lines after the bad one still count


def test_wikihow_prompt_answer_and_rules(tmp_path):
    kept = curate_wikihow(ASSETS / "wikihow" / "wikihowAll.csv", tmp_path / "wh.jsonl", n=10)
    by_prompt = {e["messages"][0]["content"]: e for e in kept}
    assert set(by_prompt) == {"How to Cook a French Omelette?", "How to Change a Flat Tire?"}
    omelette = by_prompt["How to Cook a French Omelette?"]
    answer = omelette["messages"][1]["content"]
    assert answer.startswith("The following answer explains how to cook")
    assert "http" not in answer and "omelette.jpg" not in answer and "our egg guide for other styles." in answer
    assert omelette["source"] == "wikihow/Food and Entertaining"
    report = json.loads((tmp_path / "wh.report.json").read_text())
    assert report["dropped_by_rule"] == {"answer_too_short": 1, "not_a_how_to_title": 1}
    assert report["mix"] == {"wikihow/Cars & Other Vehicles": 1, "wikihow/Food and Entertaining": 1}
    assert prompt_from_title("How to Sell Fine Art Online1") == "How to Sell Fine Art Online?"


def test_wikihow_samples_categories_evenly(tmp_path):
    import csv

    path = tmp_path / "wikihowAll.csv"
    text = (ASSETS / "wikihow" / "wikihowAll.csv").read_text()
    rows = list(csv.DictReader(text.splitlines(keepends=True)))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["headline", "title", "text", "category"])
        writer.writeheader()
        for i in range(40):  # 36 food articles, 4 car articles: sampling by category, not by article
            row = dict(rows[0 if i % 10 else 1])
            row["title"] += f" Variant {i}"
            row["text"] = f"Variant {i}: " + " ".join(f"token{i}x{j}" for j in range(40)) + "\n" + row["text"]
            writer.writerow(row)
    kept = curate_wikihow(path, tmp_path / "wh.jsonl", n=8, seed=1)
    sources = [e["source"] for e in kept]
    assert len(kept) == 8 and sources.count("wikihow/Cars & Other Vehicles") >= 2


def test_wikihow_bad_row_is_reported(tmp_path):
    path = tmp_path / "wikihowAll.csv"
    shutil.copy(ASSETS / "wikihow" / "wikihowAll.csv", path)
    with path.open("a") as handle:
        handle.write("only,three,fields\n")
    with pytest.raises(LimaError, match=r"wikihowAll\.csv:\d+: expected 4 columns"):
        curate_wikihow(path, tmp_path / "wh.jsonl", on_error="stop")
    assert len(curate_wikihow(path, tmp_path / "wh.jsonl", on_error="skip")) == 2


def test_mix_builds_the_dialogue_variant_that_training_reads(tmp_path):
    single = tmp_path / "single.jsonl"
    single.write_text("".join(json.dumps({"id": f"s{i}", "source": "stackexchange/math", "messages": [
        {"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}) + "\n" for i in range(12)))
    dialogues = tmp_path / "dialogues.jsonl"
    dialogues.write_text("".join(json.dumps({"conversations": [f"u{i}", f"a{i}", f"u{i}b", f"a{i}b"]}) + "\n"
                                 for i in range(3)))
    out = tmp_path / "mix.jsonl"
    assert data_main(["mix", "--single", str(single), "--dialogues", str(dialogues), "--out", str(out),
                     "--single-k", "10"]) == 0
    mixed = load_conversations(str(out))  # exactly what `lima-lite train ... dataset_name=OUT` reads
    assert len(mixed) == 13
    sources = sorted(e["source"] for e in mixed)
    assert sources.count("stackexchange/math") == 10 and sources.count("dialogues") == 3
    report = json.loads((tmp_path / "mix.report.json").read_text())
    assert report["counts"] == {"single-turn": 10, "dialogues": 3}
    assert report["dropped_by_rule"] == {"over --single-k 10": 2}
    with pytest.raises(LimaError, match=r"single\.jsonl:1: messages: 1 user turn\(s\) in a --dialogues file"):
        data_main(["mix", "--single", str(single), "--dialogues", str(single), "--out", str(out), "--overwrite"])
    # `lima-lite data mix` is lima_lite/data/mix.py: the same error is one line and exit status 2.
    assert cli_main(["data", "mix", "--single", str(single), "--dialogues", str(single), "--out", str(out),
                     "--overwrite"]) == 2


def test_curated_output_reads_as_training_data(tmp_path):
    curate_main(["stackexchange", "--dump", str(ASSETS / "stackexchange"), "--out", str(tmp_path / "se.jsonl")])
    assert len(load_conversations(str(tmp_path / "se.jsonl"))) == 4
