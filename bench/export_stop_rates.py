"""Stop rates of an exported model in llama.cpp against the same adapter in transformers, on the 12 dev prompts.

    $ PYTHONPATH=$PWD python bench/export_stop_rates.py --run runs/quickstart --seeds 3 --max-new-tokens 400

Exports the run's adapter to GGUF (or takes --gguf), serves it with llama.cpp (lima_lite.serve.llamacpp_server,
the xllamacpp wheel: what llama-server, Ollama and LM Studio run) and samples each dev prompt once per seed
under each llama.cpp setting below; then the same prompts and seeds in transformers through lima_lite's
generation core (LIMA's sampling: its repetition penalty on generated tokens only). Prints, per setting, how
many replies ended at the turn end before --max-new-tokens, and the mean reply length in tokens.
"""

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# llama.cpp settings to compare: LIMA's penalty as llama.cpp applies it (over the last 64 tokens, Ollama's and
# llama.cpp's default window, the prompt's included: the export's), and no penalty.
SETTINGS = {"repeat_penalty 1.2, last 64 tokens (the export's)": {"repeat_penalty": 1.2, "repeat_last_n": 64},
            "repeat_penalty 1.0 (none)": {"repeat_penalty": 1.0}}


def post(address: str, body: dict) -> dict:
    request = urllib.request.Request(address + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def llama_cpp_rates(gguf: Path, prompts: list[str], seeds: int, max_new_tokens: int) -> dict:
    from lima_lite.export import EXPORT_SAMPLING
    from lima_lite.serve import llamacpp_server

    server = llamacpp_server(gguf, context=2048, threads=2)
    rates = {}
    for label, setting in SETTINGS.items():
        ended, tokens, start = 0, 0, time.perf_counter()
        for seed in range(seeds):
            for prompt in prompts:
                reply = post(server.listening_address, {
                    "messages": [{"role": "user", "content": prompt}], "max_tokens": max_new_tokens, "seed": seed,
                    "temperature": EXPORT_SAMPLING["temperature"], "top_p": EXPORT_SAMPLING["top_p"],
                    "top_k": EXPORT_SAMPLING["top_k"], "min_p": EXPORT_SAMPLING["min_p"], **setting})
                ended += reply["choices"][0]["finish_reason"] == "stop"
                tokens += reply["usage"]["completion_tokens"]
        replies = seeds * len(prompts)
        rates[f"llama.cpp, {label}"] = (ended, replies, tokens / replies, time.perf_counter() - start)
        print_row(f"llama.cpp, {label}", *rates[f"llama.cpp, {label}"])
    return rates


def transformers_rates(adapter: Path, prompts: list[str], seeds: int, max_new_tokens: int) -> dict:
    from lima_lite.generate import load_engine

    engine = load_engine(adapter=adapter)
    engine.model.merge_adapter()
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    ended, tokens, start = 0, 0, time.perf_counter()
    for seed in range(seeds):
        replies = engine.replies(conversations, seed=seed, max_new_tokens=max_new_tokens)
        ended += sum(r.finish_reason == "eot" for r in replies)
        tokens += sum(r.new_tokens for r in replies)
    replies = seeds * len(prompts)
    label = "transformers, LIMA's sampling (penalty 1.2 on generated tokens)"
    print_row(label, ended, replies, tokens / replies, time.perf_counter() - start)
    return {label: (ended, replies, tokens / replies, time.perf_counter() - start)}


def print_row(label: str, ended: int, replies: int, mean: float, seconds: float) -> None:
    print(f"| {label} | {ended}/{replies} ({ended / replies:.0%}) | {mean:.0f} | {seconds:.0f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run folder (its adapter/ is exported)")
    parser.add_argument("--gguf", type=Path, help="an exported GGUF of that adapter (default: export it now)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=400)
    args = parser.parse_args()
    from lima_lite.conversations import load_conversations
    from lima_lite.export import export_gguf

    prompts = [c["messages"][0]["content"] for c in load_conversations("embedded:dev.jsonl")]
    print(f"| runtime and sampling | ended at the turn end before {args.max_new_tokens} tokens | mean reply tokens | s |")
    print("|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = args.gguf or export_gguf(args.run, Path(tmp) / "export")
        llama_cpp_rates(gguf, prompts, args.seeds, args.max_new_tokens)
    transformers_rates(args.run / "adapter", prompts, args.seeds, args.max_new_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
