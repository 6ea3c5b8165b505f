"""Live tensor bytes of real training steps, counted on the CPU: the oracle that calibrates the memory plan
(lima_lite/memory/estimate.py). Used by the tests and by bench/plan_calibration.py, whose docstring explains the count.

`measure` builds a random-init LLaMA from a config, loads it the way `lima-lite train` does (4-bit NF4, LoRA, an
added EOT as PEFT trainable tokens, LIMA's residual dropout), trains 3 steps on examples of exactly max_length
tokens and counts the third under `LiveBytes`; `planned` is the plan's bytes for the same run; `compare` puts
the two side by side. `HostOffload` does on the CPU what TRL's activation offloading does on a GPU.
"""

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

    from lima_lite.memory.kernels import attention_implementation
    from lima_lite.memory.rewrites import LEAN_CHUNK_TOKENS, lean_lora, lean_norms, tile_mlp
    from lima_lite.model import add_residual_dropout, get_model
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
    from lima_lite.memory.loss import output_head

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
    from lima_lite.memory.estimate import GIB, ModelShape, PlanSettings, component_bytes, host_offload_gib
    from lima_lite.memory.loss import CHUNK_TOKENS

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


