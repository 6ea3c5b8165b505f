"""The `lima-lite` command: one dict from command to main function, imported only when used.

    $ lima-lite --help
    $ lima-lite train recipes/quickstart.yaml num_train_epochs=3

Every command's `main(argv)` is also importable, so `python -m lima_lite.chat` is `lima-lite chat`.
Heavy libraries (torch, transformers, trl, gradio) are imported inside the commands, so `--help` is instant.
"""

import sys

from lima_lite import __version__
from lima_lite.entry import run

# command -> ("module:function", one-line summary)
COMMANDS = {
    "quickstart": ("lima_lite.quickstart:main", "train the quick-start recipe on the embedded model and compare"),
    "train": ("lima_lite.train:main", "fine-tune a base model with the LIMA recipe (QLoRA)"),
    "plan": ("lima_lite.memory.plan:main", "predict a recipe's peak GPU memory from config.json: components, fit, largest batch"),
    "inspect": ("lima_lite.inspection:main", "validate a recipe's data and show exactly what is trained"),
    "chat": ("lima_lite.chat:main", "talk to a base model or an adapter in the terminal"),
    "ui": ("lima_lite.app.ui:main", "the Gradio app: train, chat, compare two models, judge blind (ui/app.py)"),
    "push": ("lima_lite.push:main", "write a model card and upload an adapter to the Hugging Face Hub"),
    "merge": ("lima_lite.merge:main", "merge an adapter into its base: one standalone model"),
    "export": ("lima_lite.export:main", "export gguf: one GGUF that stops at the trained turn end, plus an Ollama Modelfile"),
    "serve": ("lima_lite.serve:main", "an OpenAI-compatible endpoint over a GGUF (llama.cpp) or a run (transformers)"),
    "curate": ("lima_lite.curate:main", "build a LIMA-style set from Stack Exchange, wikiHow or Reddit dumps"),
    "select": ("lima_lite.curate.select:main", "choose k examples: longest, random, quality (judge) or diversity"),
    "eval": ("lima_lite.evaluate.cli:main",
             "answers, judges (pairwise, Likert, absolute, knowledge, human), epoch choice, report"),
    "env": ("lima_lite.env:main", "what lima_lite will do on this machine: versions, CPU/GPU, precision, fast paths"),
    "data": ("lima_lite.data:main", "data tools: `data stats` (a set at a glance), `data mix` (the 1,030 variant), "
                                          "`data overlap` (train/eval duplicates)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"lima-lite {__version__}: reproduce LIMA with QLoRA on one GPU", "", "usage: lima-lite COMMAND [ARGS ...]", ""]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `lima-lite COMMAND --help` for a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run(COMMANDS[argv[0]][0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
