"""Which examples form each step of the H100 anchor run (its script qlora_anchor.py), replayed on the CPU.

    $ ANCHOR_DIR=path/to/anchor python bench/anchor_batches.py padfree      # -> SHAPES padfree [[1, 2912], [1, 2455], ...]
    $ python bench/anchor_batches.py baseline     # -> SHAPES baseline [[4, 1092], ...]
    $ python bench/anchor_batches.py baseline 8   # qlora_anchor.py --mbs 8 (--steps 8: 80 examples)
    $ python bench/anchor_batches.py baseline 4 6 # qlora_anchor.py --mbs 4 --steps 6 (its default: 32 examples)

The same data (`lima_like_dataset(MBS x (STEPS + 2), 2048)`, seed 0, as qlora_anchor.py makes it; 8 steps unless
told), the same SFTConfig batch settings and seed, and a
1-layer model instead of the 7B one: the sampler's order depends on the seed, not on the model. The largest
micro-batch it prints is what the memory plan is compared with (bench/plan_calibration.py ANCHOR).
"""

import json
import os
import sys
import tempfile

ANCHOR = os.environ.get("ANCHOR_DIR", "anchor")  # the folder holding qlora_anchor.py


def main() -> int:
    sys.path.insert(0, ANCHOR)
    import qlora_anchor
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    mode = sys.argv[1]
    mbs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    root = tempfile.mkdtemp(prefix="anchor-batches-")
    qlora_anchor.SIZES["micro"] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
    path = qlora_anchor.make_model_dir("micro", root)
    shapes = []

    class Recorder(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            shapes.append(list(inputs["input_ids"].shape))
            return super().compute_loss(model, inputs, *args, **kwargs)

    config = SFTConfig(output_dir=os.path.join(root, "out"), per_device_train_batch_size=mbs, gradient_accumulation_steps=1,
                       max_steps=steps, learning_rate=1e-4, lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
                       save_strategy="no", report_to=[], activation_checkpointing=True, optim="adamw_torch",
                       max_length=None if mode == "padfree" else 2048, include_num_input_tokens_seen="non_padding",
                       padding_free=mode == "padfree", remove_unused_columns=False, dataloader_num_workers=0, seed=0,
                       use_cpu=True)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    Recorder(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=config,
             train_dataset=qlora_anchor.lima_like_dataset(mbs * (steps + 2), 2048),
             processing_class=AutoTokenizer.from_pretrained(path),
             peft_config=lora).train()
    print("SHAPES", mode, mbs, steps, json.dumps(shapes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
