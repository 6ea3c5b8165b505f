"""Padding-free batches (LIMA_DEFAULTS padding_free: true): examples concatenated into one row through TRL's
collator, each restarting its position ids and attending only to itself; no pad token is computed."""

import json

import pytest
import torch
from transformers import TrainerCallback

from lima_lite.loss import causal_lm_hidden, causal_lm_loss, head_logits, output_head
from lima_lite.train import train
from test_loss import batch as padded_batch
from test_loss import peft_model
from test_train import dataset, overrides

IGNORE = -100


def examples(vocab: int, lengths=(11, 7, 14, 1, 5)):
    padded = padded_batch(vocab, eot=None, lengths=lengths)
    return [{"input_ids": padded["input_ids"][i, :n].tolist(), "labels": padded["labels"][i, :n].tolist()}
            for i, n in enumerate(lengths)]


def padding_free(rows):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_each_example_sees_only_itself(tiny_llama, attn):
    """Per-example logits of the padding-free row equal the example run alone (fp32, CPU), even with the
    model's config asking for a KV cache (with one, transformers would not see the boundaries)."""
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
