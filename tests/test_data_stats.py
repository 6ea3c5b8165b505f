"""`lima-lite data stats`: every count of a set built here against what was planted in it (multi-turn, system and
empty turns, sources, token lengths under the recipe's template, cuts, exact and near duplicates, style flags),
two sets side by side, the JSON alone on stdout, the report folder, train's errors for bad rows, the Train tab's
data check (in Chromium too) and the model card's summary.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from helpers import CHROMIUM, CHROMIUM_ARGS, EOT, ROOT, browser_tools, free_port, qa, run_cli
from lima_lite.conversations import CHARS_PER_TOKEN, cut_chars, load_conversations
from lima_lite.data.stats import FLAGS, data_stats, recipe_tokenizer

MAX_LENGTH = 256
TOPICS = [
    ("How do tides work on the coast of an ocean?",
     "The moon pulls on the water of the oceans, and the earth turns under that bulge, so the coast sees the "
     "water rise and fall twice a day."),
    ("Why is the sky blue during the day?",
     "Sunlight is scattered by the gas of the air, and blue light is scattered more than red light, so the sky "
     "looks blue from every direction."),
    ("What makes bread dough rise before baking?",
     "Yeast eats the sugar in the flour and gives off carbon dioxide, which is trapped by the gluten and makes "
     "the dough grow."),
    ("How can a beginner learn to swim as an adult?",
     "Start in shallow water with a teacher, learn to float and to breathe out under the water, and then add the "
     "kicks and the strokes one at a time."),
    ("What is the difference between weather and climate?",
     "Weather is the state of the air on one day in one place, while climate is the pattern of that weather over "
     "thirty years or more."),
    ("How do vaccines protect people from disease?",
     "A vaccine shows the immune system a harmless part of a germ, so that the body can learn to recognise it and "
     "fight the real germ faster later."),
]
GARDEN = ("There is a small vegetable garden behind the house and the tomato plants keep getting yellow leaves at the "
          "bottom every summer, what causes that and how can it be fixed?")
GARDEN_AGAIN = GARDEN.replace("small", "little")  # one word of 29 changed: word 2-gram Jaccard 0.87
LONG_ANSWER = " ".join(["The roots need water deep in the soil, and the leaves need sun for most of the day."] * 20)
HUGE_ANSWER = "Mulch keeps the soil of the bed moist and cool through the summer. " * 80  # > 256 x 16 characters
ANSWER = "The plants need water at the roots, not on the leaves, and a layer of mulch to keep the soil moist."


def row(cid: str, *turns: str, source: str | None = None, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(turns)]
    return {"messages": messages, "id": cid, **({"source": source} if source else {})}


def planted_rows() -> list[dict]:
    """Six clean examples, then one of each thing to count; the comment says what each one plants."""
    rows = [row(f"clean-{i}", q, a, source="wiki" if i < 3 else "stackexchange") for i, (q, a) in enumerate(TOPICS)]
    return rows + [
        row("dialogue", "What causes the tides of the sea?", TOPICS[0][1], "And how high does the water rise on a spring tide?",
            "On a spring tide the sun and the moon pull the same way, so the water rises higher than on other days.",
            source="dialogues"),  # multi-turn
        row("with-system", "Which planet is the largest in the solar system?",
            "Jupiter is the largest planet, more than eleven times as wide as the earth.",
            system="Answer the question of the user in two sentences.", source="dialogues"),  # one system turn
        row("long", "How should tomatoes be watered?", LONG_ANSWER, source="wiki"),  # cut at 256 tokens
        row("huge", "How does mulch help a vegetable bed?", HUGE_ANSWER, source="wiki"),  # cut at 4,096 characters
        row("exact-copy", "  " + TOPICS[0][0].upper().replace("?", " ?!"), "Tides are caused by the pull of the moon "
            "on the water of the oceans, and of the sun to a lesser degree."),  # repeats clean-0 exactly
        row("garden", GARDEN, ANSWER),
        row("garden-again", GARDEN_AGAIN, ANSWER + " The lower leaves can also be removed."),  # near: garden
        row("as-ai", "Why is the water of the sea salty?", "As an AI language model, the answer is that the rivers "
            "carry salt from the rocks into the sea, and the sun takes away only the water."),
        row("refusal", "How can the lock of a neighbour's door be opened without a key?", "I’m sorry, but I can’t "
            "help with that request, because opening the door of another person is not legal."),  # + first person
        row("link", "Where can a guide to pruning roses be found?", "The society of rose growers has a full guide "
            "at https://example.org/roses that covers the tools and the timing of each cut."),
        row("first-person", "When should garlic be planted?", "In my experience the best time to plant garlic is the "
            "autumn, a few weeks before the ground freezes, so that the roots can grow."),
        row("short", "A long question about the soil of a garden that has clay at the bottom, sand at the top, and "
            "water that stays on the surface for days after rain, with the plants going yellow: is it the soil?",
            "Yes, it is."),
        row("list", "What does a basil plant need to grow well indoors?",
            "- Water the plant when the top of the soil is dry.\n- Keep it in the sun for six hours a day.\n\n"
            "That is all there is to it."),
        row("code", "How can a line of text be printed in Python?", "Use the print function, which writes the text "
            "to the screen:\n\n```python\nprint('hello')\n```\n\nIt adds a new line at the end of the text."),
        row("french", "What is the story of the Eiffel Tower?", "La tour Eiffel a été construite pour l'exposition "
            "universelle de 1889 à Paris, et elle mesure environ trois cents mètres de haut."),
        row("chinese", "请问怎么做一个好吃的番茄炒蛋？我想今天晚上做给家人吃，谢谢你的帮助。", "Beat the eggs, fry them "
            "until they are just set, take them out, then cook the tomatoes with a little sugar and put the eggs "
            "back in at the end."),
        row("empty", "What is the boiling point of water at sea level?", "  \n "),  # + short answer
    ]


PLANTED_FLAGS = {"as_an_ai": ["as-ai"], "refusal": ["refusal"], "links": ["link"],
                 "first_person": ["refusal", "first-person"], "short_answer": ["short", "empty"],
                 "markdown_list": ["list"], "code_block": ["code"], "non_english": ["french", "chinese"]}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def recipe(tiny_llama_tied, tmp_path_factory) -> Path:
    """LIMA's format over the tiny tokenizer, its <|im_end|> the turn end, cut at 256 tokens."""
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(f"model_name_or_path: {tiny_llama_tied}\nchat_format: lima\neot_token: \"{EOT}\"\n"
                    f"max_length: {MAX_LENGTH}\nload_in_4bit: false\ndtype: float32\nbf16: false\n")
    return path


@pytest.fixture(scope="module")
def planted(recipe, tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("data") / "planted.jsonl", planted_rows())


def nearest_rank(values: list[int]) -> dict:
    ordered = sorted(values)
    at = {p: ordered[math.ceil(p / 100 * len(ordered)) - 1] for p in (10, 50, 90)}
    return {"p10": at[10], "p50": at[50], "p90": at[90], "max": ordered[-1], "mean": round(sum(ordered) / len(ordered), 1)}


def expected_tokens(tokenizer_dir: Path, rows: list[dict]) -> tuple[list[int], list[int]]:
    """Prompt and response tokens of each row in LIMA's format, counted here: every turn's text, then one
    <|im_end|>; the assistant's turns are the response (text read as train reads it: 256 x 16 characters)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompts, responses = [], []
    for r in rows:
        kept, _ = cut_chars(r["messages"], MAX_LENGTH * CHARS_PER_TOKEN)
        counts = {"prompt": 0, "response": 0}
        for m in kept:
            n = len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) + 1
            counts["response" if m["role"] == "assistant" else "prompt"] += n
        prompts.append(counts["prompt"])
        responses.append(counts["response"])
    return prompts, responses


def test_every_count_is_what_was_planted(recipe, planted, tiny_llama_tied):
    code = run_cli("data", "stats", str(planted), "--recipe", str(recipe), "--json")
    assert code.returncode == 0, code.stderr
    s = json.loads(code.stdout)
    rows = planted_rows()
    assert s["examples"] == len(rows) == 23
    assert s["multi_turn"] == {"count": 1, "ids": ["dialogue"]}
    assert s["turns"] == {"per_conversation": {"2": 22, "4": 1}, "system": 1, "empty": 1, "empty_ids": ["empty (turn 2)"]}
    assert s["sources"] == {str(planted): 13, "wiki": 5, "stackexchange": 3, "dialogues": 2}

    prompts, responses = expected_tokens(tiny_llama_tied, rows)
    assert s["prompt_tokens"] == nearest_rank(prompts) and s["response_tokens"] == nearest_rank(responses)
    assert s["response_tokens"]["max"] > MAX_LENGTH  # the long answers
    ids = [r["id"] for r in rows]
    long, huge = ids.index("long"), ids.index("huge")
    assert prompts[long] + responses[long] > MAX_LENGTH and len(HUGE_ANSWER) > MAX_LENGTH * CHARS_PER_TOKEN
    assert s["cut_at_max_length"] == {"max_length": MAX_LENGTH, "count": 2, "ids": ["long", "huge"]}
    assert s["dropped_by_recipe"] == {"count": 0, "ids": []}

    # Trained tokens per epoch: what train's own encoding labels, after its cut.
    from lima_lite.template import IGNORE
    from lima_lite.train import encode_dataset

    tokenizer, template, settings = recipe_tokenizer(str(recipe))
    encoded, counts, _ = encode_dataset(load_conversations(str(planted), empty_turns=True), tokenizer, template, MAX_LENGTH)
    assert counts["cut"] == 2
    assert s["trained_tokens_per_epoch"] == sum(label != IGNORE for r in encoded for label in r["labels"])
    assert s["trained_tokens_per_epoch"] == sum(responses) - (responses[long] - (MAX_LENGTH - prompts[long])) - \
        (responses[huge] - (MAX_LENGTH - prompts[huge]))

    assert s["exact_duplicates"]["count"] == 1 and s["near_duplicates"]["count"] == 1
    exact, near = s["exact_duplicates"]["pairs"][0], s["near_duplicates"]["pairs"][0]
    assert (exact["id"], exact["of"], exact["similarity"]) == ("exact-copy", "clean-0", 1.0)
    assert (near["id"], near["of"]) == ("garden-again", "garden") and 0.8 < near["similarity"] < 1
    assert s["near_duplicates"]["threshold"] == 0.5
    assert {flag: found["ids"] for flag, found in s["flags"].items()} == {f: PLANTED_FLAGS.get(f, []) for f in FLAGS}
    assert all(found["count"] == len(found["ids"]) for found in s["flags"].values())
    assert s["settings"]["chat_format"] == "lima" and s["settings"]["eot_token"] == EOT


def test_without_a_recipe_tokens_are_counted_as_lima_defaults_train_the_embedded_model():
    from lima_lite.config import EMBEDDED_BASE
    from lima_lite.model import resolve_model

    code = run_cli("data", "stats", "embedded:dev.jsonl", "--json")
    assert code.returncode == 0, code.stderr
    s = json.loads(code.stdout)
    assert s["settings"] == {"recipe": None, "model": EMBEDDED_BASE, "chat_format": "lima", "eot_token": "<|eot|>",
                             "max_length": 2048, "drop_too_long": False, "multi_turn": True}
    rows = [json.loads(line) for line in (ROOT / "lima_lite" / "samples" / "dev.jsonl").read_text().splitlines()]
    prompts, responses = expected_tokens(Path(resolve_model(EMBEDDED_BASE)), rows)  # SmolLM2 adds no BOS to text
    assert s["examples"] == 12 and s["prompt_tokens"] == nearest_rank(prompts)
    assert s["response_tokens"] == nearest_rank(responses) and s["trained_tokens_per_epoch"] == sum(responses)


def test_recipe_values_on_the_command_line_and_a_hub_base_fetches_its_tokenizer_only(recipe, planted, tiny_llama_tied,
                                                                                      monkeypatch):
    shorter = json.loads(run_cli("data", "stats", str(planted), "--recipe", str(recipe), "max_length=64", "--json").stdout)
    assert shorter["cut_at_max_length"]["max_length"] == 64 and shorter["cut_at_max_length"]["count"] > 2
    wrong = run_cli("data", "stats", str(planted), "--recipe", str(recipe), str(planted))
    assert wrong.returncode == 2 and "expected key=value after the recipe, found" in wrong.stderr

    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda name, allow_patterns: asked.append((name, allow_patterns)) or str(tiny_llama_tied))
    tokenizer, _, settings = recipe_tokenizer(str(recipe), ["model_name_or_path=someone/tiny-base"])
    assert settings["model"] == "someone/tiny-base" and len(tokenizer) > 500
    assert asked[0][0] == "someone/tiny-base" and "*.json" in asked[0][1]
    assert not [p for p in asked[0][1] if "safetensors" in p or "bin" in p]  # no weights


def test_two_sets_side_by_side(recipe, planted, tmp_path):
    second = write_rows(tmp_path / "second.jsonl", [
        row("b-1", TOPICS[1][0], "A different answer about the colour of the sky and the light of the sun."),  # exact
        row("b-2", TOPICS[4][0].replace("climate", "climates"), TOPICS[4][1]),  # near: clean-4 (Jaccard 6/8)
        row("b-3", GARDEN, ANSWER),  # exact: garden; and garden-again is near to it
        row("b-4", "Which birds fly south for the winter and why do they go?", "Swallows and storks fly south to "
            "find insects, which are scarce in the cold months."),
        row("b-5", "What is a good way to keep cut flowers fresh in a vase?", "Cut the stems at an angle, change "
            "the water every two days and keep the vase out of the sun."),
    ])
    code = run_cli("data", "stats", str(planted), str(second), "--recipe", str(recipe), "--json")
    assert code.returncode == 0, code.stderr
    both = json.loads(code.stdout)
    first, other = both["files"]
    assert (first["file"], first["examples"], other["file"], other["examples"]) == (str(planted), 23, str(second), 5)
    assert other["multi_turn"]["count"] == 0 and other["exact_duplicates"]["count"] == 0
    b_in_a, a_in_b = both["overlap"]["b_in_a"], both["overlap"]["a_in_b"]
    assert {k: b_in_a[k] for k in ("examples", "of", "exact", "near", "share")} == \
        {"examples": 3, "of": 5, "exact": 2, "near": 1, "share": 0.6}
    assert {(p["id"], p["kind"], p["in_other"]) for p in b_in_a["pairs"]} == \
        {("b-1", "exact", "clean-1"), ("b-2", "near", "clean-4"), ("b-3", "exact", "garden")}
    assert {k: a_in_b[k] for k in ("examples", "of", "exact", "near")} == {"examples": 4, "of": 23, "exact": 2, "near": 2}
    assert {(p["id"], p["in_other"]) for p in a_in_b["pairs"]} == \
        {("clean-1", "b-1"), ("clean-4", "b-2"), ("garden", "b-3"), ("garden-again", "b-3")}

    # Without --json: one table, a column per file, and what each holds of the other.
    text = run_cli("data", "stats", str(planted), str(second), "--recipe", str(recipe)).stdout
    assert f"| | `{planted}` | `{second}` |" in text and "| examples | 23 | 5 |" in text
    assert "| exact duplicates | 1 | 0 |" in text and "| flag: non_english | 2 | 0 |" in text
    assert f"- 3 of 5 examples of `{second}` (60.0 %) have a prompt in `{planted}` (2 exact, 1 near)" in text
    assert f"- 4 of 23 examples of `{planted}` (17.4 %) have a prompt in `{second}` (2 exact, 2 near)" in text


def test_the_report_folder(recipe, planted, tmp_path):
    out = tmp_path / "report"
    code = run_cli("data", "stats", str(planted), "--recipe", str(recipe), "--out", str(out))
    assert code.returncode == 0, code.stderr
    assert sorted(p.name for p in out.iterdir()) == ["response_tokens.png", "sources.png", "stats.md", "turns.png"]
    for chart in ("response_tokens.png", "sources.png", "turns.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "stats.md").read_text()
    assert "| longer than max_length 256 | 2 |" in report and "- longer than max_length 256 (2): `long`, `huge`" in report
    assert "- flag non_english (2): `french`, `chinese`" in report and "![response_tokens](response_tokens.png)" in report
    assert "  - `garden-again` repeats `garden` (0.8" in report and "  - `exact-copy` repeats `clean-0`: " in report
    assert "- empty turns (train refuses them) (1): `empty (turn 2)`" in report
    again = run_cli("data", "stats", str(planted), "--recipe", str(recipe), "--out", str(out))
    assert again.returncode == 2 and "stats.md: already exists" in again.stderr and "--overwrite" in again.stderr


def test_bad_rows_stop_it_as_they_stop_train(recipe, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": qa(0)}) + "\n{not json\n"
                   + json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "?"}]})
                   + "\n")
    for data, words in ((bad, [f"{bad}:2: invalid JSON at column 2", f"{bad}:3: messages[1].role: expected 'assistant'"]),
                        (tmp_path / "missing.jsonl", ["missing.jsonl: data file not found"])):
        stats = run_cli("data", "stats", str(data), "--recipe", str(recipe))
        inspect = run_cli("inspect", str(recipe), f"dataset_name={data}")  # what train checks, word for word
        assert stats.returncode == inspect.returncode == 2
        assert stats.stderr == inspect.stderr and stats.stdout == ""
        assert stats.stderr.startswith("error: ") and all(w in stats.stderr for w in words), stats.stderr
    # an empty turn is counted here, while train refuses it
    empty = write_rows(tmp_path / "empty.jsonl", [row("e", "Hi there, how are you?", " ")])
    assert "messages[1].content: empty turn" in run_cli("inspect", str(recipe), f"dataset_name={empty}").stderr
    assert json.loads(run_cli("data", "stats", str(empty), "--recipe", str(recipe), "--json").stdout)["turns"]["empty"] == 1


def random_prompt(rng, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(12)) + "?"


def test_json_alone_on_stdout_and_a_progress_bar_for_a_large_set(recipe, tiny_llama_tied, tmp_path):
    """A real process, so that anything a library prints would show; 2,100 examples: the progress bar and,
    with more than one core, the worker processes, which count exactly as one process does."""
    import random

    rng = random.Random(0)
    words = sorted({w.strip(".,?!:;()'\"").lower() for q, a in TOPICS for w in (q + " " + a).split()} |
                   {f"word{i}" for i in range(300)})
    rows = [row(f"r{i}", random_prompt(rng, words), "The answer is " + random_prompt(rng, words)) for i in range(2100)]
    for copy, of in ((2000, 5), (2050, 17), (2099, 1500)):
        rows[copy]["messages"][0]["content"] = rows[of]["messages"][0]["content"].upper()
    big = write_rows(tmp_path / "big.jsonl", rows)
    done = subprocess.run([sys.executable, "-m", "lima_lite.cli", "data", "stats", str(big), "--recipe", str(recipe),
                           "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("{")
    found = json.loads(done.stdout)
    assert found["examples"] == 2100 and found["exact_duplicates"]["count"] == 3
    assert {(p["id"], p["of"]) for p in found["exact_duplicates"]["pairs"]} == {("r2000", "r5"), ("r2050", "r17"),
                                                                               ("r2099", "r1500")}
    assert f"data stats: {big}: 100%" in done.stderr and "2100/2100" in done.stderr
    tokenizer, template, settings = recipe_tokenizer(str(recipe))
    alone, _ = data_stats(load_conversations(str(big)), tokenizer, template, MAX_LENGTH, processes=1)
    assert {k: v for k, v in found.items() if k not in ("file", "settings")} == alone


# ---------------------------------------------------------------- the Train tab and the model card


def tab_values(tiny_llama_tied, planted: Path, runs: Path) -> dict:
    from lima_lite.app.train_tab import recipe_values

    return {**recipe_values("quickstart", runs), "model_name_or_path": str(tiny_llama_tied),
            "dataset_name": str(planted), "max_length": str(MAX_LENGTH),
            "output_dir": str(runs / "quick")}


TAB_MORE = f"load_in_4bit=false dtype=float32 bf16=false chat_format=lima eot_token={EOT}"


def test_check_data_shows_the_stats_under_the_chosen_recipe(recipe, tiny_llama_tied, tmp_path):
    from lima_lite.app.train_tab import Training, check_form

    rows = [r for r in planted_rows() if r["id"] != "empty"]  # train refuses empty turns, so the tab does
    data = write_rows(tmp_path / "train.jsonl", rows)
    status, shown, _, _ = check_form(Training(tmp_path / "runs"), "quickstart",
                                     *tab_values(tiny_llama_tied, data, tmp_path / "runs").values(), TAB_MORE)
    assert status.startswith("data OK: 22 conversations read, 22 kept (2 cut at 256 tokens)")
    _, responses = expected_tokens(tiny_llama_tied, rows)
    q = nearest_rank(responses)
    assert "<tr><td>examples</td><td>22</td></tr>" in shown
    assert (f"<tr><td>response tokens p10 / p50 / p90 / max</td><td>{q['p10']:,} / {q['p50']:,} / {q['p90']:,} / "
            f"{q['max']:,}</td></tr>") in shown
    assert "<tr><td>longer than max_length 256</td><td>2</td></tr>" in shown
    assert "<tr><td>near duplicates</td><td>1</td></tr>" in shown and "<tr><td>flag: code_block</td><td>1</td>" in shown
    assert "src='data:image/png;base64,iVBORw0KGgo" in shown  # the histogram, a PNG
    assert shown.index("id='data-stats'") < shown.index("<mark>")  # then the first example, as before


def test_check_data_in_a_real_browser(tiny_llama_tied, tmp_path):
    from lima_lite.app.train_tab import Training
    from lima_lite.app.ui import Models, build_app

    playwright = browser_tools()
    runs = tmp_path / "runs"
    runs.mkdir()
    data = write_rows(tmp_path / "train.jsonl", [r for r in planted_rows() if r["id"] != "empty"])
    app = build_app(Models.discover(runs, load_in_4bit=False), [{"id": "p", "prompt": "Hi?"}], tmp_path / "votes.jsonl",
                    training=Training(runs))
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_role("tab", name="Train").click()
            for key, value in tab_values(tiny_llama_tied, data, runs).items():
                page.locator(f"#train-{key} textarea, #train-{key} input").first.fill(value)
            page.locator("#train-more textarea, #train-more input").first.fill(TAB_MORE)
            page.locator("#train-check").click()
            table = page.locator("#data-stats table")
            table.wait_for(timeout=60_000)
            cells = table.locator("tr").all_inner_texts()
            assert "examples\t22" in cells and "longer than max_length 256\t2" in cells
            assert "exact duplicates\t1" in cells and "flag: non_english\t2" in cells
            image = page.locator("#data-stats img")
            assert image.evaluate("img => img.complete && img.naturalWidth > 300")  # the histogram, drawn
            assert page.locator("#train-status").inner_text().startswith("data OK: 22 conversations read")
            browser.close()
    finally:
        app.close()


def test_the_model_card_says_what_the_adapter_learned_from(tiny_run, tiny_llama_tied, tmp_path):
    from lima_lite.push import main as push_main

    run_info = json.loads((tiny_run / "run.json").read_text())
    data = run_info["data"]["dataset_name"]
    out = tmp_path / "upload"
    assert push_main([str(tiny_run), "--repo", "someone/tiny-lima", "--dry-run", "--out", str(out),
                      "--base-model", str(tiny_llama_tied)]) == 0
    card = (out / "README.md").read_text()
    section = card.split("### The training set at a glance\n\n")[1].split("\n## ")[0]
    rows = [{"messages": qa(i)} for i in range(4)]  # what tiny_run trained on
    prompts, responses = expected_tokens(tiny_llama_tied, rows)
    p, r = nearest_rank(prompts), nearest_rank(responses)
    assert f"- examples: 4 (0 multi-turn); sources: {data} 4\n" in section
    assert (f"- prompt tokens p10 / p50 / p90 / max: {p['p10']:,} / {p['p50']:,} / {p['p90']:,} / {p['max']:,}; "
            f"response tokens: {r['p10']:,} / {r['p50']:,} / {r['p90']:,} / {r['max']:,}\n") in section
    assert f"- longer than max_length (256 tokens): 0; trained tokens per epoch: {sum(responses):,}\n" in section

    # A training file that changed since the run is not summarized as if it were the one trained on.
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    run_info["data"]["sha256"] = "0" * 64
    (copy / "run.json").write_text(json.dumps(run_info))
    assert push_main([str(copy), "--repo", "someone/tiny-lima", "--dry-run", "--out", str(tmp_path / "again"),
                      "--base-model", str(tiny_llama_tied)]) == 0
    assert f"Not summarized: `{data}` has changed since training" in (tmp_path / "again" / "README.md").read_text()


def test_shared_minhash_permutations_give_datasketchs_own_signatures():
    from datasketch import MinHash

    from lima_lite.data.overlap import NUM_PERM, ngrams, signature

    for seed in (0, 3):
        grams = ngrams(GARDEN)
        own = MinHash(num_perm=NUM_PERM, seed=seed)
        own.update_batch([g.encode("utf-8") for g in grams])
        assert (signature(grams, seed).hashvalues == own.hashvalues).all()
