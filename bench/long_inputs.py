"""What an oversized input costs: one huge training example, and a long chat history near the context.

    $ PYTHONPATH=$PWD python bench/long_inputs.py --example-mb 50 --history-mb 0.8

Uses the tests' tiny LLaMA tokenizer (byte-level BPE, 512 tokens, trained here on the embedded samples) and
a 2,048-token context. Prints the seconds (and peak resident memory of the process) for
`train.encode_dataset` on one conversation whose answer is --example-mb of text (max_length 2048), and for
`Engine.prompt_ids` on a history of --history-mb of alternating turns.
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example-mb", type=float, default=50)
    parser.add_argument("--history-mb", type=float, default=0.8)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from transformers import AutoTokenizer

    from conftest import build_tiny_llama
    from lima_lite.conversations import encode_dataset
    from lima_lite.generate import Engine
    from lima_lite.template import ChatTemplate

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_llama(Path(tmp) / "base", eos="<|im_end|>", extra_special=("<|im_end|>",))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    template = ChatTemplate(eot_token="<|im_end|>", bos_token=tokenizer.bos_token)
    sentence = "Water the fern once a week, in the morning, and keep it out of direct sun. "

    text = sentence * int(args.example_mb * 1e6 / len(sentence))
    messages = [{"role": "user", "content": "How do I keep a fern?"}, {"role": "assistant", "content": text}]
    began = time.perf_counter()
    rows, counts, _ = encode_dataset([{"id": "huge", "messages": messages}], tokenizer, template, 2048)
    print(f"encode_dataset, one {len(text) / 1e6:.1f} MB example, max_length 2048: {time.perf_counter() - began:.2f} s, "
          f"{len(rows[0]['input_ids'])} tokens kept, counts {counts}")

    engine = Engine(model=None, tokenizer=tokenizer, template=template, name="tiny", context_length=2048)
    history, size = [], 0
    while size < args.history_mb * 1e6:
        for role in ("user", "assistant"):
            history.append({"role": role, "content": sentence * 20})
            size += len(sentence) * 20
    history.append({"role": "user", "content": "And in winter?"})
    began = time.perf_counter()
    ids, dropped = engine.prompt_ids(history, 256)
    print(f"prompt_ids, a {size / 1e6:.2f} MB history of {len(history)} turns, context 2048: "
          f"{time.perf_counter() - began:.2f} s, {dropped} turns dropped, {len(ids)} ids")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
