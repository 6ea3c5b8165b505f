"""The training step's loss: a cross-entropy that never holds a micro-batch's full-vocabulary logits, and still
trains an added EOT's rows (Liger's fused one on CUDA when it can see them). Attention kernels and the other
fast paths are in lima_lite.memory.kernels.

    >>> loss, stats = causal_lm_loss(peft_model, batch)   # batch from TRL's collator, padded or padding-free
    >>> trainer = with_lima_loss(SFTTrainer)(model=model, args=sft_config, ...)   # SFTTrainer with that loss

Why: at 4 x 2,048 tokens and LLaMA's 32,000-word vocabulary the logits alone are 8,192 x 32,000 x 4 bytes
= 1.05 GB in fp32, and cross-entropy's softmax and the two gradients hold three more of that size. Here
only positions whose next-token label is trained get logits at all, CHUNK_TOKENS of them at a time, and
each chunk but the last is recomputed in backward (torch.utils.checkpoint), so at most one chunk's logits are alive.

The head is the model's own output head: a LoRA on lm_head takes part by calling it; PEFT's
trainable-token rows (an added EOT, tied or untied head) take part as PEFT defines them, the base head's
logits with the trained rows' columns replaced, without building PEFT's merged vocabulary x hidden weight
(and its gradient of the same size) per chunk. TRL's own fused head reads `lm_head.weight` directly and
misses those rows, which is why lima_lite brings its own.
"""

import importlib.util

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# Tokens per chunk: 512 x 32,000 x 4 bytes = 66 MB of fp32 logits per chunk, a sixteenth of 8,192 tokens'
# 1.05 GB; each chunk reads the whole head once (a 512 x 4,096 x 32,000 matmul, still large enough to run
# at full speed on a GPU), so smaller chunks would only add passes over the head.
CHUNK_TOKENS = 512
ENTROPY_ROWS = 64  # rows of a chunk's probabilities alive at once for the entropy metric
IGNORE = -100


def causal_lm_hidden(model, inputs: dict) -> torch.Tensor:
    """The last hidden state (after the final norm) of a batch, through the model's own forward.

    Going through the top-level forward keeps PEFT, DDP (gradient sync) and accelerate hooks in the path;
    `logits_to_keep` with no index makes the head score no position. `use_cache=False`: with a cache,
    transformers would not see padding-free sequence boundaries in the position ids. The state is taken from
    the decoder's output by a forward hook, not with `output_hidden_states=True`: that keeps every layer's
    output alive until the forward returns (the checkpoints offloading would move to CPU memory among them),
    and accelerate's bf16 autocast copies each of them to fp32 on the way out, (layers + 1) x tokens x hidden
    x 4 bytes at once.
    """
    kwargs = {key: value for key, value in inputs.items() if key != "labels"}
    nothing = torch.empty(0, dtype=torch.long, device=inputs["input_ids"].device)
    captured = []
    hook = decoder_of(model).register_forward_hook(lambda module, args, output: captured.append(output[0]))
    try:
        model(**kwargs, use_cache=False, logits_to_keep=nothing)
    finally:
        hook.remove()
    return captured[-1]


def decoder_of(model) -> torch.nn.Module:
    """The decoder stack (embeddings, layers, final norm) of a causal LM, through DDP and PEFT wrappers."""
    from peft import PeftModel

    model = getattr(model, "module", model)  # DistributedDataParallel
    return (model.get_base_model() if isinstance(model, PeftModel) else model).get_decoder()


def output_head(model) -> torch.nn.Module:
    """The output head of a causal LM, through a PEFT wrapper if any (the module PEFT put there)."""
    from peft import PeftModel

    return (model.get_base_model() if isinstance(model, PeftModel) else model).get_output_embeddings()


def trainable_token_rows(head) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(token ids, trained rows) per active PEFT trainable-tokens adapter on this head; None for any other head."""
    from peft.utils.other import TrainableTokensWrapper

    if not isinstance(head, TrainableTokensWrapper):
        return None
    layer = head.token_adapter
    if layer.merged or layer.disable_adapters:
        return []
    device = layer.base_layer.weight.device
    return [(torch.tensor(layer.token_indices[name], device=device), layer.trainable_tokens_delta[name])
            for name in layer.active_adapters]


def head_logits(head, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of `hidden` (tokens x hidden) through the model's head, trainable-token rows included.

    For a trainable-tokens head this is PEFT's `F.linear(hidden, W.index_copy(0, ids, rows))` computed as
    the base head's logits with the columns of `ids` replaced: equal, and it never builds that
    vocabulary x hidden W (262 MB in bf16 for LLaMA-7B) or its gradient.
    """
    rows = trainable_token_rows(head)
    base = head.token_adapter.base_layer if rows is not None else getattr(head, "base_layer", head)
    if base.weight.is_floating_point():  # bf16 autocast hands the hidden states over in fp32
        hidden = hidden.to(base.weight.dtype)
    if rows is None:
        return head(hidden)
    logits = base(hidden)
    for ids, delta in rows:
        logits = logits.index_copy(-1, ids, F.linear(hidden, delta.to(logits.dtype)))
    return logits


def _chunk_sums(head, hidden: torch.Tensor, targets: torch.Tensor):
    """Summed negative log-likelihood of one chunk (differentiable), and its top-1 hits and entropy (not).

    The loss comes first: the recomputation in backward stops once it has what backward saves (checkpoint's
    early stop), so the metrics are computed once. At most three chunk-sized tensors are alive at once.
    """
    logits = head_logits(head, hidden).float()  # fp32 softmax, as transformers' ForCausalLMLoss
    log_probs = logits.log_softmax(-1)  # cross_entropy is exactly nll_loss(log_softmax); the entropy reuses it
    nll = F.nll_loss(log_probs, targets, reduction="sum")
    with torch.no_grad():
        correct = (logits.argmax(-1) == targets).sum()
        # entropy = -sum(p * log p) from the log-probabilities already there (logsumexp and softmax cost 0.7 s
        # of a 15 s quick-start step), a few rows at a time: p for the whole chunk would be a third chunk-sized
        # tensor, the peak of the step's memory on small models
        entropy = -sum(rows.exp().mul_(rows).sum() for rows in log_probs.split(ENTROPY_ROWS))
    return nll, correct, entropy


def chunked_cross_entropy(head, hidden: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None,
                          chunk_tokens: int = CHUNK_TOKENS):
    """Token-weighted next-token loss of (batch, length, hidden) states against (batch, length) labels.

    Normalised like transformers' ForCausalLMLoss: by `num_items_in_batch` (the trained tokens of every
    micro-batch of the step, so gradient accumulation sums to the step's token mean) or, without it, by
    this micro-batch's trained tokens. Returns (loss, {"tokens", "correct", "entropy"}) for the metrics.
    """
    # Position t predicts label t + 1; the last position predicts nothing. One index op, not a slice and
    # an index, so backward writes the hidden states' gradient once.
    labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE).to(hidden.device)
    mask = labels != IGNORE
    selected, targets = hidden[mask], labels[mask]
    # An all-masked micro-batch still gives a differentiable zero, connected to the model.
    nll = hidden.sum() * 0.0
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    entropy = torch.zeros((), device=hidden.device)
    starts = range(0, targets.numel(), chunk_tokens)
    for start in starts:
        chunk = (head, selected[start:start + chunk_tokens], targets[start:start + chunk_tokens])
        # Every chunk but the last is recomputed in backward. The last one's backward runs first, right
        # after this forward, before any other chunk's recomputation, so keeping what it saved adds nothing
        # to the peak and saves its head matmul and log-softmax a second time (the only chunk, on short rows).
        sums = _chunk_sums(*chunk) if start == starts[-1] else checkpoint(_chunk_sums, *chunk, use_reentrant=False)
        nll, correct, entropy = nll + sums[0], correct + sums[1], entropy + sums[2]
    tokens = mask.sum()
    divisor = tokens.clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return nll / divisor, {"tokens": tokens, "correct": correct, "entropy": entropy}


def liger_loss_weight(head):
    """The full head weight Liger's fused linear cross-entropy would read, or None when it cannot see the
    trained rows (a LoRA on lm_head). A trainable-tokens head gives PEFT's merged weight."""
    rows = trainable_token_rows(head)
    if rows is not None:
        return head.token_adapter.get_merged_weights(head.token_adapter.active_adapters)
    if type(head) is torch.nn.Linear:
        return head.weight
    return None


def loss_path(head, device: torch.device) -> tuple[str, str]:
    """("liger" or "chunked", the one line saying which and why)."""
    chunked = f"chunked cross-entropy over trained tokens ({CHUNK_TOKENS} per chunk) through the model's head"
    if device.type != "cuda":
        return "chunked", f"loss: {chunked}; Liger's fused linear cross-entropy not used: no CUDA"
    if importlib.util.find_spec("liger_kernel") is None:
        return "chunked", f"loss: {chunked}; Liger's fused linear cross-entropy not used: liger-kernel is not installed"
    if liger_loss_weight(head) is None:
        return "chunked", f"loss: {chunked}; Liger's fused linear cross-entropy not used: it cannot see a LoRA on lm_head"
    return "liger", "loss: Liger's fused linear cross-entropy (trainable-token rows merged into the head weight)"


def liger_cross_entropy(head, hidden: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None):
    """Liger's fused linear cross-entropy on the trained positions; same normalisation and stats as above."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    labels = labels[:, 1:].to(hidden.device)
    mask = labels != IGNORE
    selected, targets = hidden[:, :-1][mask], labels[mask]
    tokens = mask.sum()
    fused = LigerFusedLinearCrossEntropyLoss(reduction="sum", return_token_accuracy=True)
    weight = liger_loss_weight(head)
    result = fused(weight, selected.to(weight.dtype), targets)
    divisor = tokens.clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    correct = (result.token_accuracy.detach() * tokens).round().long()
    # Liger computes no entropy; NaN says "not measured" rather than a made-up 0.
    return result.loss / divisor, {"tokens": tokens, "correct": correct, "entropy": torch.full((), float("nan"))}


def causal_lm_loss(model, inputs: dict, num_items_in_batch=None, path: str = "chunked", head=None):
    """The step's loss for a batch of TRL's collator (padded or padding-free), without full logits.

    `head`: the output head when `model` is wrapped (DDP); by default `output_head(model)`.
    """
    hidden = causal_lm_hidden(model, inputs)
    head = output_head(model) if head is None else head
    loss_fn = liger_cross_entropy if path == "liger" else chunked_cross_entropy
    return loss_fn(head, hidden, inputs["labels"], num_items_in_batch)


def with_lima_loss(sft_trainer):
    """A subclass of `sft_trainer` (TRL's SFTTrainer or one of its subclasses) whose loss is `causal_lm_loss`;
    TRL's metrics (entropy, mean_token_accuracy, num_tokens) kept."""

    class LimaSFTTrainer(sft_trainer):
        loss_path = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            head = output_head(self.accelerator.unwrap_model(model))
            if self.loss_path is None:
                self.loss_path, line = loss_path(head, inputs["input_ids"].device)
                if inputs["input_ids"].device.type == "cuda":
                    print(line)
            mode = "train" if self.model.training else "eval"
            loss, stats = causal_lm_loss(model, inputs, num_items_in_batch, self.loss_path, head)
            # As in TRL and Trainer: num_items_in_batch counts every rank's tokens, and DDP averages gradients.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            gather = self.accelerator.gather_for_metrics
            tokens = gather(stats["tokens"]).sum()
            accuracy = gather(stats["correct"]).sum() / tokens if tokens > 0 else torch.zeros(())
            entropy = gather(stats["entropy"].to(tokens.device)).sum() / tokens if tokens > 0 else torch.zeros(())
            self._metrics[mode]["mean_token_accuracy"].append(accuracy.item())
            self._metrics[mode]["entropy"].append(entropy.item())
            if mode == "train":
                # Tokens the model read (TRL's num_tokens): the mask's ones when padded, the row when padding-free.
                if "attention_mask" in inputs:
                    read = inputs["attention_mask"].sum()
                else:
                    read = torch.tensor(inputs["input_ids"].numel(), device=inputs["input_ids"].device)
                self._total_train_tokens += gather(read).sum().item() // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            if return_outputs:
                with torch.no_grad():
                    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
                return loss, outputs
            return loss

    return LimaSFTTrainer
