"""Shared fixtures: a tiny LLaMA (random weights) with a BPE tokenizer trained here, saved to a folder.

Everything is built in the test session itself: no network, no downloaded weights.
"""

import os
from pathlib import Path

import pytest

from helpers import qa, sample_texts, save_tiny_llama, train_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def build_tiny_llama(folder: Path, tie_word_embeddings: bool = False, eos: str = "</s>", extra_special=(),
                     vocab_size: int = 512) -> Path:
    """A 2-layer LLaMA (hidden 64) with a `vocab_size`-token byte-level BPE tokenizer, saved to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", *extra_special]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(sample_texts(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token=eos, unk_token="<unk>")
    return save_tiny_llama(folder, tokenizer, tie_word_embeddings)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Untied embeddings, like LLaMA-1; no EOT token in its vocabulary."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama_tied(tmp_path_factory) -> Path:
    """Tied embeddings and an existing end-of-turn token, like SmolLM2/ChatML."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-tied"), tie_word_embeddings=True,
                            eos="<|im_end|>", extra_special=("<|im_end|>",))


@pytest.fixture(scope="session")
def tiny_llama_700(tmp_path_factory) -> Path:
    """tiny_llama_tied's shape and turn end over another vocabulary: a tokenizer of 700 tokens."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-700"), tie_word_embeddings=True, eos="<|im_end|>",
                            extra_special=("<|im_end|>",), vocab_size=700)


@pytest.fixture(scope="session")
def tiny_run(tiny_llama_tied, tmp_path_factory) -> Path:
    """Two steps on 4 watering questions over the tied tiny LLaMA, its <|im_end|> the turn end: one run folder
    shared by the chat, push and injection tests (they only read it, or write beside the adapter)."""
    return train_tiny(tiny_llama_tied, tmp_path_factory.mktemp("tiny-run") / "run", [qa(i) for i in range(4)])


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    """The quick-start recipe, as `lima-lite quickstart` trains it, on the real embedded SmolLM2 (~6 minutes on
    2 cores).

    Shared by every end-to-end test that needs a real adapter: `quickstart_run / "adapter"`.
    """
    from lima_lite.train import train

    output_dir = tmp_path_factory.mktemp("quickstart") / "run"
    return train(ROOT / "recipes" / "quickstart.yaml", [f"output_dir={output_dir}"])


@pytest.fixture(scope="module")
def tiny_adapter(tiny_llama_tied, tmp_path_factory) -> Path:
    """An adapter of 2 steps on 4 questions over the tied tiny LLaMA: what the bad-input cases load or damage
    (a copy). One per test module, as each module may damage its own."""
    return train_tiny(tiny_llama_tied, tmp_path_factory.mktemp("bad-inputs") / "run", [qa(i) for i in range(4)]) / "adapter"
