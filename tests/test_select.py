"""select: longest is exactly the k longest; random is seeded; quality uses a judge and its cache; diversity
covers every cluster; the command writes the subset and its report."""

import json
import random

import numpy as np
import pytest

from lima_lite.curate.select import (
    embed_mean_pooled,
    main,
    parse_rating,
    rate_examples,
    select_diversity,
    select_longest,
    select_quality,
    select_random,
)


def make_examples(n=60, seed=0):
    rng = random.Random(seed)
    return [{"id": f"ex-{i}", "source": "test", "messages": [
        {"role": "user", "content": f"Question number {i}?"},
        {"role": "assistant", "content": "word " * rng.randint(1, 400)}]} for i in range(n)]


def write(path, examples):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def test_longest_returns_exactly_the_k_longest():
    examples = make_examples()
    chosen = select_longest(examples, 10)
    lengths = sorted((len(e["messages"][1]["content"]) for e in examples), reverse=True)
    assert [len(e["messages"][1]["content"]) for e in chosen] == lengths[:10]
    shortest_kept = min(len(e["messages"][1]["content"]) for e in chosen)
    assert sum(len(e["messages"][1]["content"]) > shortest_kept for e in examples if e not in chosen) == 0


def test_longest_counts_every_assistant_turn():
    dialogue = {"id": "d", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x" * 50},
                                        {"role": "user", "content": "b"}, {"role": "assistant", "content": "y" * 50}]}
    single = {"id": "s", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "z" * 80}]}
    assert [e["id"] for e in select_longest([single, dialogue], 1)] == ["d"]


def test_random_is_seeded():
    examples = make_examples()
    assert select_random(examples, 10, seed=3) == select_random(examples, 10, seed=3)
    assert select_random(examples, 10, seed=3) != select_random(examples, 10, seed=4)
    assert len({e["id"] for e in select_random(examples, 10, seed=3)}) == 10


class LengthJudge:
    """Deterministic: rates by the number of words in the answer it is shown (1-5), and counts its calls."""

    name = "length-judge"

    def __init__(self):
        self.calls = 0

    def complete(self, prompt: str) -> str:
        self.calls += 1
        words = prompt.split("[Assistant]")[1].split("Reply with")[0].count("word")
        return f"Rating: {min(5, 1 + words // 80)}"


def test_quality_keeps_the_best_rated_and_caches_ratings(tmp_path):
    examples = make_examples(20)
    judge = LengthJudge()
    cache = tmp_path / "out.ratings.jsonl"
    ratings = rate_examples(examples, judge, cache)
    assert judge.calls == 20
    assert ratings == [min(5, 1 + e["messages"][1]["content"].count("word") // 80) for e in examples]
    chosen = select_quality(examples, 5, ratings)
    assert min(ratings[examples.index(e)] for e in chosen) >= max(
        r for e, r in zip(examples, ratings, strict=True) if e not in chosen)
    again = LengthJudge()
    assert rate_examples(examples, again, cache) == ratings and again.calls == 0  # a rerun costs nothing
    assert len(cache.read_text().splitlines()) == 20
    other = LengthJudge()
    other.name = "another-judge"
    rate_examples(examples[:3], other, cache)
    assert other.calls == 3  # the cache is keyed by judge name too


def test_parse_rating():
    assert parse_rating("I'd say 4.") == 4 and parse_rating("Rating: 5/5") == 5 and parse_rating("none") is None


def test_diversity_covers_every_cluster():
    rng = np.random.default_rng(0)
    centres = np.eye(8) * 10
    sizes = [30, 2, 5, 1, 12, 3, 7, 40]  # very uneven clusters
    embeddings = np.concatenate([c + rng.normal(0, 0.1, (n, 8)) for c, n in zip(centres, sizes, strict=True)])
    examples = make_examples(sum(sizes))
    chosen, labels = select_diversity(examples, 16, embeddings, clusters=8, seed=0)
    picked = [labels[examples.index(e)] for e in chosen]
    assert len(chosen) == 16 and set(picked) == set(range(8))
    assert max(picked.count(c) for c in range(8)) <= 3  # round-robin: no cluster takes the lion's share
    assert select_diversity(examples, 16, embeddings, 8, seed=0)[0] == chosen  # same seed, same subset


def test_hidden_state_embeddings_are_mean_pooled(tiny_llama):
    texts = ["How do I cook rice?", "Explain the Pythagorean theorem with an example, please."]
    batch = embed_mean_pooled(texts, str(tiny_llama), batch_size=2)
    single = embed_mean_pooled(texts[:1], str(tiny_llama), batch_size=1)
    assert batch.shape == (2, 64)
    np.testing.assert_allclose(batch[0], single[0], atol=1e-4)  # padding does not leak into the mean


def test_select_command_writes_subset_and_report(tmp_path):
    source = write(tmp_path / "in.jsonl", make_examples())
    assert main(["--strategy", "longest", "--k", "7", str(source), str(tmp_path / "long.jsonl")]) == 0
    kept = [json.loads(line) for line in (tmp_path / "long.jsonl").read_text().splitlines()]
    assert [e["id"] for e in kept] == [e["id"] for e in select_longest(make_examples(), 7)]
    report = json.loads((tmp_path / "long.report.json").read_text())
    assert report["counts"] == {"input": 60, "selected (longest)": 7}
    assert report["dropped_by_rule"] == {"not selected (longest)": 53}
    assert (tmp_path / "long.lengths.png").read_bytes()[:4] == b"\x89PNG"


def test_select_by_tokens_ranks_by_tokens_and_reports_tokens(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    # Common English words are one token each in the tiny BPE; Greek letters (2 UTF-8 bytes, unseen in its
    # training text) are two tokens each. So "words" is the longest in characters, "greek" the longest in tokens.
    texts = {"words": "the " * 60, "greek": "αβγδεζηθ" * 12, "short": "the cat sat"}
    examples = [{"id": name, "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": text}]}
                for name, text in texts.items()]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    tokens = {name: len(tokenizer(text, add_special_tokens=False)["input_ids"]) for name, text in texts.items()}
    assert len(texts["words"]) > len(texts["greek"]) and tokens["greek"] > tokens["words"] > tokens["short"]
    source = write(tmp_path / "in.jsonl", examples)
    for by, winner in (("tokens", "greek"), ("chars", "words")):
        out = tmp_path / f"{by}.jsonl"
        main(["--strategy", "longest", "--by", by, "--tokenizer", str(tiny_llama), "--k", "1", str(source), str(out)])
        assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [winner]
    lengths = json.loads((tmp_path / "tokens.report.json").read_text())["lengths"]
    assert lengths["unit"] == "tokens"
    assert lengths["after"] == {"n": 1, "min": tokens["greek"], "median": tokens["greek"], "max": tokens["greek"]}
    assert lengths["before"]["max"] == tokens["greek"] and lengths["before"]["min"] == tokens["short"]
    assert "## Response lengths (tokens)" in (tmp_path / "tokens.report.md").read_text()
    assert json.loads((tmp_path / "chars.report.json").read_text())["lengths"]["unit"] == "characters"


@pytest.mark.parametrize("strategy", ["longest", "random"])
def test_k_larger_than_input_keeps_everything(tmp_path, strategy):
    source = write(tmp_path / "in.jsonl", make_examples(5))
    main(["--strategy", strategy, "--k", "50", str(source), str(tmp_path / "out.jsonl")])
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5
