"""`lima-lite inspect`: validate a recipe's whole dataset, then show exactly what the model is trained on.

    $ lima-lite inspect recipes/quickstart.yaml --n 2
    $ lima-lite inspect recipes/llama-7b.yaml dataset_name=lima-1k.jsonl --json > ids.json
    $ lima-lite inspect recipes/quickstart.yaml --resolved    # the settings a run uses here, and why

Trained (labelled) spans are printed between [[ and ]]; the counts of kept, cut and dropped examples and
the end-of-turn token follow. It runs everything `lima-lite train` runs before loading the model.
"""

import sys

from lima_lite.files import print_json
from lima_lite.recipe_yaml import resolve_recipe
from lima_lite.template import IGNORE, mark_trained_spans
from lima_lite.train import prepare, recipe_parser


def main(argv=None) -> int:
    parser = recipe_parser("lima-lite inspect", "Validate a recipe's whole dataset, then show exactly what the model\n"
                           "is trained on: trained (labelled) spans are between [[ and ]].")
    parser.add_argument("--n", type=int, default=3, help="how many examples to show (default 3)")
    parser.add_argument("--json", action="store_true", help="print ids, tokens and labels (-100 = not trained) as JSON")
    parser.add_argument("--resolved", action="store_true", help="print the settings a run of this recipe uses on this "
                        "machine, each with the reason for its value (what to paste into a bug report)")
    args = parser.parse_args(argv)
    setup = prepare(resolve_recipe(args.recipe), args.overrides)
    if args.resolved:
        print(setup.resolved.describe())
        return 0
    tokenizer, shown = setup.tokenizer, setup.rows[: args.n]
    if args.json:
        print_json([{"id": r["id"], "ids": r["input_ids"], "tokens": tokenizer.convert_ids_to_tokens(r["input_ids"]),
                     "labels": r["labels"]} for r in shown])
        return 0
    for row in shown:
        trained = sum(label != IGNORE for label in row["labels"])
        print(f"=== {row['id']}: {len(row['input_ids'])} tokens, {trained} trained ===")
        print(mark_trained_spans(tokenizer, row["input_ids"], row["labels"]))
        print()
    counts, added = setup.report["train"], setup.report["added_tokens"]
    print(f"{counts['read']} conversations read: {counts['kept']} kept ({counts['cut']} cut at the length limit), "
          f"{counts['dropped']} dropped; {setup.template.chat_format} format, turn end {setup.template.eot_token!r}"
          + (f" (added: ids {added})" if added else " (already in the vocabulary)"))
    for drop in setup.report["dropped"][:10]:
        print(f"  dropped {drop['id']}: {drop['reason']} ({drop['tokens']} tokens)")
    return 0


if __name__ == "__main__":
    from lima_lite.entry import run

    sys.exit(run("lima_lite.inspection:main", sys.argv[1:]))
