"""`lima-lite merge`: the standalone bf16 model gives the logits of base + adapter."""

import json
from pathlib import Path

import pytest
import torch

from helpers import qa, train_tiny
from lima_lite.entry import run
from lima_lite.merge import main
from lima_lite.template import ChatTemplate


@pytest.fixture(scope="module")
def strong_run(tiny_llama_tied, tmp_path_factory) -> Path:
    """A high learning rate, so the adapter moves the logits far more than bf16 rounding does."""
    return train_tiny(tiny_llama_tied, tmp_path_factory.mktemp("merge") / "run", [qa(i) for i in range(4)],
                      learning_rate=2e-2, max_steps=4)


def test_merged_logits_match_base_plus_adapter(strong_run, tiny_llama_tied, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert main([str(strong_run / "adapter"), "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert "Talk to it: lima-lite chat --base" in capsys.readouterr().out
    written = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "lima_template.json"} <= written
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


@pytest.fixture(scope="module")
def qlora_run(tiny_llama_tied, tmp_path_factory) -> Path:
    """The same, trained as QLoRA trains: NF4 base, bf16 compute."""
    return train_tiny(tiny_llama_tied, tmp_path_factory.mktemp("merge-4bit") / "run", [qa(i) for i in range(4)],
                      learning_rate=2e-2, max_steps=4, load_in_4bit=True, dtype="bfloat16", bf16=True)


def test_merge_from_a_4bit_base_matches_the_4bit_base_plus_adapter(qlora_run, tmp_path):
    """The QLoRA path: NF4 base dequantized, LoRA added; compared with the 4-bit base + adapter it was trained on."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lima_lite.model import get_model

    out = tmp_path / "merged-4bit"
    assert json.loads((qlora_run / "run.json").read_text())["model"]["load_in_4bit"] is True
    assert main([str(qlora_run / "adapter"), "--out", str(out), "--from-4bit"]) == 0
    assert json.loads((out / "lima_merge.json").read_text())["base_dequantized_from_4bit"] is True
    merged = AutoModelForCausalLM.from_pretrained(out)
    base_path = json.loads((qlora_run / "run.json").read_text())["base"]["path"]
    quantized = PeftModel.from_pretrained(get_model(base_path, load_in_4bit=True, dtype="bfloat16"),
                                          qlora_run / "adapter")
    full = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    with torch.no_grad():
        expected = quantized(ids).logits.float()
        got = merged(ids).logits.float()
        unquantized = full(ids).logits
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    # The merged weights are the NF4 ones, not the original full-precision ones.
    assert (got - unquantized).abs().max() > (got - expected).abs().max()


@pytest.fixture(scope="module")
def added_eot_run(tiny_llama, tmp_path_factory) -> Path:
    """LIMA's format on a base whose eos (</s>) is not the turn end: <|eot|> is added and trained."""
    return train_tiny(tiny_llama, tmp_path_factory.mktemp("merge-eot") / "run", [qa(i) for i in range(4)],
                      eot_token="<|eot|>", learning_rate=2e-2, max_steps=4)


def test_merged_model_stops_at_the_trained_turn_end_in_plain_transformers(added_eot_run, tmp_path):
    """Plain transformers generate(), no lima_lite code: it stops when the turn end is sampled.

    The turn end is forced at the third new token, so the check does not depend on what a 4-step model
    learned; a merge that kept the base's eos (</s>) would run on to max_new_tokens.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor

    out = tmp_path / "merged"
    assert main([str(added_eot_run / "adapter"), "--out", str(out)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    eot = tokenizer.convert_tokens_to_ids("<|eot|>")
    base_path = json.loads((added_eot_run / "run.json").read_text())["base"]["path"]
    base_eos = AutoTokenizer.from_pretrained(base_path).eos_token_id
    assert GenerationConfig.from_pretrained(out).eos_token_id == [eot, base_eos]
    assert tokenizer.eos_token == "<|eot|>" and tokenizer.pad_token_id not in (eot, base_eos)
    # the tokenizer's chat template renders LIMA's format: content, then <|eot|>, no role words
    rendered = tokenizer.apply_chat_template(qa(1), tokenize=False)
    assert rendered == qa(1)[0]["content"] + "<|eot|>" + qa(1)[1]["content"] + "<|eot|>"

    class TurnEndAtThirdToken(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == prompt.shape[1] + 2:
                scores[:] = -float("inf")
                scores[:, eot] = 0.0
            else:
                scores[:, eot] = -float("inf")
            return scores

    model = AutoModelForCausalLM.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(qa(1)[:1], return_tensors="pt", return_dict=True)["input_ids"]
    output = model.generate(prompt, max_new_tokens=20, do_sample=False, logits_processor=[TurnEndAtThirdToken()])
    assert output[0, prompt.shape[1]:].tolist()[-1] == eot and output.shape[1] == prompt.shape[1] + 3


def test_merge_of_a_native_adapter_keeps_the_bases_format_and_stops_at_its_turn_end(tmp_path):
    """Llama 3's format (tiny base with its tokens and template): eos <|end_of_text|>, turn end <|eot_id|>."""
    from transformers import AutoTokenizer, GenerationConfig

    from families import LLAMA3, build_family_model
    from helpers import sample_texts

    base = build_family_model(tmp_path / "llama3", "llama3", sample_texts())
    run = train_tiny(base, tmp_path / "run", [qa(i) for i in range(4)], eot_token="<|eot_id|>", chat_format="native")
    out = tmp_path / "merged"
    assert main([str(run / "adapter"), "--out", str(out)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    eot, end_of_text = tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    assert GenerationConfig.from_pretrained(out).eos_token_id == [eot, end_of_text]
    # the base's own template, after the prelude that keeps typed special text as text (test_injection)
    assert tokenizer.chat_template.endswith(LLAMA3) and tokenizer.eos_token == "<|eot_id|>"
    assert tokenizer.chat_template == ChatTemplate.load(run / "adapter").jinja()
    assert ChatTemplate.load(out).chat_format == "native"
    assert json.loads((out / "lima_merge.json").read_text())["eot_token"] == "<|eot_id|>"
