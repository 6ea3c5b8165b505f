"""`lima-lite quickstart`: the whole LIMA recipe on the embedded SmolLM2-135M-Instruct, on a CPU, in minutes.

    $ lima-lite quickstart                       # trains recipes/quickstart.yaml into runs/quickstart/
    $ lima-lite quickstart num_train_epochs=1    # any recipe key can be overridden

Trains the quick-start recipe (embedded base in 4-bit NF4, embedded sample data, dev loss every epoch),
then prints the base model's answer next to the tuned one for three held-out prompts, and how many of
the 12 held-out replies end at the turn end before the length limit without template words or role headers.
"""

import argparse
import sys
from pathlib import Path

from lima_lite.layout import adapter_dir


def main(argv=None) -> int:
    from lima_lite.config import resolve_recipe
    from lima_lite.data import load_conversations
    from lima_lite.train import train

    parser = argparse.ArgumentParser(
        prog="lima-lite quickstart",
        description="Train the quick-start recipe (embedded SmolLM2-135M-Instruct, embedded sample data, CPU),\n"
                    "then print the base model's answer next to the tuned one for three held-out prompts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a key of recipes/quickstart.yaml")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="reply length limit (default 200)")
    parser.add_argument("--prompts", type=int, default=12,
                        help="how many of the 12 dev prompts to answer for the stop rates (default 12; 3 are shown)")
    args = parser.parse_args(argv)
    recipe = resolve_recipe("quickstart")
    output_dir = Path(next((o.split("=", 1)[1] for o in args.overrides if o.startswith("output_dir=")), "runs/quickstart"))
    if adapter_dir(output_dir).exists():
        print(f"{adapter_dir(output_dir)} exists: skipping training (delete {output_dir} to train again)")
    else:
        train(recipe, args.overrides)
    from lima_lite.generate import compare_replies, stop_summary

    # All 12 dev prompts are answered and the first 3 shown; the stop rates check that the tuned model
    # ends its turn. The base answers in the adapter's format: with chat_format native, its own ChatML.
    prompts = [c["messages"][0]["content"] for c in load_conversations("embedded:dev.jsonl")][: args.prompts]
    pairs = compare_replies(adapter_dir(output_dir), prompts, max_new_tokens=args.max_new_tokens)
    for prompt, (base_reply, tuned_reply) in list(zip(prompts, pairs))[:3]:
        print(f"\n### Prompt\n{prompt}\n\n--- base model ---\n{base_reply.text.strip()}\n\n"
              f"--- after LIMA fine-tuning ---\n{tuned_reply.text.strip()}")
    print()
    print(stop_summary("base model", [base for base, _ in pairs], args.max_new_tokens))
    print(stop_summary("after LIMA fine-tuning", [tuned for _, tuned in pairs], args.max_new_tokens))
    print(f"\nTalk to it: python -m lima_lite.chat --adapter {adapter_dir(output_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
