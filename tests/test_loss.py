"""lima_lite.memory.loss against the plain path (full logits + transformers' cross-entropy), fp32 on CPU.

The plain reference is the model's own forward with labels: PEFT's trainable-token rows and LoRA take
part there by construction, so equal losses and gradients mean the chunked loss sees them too.
"""

import pytest
import torch

from helpers import IGNORE, padded_batch, peft_model
from lima_lite.memory.kernels import activation_offloading, apply_liger_kernels, attention_implementation
from lima_lite.memory.loss import causal_lm_loss, chunked_cross_entropy, loss_path, output_head


def grads(model) -> dict:
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.requires_grad}


def plain_loss(model, inputs, num_items_in_batch=None):
    kwargs = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    return model(**inputs, use_cache=False, **kwargs).loss


def compare(model, inputs, num_items_in_batch=None, chunk_tokens=None):
    model.zero_grad()
    plain = plain_loss(model, inputs, num_items_in_batch)
    plain.backward()
    expected = grads(model)
    model.zero_grad()
    if chunk_tokens is None:
        ours, stats = causal_lm_loss(model, inputs, num_items_in_batch)
    else:
        from lima_lite.memory.loss import causal_lm_hidden

        hidden = causal_lm_hidden(model, inputs)
        ours, stats = chunked_cross_entropy(output_head(model), hidden, inputs["labels"], num_items_in_batch,
                                            chunk_tokens)
    ours.backward()
    got = grads(model)
    assert ours.item() == pytest.approx(plain.item(), abs=1e-5)
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-5, rtol=1e-4), name
    return expected, stats


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("eot", ["added", "reused"])
def test_loss_and_gradients_equal_the_plain_path(tiny_llama, tiny_llama_tied, tied, eot):
    model, added = peft_model(tiny_llama_tied if tied else tiny_llama, added_tokens=1 if eot == "added" else 0)
    eot_id = added[0] if added else 2  # reused: </s> / <|im_end|> already in the vocabulary
    inputs = padded_batch(model.config.vocab_size, eot_id)
    expected, stats = compare(model, inputs, chunk_tokens=5)  # 5-token chunks: several chunks per batch
    trained = [name for name in expected if "trainable_tokens_delta" in name]
    lora = [name for name in expected if "lora_" in name]
    assert lora and all(expected[name].abs().sum() > 0 for name in lora)
    if added:  # the EOT's rows are trained: embedding, and the untied head's own row
        assert len(trained) == (1 if tied else 2) and all(expected[name].abs().sum() > 0 for name in trained)
    else:
        assert not trained
    assert stats["tokens"].item() == sum(n - 3 for n in (11, 7, 14))


def test_accuracy_and_entropy_equal_trl_from_the_full_logits(tiny_llama):
    """The logged mean_token_accuracy and entropy: the chunks' sums equal TRL's own metrics computed from
    the full logits over the same trained positions."""
    from trl.trainer.utils import entropy_from_logits

    model, added = peft_model(tiny_llama, added_tokens=1)
    inputs = padded_batch(model.config.vocab_size, added[0])
    with torch.no_grad():
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits[:, :-1]
        labels = inputs["labels"][:, 1:]
        mask = labels != IGNORE
        expected_correct = (logits.argmax(-1) == labels)[mask].sum().item()
        expected_entropy = entropy_from_logits(logits)[mask].sum().item()
        _, stats = causal_lm_loss(model, inputs)  # one chunk
        from lima_lite.memory.loss import causal_lm_hidden

        _, chunked = chunked_cross_entropy(output_head(model), causal_lm_hidden(model, inputs), inputs["labels"],
                                           chunk_tokens=5)
    for got in (stats, chunked):
        assert got["correct"].item() == expected_correct
        assert got["entropy"].item() == pytest.approx(expected_entropy, rel=1e-5)
    assert 0 < expected_correct and 0 < expected_entropy  # neither sum is trivially 0


def test_lora_on_the_head_takes_part(tiny_llama):
    model, _ = peft_model(tiny_llama, added_tokens=0, lora_on_head=True)
    expected, _ = compare(model, padded_batch(model.config.vocab_size, None), chunk_tokens=4)
    assert any("lm_head.lora_" in name for name in expected)


def test_num_items_in_batch_is_transformers_gradient_accumulation(tiny_llama):
    """Two micro-batches normalised by the step's token count: each equals transformers', and their summed
    gradients equal one backward of the whole step's token mean."""
    model, added = peft_model(tiny_llama, added_tokens=1)
    vocab = model.config.vocab_size
    first, second = padded_batch(vocab, added[0], (9, 12), seed=1), padded_batch(vocab, added[0], (5, 16, 8), seed=2)
    step_tokens = sum((b["labels"][:, 1:] != IGNORE).sum() for b in (first, second))
    summed = None
    for inputs in (first, second):
        expected, _ = compare(model, inputs, num_items_in_batch=step_tokens)
        summed = expected if summed is None else {k: summed[k] + expected[k] for k in summed}
    # The whole step at once: every example padded to 16, one mean over the same trained tokens.
    longest = 16
    whole = {key: torch.cat([torch.nn.functional.pad(b[key], (0, longest - b[key].shape[1]),
                                                     value=IGNORE if key == "labels" else 0) for b in (first, second)])
             for key in first}
    model.zero_grad()
    loss, _ = causal_lm_loss(model, whole)
    loss.backward()
    for name, grad in grads(model).items():
        assert torch.allclose(grad, summed[name], atol=1e-5, rtol=1e-4), name


def test_no_trained_token_gives_a_differentiable_zero(tiny_llama):
    model, _ = peft_model(tiny_llama, added_tokens=1)
    inputs = padded_batch(model.config.vocab_size, None)
    inputs["labels"][:] = IGNORE
    loss, stats = causal_lm_loss(model, inputs)
    loss.backward()
    assert loss.item() == 0.0 and stats["tokens"].item() == 0


def test_cpu_fallbacks_say_so(tiny_llama):
    model, _ = peft_model(tiny_llama, added_tokens=1)
    path, line = loss_path(output_head(model), torch.device("cpu"))
    assert path == "chunked" and "chunked cross-entropy" in line and "no CUDA" in line
    assert apply_liger_kernels(model, enabled=True).startswith("Liger kernels: not used: no CUDA")
    assert apply_liger_kernels(model, enabled=False) == "Liger kernels: off (liger_kernels: false)"
    assert attention_implementation(None, cuda=False)[0] == "sdpa_varlen"
    assert attention_implementation("flash_attention_2", cuda=False) == (
        "sdpa_varlen", "attention: sdpa, once per example of the padding-free batch; flash-attention not used: no CUDA")
    assert attention_implementation("eager", cuda=False)[0] == "eager"
    assert attention_implementation("sdpa", cuda=False)[0] == "sdpa"
    assert activation_offloading(True, cuda=False)[0] is False
    assert activation_offloading(True, cuda=True)[0] is True


def test_cuda_fallbacks_without_packages(monkeypatch, tiny_llama):
    """On a GPU machine without liger-kernel or flash-attn: sdpa and the chunked loss, each saying why."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("liger_kernel", "flash_attn") else real(name, *a))
    model, _ = peft_model(tiny_llama, added_tokens=1)
    path, line = loss_path(output_head(model), torch.device("cuda"))
    assert path == "chunked" and "liger-kernel is not installed" in line
    assert attention_implementation(None, cuda=True) == (
        "sdpa_varlen", "attention: sdpa, once per example of the padding-free batch; flash-attention not used: "
        "flash-attn is not installed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_liger_path_equals_the_plain_path_on_cuda(tiny_llama):
    pytest.importorskip("liger_kernel")
    model, added = peft_model(tiny_llama, added_tokens=1)
    model.cuda()
    inputs = {k: v.cuda() for k, v in padded_batch(model.config.vocab_size, added[0]).items()}
    assert loss_path(output_head(model), torch.device("cuda"))[0] == "liger"
    plain = plain_loss(model, inputs)
    ours, _ = causal_lm_loss(model, inputs, path="liger")
    assert ours.item() == pytest.approx(plain.item(), abs=1e-4)


def test_chunked_loss_memory_does_not_grow_with_the_tokens():
    """Live bytes of the loss's forward and backward (oracles/loss_bytes.py's count): the plain path's grow with
    the micro-batch (full logits), the chunked loss's stay at a chunk's worth, many times smaller."""

    from oracles.loss_bytes import chunked, head, peak_bytes, plain

    vocab, hidden = 4000, 64
    lm_head = head(vocab, hidden, trainable_token=True)
    peaks = {}
    for tokens in (2048, 4096):
        generator = torch.Generator().manual_seed(0)
        states = torch.randn(1, tokens, hidden, generator=generator)
        labels = torch.randint(0, vocab, (1, tokens), generator=generator)
        peaks[tokens] = {name: peak_bytes(fn, lm_head, states, labels)[0] for name, fn in (("plain", plain),
                                                                                            ("chunked", chunked))}
    assert peaks[4096]["plain"] > 1.9 * peaks[2048]["plain"]
    assert peaks[4096]["chunked"] < 1.2 * peaks[2048]["chunked"]
    assert peaks[4096]["plain"] > 6 * peaks[4096]["chunked"]


def test_hidden_state_keeps_no_layers_output():
    """The loss reads the decoder's last state by a hook, not output_hidden_states=True: that kept every layer's
    output until the forward returned (the checkpoints offloading moves to CPU memory among them), and
    accelerate's bf16 autocast wrapper copied each to fp32 on the way out. A 12-layer model's forward peak stays
    at about 10 hidden states: one layer's work (it was 39: 13 states in bf16 and their 13 fp32 copies)."""

    from accelerate.utils import convert_outputs_to_fp32
    from transformers import LlamaConfig, LlamaForCausalLM

    from lima_lite.memory.loss import causal_lm_hidden
    from oracles.step_bytes import LiveBytes

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=1024, intermediate_size=64, num_hidden_layers=12,
                                         num_attention_heads=8, vocab_size=64, use_cache=False)).to(torch.bfloat16)
    model.forward = convert_outputs_to_fp32(model.forward)  # as accelerate wraps a bf16 autocast model
    tokens, hidden = 256, 1024
    inputs = {"input_ids": torch.randint(0, 64, (1, tokens)), "labels": torch.randint(0, 64, (1, tokens))}
    with torch.no_grad():
        counter = LiveBytes()
        for param in model.parameters():
            counter.track(param)  # the weights (their views, the transposes, are not new bytes)
        weights = counter.now
        with counter:
            state = causal_lm_hidden(model, inputs)
    assert state.shape == (1, tokens, hidden)
    assert torch.equal(state, model.model(input_ids=inputs["input_ids"]).last_hidden_state)
    one_state = tokens * hidden * 2  # bf16
    assert counter.peak - weights < 16 * one_state, (counter.peak - weights) / one_state
