"""`lima-lite quickstart`: the whole LIMA recipe on the embedded SmolLM2-135M-Instruct, on a CPU, in minutes.

    $ lima-lite quickstart                       # trains recipes/quickstart.yaml into runs/quickstart/
    $ lima-lite quickstart num_train_epochs=1    # any recipe key can be overridden

Trains the quick-start recipe (embedded base in 4-bit NF4, or in float32 for one epoch on a CPU without native
bf16: its slow_cpu_fallback; embedded sample data, dev loss every epoch) in the precision this machine computes
fast (lima_lite.precision), says the resolved settings in one line (lima_lite.resolve), then prints the base
model's answer next to the tuned one for three held-out prompts, and how many of the tuned model's replies to
the 12 held-out prompts end at the turn end before the length limit without template words or role headers
(and the base's, on the three).
"""

import argparse
import sys
from pathlib import Path

from lima_lite.config import load_recipe
from lima_lite.conversations import load_conversations
from lima_lite.layout import adapter_dir
from lima_lite.machine import detect_machine
from lima_lite.memory.host import return_freed_memory
from lima_lite.recipe_yaml import resolve_recipe
from lima_lite.resolve import resolve
from lima_lite.train import train

SHOWN = 3  # prompts printed with the base's answer next to the tuned one
# A reply that never reached its turn end is printed up to here: on a 135M model a sampled reply sometimes
# runs on to the limit in repeated symbols, and 400 tokens of them say no more than the first lines do.
SHOWN_CHARS = 600
SAMPLING_NOTE = ("Replies are sampled with LIMA's settings (temperature 0.7, top_p 0.9, repetition penalty 1.2 on the "
                 "tokens generated so far), seed 0: a sample, not the model's best answer. A model this small sometimes "
                 "runs on; the counts above include those replies. Greedy replies: lima-lite eval generate "
                 "--temperature 0.")


def shown(reply, max_new_tokens: int) -> str:
    """A reply as the quick start prints it: whole when it ended at its turn end; otherwise its first
    SHOWN_CHARS characters, then a line saying it ran on to the limit."""
    text = reply.text.strip()
    if reply.finish_reason == "eot":
        return text
    cut = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS].rstrip() + " …"
    return f"{cut}\n[no turn end: ran on to the {max_new_tokens}-token limit]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lima-lite quickstart",
        description="Train the quick-start recipe (embedded SmolLM2-135M-Instruct, embedded sample data, CPU),\n"
                    "then print the base model's answer next to the tuned one for three held-out prompts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a key of recipes/quickstart.yaml")
    # 400: above the longest reply in the sample data (323 tokens), so a reply that does not end is a model
    # that does not stop, not one cut short (at 200, 5 of 12 tuned replies were still going).
    parser.add_argument("--max-new-tokens", type=int, default=400, help="reply length limit (default 400)")
    parser.add_argument("--prompts", type=int, default=12,
                        help="how many of the 12 dev prompts the tuned model answers for the stop rates (default 12)")
    args = parser.parse_args(argv)
    recipe = resolve_recipe("quickstart")
    # On a CPU without native bf16 the recipe's slow_cpu_fallback loads the base unquantized for one epoch
    resolved = resolve(load_recipe(recipe, args.overrides), detect_machine())
    print(resolved.summary())
    output_dir = Path(resolved.sft_config.output_dir)
    if adapter_dir(output_dir).exists():
        print(f"{adapter_dir(output_dir)} exists: skipping training (delete {output_dir} to train again)")
    else:
        train(recipe, args.overrides)
        return_freed_memory()  # the trainer's memory, before the chat model loads
    from lima_lite.generate import load_engine, stop_summary

    # The tuned model answers all dev prompts (one batch) for the stop rates; the base answers the SHOWN
    # ones, in the adapter's format: with chat_format native, its own ChatML, so the comparison is fair.
    prompts = [c["messages"][0]["content"] for c in load_conversations("embedded:dev.jsonl")][: args.prompts]
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    # In the precision this machine computes fast (bf16 where native: decoding twice as fast as float32).
    engine = load_engine(adapter=adapter_dir(output_dir))
    print(f"Answering {min(SHOWN, len(prompts))} held-out prompts with the base and {len(prompts)} with the tuned model")
    base = engine.replies(conversations[:SHOWN], use_adapter=False, seed=0, max_new_tokens=args.max_new_tokens)
    # Then the LoRA is merged into the (unquantized) weights for the tuned replies: the same model without
    # 210 extra small matmuls per token. Not unmerged after: in bf16 that would not give back the base exactly.
    engine.model.merge_adapter()
    tuned = engine.replies(conversations, seed=0, max_new_tokens=args.max_new_tokens)
    for prompt, base_reply, tuned_reply in zip(prompts, base, tuned, strict=False):  # base: the first SHOWN only
        print(f"\n### Prompt\n{prompt}\n\n--- base model ---\n{shown(base_reply, args.max_new_tokens)}\n\n"
              f"--- after LIMA fine-tuning ---\n{shown(tuned_reply, args.max_new_tokens)}")
    print()
    print(stop_summary("base model", base, args.max_new_tokens))
    print(stop_summary("after LIMA fine-tuning", tuned, args.max_new_tokens))
    print(SAMPLING_NOTE)
    print(f"\nTalk to it: python -m lima_lite.chat --adapter {adapter_dir(output_dir)}")
    return 0


if __name__ == "__main__":
    from lima_lite.entry import run

    sys.exit(run("lima_lite.quickstart:main", sys.argv[1:]))
