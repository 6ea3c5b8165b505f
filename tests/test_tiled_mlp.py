"""The tiled MLP (lima_lite.memory.rewrites.tile_mlp): the same loss and LoRA gradients as the whole MLP (fp32 and the 4-bit
path, padding-free batches, inside gradient checkpointing), and a lower counted peak, by about what the plan says."""

from pathlib import Path

import pytest
import torch

from helpers import dropout_lora_llama, loss_and_grads, padding_free_batch, tiny_fp32_llama, with_lora
from lima_lite.memory.rewrites import tile_mlp
from lima_lite.model import get_model

ROOT = Path(__file__).resolve().parents[1]


def assert_same(got, want, atol: float):
    (loss, grads), (want_loss, want_grads) = got, want
    assert abs(loss - want_loss) <= atol * max(1.0, abs(want_loss))
    assert grads.keys() == want_grads.keys() and len(grads) == 2 * 7 * 2  # every LoRA A and B of 2 layers
    mlp = [name for name in grads if "mlp" in name]
    assert mlp and all(want_grads[name].abs().max() > 0 for name in mlp)  # the MLP's LoRA did get gradients
    for name, grad in grads.items():
        assert torch.allclose(grad, want_grads[name], atol=atol, rtol=atol), name


@pytest.mark.parametrize("checkpointing", [True, False])
def test_same_loss_and_lora_gradients_fp32(checkpointing):
    """fp32, padding-free (3 examples, 150 tokens), chunks of 16 tokens (not a divisor): equal within 1e-5."""
    model = tiny_fp32_llama()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = with_lora(model)
    model.train()
    batch = padding_free_batch(300, [40, 77, 33])
    whole = loss_and_grads(model, batch)
    tile_mlp(model, 16)
    assert_same(loss_and_grads(model, batch), whole, atol=1e-5)


def test_same_loss_and_lora_gradients_4bit(tiny_llama):
    """The 4-bit path (bitsandbytes NF4 Linear4bit on the CPU, fp32 compute, LoRA on every projection),
    gradient checkpointing as `train` sets it, a padded batch of 2: equal within float tolerance."""
    from peft import prepare_model_for_kbit_training

    model = get_model(str(tiny_llama), load_in_4bit=True, dtype="float32")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    assert type(model.model.layers[0].mlp.gate_proj).__name__ == "Linear4bit"
    model = with_lora(model)
    assert type(model.base_model.model.model.layers[0].mlp.gate_proj.base_layer).__name__ == "Linear4bit"
    model.train()
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (2, 60), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "labels": ids}
    whole = loss_and_grads(model, batch)
    tile_mlp(model, 25)
    assert_same(loss_and_grads(model, batch), whole, atol=1e-4)


def chunks_kept(model, chunk_tokens: int) -> None:
    """The reference: each MLP over the same chunks in the same order, nothing recomputed (every chunk's
    activations kept for the backward, so the backward sees the forward's own dropout masks)."""
    from lima_lite.model import decoder_layers

    for layer in decoder_layers(model):
        def forward(x, whole=layer.mlp.forward):
            return torch.cat([whole(part) for part in x.reshape(-1, x.shape[-1]).split(chunk_tokens)]).reshape(x.shape)
        layer.mlp.forward = forward


@pytest.mark.parametrize("checkpointing", [False, True])
def test_dropout_is_recomputed_with_the_same_masks(checkpointing):
    """LoRA dropout and residual dropout on: the tiled MLP (with or without gradient checkpointing around the
    layer) gives the loss and gradients of the same chunks kept without recomputation, from the same seed:
    every recomputation drew the forward's masks."""
    runs = []
    for tile in (chunks_kept, tile_mlp):
        model = dropout_lora_llama(checkpointing)
        tile(model, 16)
        model.train()
        runs.append(loss_and_grads(model, padding_free_batch(300, [50, 70]), seed=5))
    assert_same(runs[1], runs[0], atol=1e-5)
    model = with_lora(tiny_fp32_llama(), dropout=0.3)
    model.train()
    assert loss_and_grads(model, padding_free_batch(300, [50, 70]), seed=5)[0] != runs[0][0]  # dropout was on


def test_no_grad_forward_is_the_same():
    model = tiny_fp32_llama().eval()
    batch = padding_free_batch(300, [30, 45])
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        tile_mlp(model, 8)
        got = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_counted_peak_is_lower_by_about_what_the_plan_says(tmp_path):
    """The plan's calibration (bench/plan_calibration.py: live tensor bytes counted in a real training step, 4-bit,
    LoRA, bf16 autocast, gradient checkpointing) on one 2,048-token example, MLP 3.5x the hidden size as in
    Llama-3.1-8B: tiling by 256 tokens lowers the counted peak by roughly what the plan predicts, and the plan
    stays above the counted peak with tiling."""
    from oracles.step_bytes import compare

    shape = dict(hidden_size=128, intermediate_size=448, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000)
    whole, tiled = (compare("tiled", shape, 1, 2048, True, True, root=str(tmp_path), mlp_chunk_tokens=chunk)["rows"]["peak"]
                    for chunk in (0, 256))
    counted, planned = whole["counted"] - tiled["counted"], whole["planned"] - tiled["planned"]
    assert counted > 0.4 * whole["counted"]  # the MLP's intermediates were most of this step's peak
    assert 0.75 < counted / planned < 1.4, (counted, planned)
    assert 0 <= tiled["error"] < 0.15, tiled


def test_lean_norms_survive_train_and_eval_switches(tiny_llama):
    """transformers kernelizes a model by default when the `kernels` package is installed, and resets every
    kernelized layer's forward (RMSNorm's among them) at each train()/eval() switch: get_model turns that off,
    so lean_norms stays in place through the Trainer's model.train()."""
    from lima_lite.memory.rewrites import lean_norms

    model = get_model(str(tiny_llama), load_in_4bit=True, dtype="float32")
    assert not model.use_kernels
    count = lean_norms(model, 16)
    model.eval()
    model.train()
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    assert count == len(norms) == 2 * model.config.num_hidden_layers + 1
    assert all("forward" in norm.__dict__ for norm in norms)
