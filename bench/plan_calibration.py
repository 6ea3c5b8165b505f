"""Calibrate the memory plan (lima_lite/memory.py) by counting live tensor bytes during real training steps.

    $ PYTHONPATH=. python bench/plan_calibration.py                     # the shapes in SHAPES, both modes
    $ PYTHONPATH=. python bench/plan_calibration.py --json out.json
    $ PYTHONPATH=. python bench/plan_calibration.py --offloading    # checkpoints offloaded as TRL does
    $ PYTHONPATH=. OMP_NUM_THREADS=1 python bench/plan_calibration.py --costs --max-length 1024   # cost ratios
    $ PYTHONPATH=. python bench/plan_calibration.py --per-token     # bytes per token of long examples

Each run builds a random-init LLaMA from a config, loads it the way `lima-lite train` does (4-bit NF4 with
double quantization via bitsandbytes, non-quantized weights in fp32 and `prepare_model_for_kbit_training`
(or, with --bf16-layers, in bf16 without it), attention sdpa_varlen (or --attention),
LIMA's residual dropout, an added EOT token trained as PEFT trainable tokens, LoRA on all linear layers,
TRL's SFTTrainer with bf16 autocast) and trains 3 steps on examples of exactly max_length tokens (the
worst micro-batch). The third step runs under `LiveBytes`, a TorchDispatchMode that registers every
tensor storage created (and every storage alive at the start: weights, quantization constants, optimizer
state) and frees it when the storage is collected, so its peak is the peak of live tensor bytes: what
`torch.cuda.max_memory_allocated` reports on a GPU, without the allocator's rounding and caching.

With --offloading, `HostOffload` does on the CPU what TRL's activation offloading (OffloadActivations) does
on a GPU: every saved tensor of at least 1,024 bytes that is not a parameter is copied to "host" memory
(copies made outside LiveBytes, so not counted as device bytes, but summed as host bytes), the 5 newest
originals stay alive (TRL's forward stash, also used as they are in the backward), and the backward brings
a copy back (counted). So the counted peak is the GPU's peak with offloading, and the host bytes its CPU cost.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
import weakref
from pathlib import Path

import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_map_only

# Small LLaMA shapes (hidden, intermediate, layers, heads, kv heads, vocab): large enough that the
# per-token terms dominate the few-byte constants, small enough for a 2-core CPU in about a minute.
SHAPES = {
    "llama-h256-L4": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=4, vocab_size=8000),
    "gqa-h192-L3": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=6,
                        num_key_value_heads=2, vocab_size=6000),
}
# Offloading keeps the newest 5 offloaded tensors on the device: a shape with more layers than that.
OFFLOAD_SHAPES = {
    "llama-h128-L10": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=10, num_attention_heads=4,
                           num_key_value_heads=4, vocab_size=4000),
}
# Long examples (--per-token): an 8B-like ratio of MLP and KV width to the hidden size, more layers than TRL's stash.
LONG_SHAPE = dict(hidden_size=128, intermediate_size=448, num_hidden_layers=8, num_attention_heads=4,
                  num_key_value_heads=1, vocab_size=1000)
MIN_OFFLOAD_BYTES = 1024  # TRL's min_offload_size
FORWARD_STASH = 5  # TRL's max_fwd_stash_size


class HostOffload(saved_tensors_hooks):
    """TRL's activation offloading (OffloadActivations with its streams, trl 1.16) on the CPU, by its own rules:
    - tensors under 1 KiB, parameters, and tensors saved inside the output head's forward (TRL's NoOpManager
      hooks on lm_head; `head`) stay as they are;
    - a storage already offloaded whose original is still in the forward stash stays as it is (TRL's storage
      deduplication);
    - anything else is copied to untracked "host" memory (`host_bytes`, its peak), and the original stays in the
      forward stash until FORWARD_STASH newer tensors have been packed (TRL counts every packed tensor);
    - in the backward a stashed tensor is used as it is, any other offloaded one is brought back (a copy made
      under LiveBytes: counted), and the stash is emptied once the first backward node that unpacked an
      offloaded tensor has run (TRL's node hook).
    `stash_at_backward`: the bytes of the stash's originals when the backward started."""

    def __init__(self, head: torch.nn.Module | None = None):
        self.stash, self.stash_storages, self.host = {}, {}, {}
        self.next_id, self.host_bytes, self.host_peak = 0, 0, 0
        self.in_head, self.hooked, self.stash_at_backward = False, False, 0
        if head is not None:
            head.register_forward_pre_hook(lambda *args: setattr(self, "in_head", True))
            head.register_forward_hook(lambda *args: setattr(self, "in_head", False), always_call=True)
        super().__init__(self.pack, self.unpack)

    def pack(self, tensor):
        self.next_id += 1
        tensor_id, key = self.next_id, tensor.untyped_storage()._cdata
        small = tensor.element_size() * tensor.nelement() < MIN_OFFLOAD_BYTES
        if key in self.stash_storages or small or isinstance(tensor, torch.nn.Parameter) or self.in_head:
            return ("kept", tensor)
        for old in [i for i in self.stash if i <= tensor_id - FORWARD_STASH]:
            self.stash_storages.pop(self.stash.pop(old).untyped_storage()._cdata, None)
        with _disable_current_modes():  # the copy lives in host memory: not a device byte
            self.host[tensor_id] = tensor.detach().clone()
        self.host_bytes += self.host[tensor_id].untyped_storage().nbytes()
        self.host_peak = max(self.host_peak, self.host_bytes)
        self.stash[tensor_id], self.stash_storages[key] = tensor, tensor_id
        return ("offloaded", tensor_id)

    def unpack(self, packed):
        kind, value = packed
        if kind == "kept":
            return value
        if not self.hooked:
            self.hooked = True
            self.stash_at_backward = nbytes(self.stash.values())
            node = torch._C._current_autograd_node()
            if node is not None:
                node.register_hook(lambda *args: self.empty_stash())
        if value in self.stash:
            return self.stash[value]
        return self.host[value].clone()  # brought back to the device: counted

    def empty_stash(self):
        self.stash, self.stash_storages = {}, {}

    def __exit__(self, *args):
        self.empty_stash()
        self.host, self.host_bytes, self.hooked = {}, 0, False
        return super().__exit__(*args)


class LiveBytes(TorchDispatchMode):
    """Bytes of all live tensor storages: those registered with `track` and every op's outputs."""

    def __init__(self):
        super().__init__()
        self.sizes = {}  # storage id -> bytes
        self.refs = {}
        self.now = 0
        self.peak = 0

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.sizes or storage.device.type == "meta":
            return
        self.sizes[key] = storage.nbytes()
        self.now += self.sizes[key]
        self.peak = max(self.peak, self.now)
        self.refs[key] = weakref.ref(storage, lambda _, key=key: self._free(key))

    def _free(self, key) -> None:
        self.now -= self.sizes.pop(key)
        self.refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self.track, out)
        return out


def quant_tensors(param) -> list[torch.Tensor]:
    """The packed 4-bit data of a bitsandbytes Params4bit and every tensor of its quantization state."""
    state = param.quant_state
    tensors = [param.data, state.absmax, state.code]
    if state.nested:
        tensors += [state.offset, state.state2.absmax, state.state2.code]
    return tensors


def nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage._cdata not in seen:
            seen.add(storage._cdata)
            total += storage.nbytes()
    return total


def static_bytes(model, optimizer) -> dict:
    """Counted bytes of what lives across steps, split as the plan splits it."""
    quantized, base, lora, tokens = [], [], [], []
    for name, param in model.named_parameters():
        if type(param).__name__ == "Params4bit":
            quantized += quant_tensors(param)
        elif "lora_" in name:
            lora.append(param)
        elif "trainable_tokens" in name:
            tokens.append(param)
        else:
            base.append(param)
    base += list(model.buffers())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {"weights_4bit": nbytes(quantized), "weights_16_32bit": nbytes(base), "lora": nbytes(lora),
            "trainable_tokens": nbytes(tokens), "optimizer": nbytes(state)}


def tiny_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<unk>")


def measure(shape: dict, micro_batch: int, max_length: int, gradient_checkpointing: bool, padding_free: bool,
            lora_r: int = 8, lora_dropout: float = 0.1, residual_dropout: float = 0.2, root: str | None = None,
            attention: str = "sdpa_varlen", fp32_layers: bool = True, activation_offloading: bool = False,
            steps: int = 3, mlp_chunk_tokens: int = 0, lean_activations: bool = False) -> dict:
    """Train 3 steps the way `lima-lite train` does; counted bytes of the static parts and the third step's peak.
    With `steps` > 3, the later steps are timed without counting (`step_seconds`)."""
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import SFTConfig

    from lima_lite.kernels import attention_implementation
    from lima_lite.model import LEAN_CHUNK_TOKENS, add_residual_dropout, get_model, lean_lora, lean_norms, tile_mlp
    from lima_lite.trainer import keep_4bit_layout, sft_trainer_class

    root = Path(root or tempfile.mkdtemp(prefix="plan-calibration-"))
    folder = root / "base"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(max_position_embeddings=4096, **shape)).save_pretrained(folder)
        tiny_tokenizer(shape["vocab_size"]).save_pretrained(folder)
    vocab = shape["vocab_size"]
    eot = vocab  # one added token (the EOT), as for LLaMA-1
    attention = attention_implementation(attention, cuda=False)[0]  # registers sdpa_varlen
    model = get_model(str(folder), load_in_4bit=True, dtype="bfloat16", vocab_size=vocab + 1,
                      attn_implementation=attention, fp32_layers=fp32_layers)
    if fp32_layers:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    keep_4bit_layout(model)
    model.config.use_cache = False
    add_residual_dropout(model, residual_dropout)
    if mlp_chunk_tokens:
        tile_mlp(model, mlp_chunk_tokens)
    if lean_activations:
        lean_norms(model, mlp_chunk_tokens or LEAN_CHUNK_TOKENS)
    peft_config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=lora_dropout, target_modules="all-linear",
                             task_type="CAUSAL_LM",
                             trainable_token_indices={"embed_tokens": [eot], "lm_head": [eot]})
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(micro_batch * steps):
        ids = torch.randint(3, vocab, (max_length,), generator=g).tolist()
        ids[-1] = eot
        labels = list(ids)  # every token trained: the plan's worst case (the chunked loss scores trained tokens only)
        rows.append({"input_ids": ids, "labels": labels})
    config = SFTConfig(output_dir=str(root / "out"), per_device_train_batch_size=micro_batch, max_steps=steps,
                       learning_rate=1e-4, save_strategy="no", report_to=[], logging_steps=1, use_cpu=True, bf16=True,
                       gradient_checkpointing=gradient_checkpointing, optim="adamw_torch",
                       max_length=None if padding_free else max_length,
                       padding_free=padding_free, dataloader_num_workers=0, seed=0, remove_unused_columns=False)
    counted = {"step_seconds": []}

    class Count(TrainerCallback):
        mode = None
        started = 0.0

        def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            self.started = time.process_time()  # CPU time: robust to other processes on a shared machine
            if state.global_step == 2:
                self.mode = LiveBytes()
                for tensor in [*model.parameters(), *model.buffers()]:
                    self.mode.track(tensor)
                for param in model.parameters():
                    if type(param).__name__ == "Params4bit":
                        for tensor in quant_tensors(param):
                            self.mode.track(tensor)
                for s in optimizer.state.values():
                    for v in s.values():
                        if isinstance(v, torch.Tensor):
                            self.mode.track(v)
                counted["at_step_start"] = self.mode.now
                self.mode.__enter__()

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if self.mode is not None:
                counted["gradients"] = nbytes(p.grad for p in model.parameters() if p.grad is not None)

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            if state.global_step > 3:  # steps 4 on: timed, not counted (step 3's counting slows it)
                counted["step_seconds"].append(time.process_time() - self.started)
            if self.mode is not None:
                self.mode.__exit__(None, None, None)
                counted["peak"] = self.mode.peak
                counted.update(static_bytes(model, optimizer))
                self.mode = None

    trainer = sft_trainer_class()(model=model, args=config, train_dataset=Dataset.from_list(rows),
                                      processing_class=tiny_tokenizer(vocab), peft_config=peft_config, callbacks=[Count()])
    if lean_activations:
        lean_lora(trainer.model)
    from lima_lite.loss import output_head

    offload = HostOffload(head=output_head(trainer.model))
    if activation_offloading:
        trainer.maybe_activation_offload_context = offload  # where SFTTrainer puts TRL's OffloadActivations
    trainer.train()
    counted["host_offload"] = offload.host_peak
    counted["stash_at_backward"] = offload.stash_at_backward
    static = sum(counted[k] for k in ("weights_4bit", "weights_16_32bit", "lora", "trainable_tokens", "optimizer"))
    counted["transient_at_peak"] = counted["peak"] - static
    counted["trainable_parameters"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    counted["lora_dtype"] = str(next(p.dtype for n, p in trainer.model.named_parameters() if "lora_" in n))
    return counted


def planned(shape: dict, micro_batch: int, max_length: int, gradient_checkpointing: bool, padding_free: bool,
            lora_r: int = 8, lora_dropout: float = 0.1, residual_dropout: float = 0.2,
            attention: str = "sdpa_varlen", fp32_layers: bool = True, activation_offloading: bool = False,
            mlp_chunk_tokens: int = 0, lean_activations: bool = False) -> dict:
    """The plan's bytes for the same run (no CUDA context, no fragmentation margin: they are GPU-only)."""
    from lima_lite.loss import CHUNK_TOKENS
    from lima_lite.memory import GIB, ModelShape, PlanSettings, component_bytes, host_offload_gib

    model = ModelShape(hidden=shape["hidden_size"], intermediate=shape["intermediate_size"],
                       layers=shape["num_hidden_layers"], heads=shape["num_attention_heads"],
                       kv_heads=shape["num_key_value_heads"], vocab=shape["vocab_size"], tied=False)
    settings = PlanSettings(micro_batch, max_length, lora_r, gradient_checkpointing, padding_free, "adamw_torch", 1,
                            CHUNK_TOKENS, lora_dropout > 0, residual_dropout > 0, attention, fp32_layers,
                            activation_offloading, mlp_chunk_tokens, lean_activations)
    parts = component_bytes(model, settings, cpu_masks=True)
    return {**parts, "host_offload": host_offload_gib(model, settings) * GIB}


STATIC = ("weights_4bit", "weights_16_32bit", "lora", "trainable_tokens", "optimizer")


def compare(name: str, shape: dict, micro_batch: int, max_length: int, gradient_checkpointing: bool,
            padding_free: bool, root: str | None = None, attention: str = "sdpa_varlen", fp32_layers: bool = True,
            activation_offloading: bool = False, mlp_chunk_tokens: int = 0, lean_activations: bool = False) -> dict:
    settings = {"attention": attention, "fp32_layers": fp32_layers, "activation_offloading": activation_offloading,
                "mlp_chunk_tokens": mlp_chunk_tokens, "lean_activations": lean_activations}
    got = measure(shape, micro_batch, max_length, gradient_checkpointing, padding_free, root=root, **settings)
    plan = planned(shape, micro_batch, max_length, gradient_checkpointing, padding_free, **settings)
    plan_transient = plan["gradients"] + plan["activations"] + plan["loss"] + plan["layer_backward"]
    rows = {k: (got[k], plan[k]) for k in STATIC}
    rows["transient_at_peak"] = (got["transient_at_peak"], plan_transient)
    rows["peak"] = (got["peak"], sum(plan[k] for k in STATIC) + plan_transient)
    rows["host_offload"] = (got["host_offload"], plan["host_offload"])
    return {"shape": name, "micro_batch": micro_batch, "max_length": max_length,
            "gradient_checkpointing": gradient_checkpointing, "padding_free": padding_free, **settings,
            "rows": {k: {"counted": c, "planned": p, "error": (p - c) / c if c else 0.0} for k, (c, p) in rows.items()}}


def cost_ratios(shape: dict, micro_batch: int, max_length: int, steps: int = 8) -> dict:
    """Median step time of checkpointing, of checkpointing with offloading (HostOffload's copies), relative to
    neither, of checkpointing with the MLP tiled in 4 chunks relative to checkpointing alone, and of lean
    activations added to that: fit_search.py's RECOMPUTE_COST, OFFLOAD_COST, TILED_MLP_COST and LEAN_COST."""
    times = {}
    chunk = micro_batch * max_length // 4
    runs = (("plain", False, False, 0, False), ("checkpointing", True, False, 0, False),
            ("offloading", True, True, 0, False), ("tiled_mlp", True, False, chunk, False),
            ("lean", True, False, chunk, True))
    with tempfile.TemporaryDirectory() as root:
        for name, checkpointing, offloading, tiled, lean in runs:
            got = measure(shape, micro_batch, max_length, checkpointing, True, root=root,
                          activation_offloading=offloading, steps=steps, mlp_chunk_tokens=tiled, lean_activations=lean)
            times[name] = statistics.median(got["step_seconds"])
    return {"seconds": times, "recompute_cost": round(times["checkpointing"] / times["plain"], 3),
            "offload_cost": round(times["offloading"] / times["checkpointing"], 3),
            "tiled_mlp_cost": round(times["tiled_mlp"] / times["checkpointing"], 3),
            "lean_cost": round(times["lean"] / times["tiled_mlp"], 3)}


def per_token(lengths=(8192, 16384), chunk: int = 256) -> list[dict]:
    """Counted and planned transient bytes per token (in units of the hidden size) of one example of each length,
    LONG_SHAPE, checkpoints offloaded, MLP tiled by `chunk`, with and without lean activations, fp32 or bf16
    layers: what bounds the longest example."""
    rows = []
    for lean in (False, True):
        for fp32_layers in (False, True):
            got, plan = [], []
            with tempfile.TemporaryDirectory() as root:
                for length in lengths:
                    settings = dict(fp32_layers=fp32_layers, activation_offloading=True, mlp_chunk_tokens=chunk,
                                    lean_activations=lean)
                    got.append(measure(LONG_SHAPE, 1, length, True, True, root=root, **settings)["transient_at_peak"])
                    parts = planned(LONG_SHAPE, 1, length, True, True, **settings)
                    plan.append(sum(parts[k] for k in ("gradients", "activations", "loss", "layer_backward")))
            tokens, h = lengths[1] - lengths[0], LONG_SHAPE["hidden_size"]
            rows.append({"lean_activations": lean, "fp32_layers": fp32_layers,
                         "counted_per_token_h": round((got[1] - got[0]) / tokens / h, 2),
                         "planned_per_token_h": round((plan[1] - plan[0]) / tokens / h, 2),
                         "planned_over_counted": [round(p / c, 3) for p, c in zip(plan, got, strict=True)]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the comparison to this file")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--attention", default="sdpa_varlen", choices=["sdpa_varlen", "sdpa", "eager"])
    parser.add_argument("--bf16-layers", action="store_true", help="fp32_layers: false (norms, embeddings, head in bf16)")
    parser.add_argument("--anchor", action="store_true", help="only compare with the H100 anchor figures")
    parser.add_argument("--offloading", action="store_true",
                        help="checkpoints offloaded as TRL does (HostOffload), on OFFLOAD_SHAPES, checkpointing on")
    parser.add_argument("--costs", action="store_true",
                        help="time checkpointing, offloading, the tiled MLP and lean activations (fit_search.py's cost ratios)")
    parser.add_argument("--per-token", action="store_true",
                        help="counted and planned bytes per token of long examples (LONG_SHAPE, 8,192 and 16,384 "
                             "tokens, offloading, tiled MLP, with and without lean activations)")
    args = parser.parse_args(argv)
    if args.per_token:
        print(json.dumps(per_token(), indent=2))
        return 0
    if args.costs:
        print(json.dumps(cost_ratios(SHAPES["llama-h256-L4"], args.micro_batch, args.max_length), indent=2))
        return 0
    if args.anchor:
        print(json.dumps(anchor_comparison(), indent=2))
        return 0
    results = []
    shapes = OFFLOAD_SHAPES if args.offloading else SHAPES
    for name, shape in shapes.items():
        with tempfile.TemporaryDirectory() as root:
            for checkpointing in ((True,) if args.offloading else (True, False)):
                for padding_free in (True, False):
                    result = compare(name, shape, args.micro_batch, args.max_length, checkpointing, padding_free, root,
                                     args.attention, not args.bf16_layers, args.offloading)
                    results.append(result)
                    print(f"\n{name} micro-batch {args.micro_batch} x {args.max_length}, gradient checkpointing "
                          f"{checkpointing}, padding-free {padding_free}, attention {args.attention}, "
                          f"fp32_layers {not args.bf16_layers}, offloading {args.offloading}")
                    for key, row in result["rows"].items():
                        print(f"  {key:<18} counted {row['counted'] / 2**20:9.3f} MiB  planned "
                              f"{row['planned'] / 2**20:9.3f} MiB  error {100 * row['error']:+6.2f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0



# The H100 anchor (/work/shared/bench/gpu-measurements.md): LLaMA-2-7B shape, plain TRL (bf16 base without
# prepare_model_for_kbit_training, so 16-bit embeddings and residual stream), no token added (TRL's fused
# head), LoRA r 16 with dropout, no residual dropout, gradient checkpointing, paged_adamw_8bit, micro-batch 4.
# Tokens of its largest micro-batch, from bench/anchor_batches.py (its batch order replayed on the CPU).
# The "held_out" rows are two more runs of the same script, padded, given with their peaks only: 7B at micro-batch
# 8 (8 steps: largest batch 8 x 1,791) and 13B at micro-batch 4. For 13B the batch is inferred: with the script's
# default 6 steps its largest batch is 4 x 1,802 (`anchor_batches.py baseline 4 6`), and the 7B rows' transient
# bytes per token then match 13B's within a few percent; with 8 steps (4 x 1,534) the plan would be 4.4 % under.
LLAMA2 = {"7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000, tied=False),
          "13b": dict(hidden=5120, intermediate=13824, layers=40, heads=40, kv_heads=40, vocab=32000, tied=False)}
ANCHOR = {"padded": {"size": "7b", "tokens": 4 * 1534, "sequences": 4, "padding_free": False, "measured_gib": 7.04},
          "padding_free": {"size": "7b", "tokens": 3955, "sequences": 4, "padding_free": True, "measured_gib": 5.92},
          "held_out_7b_mb8_padded": {"size": "7b", "tokens": 8 * 1791, "sequences": 8, "padding_free": False,
                                     "measured_gib": 11.39},
          "held_out_13b_mb4_padded": {"size": "13b", "tokens": 4 * 1802, "sequences": 4, "padding_free": False,
                                      "measured_gib": 12.30}}
PAGED_MIN = 10**5  # bitsandbytes pages optimizer state of tensors this large: cudaMallocManaged, not torch's allocator


def anchor_comparison() -> dict:
    """The plan's allocated bytes (what torch.cuda.max_memory_allocated sees) for the anchor's rows."""
    from lima_lite.memory import GIB, ModelShape, PlanSettings, component_bytes, lora_numels

    rows = {}
    for mode, run in ANCHOR.items():
        shape = ModelShape(**LLAMA2[run["size"]])
        paged = sum(2 * n for n in lora_numels(shape, 16) if n >= PAGED_MIN)
        settings = PlanSettings(micro_batch=run["sequences"], max_length=run["tokens"] // run["sequences"], lora_r=16,
                                gradient_checkpointing=True, padding_free=run["padding_free"], optim="paged_adamw_8bit",
                                added_tokens=0, loss_chunk_tokens=0, residual_dropout=False, attention="sdpa",
                                fp32_layers=False)
        parts = component_bytes(shape, settings, tokens=run["tokens"])
        planned = (sum(parts.values()) - paged) / GIB
        rows[mode] = {"size": run["size"], "tokens": run["tokens"], "planned_gib": round(planned, 3),
                      "measured_gib": run["measured_gib"],
                      "error": round((planned - run["measured_gib"]) / run["measured_gib"], 4),
                      "components_gib": {k: round(v / GIB, 3) for k, v in parts.items()}}
    return rows


if __name__ == "__main__":
    sys.exit(main())
