"""Writing a trained adapter: LoRA and trainable-token rows, tokenizer and template, atomically, never a diverged one.

    >>> save_trained_adapter(trainer, tokenizer, template, run / "epoch-03", "embedded:SmolLM2-135M-Instruct")
"""

import json
from pathlib import Path

from lima_lite import LimaError
from lima_lite.files import atomic_dir
from lima_lite.layout import ADAPTER_CONFIG


def save_adapter(model, tokenizer, template, folder: Path, base_name: str, state_dict: dict | None = None) -> Path:
    """Adapter (LoRA + trainable-token rows only), tokenizer and template, written atomically.

    `base_name` is the base as the user named it (a Hub id, a path, the embedded alias), recorded in
    adapter_config.json so chat and plain peft find the base again. `state_dict`: the model's full state
    gathered from FSDP shards (PEFT keeps only the adapter's entries of it); None reads the model itself.
    """
    check_finite(model, state_dict, folder)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict, save_embedding_layers=False)
        config_file = tmp / ADAPTER_CONFIG
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                           "base_model_name_or_path": base_name}, indent=2) + "\n")
        # The saved tokenizer renders the trained format with typed special text kept as text (template.jinja),
        # for plain transformers and other runtimes; training itself encodes with `template`.
        own, tokenizer.chat_template = tokenizer.chat_template, template.jinja()
        try:
            tokenizer.save_pretrained(tmp)
        finally:
            tokenizer.chat_template = own
        template.save(tmp)
    return folder


def check_finite(model, state_dict: dict | None, folder: Path) -> None:
    """Never write an adapter with inf or NaN weights: chat, merge and export would load it and say nothing."""
    import torch

    weights = (state_dict.items() if state_dict is not None else
               ((name, p) for name, p in model.named_parameters() if p.requires_grad))
    for name, weight in weights:
        if weight.is_floating_point() and not torch.isfinite(weight).all():
            raise LimaError(f"{folder}: not written: {name} holds inf or NaN values (training diverged); "
                            "train again with a lower learning_rate")


def save_trained_adapter(trainer, tokenizer, template, folder: Path, base_name: str) -> Path:
    """save_adapter, called by every process of a run: under FSDP the adapter is spread over the processes
    and gathering it takes all of them (accelerate's get_state_dict, as Trainer.save_model does); then the
    main process alone writes `folder` and the others wait until it is there."""
    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if accelerator.is_main_process:
        save_adapter(accelerator.unwrap_model(trainer.model), tokenizer, template, folder, base_name, state_dict)
    accelerator.wait_for_everyone()
    return folder
