"""`eval generate --batch-size`: a local model answers prompts in left-padded batches that are saved together;
greedy answers equal one-at-a-time ones, a killed run loses at most one batch, endpoints are refused."""

import json

from helpers import qa, train_tiny
from lima_lite.evaluate.answers import LocalModel, answer_seed, generate_answers
from lima_lite.flags import LIMA_SAMPLING
from lima_lite.generate import Engine, load_engine

# different lengths, so the shorter prompts of a batch are left-padded
PROMPTS = [{"id": f"q{i}", "prompt": text} for i, text in enumerate([
    "Hi.", "How much water does a fern need in a dry summer, and how often should I water it?",
    "Why do leaves turn yellow?", "Tell me about the sea.", "What is soil made of, and why does it matter for "
    "roots, worms and the water that runs through a garden?", "Name a tree."])]


def read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_greedy_batches_equal_one_at_a_time_answers(tiny_llama, tmp_path, monkeypatch):
    # the untied tiny base: the tied one's random head writes its turn end first, every time
    run = train_tiny(tiny_llama, tmp_path / "run", [qa(i) for i in range(4)])
    engine = load_engine(adapter=str(run / "adapter"), load_in_4bit=False, dtype="float32")
    model = LocalModel(engine=engine, name="tiny")
    conversations = [[{"role": "user", "content": p["prompt"]}] for p in PROMPTS]
    widths = {len(engine.prompt_ids(c, 16)[0]) for c in conversations}
    assert len(widths) == len(PROMPTS)  # every row but the longest is padded
    # A random model never writes its turn end: stop at a token the first prompt's greedy answer writes
    # mid-way, so some rows of a batch end early ("eot", then padding) and others run to the limit.
    stop = engine.reply(conversations[0], temperature=0, max_new_tokens=16).token_ids[6]
    monkeypatch.setattr(Engine, "stop_ids", property(lambda self: [stop]))
    greedy = {"temperature": 0, "max_new_tokens": 16}

    one = generate_answers(model, PROMPTS, tmp_path / "one.jsonl", batch_size=1, **greedy)
    four = generate_answers(model, PROMPTS, tmp_path / "four.jsonl", batch_size=4, **greedy)
    assert four == one and read_records(tmp_path / "four.jsonl") == read_records(tmp_path / "one.jsonl")
    assert {r["finish_reason"] for r in one} == {"eot", "length"}
    singles = [engine.reply(c, **greedy) for c in conversations]
    rows = []  # the rows of every forward pass of the batched decode
    hook = engine.model.get_input_embeddings().register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    try:
        batched = engine.replies(conversations, **greedy)
    finally:
        hook.remove()
    assert [(r.token_ids, r.new_tokens, r.finish_reason) for r in batched] == \
        [(r.token_ids, r.new_tokens, r.finish_reason) for r in singles]
    # a finished row leaves the batch: each pass computes only the rows still writing
    still_writing = [sum(r.new_tokens > step for r in singles) for step in range(max(r.new_tokens for r in singles))]
    assert rows == still_writing and rows[-1] < rows[0] == len(PROMPTS)
    sampled = [[r.token_ids for r in engine.replies(conversations, seed=3, max_new_tokens=16)] for _ in range(2)]
    assert sampled[0] == sampled[1] and sampled[0] != [r.token_ids for r in singles]  # seeded, and sampled


class FakeBatchModel:
    name = "fake"

    def __init__(self):
        self.calls = []

    def answers(self, prompts, seed=0, **sampling):
        self.calls.append((prompts, seed, sampling))
        return [(f"answer to {p} ({seed})", "eot") for p in prompts]

    def answer(self, prompt, seed=0, **sampling):
        return self.answers([prompt], seed, **sampling)[0]


def test_batches_are_the_prompt_and_sample_pairs_in_order_each_seeded_from_its_first(tmp_path):
    prompts = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(3)]
    model = FakeBatchModel()
    rows = generate_answers(model, prompts, tmp_path / "a.jsonl", samples=2, batch_size=4, max_new_tokens=8)
    assert [(c[0], c[1]) for c in model.calls] == [
        (["prompt 0", "prompt 0", "prompt 1", "prompt 1"], answer_seed("p0", 0)),
        (["prompt 2", "prompt 2"], answer_seed("p2", 0))]
    assert model.calls[0][2] == {**LIMA_SAMPLING, "max_new_tokens": 8}
    assert [(r["id"], r["sample"]) for r in rows] == [(f"p{i}", s) for i in range(3) for s in range(2)]
    assert set(rows[0]) == {"id", "prompt", "answer", "model", "finish_reason", "sample", "sampling"}
    # a file begun one at a time: a batch answers only its missing pairs, still seeded as the whole batch
    out = tmp_path / "b.jsonl"
    generate_answers(model, prompts[:1], out, batch_size=1)
    resumed = FakeBatchModel()
    generate_answers(resumed, prompts, out, samples=2, batch_size=4)
    assert [(c[0], c[1]) for c in resumed.calls] == [
        (["prompt 0", "prompt 1", "prompt 1"], answer_seed("p0", 0)), (["prompt 2", "prompt 2"], answer_seed("p2", 0))]


def test_a_killed_run_loses_one_batch_and_a_rerun_generates_nothing_twice(tiny_llama, tmp_path, monkeypatch, capsys):
    from lima_lite.cli import main

    batches, kill_at = [], [2]
    real = Engine.replies

    def replies(self, conversations, **kwargs):
        batches.append([c[0]["content"] for c in conversations])
        if len(batches) == kill_at[0]:
            raise KeyboardInterrupt
        return real(self, conversations, **kwargs)

    monkeypatch.setattr(Engine, "replies", replies)
    out = tmp_path / "answers.jsonl"
    command = ["eval", "generate", "--model", str(tiny_llama), "--prompts", "embedded:dev.jsonl", "--limit", "6",
               "--max-new-tokens", "3", "--out", str(out)]
    assert main([*command, "--batch-size", "2"]) == 130  # interrupted in the second batch
    first = [r["prompt"] for r in read_records(out)]
    assert first == batches[0] and len(first) == 2
    batches.clear()
    kill_at[0] = None
    assert main([*command, "--batch-size", "2"]) == 0
    rows = read_records(out)
    assert [b for batch in batches for b in batch] == [r["prompt"] for r in rows][2:]  # only the 4 not saved
    assert len(batches) == 2 and len(rows) == 6 and rows[0]["prompt"] == first[0]
    batches.clear()
    assert main(command) == 0 and batches == [] and read_records(out) == rows
    main([*command, "--out", str(tmp_path / "default.jsonl")])
    assert [len(b) for b in batches] == [6]  # the default batch (8) holds all six


def test_batch_size_is_refused_for_an_endpoint(tmp_path, capsys):
    from lima_lite.cli import main

    assert main(["eval", "generate", "--model", "m@http://127.0.0.1:9/v1", "--prompts", "embedded:dev.jsonl",
                 "--batch-size", "4", "--out", str(tmp_path / "a.jsonl")]) == 2
    assert "--batch-size 4: m@http://127.0.0.1:9/v1 is an endpoint; use --concurrency" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()
