"""A run's inputs changed or mistyped: a data file edited while it is read, lora_target_modules that does not
compile or matches no module. run.json records what was trained; a bad key is one line before any weight loads.

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_runs.py -q
"""

import hashlib
import json

import pytest

import lima_lite.train
from helpers import EOT, adapter_weights, qa, run_cli, train_tiny, write_jsonl
from lima_lite import LimaError
from lima_lite.config import load_recipe
from lima_lite.conversations import read_conversations
from lima_lite.layout import read_run

# ---------------------------------------------------------------- the data file edited while it is read


def test_the_hash_is_of_the_bytes_read_blank_lines_and_all(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join(json.dumps({"messages": qa(i)}).encode() for i in range(3)) + b"\n\n  \n")
    conversations, digest = read_conversations(str(data))
    assert len(conversations) == 3 and digest == hashlib.sha256(data.read_bytes()).hexdigest()
    whole = tmp_path / "d.json"
    whole.write_text(json.dumps([{"messages": qa(i)} for i in range(2)]))
    assert read_conversations(str(whole))[1] == hashlib.sha256(whole.read_bytes()).hexdigest()


def test_run_json_records_the_rows_trained_not_the_file_edited_after_they_were_read(tiny_llama_tied, tmp_path,
                                                                                    monkeypatch):
    data, read = tmp_path / "run-data.jsonl", []  # the data file train_tiny writes for tmp_path / "run"
    encode = lima_lite.train.encode_dataset

    def edited_meanwhile(*args, **kwargs):  # another program appends a row once the rows are in memory
        if not read:  # the train set (the dev set is encoded next)
            read.append(hashlib.sha256(data.read_bytes()).hexdigest())
            with data.open("a") as file:
                file.write(json.dumps({"messages": qa(99)}) + "\n")
        return encode(*args, **kwargs)

    monkeypatch.setattr(lima_lite.train, "encode_dataset", edited_meanwhile)
    record = read_run(train_tiny(tiny_llama_tied, tmp_path / "run", [qa(i) for i in range(4)]))
    assert record.counts["train"]["read"] == 4  # the four rows read were trained ...
    assert record.data["sha256"] == read[0] != hashlib.sha256(data.read_bytes()).hexdigest()  # ... and are hashed


# ---------------------------------------------------------------- lora_target_modules


def test_a_target_regex_that_does_not_compile_is_refused_by_where_it_was_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: base\ndataset_name: d.jsonl\nlora_target_modules: '(q|k_proj'\n")
    with pytest.raises(LimaError, match=rf"^{recipe}:3: lora_target_modules: '\(q\|k_proj' is not a regular expression "
                                        r"\(missing \), unterminated subpattern at position 0\); name the modules as a list"):
        load_recipe(recipe)
    with pytest.raises(LimaError, match=r"^command line: lora_target_modules: '\[' is not a regular expression"):
        load_recipe(recipe, ["lora_target_modules=["])


@pytest.mark.parametrize("value, named", [("[qproj]", "'qproj'"), ("[q_proj, nothing]", "'nothing'"),
                                          ("model\\.layers\\.9\\..*", "'model\\\\.layers\\\\.9\\\\..*'")])
def test_targets_that_match_no_module_are_refused_before_the_weights_load(tiny_llama_tied, tmp_path, monkeypatch,
                                                                          value, named):
    import lima_lite.model

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(lima_lite.model, "get_model", refuse)
    data = write_jsonl(tmp_path / "d.jsonl", [qa(0)])
    result = run_cli("train", "quickstart", f"model_name_or_path={tiny_llama_tied}", f"dataset_name={data}",
                     f"eot_token={EOT}", f"output_dir={tmp_path / 'run'}", f"lora_target_modules={value}")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: command line: lora_target_modules: {named}: no such module in {tiny_llama_tied}; its linear layers are "
        "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"], result.stderr
    assert not (tmp_path / "run").exists()


def test_a_one_item_list_of_targets_trains_that_module(tiny_llama_tied, tmp_path):
    for given in ("[q_proj]", "q_proj"):  # TRL makes a one-item list a string, which peft would read as a regex
        recipe = load_recipe(None, ["model_name_or_path=b", "dataset_name=d", f"lora_target_modules={given}"])
        assert recipe.model_args.lora_target_modules == ["q_proj"]
    run = train_tiny(tiny_llama_tied, tmp_path / "run", [qa(i) for i in range(2)], lora_target_modules=["q_proj"])
    adapted = {name.split(".lora_")[0].removeprefix("base_model.model.") for name in adapter_weights(run)}
    assert adapted == {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}


# ---------------------------------------------------------------- run files that are not files: one line, no wait


@pytest.mark.parametrize("name", ["train.lock", "checkpoint-2/trainer_state.json", "run.json"])
def test_a_run_file_that_is_a_fifo_is_one_line_not_a_read_that_never_ends(tiny_llama_tied, tmp_path, name):
    import os
    import shutil

    run = train_tiny(tiny_llama_tied, tmp_path / "run", [qa(i) for i in range(4)])
    shutil.rmtree(run / "adapter")  # as if stopped after its checkpoint
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    with pytest.raises(LimaError) as error:  # the same run again: a read of the FIFO would wait forever
        train_tiny(tiny_llama_tied, run, [qa(i) for i in range(4)])
    message = str(error.value)
    assert "\n" not in message and (f"{name.split('/')[-1]} is not a regular file" in message or
                                     f"{run / name}: not a regular file" in message), message


def test_push_refuses_a_metrics_file_that_is_a_fifo(tiny_run, tmp_path):
    import os
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    result = run_cli("push", str(run), "--repo", "me/x", "--base-model", "me/b", "--dry-run", "--out", str(tmp_path / "hub"))
    assert result.returncode == 2 and f"{run / 'metrics.jsonl'}: not a regular file" in result.stderr, result.stderr
