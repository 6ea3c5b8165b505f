"""TRL's SFTTrainer for the LIMA recipe: the base loaded (4-bit or not), LIMA's residual dropout and the memory
rewrites (tiled MLP, lean activations) applied, LoRA on it, resumable in one precision, with lima_lite's loss.

    >>> trainer, rates = build_trainer(setup)   # setup: lima_lite.train.prepare(recipe, overrides)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from lima_lite import LimaError
from lima_lite.callbacks import lima_callbacks
from lima_lite.config import writable
from lima_lite.layout import readable_weights

if TYPE_CHECKING:
    from lima_lite.train import Setup


def trainer_config(sft_config):
    """The SFTConfig the trainer gets: padding-free batches without packing leave max_length to us.

    encode_dataset already cut every example at max_length (and counted the cuts); TRL refuses
    padding_free with a max_length it would not enforce, so its copy gets None. run.json keeps the original.
    """
    trainer_args = writable(sft_config)  # its own copy, which TRL may change; not replace: no second __post_init__
    if sft_config.padding_free and not sft_config.packing:
        trainer_args.max_length = None
    return trainer_args


def steps_per_epoch(trainer) -> int:
    """Optimizer steps per epoch as the Trainer will count them (packing changes what a batch holds)."""
    return trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[1]


def sft_trainer_class():
    """TRL's SFTTrainer, resumable in one precision, with lima_lite.memory.loss's loss.

    TRL's fused LM head reads `lm_head.weight` directly, which skips PEFT's trainable-token rows (an added
    EOT would never learn to be predicted); lima_lite.memory.loss goes through the model's head, chunk by chunk.
    """
    from trl import SFTTrainer

    from lima_lite.memory.loss import with_lima_loss

    class ResumableSFTTrainer(SFTTrainer):
        def evaluate(self, *args, **kwargs):
            """Evaluate without moving the random state training draws from (dropout masks): a DataLoader
            draws a seed from the global RNG each time it starts, so a run that evaluates at an epoch's end
            and a run resumed after it would otherwise go on with different masks."""
            import torch

            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):
                return super().evaluate(*args, **kwargs)

        def create_model_card(self, *args, **kwargs):
            """No README.md from TRL: output_dir may hold the user's own, and `lima-lite push` writes the card."""

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            """Trainable weights come back in the precision they trained in.

            With a 4-bit base, TRL trains LoRA weights in bf16 (as the QLoRA paper does); PEFT upcasts an
            adapter it loads to fp32, so a resumed run would go on in another precision than an
            uninterrupted one. Cast back before the optimizer (and its bf16 state) is restored."""
            dtypes = {name: p.dtype for name, p in self.model.named_parameters() if p.requires_grad}
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            for name, p in self.model.named_parameters():
                if name in dtypes and p.dtype != dtypes[name]:
                    p.data = p.data.to(dtypes[name])

    return with_lima_loss(ResumableSFTTrainer)


def build_trainer(setup: Setup, callbacks=()):
    """The base model (4-bit or not) with LIMA's residual dropout and LoRA, in TRL's SFTTrainer.

    Returns (trainer, residual dropout rate of each layer).
    """
    import torch
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training
    from transformers import set_seed
    from trl import get_peft_config

    from lima_lite.memory.kernels import SDPA_VARLEN, apply_liger_kernels, register_sdpa_varlen
    from lima_lite.memory.rewrites import LEAN_CHUNK_TOKENS, lean_lora, lean_norms, tile_mlp
    from lima_lite.model import add_residual_dropout, fsdp_enabled, get_model, trainable_token_indices

    sft_config, model_args, lima_args = setup.sft_config, setup.model_args, setup.lima_args
    set_seed(sft_config.seed)  # new token rows are drawn at random: the same seed must give the same run
    sharded = fsdp_enabled()
    if model_args.attn_implementation == SDPA_VARLEN:
        register_sdpa_varlen()  # chosen by lima_lite.resolve; transformers must know it before loading
    with readable_weights(setup.base):
        model = get_model(setup.base, model_args.load_in_4bit, model_args.dtype, model_args.bnb_4bit_quant_type,
                          model_args.use_bnb_nested_quant, len(setup.tokenizer), sft_config.trust_remote_code,
                          model_args.attn_implementation, model_args.model_revision, sharded, lima_args.fp32_layers)
    liger = apply_liger_kernels(model, lima_args.liger_kernels)
    if next(model.parameters()).device.type == "cuda":
        print(liger)
    # prepare_model_for_kbit_training casts the norms and embeddings to fp32 (fp32_layers). Never under FSDP:
    # it flattens a decoder layer's weights (bf16-stored 4-bit ones and its norms) into one tensor of one dtype.
    if model_args.load_in_4bit and lima_args.fp32_layers and not sharded:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=sft_config.gradient_checkpointing)
    if model_args.load_in_4bit:
        keep_4bit_layout(model)
    # No KV cache in training: with one, transformers would not see packed sequences' boundaries.
    model.config.use_cache = False
    rates = add_residual_dropout(model, lima_args.residual_dropout)
    if lima_args.mlp_chunk_tokens:
        tile_mlp(model, lima_args.mlp_chunk_tokens)
    if lima_args.lean_activations:
        lean_norms(model, lima_args.mlp_chunk_tokens or LEAN_CHUNK_TOKENS)
    peft_config = get_peft_config(model_args)
    peft_config.trainable_token_indices = trainable_token_indices(model, setup.added)

    def dataset(rows):
        return Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]) if rows else None

    output_dir = Path(sft_config.output_dir)
    lima = lima_callbacks(output_dir, setup.tokenizer, setup.template, model_args.model_name_or_path)
    trainer = sft_trainer_class()(
        model=model, args=trainer_config(sft_config), train_dataset=dataset(setup.rows), eval_dataset=dataset(setup.dev_rows),
        processing_class=setup.tokenizer, peft_config=peft_config,
        callbacks=[*lima, *callbacks],
    )
    for callback in lima:
        callback.trainer = trainer  # saving an epoch's adapter and evaluating go through it
    if lima_args.lean_activations:
        lean_lora(trainer.model)  # peft's LoRA layers exist once the trainer has wrapped the model
    if model_args.load_in_4bit and model_args.dtype != "bfloat16":
        keep_trainable_dtype(trainer.model, getattr(torch, model_args.dtype))
    return trainer, rates


def keep_trainable_dtype(model, dtype) -> None:
    """Train LoRA (and trainable-token rows) in `dtype` where the hardware has no native bf16.

    TRL casts a quantized model's trainable weights to bf16 (QLoRA's recommendation). Without native bf16 that
    makes every LoRA matmul an emulated bf16 one on a CPU, and on a GPU without bf16 (fp16 autocast with loss
    scaling) the weights the scaler updates should be float32, not bf16. Called before the optimizer exists.
    """
    import torch

    target = torch.float32 if dtype == torch.float16 else dtype
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.to(target)


def check_lora_targets(modules: dict[str, str], targets, base: str, where: str) -> None:
    """Every module lora_target_modules names is in the base (`modules`: {name: class name}, from
    lima_lite.model.module_names), matched as peft matches them (a list: a name or a dotted suffix of one; a
    string: a regular expression over full names): peft would otherwise train the others alone without a word,
    or fail with a traceback when none is. `where`: the file:line or "command line" that set it."""
    if targets is None or targets == "all-linear":
        return
    names = list(modules)
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        missing = [t for t in targets if t != "all-linear" and not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, kind in modules.items() if kind.startswith("Linear")})
        raise LimaError(f"{where}: lora_target_modules: {', '.join(map(repr, missing))}: no such module in {base}; "
                        f"its linear layers are {', '.join(linear)}")


def keep_4bit_layout(model) -> None:
    """Keep the NF4 weights in one layout for the whole run.

    On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight into a CPU-only layout at its first
    forward without gradients (an evaluation) and computes differently from then on: a run with a dev set
    would then train differently after each evaluation than a run resumed from a checkpoint (measured:
    adapters 2e-4 to 3e-3 apart). Training never needs that fast inference path.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
