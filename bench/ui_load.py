"""How many people the Gradio app serves at once, and at what wait: N clients send one chat message each,
all at the same moment, to `lima-lite ui`'s app on loopback (bounded queue, one generation at a time).

    $ PYTHONPATH=$PWD python bench/ui_load.py --clients 1 4 16 32 50 --queue-size 16 --max-new-tokens 32
    $ PYTHONPATH=$PWD python bench/ui_load.py --adapter runs/quickstart/adapter --clients 8 50

Without --adapter it trains the tests' tiny 2-layer LLaMA (hidden 64) for two steps and serves that, so
the figures are of the app and its queue, not of a real model: a generation takes milliseconds, not seconds.
For each N it prints: served, refused (and what a refused client was told), and the wait of the served
ones (median and longest, from the moment all N were sent to the end of the reply). Loopback only; each
client sends one request, and every round ends within --timeout seconds.
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_adapter(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_llama
    from test_chat import qa, train_tiny

    base = build_tiny_llama(folder / "base", tie_word_embeddings=True, eos="<|im_end|>", extra_special=("<|im_end|>",))
    return train_tiny(base, folder / "run", [qa(i) for i in range(4)]) / "adapter"


def serve(adapter: Path, queue_size: int, port: int, folder: Path):
    from lima_lite.app.ui import Models, build_app, launch

    models = Models({"tuned": (str(adapter), True)}, load_in_4bit=False)
    models.engine("tuned")  # loaded before the clock starts
    app = build_app(models, [{"id": "1", "prompt": "p"}], folder / "votes.jsonl")
    launch(app, "127.0.0.1", port, False, None, queue_size, prevent_thread_lock=True, quiet=True)
    return app


def chat_index(url: str) -> int:
    """fn_index of the Chat tab's Send (the first event wired to chat_turn)."""
    import httpx

    config = httpx.get(f"{url}/config").json()
    boxes = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "chat-input"}
    return next(i for i, d in enumerate(config["dependencies"]) if set(d["inputs"]) & boxes)


def one_client(url: str, index: int, message: str, max_new_tokens: int, start: threading.Event, results: list,
               timeout: float) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    start.wait()
    began = time.perf_counter()
    try:
        job = client.submit(message, [], "tuned", 0.7, 0.9, 1.2, max_new_tokens, fn_index=index)
        job.result(timeout=timeout)
        results.append(("served", time.perf_counter() - began, ""))
    except Exception as error:  # noqa: BLE001 - what a refused client sees is the measurement
        results.append(("refused", time.perf_counter() - began, f"{type(error).__name__}: {error}"[:160]))
    finally:
        client.close()


def round_of(url: str, index: int, clients: int, max_new_tokens: int, timeout: float) -> dict:
    start, results = threading.Event(), []
    threads = [threading.Thread(target=one_client, args=(url, index, f"Question {i}: how do I water a fern?",
                                                          max_new_tokens, start, results, timeout), daemon=True)
               for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1.0 + 0.05 * clients)  # every client has fetched the config before the start signal
    began = time.perf_counter()
    start.set()
    for thread in threads:
        thread.join(timeout=timeout + 5)
    served = sorted(t for kind, t, _ in results if kind == "served")
    refused = [why for kind, _, why in results if kind == "refused"]
    return {"clients": clients, "served": len(served), "refused": len(refused), "unfinished": clients - len(results),
            "median_wait_s": statistics.median(served) if served else None, "max_wait_s": max(served, default=None),
            "round_s": time.perf_counter() - began, "refused_message": refused[0] if refused else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, help="adapter to serve (default: the tests' tiny model, trained here)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32, 50])
    parser.add_argument("--queue-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--timeout", type=float, default=120, help="longest a round may take (seconds)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        adapter = args.adapter or tiny_adapter(folder)
        print(f"model: {adapter}" + ("" if args.adapter else " (the tests' tiny LLaMA, not a real model)"))
        app = serve(adapter, args.queue_size, args.port, folder)
        url = f"http://127.0.0.1:{args.port}"
        try:
            index = chat_index(url)
            for clients in args.clients:
                r = round_of(url, index, clients, args.max_new_tokens, args.timeout)
                wait = (f"wait median {r['median_wait_s']:.2f} s, longest {r['max_wait_s']:.2f} s"
                        if r["served"] else "no one served")
                print(f"{clients:3d} clients: {r['served']} served, {r['refused']} refused, {r['unfinished']} "
                      f"unfinished; {wait}; round {r['round_s']:.1f} s"
                      + (f"\n      refused with: {r['refused_message']}" if r["refused"] else ""), flush=True)
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
