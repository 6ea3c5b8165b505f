"""The Hugging Face Hub: resolve model ids to local folders (cached), and say clearly when it can't.

    >>> resolve_model_path("runs/quickstart/adapter")        # a local folder: itself
    >>> resolve_model_path("someone/llama-7b-lima-qlora")    # a Hub id: downloaded once, then cached
"""

from pathlib import Path

from lima_lite import LimaError
from lima_lite.config import EMBEDDED_BASE
from lima_lite.model import HUB_ID


def resolve_model_path(name: str) -> str:
    """A local folder for `name`: itself if it exists, else a snapshot of the Hub repo of that id."""
    if name == EMBEDDED_BASE or Path(name).expanduser().exists():
        return str(Path(name).expanduser()) if name != EMBEDDED_BASE else name
    if not HUB_ID.match(name):
        raise LimaError(f"{name}: no such folder, and not a Hub id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja",
                                                       "*.tiktoken", "*.md"])
    except Exception as error:  # offline, gated, missing: all answered the same way
        raise LimaError(
            f"{name}: not a local folder, and fetching it from the Hugging Face Hub failed ({type(error).__name__}). "
            f"Log in (`hf auth login`) if it is gated or private, download it where you have network "
            f"(`hf download {name} --local-dir DIR`), or pass a local path."
        ) from None
