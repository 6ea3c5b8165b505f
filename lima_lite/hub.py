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
    except Exception as error:
        raise LimaError(f"{name}: {hub_failure(name, error)}") from None


def hub_failure(name: str, error: Exception) -> str:
    """What went wrong fetching `name` from the Hub, and what to do, in one line."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        return f"gated on the Hub: accept its license at https://huggingface.co/{name}, then `hf auth login`"
    if isinstance(error, RepositoryNotFoundError):
        return "no such model on the Hub (or it is private: `hf auth login`); check the id, or pass a local folder"
    if isinstance(error, LocalEntryNotFoundError) or "connect" in type(error).__name__.lower():
        return (f"not a local folder, and the Hugging Face Hub cannot be reached (offline) with no cached copy: "
                f"download it where you have network (`hf download {name} --local-dir DIR`) and pass DIR")
    return f"fetching it from the Hugging Face Hub failed ({type(error).__name__}: {error}); or pass a local folder"
