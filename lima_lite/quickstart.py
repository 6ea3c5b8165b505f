"""`lima-lite quickstart`: the whole LIMA recipe on the embedded SmolLM2-135M-Instruct, on a CPU, in minutes.

    $ lima-lite quickstart                       # trains recipes/quickstart.yaml into runs/quickstart/
    $ lima-lite quickstart num_train_epochs=1    # any recipe key can be overridden

Trains the quick-start recipe (embedded base in 4-bit NF4, embedded sample data, dev loss every epoch),
then prints the base model's answer next to the tuned one for three held-out prompts.
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
    args = parser.parse_args(argv)
    recipe = resolve_recipe("quickstart")
    output_dir = Path(next((o.split("=", 1)[1] for o in args.overrides if o.startswith("output_dir=")), "runs/quickstart"))
    if adapter_dir(output_dir).exists():
        print(f"{adapter_dir(output_dir)} exists: skipping training (delete {output_dir} to train again)")
    else:
        train(recipe, args.overrides)
    from lima_lite.generate import compare_replies

    prompts = [c["messages"][0]["content"] for c in load_conversations("embedded:dev.jsonl")[:3]]
    for prompt, (base_reply, tuned_reply) in zip(prompts, compare_replies(adapter_dir(output_dir), prompts,
                                                                          max_new_tokens=args.max_new_tokens)):
        print(f"\n### Prompt\n{prompt}\n\n--- base model ---\n{base_reply}\n\n--- after LIMA fine-tuning ---\n{tuned_reply}")
    print(f"\nTalk to it: python -m lima_lite.chat --adapter {adapter_dir(output_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
