"""Training on tiny LLaMAs: the 4-bit QLoRA path, the EOT rows, residual dropout, LIMA's optimizer and schedule,
and packing. Each test trains for a few steps on CPU in seconds."""

import json
from itertools import pairwise

import pytest
import torch
from safetensors import safe_open
from transformers import TrainerCallback

from helpers import dataset, overrides
from lima_lite.generate import load_engine
from lima_lite.model import add_residual_dropout, get_model, get_tokenizer, residual_dropout_rates
from lima_lite.train import train


class Snapshot(TrainerCallback):
    """Copies of every parameter and buffer before and after training, and the LR used at each step."""

    def __init__(self):
        self.before, self.after, self.lrs, self.optimizer = {}, {}, [], None

    @staticmethod
    def state(model):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = self.state(model)

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer = optimizer
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = self.state(model)


def test_4bit_qlora_trains_lora_and_leaves_the_base(tiny_llama, tmp_path):
    snap = Snapshot()
    run = train(None, overrides(tiny_llama, dataset(tmp_path), tmp_path / "run", max_steps=3, load_in_4bit=True),
                callbacks=[snap])
    quantized = [k for k in snap.before if k.endswith("q_proj.base_layer.weight")]
    assert quantized and snap.before[quantized[0]].dtype == torch.uint8  # really NF4-packed
    lora = [k for k in snap.before if "lora_" in k]
    base = [k for k in snap.before if "lora_" not in k and "trainable_tokens" not in k]
    assert lora and base
    assert all(torch.equal(snap.before[k], snap.after[k]) for k in base)
    assert any(not torch.equal(snap.before[k], snap.after[k]) for k in lora if "lora_B" in k)
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "epoch-01").is_dir()


class Dtypes(TrainerCallback):
    """Dtypes of the unquantized weights and of the hidden states the loss reads, at the first step."""

    def __init__(self):
        self.weights, self.hidden = {}, []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        for name, param in model.named_parameters():
            if param.is_floating_point() and not param.requires_grad:
                self.weights[name] = param.dtype
        model.get_base_model().model.norm.register_forward_hook(lambda m, a, out: self.hidden.append(out.dtype))


@pytest.mark.parametrize("fp32_layers,bf16", [(True, True), (False, True), (False, False)])
def test_4bit_layers_in_fp32_or_bf16(tiny_llama, tmp_path, fp32_layers, bf16):
    """fp32_layers: true keeps norms, embeddings and head in fp32 (prepare_model_for_kbit_training); false
    keeps them, and the residual stream, in bf16, with or without bf16 autocast; both train and save."""
    snap, dtypes = Snapshot(), Dtypes()
    run = train(None, overrides(tiny_llama, dataset(tmp_path), tmp_path / "run", max_steps=2, load_in_4bit=True,
                                fp32_layers=fp32_layers, dtype="bfloat16", bf16=bf16), callbacks=[snap, dtypes])
    want = torch.float32 if fp32_layers else torch.bfloat16
    norms = [n for n in dtypes.weights if "norm" in n]
    heads = [n for n in dtypes.weights if "embed_tokens" in n or "lm_head" in n]
    assert norms and heads
    assert {dtypes.weights[n] for n in norms + heads} == {want}
    assert dtypes.hidden[0] == want  # the final norm's output: the residual stream's dtype
    assert any(not torch.equal(snap.before[k], snap.after[k]) for k in snap.before if "lora_B" in k)
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses and all(0 < loss < 20 for loss in losses)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_trainable_parameter_count(tiny_llama, tmp_path):
    run = train(None, overrides(tiny_llama, dataset(tmp_path), tmp_path / "run", max_steps=1, load_in_4bit=False,
                                dtype="float32", bf16=False))
    # per layer, r x (in + out) for q 64->64, k 64->32, v 64->32, o 64->64, gate/up 64->128, down 128->64
    per_layer = 16 * ((64 + 64) + (64 + 32) * 2 + (64 + 64) + (64 + 128) * 3)
    eot_rows = 2 * 64  # the added EOT's row in embed_tokens and in the untied lm_head
    assert json.loads((run / "run.json").read_text())["trainable_parameters"] == 2 * per_layer + eot_rows


def test_lima_optimizer_and_linear_schedule_to_a_tenth(tiny_llama, tmp_path):
    snap = Snapshot()
    train(None, overrides(tiny_llama, dataset(tmp_path, n=8), tmp_path / "run", num_train_epochs=2,
                          load_in_4bit=False, dtype="float32", bf16=False), callbacks=[snap])
    group = snap.optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 0.1
    peak, steps = 1e-3, 8  # 8 examples / batch 2 = 4 steps per epoch, 2 epochs
    expected = [peak * (1 - 0.9 * k / steps) for k in range(steps)]  # no warm-up, reaching peak/10 at the end
    assert snap.lrs == pytest.approx(expected, rel=1e-6)
    assert snap.lrs[0] == pytest.approx(peak) and snap.lrs[steps // 2] == pytest.approx(peak * 0.55)
    assert snap.optimizer.param_groups[0]["lr"] == pytest.approx(peak / 10)  # after the last step


def test_added_eot_rows_survive_save_and_reload_and_no_full_embedding_is_saved(tiny_llama, tmp_path):
    run = train(None, overrides(tiny_llama, dataset(tmp_path), tmp_path / "run", max_steps=3, load_in_4bit=False,
                                dtype="float32", bf16=False))
    adapter = run / "adapter"
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        shapes = {k: f.get_tensor(k).shape for k in f.keys()}
        saved_rows = {k: f.get_tensor(k) for k in f.keys() if "trainable_tokens" in k}
    vocab = len(get_tokenizer(str(tiny_llama), "<|eot|>")[0])
    assert not any(vocab in shape for shape in shapes.values())  # no full embedding matrix
    assert {k.split(".token_adapter")[0].rsplit(".", 1)[-1] for k in saved_rows} == {"embed_tokens", "lm_head"}
    engine = load_engine(adapter=adapter, load_in_4bit=False, dtype="float32")
    eot = engine.tokenizer.convert_tokens_to_ids("<|eot|>")
    merged_embed = engine.model.get_input_embeddings()(torch.tensor([eot]))[0]
    saved_embed = next(v for k, v in saved_rows.items() if "embed_tokens" in k)[0]
    assert torch.equal(merged_embed, saved_embed)
    # the trained row differs from the untrained resized row: it was really trained
    untrained = get_model(str(tiny_llama), load_in_4bit=False, dtype="float32", vocab_size=vocab)
    assert not torch.allclose(untrained.get_input_embeddings().weight[eot], saved_embed)


def test_existing_eot_is_reused_not_added(tiny_llama_tied):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(tiny_llama_tied)
    tokenizer, template, added = get_tokenizer(str(tiny_llama_tied), "<|im_end|>")
    assert added == [] and template.eot_token == "<|im_end|>"
    assert len(tokenizer) == len(base)  # nothing added: no new embedding row to train
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == base.convert_tokens_to_ids("<|im_end|>")
    tokenizer, _, added = get_tokenizer(str(tiny_llama_tied), "<|eot|>")
    assert len(tokenizer) == len(base) + 1  # one new row, after the base's
    assert added == [len(base)] == [tokenizer.convert_tokens_to_ids("<|eot|>")]


def test_residual_dropout_rises_linearly_and_is_off_in_eval(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=4))
    ids = torch.randint(0, 64, (8, 64))
    model.eval()
    with torch.no_grad():
        clean = model(ids).logits
    rates = add_residual_dropout(model, 0.3)
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert residual_dropout_rates(4, 0.3) == pytest.approx(rates)
    zero_fraction = {}

    def measure(name):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            zero_fraction[name] = (out == 0).float().mean().item()
        return hook

    for i, layer in enumerate(model.model.layers):
        layer.self_attn.register_forward_hook(measure(f"attn{i}"))
        layer.mlp.register_forward_hook(measure(f"mlp{i}"))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, clean)  # eval: no effect at all
        assert all(v == 0 for v in zero_fraction.values())
        model.train()
        model(ids)
    for i, p in enumerate(rates):
        assert zero_fraction[f"attn{i}"] == pytest.approx(p, abs=0.02)
        assert zero_fraction[f"mlp{i}"] == pytest.approx(p, abs=0.02)


def test_packing_packs_conversations_into_one_row_with_the_unpacked_loss(tiny_llama, tmp_path):
    """packing: true, through lima_lite's own trainer: the six conversations (37-39 tokens each) become one
    row of at most max_length (256) tokens whose position ids restart at each conversation, and the trainer's
    loss on that row is the token-weighted mean of its loss on each conversation alone: none attends to
    another. Without the position ids the same row gives another loss, so the boundaries are what counts."""
    from lima_lite.train import prepare
    from lima_lite.trainer import build_trainer

    setup = prepare(None, overrides(tiny_llama, dataset(tmp_path), tmp_path / "run", packing=True,
                                    load_in_4bit=False, dtype="float32", bf16=False))
    trainer, _ = build_trainer(setup)
    lengths = sorted(len(row["input_ids"]) for row in setup.rows)
    assert len(lengths) == 6 and trainer.train_dataset.num_rows == 1
    [batch] = list(trainer.get_train_dataloader())
    positions = batch["position_ids"][0].tolist()
    assert len(positions) == sum(lengths) <= 256
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    assert sorted(b - a for a, b in pairwise(starts)) == lengths  # a restart at every conversation
    model = trainer.model.eval()  # no dropout: the same forward for the packed row and the conversations alone
    with torch.no_grad():
        packed = trainer.compute_loss(model, batch).item()
        total, count = 0.0, 0
        for row in setup.rows:
            alone = trainer.data_collator([{"input_ids": row["input_ids"], "labels": row["labels"]}])
            n = sum(label != -100 for label in row["labels"][1:])
            total, count = total + trainer.compute_loss(model, alone).item() * n, count + n
        unbounded = trainer.compute_loss(model, {"input_ids": batch["input_ids"], "labels": batch["labels"]}).item()
    assert packed == pytest.approx(total / count, abs=1e-5)
    assert abs(unbounded - packed) > 1e-3


def test_inspect_shows_exactly_the_trained_tokens(tiny_llama, tmp_path, capsys):
    from lima_lite.inspection import main as inspect_main

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "x1", "messages": [{"role": "user", "content": "Say hi"},
                                                        {"role": "assistant", "content": "Hi there"}]}) + "\n"
                    + json.dumps({"id": "x2", "messages": [{"role": "user", "content": "word " * 300},
                                                          {"role": "assistant", "content": "cut away"}]}) + "\n")
    args = [str(tmp_path / "none.yaml"), f"model_name_or_path={tiny_llama}", f"dataset_name={data}", "max_length=64"]
    (tmp_path / "none.yaml").write_text("eot_token: <|eot|>\n")
    assert inspect_main([*args, "--json", "--n", "1"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    tokenizer, _, _ = get_tokenizer(str(tiny_llama), "<|eot|>")
    user = tokenizer("Say hi", add_special_tokens=False)["input_ids"]
    eot = tokenizer.convert_tokens_to_ids("<|eot|>")
    assert shown["id"] == "x1" and shown["ids"][: len(user) + 1] == user + [eot]
    assert shown["labels"] == [-100] * (len(user) + 1) + shown["ids"][len(user) + 1:]
    assert shown["tokens"][-1] == "<|eot|>" and shown["labels"][-1] == eot
    assert inspect_main(args) == 0
    out = capsys.readouterr().out
    assert "[[Hi there<|eot|>]]" in out
    # the second example is all user text within the first 64 tokens: dropped, and said so
    assert "2 conversations read: 1 kept (0 cut at the length limit), 1 dropped" in out
    assert "dropped x2: no trained token left after the cut" in out


def test_dev_loss_is_logged_for_the_base_and_every_epoch(tiny_llama, tmp_path):
    data = dataset(tmp_path)
    run = train(None, overrides(tiny_llama, data, tmp_path / "run", num_train_epochs=2, dev_dataset=str(data),
                                load_in_4bit=False, dtype="float32", bf16=False))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    dev = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    assert [step for step, _ in dev] == [0, 3, 6]  # the base, then after each epoch of 3 steps
    assert dev[-1][1] < dev[0][1]  # training on the same conversations lowers their loss
    assert (run / "loss.png").stat().st_size > 10_000
