"""Padding-free batches (LIMA_DEFAULTS padding_free: true): examples concatenated into one row through TRL's
collator, each restarting its position ids and attending only to itself; no pad token is computed."""

import json

import pytest
import torch
from transformers import TrainerCallback

from helpers import IGNORE, dataset, overrides, padded_batch, peft_model
from lima_lite.memory.kernels import register_sdpa_varlen
from lima_lite.memory.loss import causal_lm_hidden, causal_lm_loss, head_logits, output_head
from lima_lite.train import train


def examples(vocab: int, lengths=(11, 7, 14, 1, 5)):
    padded = padded_batch(vocab, eot=None, lengths=lengths)
    return [{"input_ids": padded["input_ids"][i, :n].tolist(), "labels": padded["labels"][i, :n].tolist()}
            for i, n in enumerate(lengths)]


def padding_free(rows):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)


@pytest.mark.parametrize("attn", ["sdpa_varlen", "sdpa", "eager"])
def test_each_example_sees_only_itself(tiny_llama, attn):
    """Per-example logits of the padding-free row equal the example run alone (fp32, CPU), even with the
    model's config asking for a KV cache (with one, transformers would not see the boundaries)."""
    register_sdpa_varlen()
    model, _ = peft_model(tiny_llama, added_tokens=1, attn=attn)
    model.eval()
    model.config.use_cache = True
    rows = examples(model.config.vocab_size)
    collated = padding_free(rows)
    assert collated["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))  # no pad at all
    assert "attention_mask" not in collated
    head = output_head(model)
    with torch.no_grad():
        packed = head_logits(head, causal_lm_hidden(model, collated)[0])
        alone = torch.cat([head_logits(head, causal_lm_hidden(model, {"input_ids": torch.tensor([r["input_ids"]])})[0])
                           for r in rows])
        mixed = head_logits(head, causal_lm_hidden(model, {"input_ids": collated["input_ids"]})[0])
    assert (packed - alone).abs().max().item() < 1e-5
    assert (mixed - alone).abs().max().item() > 1e-2  # without position ids the examples do see each other


def lora_gradients(model, batch) -> dict:
    model.zero_grad()
    loss, _ = causal_lm_loss(model, batch)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_sdpa_varlen_equals_the_block_mask_in_loss_and_gradients(tiny_llama):
    """sdpa once per example (the default without flash-attention) against transformers' sdpa with the
    row's block-diagonal mask: the same loss and LoRA / trainable-row gradients (fp32, CPU), and
    scaled_dot_product_attention really runs per example, with no mask (the causal fast path)."""
    register_sdpa_varlen()
    batch = padding_free(examples(256))
    results = {}
    for attn in ("sdpa", "sdpa_varlen"):
        model, _ = peft_model(tiny_llama, added_tokens=1, attn=attn)
        calls = []
        real = torch.nn.functional.scaled_dot_product_attention

        def spy(query, key, value, attn_mask=None, **kwargs):
            calls.append((query.shape[-2], attn_mask is None))  # noqa: B023 (spy lives within this iteration)
            return real(query, key, value, attn_mask=attn_mask, **kwargs)  # noqa: B023

        torch.nn.functional.scaled_dot_product_attention = spy
        try:
            loss, _ = causal_lm_loss(model, batch)
            results[attn] = (loss.item(), lora_gradients(model, batch))
        finally:
            torch.nn.functional.scaled_dot_product_attention = real
        layers = model.config.num_hidden_layers
        if attn == "sdpa_varlen":
            assert calls[:5 * layers] == [(n, True) for _ in range(layers) for n in (11, 7, 14, 1, 5)]
        else:
            assert calls[0] == (38, False)  # the whole row, under its mask
    assert results["sdpa_varlen"][0] == pytest.approx(results["sdpa"][0], abs=1e-6)
    for name, grad in results["sdpa"][1].items():
        assert (results["sdpa_varlen"][1][name] - grad).abs().max().item() < 1e-5, name


def test_sdpa_varlen_keeps_a_sliding_window(tmp_path):
    """A Mistral-style sliding window (4 tokens) inside each example of a padding-free row: the same logits as
    each example alone under transformers' eager attention, which applies the window itself."""
    from transformers import MistralConfig, MistralForCausalLM

    register_sdpa_varlen()
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=4, max_position_embeddings=256)
    MistralForCausalLM(config).save_pretrained(tmp_path / "mistral")
    rows = examples(256)
    collated = padding_free(rows)
    logits = {}
    for attn in ("sdpa_varlen", "eager"):
        model = MistralForCausalLM.from_pretrained(tmp_path / "mistral", attn_implementation=attn).eval()
        with torch.no_grad():
            if attn == "eager":
                logits[attn] = torch.cat([model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows])
            else:
                inputs = {k: v for k, v in collated.items() if k != "labels"}
                logits[attn] = model(**inputs, use_cache=False).logits[0]
                model.config.sliding_window = None
                logits["no_window"] = model(**inputs, use_cache=False).logits[0]
    assert (logits["sdpa_varlen"] - logits["eager"]).abs().max().item() < 1e-5
    assert (logits["no_window"] - logits["eager"]).abs().max().item() > 1e-3  # the window matters here


def test_sdpa_varlen_with_padding_and_a_cache_is_sdpa(tiny_llama):
    """Batches with padding and generation with a KV cache go to transformers' sdpa unchanged."""
    from transformers import AutoModelForCausalLM

    register_sdpa_varlen()
    models = {attn: AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation=attn).eval()
              for attn in ("sdpa_varlen", "sdpa")}
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        out = {attn: m(input_ids=ids, attention_mask=mask).logits for attn, m in models.items()}
        generated = {attn: m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
                     for attn, m in models.items()}
    keep = mask.bool()
    assert (out["sdpa_varlen"][keep] - out["sdpa"][keep]).abs().max().item() < 1e-5
    assert torch.equal(generated["sdpa_varlen"], generated["sdpa"])


def test_padding_free_loss_is_the_unbatched_token_weighted_loss(tiny_llama):
    model, _ = peft_model(tiny_llama, added_tokens=1)
    rows = examples(model.config.vocab_size)
    total, count = 0.0, 0
    for row in rows:  # each example alone, weighted by its trained tokens
        alone = {"input_ids": torch.tensor([row["input_ids"]]), "labels": torch.tensor([row["labels"]])}
        n = sum(label != IGNORE for label in row["labels"][1:])
        if n:
            total, count = total + model(**alone, use_cache=False).loss.item() * n, count + n
    loss, stats = causal_lm_loss(model, padding_free(rows))
    assert stats["tokens"].item() == count
    assert loss.item() == pytest.approx(total / count, abs=1e-5)


class RowShapes(TrainerCallback):
    """Shapes of the input ids the model reads, recorded from the embedding layer."""

    def __init__(self):
        self.shapes = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.get_input_embeddings().register_forward_pre_hook(lambda m, a: self.shapes.append(tuple(a[0].shape)))


class Steps(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def test_default_max_length_trains_padding_free_without_pad(tiny_llama, tmp_path):
    """LIMA's default max_length (2,048) with padding_free: TRL alone refuses it after the model loaded."""
    shapes, steps = RowShapes(), Steps()
    settings = overrides(tiny_llama, dataset(tmp_path, n=5), tmp_path / "run", load_in_4bit=False, dtype="float32",
                         bf16=False)
    del settings["max_length"]
    run = train(None, settings, callbacks=[shapes, steps])
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["training"]["padding_free"] is True and recorded["training"]["max_length"] == 2048
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert all(rows == 1 for rows, _ in shapes.shapes)  # every micro-batch is one row
    assert recorded["steps_per_epoch"] == steps.steps == 3  # 5 examples, 2 per step: ceil(5 / 2)
    assert recorded["effective_batch"] == 2


def test_steps_per_epoch_is_right_under_packing(tiny_llama, tmp_path):
    """Packing puts the six short examples in one 256-token row: one step per epoch, not ceil(6 / 2) = 3."""
    steps = Steps()
    run = train(None, overrides(tiny_llama, dataset(tmp_path), tmp_path / "run", packing=True, load_in_4bit=False,
                                dtype="float32", bf16=False), callbacks=[steps])
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["steps_per_epoch"] == steps.steps
    assert steps.steps < 3
    assert recorded["effective_batch"] == 6 / steps.steps  # examples per step, LIMA's unit


def test_sequence_bounds_from_position_ids_equal_trls_cu_seq_lens():
    """Without TRL's cu_seq_lens (another collator), the example bounds come from the position ids."""
    from lima_lite.memory.kernels import sequence_bounds

    collated = padding_free(examples(256))
    query = torch.zeros(1, 2, collated["input_ids"].shape[1], 4)
    from_cu = sequence_bounds(query, query, None, {"cu_seq_lens_q": collated["cu_seq_lens_q"]})
    from_positions = sequence_bounds(query, query, None, {"position_ids": collated["position_ids"]})
    assert from_cu == from_positions == [(0, 11), (11, 18), (18, 32), (32, 33), (33, 38)]
    assert sequence_bounds(query, query, None, {"position_ids": torch.arange(38)[None]}) == [(0, 38)]
    assert sequence_bounds(query, query, torch.ones(1, 38), {"position_ids": collated["position_ids"]}) is None
