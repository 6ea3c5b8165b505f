"""What one look under --runs costs the app: `Models.refresh` (find every adapter, each one's dev loss) on a
generated runs folder, the work every open page's model lists share at most once every LIST_SECONDS.

    $ PYTHONPATH=$PWD python bench/list_refresh.py --runs 3 --epochs 4 --checkpoints 2
    $ PYTHONPATH=$PWD python bench/list_refresh.py --runs 20 --epochs 15 --checkpoints 3

Each generated run holds epoch-01/ .. epoch-NN/, adapter/ and checkpoint-K/ folders (each with an
adapter_config.json and a 1 MB weights file), run.json and a metrics.jsonl of 100 logged steps per epoch with
a dev loss per epoch: the folder tree and the files the look reads, not real weights. Prints the number of
models listed and the median and slowest of --repeat looks.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def generate(root: Path, runs: int, epochs: int, checkpoints: int) -> None:
    for r in range(runs):
        run = root / f"run-{r:02d}"
        names = [f"epoch-{e:02d}" for e in range(1, epochs + 1)] + ["adapter"]
        names += [f"checkpoint-{100 * (k + 1)}" for k in range(checkpoints)]
        for name in names:
            (run / name).mkdir(parents=True)
            (run / name / "adapter_config.json").write_text("{}")
            (run / name / "adapter_model.safetensors").write_bytes(bytes(1 << 20))
        (run / "run.json").write_text("{}")
        rows = []
        for e in range(epochs):
            rows += [{"step": 100 * e + s, "epoch": e + s / 100, "loss": 2.0} for s in range(1, 101)]
            rows.append({"step": 100 * (e + 1), "epoch": e + 1.0, "eval_loss": 1.5})
        (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--checkpoints", type=int, default=2)
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args()

    from lima_lite.app.ui import Models

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "runs"
        generate(root, args.runs, args.epochs, args.checkpoints)
        models = Models.discover(root)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            models.refresh()
            times.append(time.perf_counter() - start)
        print(f"{len(models.labels)} models listed; one look: median {1000 * statistics.median(times):.1f} ms, "
              f"slowest {1000 * max(times):.1f} ms ({args.repeat} looks)")


if __name__ == "__main__":
    main()
