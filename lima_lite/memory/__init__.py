"""What makes a big base fit one GPU, in one place: the memory plan and what it plans for.

- estimate.py: the byte-counting model of a training step (weights, LoRA, optimizer, activations, loss).
- fit.py: the search for the fastest setting that fits a budget, with its cost constants.
- plan.py: `lima-lite plan`, and the check `train` runs before loading weights.
- kernels.py: attention kernels and the CUDA fast paths (flash-attention varlen, sdpa per example, Liger).
- loss.py: the chunked / fused cross-entropy that never holds the whole logits.
- rewrites.py: the model rewrites the plan counts: the MLP tiled over the tokens, norms and LoRA inputs recomputed.
- host.py: returning freed host memory to the system.
"""
