"""Lean activations (lima_lite.memory.rewrites.lean_norms and lean_lora): the same loss and LoRA gradients as without (fp32
and the 4-bit path, padding-free, inside gradient checkpointing, with LoRA and residual dropout, with the
checkpoints offloaded), and what they keep for the backward."""

import contextlib

import pytest
import torch

from helpers import dropout_lora_llama, loss_and_grads, padding_free_batch, tiny_fp32_llama, with_lora
from lima_lite.memory.rewrites import lean_lora, lean_norms, tile_mlp
from lima_lite.model import get_model


def assert_same(got, want, atol: float, layers: int = 2):
    (loss, grads), (want_loss, want_grads) = got, want
    assert abs(loss - want_loss) <= atol * max(1.0, abs(want_loss))
    assert grads.keys() == want_grads.keys() and len(grads) == 2 * 7 * layers  # every LoRA A and B
    assert all(want_grads[name].abs().max() > 0 for name in grads)
    for name, grad in grads.items():
        assert torch.allclose(grad, want_grads[name], atol=atol, rtol=atol), name


def lean(model, chunk_tokens: int, tile: bool) -> None:
    """What `train` does with lean_activations (and, with `tile`, mlp_chunk_tokens) on a peft model."""
    if tile:
        tile_mlp(model, chunk_tokens)
    assert lean_norms(model, chunk_tokens) == 2 * 2 + 1
    assert lean_lora(model) == 7 * 2


@pytest.mark.parametrize("checkpointing", [True, False])
@pytest.mark.parametrize("tile", [False, True])
def test_same_loss_and_lora_gradients_fp32_with_dropout(checkpointing, tile):
    """fp32, padding-free (3 examples, 150 tokens), chunks of 16 tokens (not a divisor), LoRA dropout 0.3 and
    residual dropout 0.3, from the same seed: equal within 1e-5, so every recomputed dropout drew the forward's
    mask (a recomputation with another mask changes the gradients far more than that)."""
    runs = []
    for make_lean in (False, True):
        model = dropout_lora_llama(checkpointing)
        if make_lean:
            lean(model, 16, tile)
        elif tile:
            tile_mlp(model, 16)
        model.train()
        runs.append(loss_and_grads(model, padding_free_batch(300, [40, 77, 33]), seed=3))
    assert_same(runs[1], runs[0], atol=1e-5)
    model = with_lora(tiny_fp32_llama(), dropout=0.3)
    model.train()
    assert loss_and_grads(model, padding_free_batch(300, [40, 77, 33]), seed=3)[0] != runs[0][0]  # dropout was on


def test_same_loss_and_lora_gradients_4bit(tiny_llama):
    """The 4-bit path (bitsandbytes NF4 on the CPU, fp32 compute, fp32 norms from prepare_model_for_kbit_training),
    gradient checkpointing as `train` sets it, LoRA dropout, the MLP tiled, a padded batch of 2: equal within float
    tolerance."""
    from peft import prepare_model_for_kbit_training

    model = get_model(str(tiny_llama), load_in_4bit=True, dtype="float32")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = with_lora(model, dropout=0.1)
    model.train()
    ids = torch.randint(3, model.config.vocab_size, (2, 60), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "labels": ids}
    tile_mlp(model, 25)  # both tiled: a tiled MLP draws its dropout masks chunk by chunk, in another order
    whole = loss_and_grads(model, batch, seed=4)
    lean(model, 25, tile=False)
    assert_same(loss_and_grads(model, batch, seed=4), whole, atol=1e-4)


def test_qwen3_per_head_norms():
    """Qwen 3 normalizes q and k per head (q_norm, k_norm over head_dim): those are recomputed too, per row of
    head_dim values, and the numbers stay the same."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=300,
                                         use_cache=False))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = with_lora(model, dropout=0.2)
    model.train()
    batch = padding_free_batch(300, [30, 50])
    whole = loss_and_grads(model, batch, seed=1)
    assert lean_norms(model, 16) == 2 * 4 + 1
    lean_lora(model)
    assert_same(loss_and_grads(model, batch, seed=1), whole, atol=1e-5)


def test_no_grad_forward_is_the_same_and_lean_lora_is_idempotent():
    model = with_lora(tiny_fp32_llama(), dropout=0.2).eval()
    batch = padding_free_batch(300, [30, 45])
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        lean(model, 8, tile=False)
        assert lean_lora(model) == 7 * 2  # a second call wraps nothing twice
        got = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_with_offloaded_checkpoints():
    """Checkpoints offloaded as TRL does (oracles.step_bytes.HostOffload) and by torch's save_on_cpu, with lean
    activations and the tiled MLP nested inside each layer's checkpoint: the loss and LoRA gradients of the
    plain run, within 1e-5."""
    from oracles.step_bytes import HostOffload

    model = tiny_fp32_llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = with_lora(model, dropout=0.0)
    model.train()
    batch = padding_free_batch(300, [70, 50])
    want = loss_and_grads(model, batch)
    lean(model, 16, tile=True)
    offload = HostOffload()
    for context in (offload, torch.autograd.graph.save_on_cpu(), contextlib.nullcontext()):
        with context:
            got = loss_and_grads(model, batch)
        assert_same(got, want, atol=1e-5)
    assert offload.host_peak > 0


@pytest.mark.slow
def test_keeps_less_per_token(tmp_path):
    """The plan's calibration (live tensor bytes in a real training step: 4-bit, LoRA with dropout, LIMA's residual
    dropout, bf16 autocast, bf16 layers, checkpoints offloaded, MLP tiled) at two lengths: lean activations keep
    about half the bytes per token (0.52x counted), and the plan stays above the counted peak (within 15 % with
    them, 20 % without)."""
    from oracles.step_bytes import OFFLOAD_SHAPES, compare

    shape = OFFLOAD_SHAPES["llama-h128-L10"]
    per_token, errors = {}, {}
    for lean_on in (False, True):
        rows = [compare("lean", shape, 1, length, True, True, root=str(tmp_path), fp32_layers=False,
                        activation_offloading=True, mlp_chunk_tokens=256, lean_activations=lean_on)["rows"]["peak"]
                for length in (2048, 4096)]
        per_token[lean_on] = (rows[1]["counted"] - rows[0]["counted"]) / 2048
        errors[lean_on] = [row["error"] for row in rows]
    assert per_token[True] < 0.6 * per_token[False], per_token
    assert all(0 <= error < 0.15 for error in errors[True]), errors
    # without lean activations the plan sums each part of a recomputed layer as if all were alive at once: above
    assert all(0 <= error < 0.2 for error in errors[False]), errors


def test_train_applies_lean_activations(tiny_llama, tmp_path):
    """lean_activations=true through `train`'s trainer (4-bit base, LoRA by TRL, fp32 layers): every norm and every
    LoRA layer is recomputed, with and without the tiled MLP, and a step trains (finite loss, LoRA updated)."""
    from helpers import dataset, overrides
    from lima_lite.model import decoder_layers
    from lima_lite.train import prepare
    from lima_lite.trainer import build_trainer

    for chunk in (0, 8):
        setup = prepare(None, overrides(tiny_llama, dataset(tmp_path), tmp_path / f"run-{chunk}",
                                        lean_activations=True, mlp_chunk_tokens=chunk, max_steps=1))
        trainer, _ = build_trainer(setup)
        norms = [m for m in trainer.model.modules() if type(m).__name__.endswith("RMSNorm")]
        assert len(norms) == 5 and all("forward" in norm.__dict__ for norm in norms)
        attention = decoder_layers(trainer.model)[0].self_attn.q_proj
        assert "forward" in attention.lora_A["default"].__dict__  # recomputed with its dropout
        assert ("forward" in decoder_layers(trainer.model)[0].mlp.__dict__) == bool(chunk)  # tiled or not
        before = attention.lora_B["default"].weight.detach().clone()
        result = trainer.train()
        assert torch.isfinite(torch.tensor(result.training_loss))
        assert not torch.equal(attention.lora_B["default"].weight, before)
