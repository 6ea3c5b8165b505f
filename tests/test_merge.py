"""`lima-lite merge`: the standalone bf16 model gives the logits of base + adapter."""

import json
from pathlib import Path

import pytest
import torch

from lima_lite.cli import run
from lima_lite.merge import main
from test_chat import qa, train_tiny


@pytest.fixture(scope="module")
def strong_run(tiny_llama_tied, tmp_path_factory) -> Path:
    """A high learning rate, so the adapter moves the logits far more than bf16 rounding does."""
    return train_tiny(tiny_llama_tied, tmp_path_factory.mktemp("merge") / "run", [qa(i) for i in range(4)],
                      learning_rate=2e-2, max_steps=4)


def test_merged_logits_match_base_plus_adapter(strong_run, tiny_llama_tied, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert main([str(strong_run / "adapter"), "--out", str(out)]) == 0
    assert "Talk to it: lima-lite chat --base" in capsys.readouterr().out
    assert {"model.safetensors", "config.json", "tokenizer.json", "lima_template.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("adapter_*"))  # standalone: no peft files
    # The run trained on a full-precision base, so nothing was dequantized.
    assert json.loads((out / "lima_merge.json").read_text())["base_dequantized_from_4bit"] is False

    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16 and type(merged).__name__ == "LlamaForCausalLM"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_tied, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_tied, dtype=torch.float32),
                                             strong_run / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tokenizer("How do I water plant number 7? Once a week.")["input_ids"]])
    with torch.no_grad():
        expected = with_adapter(ids).logits
        got = merged(ids).logits.float()
        plain = base(ids).logits
    # Within bf16 tolerance of base + adapter (bf16 keeps 8 bits of mantissa: ~0.4 % per weight) ...
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    # ... while the adapter itself moved the logits by much more, so the LoRA really is in the weights.
    assert (expected - plain).abs().max() > 10 * (got - expected).abs().max()


def test_merge_refuses_to_overwrite_and_non_adapters(strong_run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    assert run("lima_lite.merge:main", [str(strong_run / "adapter"), "--out", str(taken)]) == 2
    assert run("lima_lite.merge:main", [str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "no adapter_config.json" in err


def test_merge_from_a_4bit_base_matches_the_4bit_base_plus_adapter(strong_run, tmp_path):
    """The QLoRA path: NF4 base dequantized, LoRA added; compared with the 4-bit base + adapter it was trained on."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lima_lite.model import get_model

    out = tmp_path / "merged-4bit"
    assert main([str(strong_run / "adapter"), "--out", str(out), "--from-4bit"]) == 0
    assert json.loads((out / "lima_merge.json").read_text())["base_dequantized_from_4bit"] is True
    merged = AutoModelForCausalLM.from_pretrained(out)
    base_path = json.loads((strong_run / "run.json").read_text())["base"]["path"]
    quantized = PeftModel.from_pretrained(get_model(base_path, load_in_4bit=True, dtype="bfloat16"), strong_run / "adapter")
    full = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    with torch.no_grad():
        expected = quantized(ids).logits.float()
        got = merged(ids).logits.float()
        unquantized = full(ids).logits
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    # The merged weights are the NF4 ones, not the original full-precision ones.
    assert (got - unquantized).abs().max() > (got - expected).abs().max()
