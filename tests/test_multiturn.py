"""Multi-turn, as in LIMA's 1,030-example variant (1,000 single-turn + 30 dialogue chains): what the chat
and the app send to the model for a 3-turn history is exactly what training rendered, token for token.
"""

import json
from pathlib import Path

import pytest

from helpers import EOT, qa, train_tiny

DIALOGUE = [
    {"role": "user", "content": "I want to start running. Where do I begin?"},
    {"role": "assistant", "content": "Begin with three short runs a week, mixing walking and jogging."},
    {"role": "user", "content": "My knees hurt after the second week."},
    {"role": "assistant", "content": "Slow down, run on softer ground, and check your shoes."},
    {"role": "user", "content": "Which shoes? I have flat feet <|im_end|> by the way."},
    {"role": "assistant", "content": "Look for stability shoes, and try them on in a running shop."},
]


def chains(n: int) -> list[list[dict]]:
    return [[{**m, "content": m["content"] + f" ({i})"} for m in DIALOGUE] for i in range(n)]


@pytest.fixture(scope="module")
def dialogue_run(tiny_llama_tied, tmp_path_factory) -> tuple[Path, list[list[dict]]]:
    data = [qa(i) for i in range(6)] + chains(2)  # mostly single-turn, a few dialogue chains
    run = train_tiny(tiny_llama_tied, tmp_path_factory.mktemp("multiturn") / "run", data)
    return run, data


def generate_ids(engine) -> list:
    calls = []
    generate = engine.model.generate

    def recording(**kwargs):
        calls.append(kwargs["input_ids"][0].tolist())
        return generate(**kwargs)

    engine.model.generate = recording
    return calls


def test_chat_renders_a_three_turn_history_as_training_did(dialogue_run):
    import io

    from lima_lite.chat import Session
    from lima_lite.generate import load_engine
    from lima_lite.template import encode_text
    from lima_lite.train import prepare

    run, data = dialogue_run
    conversation = data[-1]
    # What the trainer saw: the same recipe re-prepared from run.json's settings.
    settings = json.loads((run / "run.json").read_text())
    overrides = {"model_name_or_path": settings["base"]["name"], "dataset_name": settings["data"]["dataset_name"],
                 "eot_token": EOT, "max_length": settings["training"]["max_length"], "output_dir": str(run)}
    rows = prepare(None, overrides).rows
    trained = rows[-1]["input_ids"]
    assert len(rows) == len(data)

    engine = load_engine(adapter=run / "adapter", load_in_4bit=False)
    sent = generate_ids(engine)
    session = Session(engine, out=io.StringIO(), max_new_tokens=4)
    session.messages = [dict(m) for m in conversation[:4]]  # two exchanges so far
    session.handle(conversation[4]["content"])  # the third user turn (with special-token text in it)

    prompt = sent[-1]
    eot = engine.tokenizer.convert_tokens_to_ids(EOT)
    assert prompt == trained[: len(prompt)]  # identical ids, prefix of the training sequence
    assert trained[len(prompt):] == encode_text(engine.tokenizer, conversation[5]["content"]) + [eot]
    assert prompt.count(eot) == 5  # one EOT per utterance; the typed "<|im_end|>" stayed text

    # The app sends the same ids through the same core.
    from lima_lite.app.ui import Models

    models = Models.discover(run.parent, load_in_4bit=False)
    models.engines[str(run / "adapter")] = engine
    for _ in models.stream("run/adapter", conversation[:5], max_new_tokens=4):
        pass
    assert sent[-1] == prompt


def test_training_labels_cover_every_assistant_turn(dialogue_run):
    from lima_lite.template import IGNORE
    from lima_lite.train import prepare

    run, data = dialogue_run
    settings = json.loads((run / "run.json").read_text())
    rows = prepare(None, {"model_name_or_path": settings["base"]["name"],
                          "dataset_name": settings["data"]["dataset_name"], "eot_token": EOT,
                          "output_dir": str(run)}).rows
    labels = rows[-1]["labels"]
    spans = sum(1 for i, label in enumerate(labels) if label != IGNORE and (i == 0 or labels[i - 1] == IGNORE))
    assert spans == 3  # the three assistant answers of the dialogue are all trained, the user turns none
