"""lima_lite: reproduce LIMA (Less Is More for Alignment) with QLoRA on one GPU.

    $ lima-lite quickstart                  # train + compare on the embedded SmolLM2, CPU, minutes
    $ lima-lite train recipes/llama-7b.yaml model_name_or_path=/models/llama-7b
    $ python -m lima_lite.chat --adapter runs/llama-7b/adapter
"""

__version__ = "0.1.0"


class LimaError(Exception):
    """An error in the user's input (data, recipe, paths). The CLI prints it without a traceback."""
