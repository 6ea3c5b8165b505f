"""Batched replies with finished rows kept in the batch (generate()) against rows that leave it (Engine.replies).

    $ PYTHONPATH=$PWD python bench/finished_rows.py --adapter runs/quickstart/adapter --rounds 2

The quick start's reply batch: the 12 embedded dev prompts, greedy (so both paths write the same tokens and
take the same steps; --temperature 0.7 for LIMA's sampling), up to --max-new-tokens,
with the adapter merged as the quick start merges it. Each round times transformers' generate() on the batch
(every row computed until the last one ends) and lima_lite's decode_batch (a row leaves the batch and its KV
cache at its turn end), alternating so a neighbour's load falls on both. Prints seconds, decoding steps and
the rows computed over all steps for each.
"""

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()
    import torch

    from lima_lite.conversations import load_conversations
    from lima_lite.flags import LIMA_SAMPLING
    from lima_lite.generate import load_engine, seeded

    engine = load_engine(adapter=args.adapter)
    engine.model.merge_adapter()
    conversations = [[c["messages"][0]] for c in load_conversations("embedded:dev.jsonl")]
    prompts = [engine.prompt_ids(c, args.max_new_tokens)[0] for c in conversations]
    width, pad = max(map(len, prompts)), engine.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    settings = engine.generation_settings({**LIMA_SAMPLING, "max_new_tokens": args.max_new_tokens,
                                                    "temperature": args.temperature}, width)
    rows = []
    hook = engine.model.get_input_embeddings().register_forward_pre_hook(lambda m, a: rows.append(len(a[0])))

    def kept():
        engine.model.generate(input_ids=input_ids, attention_mask=mask, **settings)

    def dropped():
        engine.decode_batch(input_ids, mask, settings)

    print("| round | path | s | steps | rows computed |")
    print("|---|---|---|---|---|")
    for round_ in range(args.rounds):
        for name, run in (("generate(): finished rows kept", kept), ("decode_batch: finished rows leave", dropped)):
            rows.clear()
            start = time.perf_counter()
            with torch.inference_mode(), seeded(0):
                run()
            print(f"| {round_ + 1} | {name} | {time.perf_counter() - start:.1f} | {len(rows)} | {sum(rows)} |", flush=True)
    hook.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
