"""Merge a LoRA adapter into its base: one standalone bf16 model in safetensors, no peft needed to run it.

    $ lima-lite merge runs/quickstart/adapter --out models/smollm2-135m-lima
    $ lima-lite merge runs/llama-7b/epoch-07 --out models/llama-7b-lima --base /models/llama-7b
    >>> merge_adapter("runs/quickstart/adapter", "models/smollm2-135m-lima")

A QLoRA adapter was trained against the base's 4-bit NF4 weights, so the base is loaded in 4-bit and
dequantized to bf16 before the LoRA deltas are added: the merged weights are the ones the adapter saw.
An adapter trained on a full-precision base (load_in_4bit: false in its run.json) is merged into the
full-precision base. The tokenizer, the LIMA template and the chat template are saved with the model,
so `lima-lite chat --base DIR` and plain transformers both render conversations as training did.

The turn end of training is the merged model's end of generation for every runtime: generation_config.json's
eos_token_id lists it first (then the base's eos), the tokenizer's eos_token is it, and the tokenizer's chat
template renders the trained format (LIMA's, or the base's own). A merge that kept the base's eos would run
on past each reply in plain transformers, vLLM or llama.cpp (Llama 3 base: eos <|end_of_text|>, turn end <|eot_id|>).
"""

import argparse
import json
from pathlib import Path

from lima_lite import LimaError
from lima_lite.files import atomic_dir, check_output_dir
from lima_lite.layout import adapter_base, adapter_for_base, check_lima_adapter, read_run, readable_weights
from lima_lite.precision import chosen_precision, precision_report
from lima_lite.template import ChatTemplate, protected_tokens, token_id


def trained_in_4bit(adapter_dir: Path) -> bool | None:
    """What run.json next to the adapter says about the base's precision in training; None if unknown."""
    for folder in (adapter_dir, adapter_dir.parent):
        run = read_run(folder)
        if run is not None:
            return run.model["load_in_4bit"]
    return None


def merge_adapter(adapter: str | Path, out: str | Path, base: str | None = None, from_4bit: bool | None = None,
                  dtype: str = "bfloat16") -> Path:
    """Write base + adapter, merged, to `out` (atomically) and return it."""
    import torch
    from peft import PeftModel

    from lima_lite.model import check_vocabulary, get_model, load_tokenizer, resolve_base, resolve_model

    adapter_dir = Path(check_lima_adapter(resolve_model(str(adapter))))
    out = Path(out)
    if out.exists():
        raise LimaError(f"{out}: already exists; choose another --out or delete it")
    base = base or adapter_base(adapter_dir)
    # the base, given or named by the adapter, is an input too: never written into (a symlink to it included)
    check_output_dir(out, inputs=[adapter_dir, Path(base).expanduser()], protected=[Path(base).expanduser()])
    if from_4bit is None:
        recorded = trained_in_4bit(adapter_dir)
        from_4bit = True if recorded is None else recorded  # the recipes train QLoRA unless they say otherwise
    tokenizer = load_tokenizer(adapter_dir)
    target = getattr(torch, dtype)

    base_dir = resolve_base(base, "--base")
    check_vocabulary(adapter_dir, tokenizer, base_dir, base)
    with readable_weights(base_dir):
        if from_4bit:
            model = get_model(base_dir, True, dtype, vocab_size=len(tokenizer))
            model = model.dequantize()  # NF4 -> the compute dtype: the weights the adapter was trained on
        else:
            model = get_model(base_dir, False, "float32", vocab_size=len(tokenizer))
    with readable_weights(adapter_dir), adapter_for_base(adapter_dir, base):
        model = PeftModel.from_pretrained(model.float(), adapter_dir)
    # Merge in float32, round once to the target dtype: W + BA computed before rounding.
    merged = model.merge_and_unload().to(target)
    merged.config.dtype = target
    template = ChatTemplate.load(adapter_dir)
    set_stop_metadata(merged, tokenizer, template)

    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        template.save(tmp)
        (tmp / "lima_merge.json").write_text(json.dumps(
            {"adapter": str(adapter), "base": base, "base_dequantized_from_4bit": from_4bit, "dtype": dtype,
             "chat_format": template.chat_format, "eot_token": template.eot_token}, indent=2) + "\n")
    return out


def stop_ids(model_eos: int | list[int] | None, eot: int) -> list[int]:
    """The turn end first, then the base's eos ids: every id a runtime should stop generating at."""
    rest = model_eos if isinstance(model_eos, list) else [] if model_eos is None else [model_eos]
    return [eot, *(i for i in rest if i != eot)]


def set_stop_metadata(model, tokenizer, template) -> None:
    """Make the trained turn end the end of generation: generation_config, tokenizer eos, chat template."""
    eot = token_id(tokenizer, template.eot_token)
    model.generation_config.eos_token_id = stop_ids(model.generation_config.eos_token_id, eot)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.eos_token = template.eot_token
    if template.protected is None:  # an adapter saved before templates listed their protected tokens
        template.protected = protected_tokens(tokenizer)
    tokenizer.chat_template = template.jinja()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lima-lite merge", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Merge an adapter into its base model and save one standalone model (safetensors):\n"
                    "the base dequantized (when it was trained in 4-bit) plus the LoRA deltas.",
        epilog="Talk to the result with: lima-lite chat --base OUT")
    parser.add_argument("adapter", metavar="ADAPTER", help="adapter folder (RUN/adapter, RUN/epoch-NN) or Hub id")
    parser.add_argument("--out", required=True, help="folder to write (must not exist)")
    parser.add_argument("--base", help="base model folder or Hub id (default: the adapter's base)")
    parser.add_argument("--from-4bit", dest="from_4bit", action=argparse.BooleanOptionalAction, default=None,
                        help="dequantize a 4-bit NF4 base before merging (default: as in the adapter's run.json; "
                             "on when unknown, as QLoRA trains)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                        help="dtype of the dequantized base and the saved weights (default: what this machine "
                             "computes fast: bfloat16 where native, float16 on a GPU without bf16, else float32; "
                             "`lima-lite env` says which)")
    args = parser.parse_args(argv)

    args.dtype = args.dtype or chosen_precision().dtype
    print(precision_report(args.dtype, False, False, "merging"))
    out = merge_adapter(args.adapter, args.out, args.base, args.from_4bit, args.dtype)
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    print(f"merged model written to {out} ({size / 1e6:.1f} MB of {args.dtype} weights)")
    print(f"Talk to it: lima-lite chat --base {out}")
    return 0
