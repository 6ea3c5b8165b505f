"""Models given where they do not belong: an adapter on a base of another vocabulary, an adapter or a training
run given as the base. Each is one line naming what it is and the base to use, before any weight is read.

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_models.py -q
"""

import json
import shutil

import pytest

import lima_lite.model
from helpers import EOT, qa, run_cli, train_tiny, truncate
from lima_lite import LimaError
from lima_lite.generate import load_engine


@pytest.fixture
def no_weights(monkeypatch):
    """Fails the test if a model's weights are loaded: the checks come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(lima_lite.model, "get_model", refuse)


def one_line(result, *parts: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (result.returncode, result.stderr)
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# ---------------------------------------------------------------- another vocabulary


def test_an_adapter_on_a_base_of_another_vocabulary_is_refused_naming_both_sizes(tiny_run, tiny_llama_tied,
                                                                                  tiny_llama_700, no_weights, tmp_path):
    adapter = tiny_run / "adapter"
    with pytest.raises(LimaError) as error:
        load_engine(adapter=adapter, base=str(tiny_llama_700))
    assert str(error.value) == (f"{adapter}: trained on a base with a vocabulary of 512 tokens (512 in its tokenizer, less "
                                f"0 added in training); the base {tiny_llama_700} has 700: use the base it was trained on "
                                f"({tiny_llama_tied}) as --base")
    for command in (["chat", "--adapter", str(adapter), "--base", str(tiny_llama_700), "--prompt", "hi"],
                    ["merge", str(adapter), "--base", str(tiny_llama_700), "--out", str(tmp_path / "merged")]):
        one_line(run_cli(*command), str(adapter), str(tiny_llama_700), "512 tokens", "has 700")
    assert not (tmp_path / "merged").exists()


def test_the_same_size_with_other_tokens_is_another_vocabulary_too(tiny_llama, tiny_llama_tied, tmp_path, request):
    run = train_tiny(tiny_llama, tmp_path / "run", [qa(i) for i in range(2)], eot_token="<|eot|>")  # adds <|eot|>
    request.getfixturevalue("no_weights")
    with pytest.raises(LimaError, match=r"vocabulary of 512 tokens \(513 in its tokenizer, less 1 added in training\); "
                                        rf"the base {tiny_llama_tied} has 512 too, but \d+ of them differ"):
        load_engine(adapter=run / "adapter", base=str(tiny_llama_tied))


def test_a_base_without_tokenizer_files_is_checked_by_its_config(tiny_run, tiny_llama_tied, no_weights, tmp_path):
    base = tmp_path / "bare"
    base.mkdir()
    config = json.loads((tiny_llama_tied / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "vocab_size": 300}))
    with pytest.raises(LimaError, match=r"the base .*bare has 300 \(config.json's vocab_size\)"):
        load_engine(adapter=tiny_run / "adapter", base=str(base))


def test_the_base_it_was_trained_on_passes_the_check(tiny_run, tiny_llama_tied):
    from transformers import AutoTokenizer

    adapter = tiny_run / "adapter"
    lima_lite.model.check_vocabulary(adapter, AutoTokenizer.from_pretrained(adapter), str(tiny_llama_tied), "base")


# ---------------------------------------------------------------- an adapter or a run given as the base


def test_an_adapter_or_a_run_given_as_the_base_names_the_base_it_was_trained_on(tiny_run, tiny_llama_tied, no_weights,
                                                                                tmp_path):
    adapter, epoch = tiny_run / "adapter", tiny_run / "epoch-01"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": qa(0)}) + "\n")
    train = ["inspect", "quickstart", f"dataset_name={data}", f"eot_token={EOT}"]
    is_adapter = f"is an adapter, not a base model (it was trained on {tiny_llama_tied}); give {tiny_llama_tied} as"
    one_line(run_cli(*train, f"model_name_or_path={adapter}"), f"model_name_or_path: {adapter} {is_adapter} model_name_or_path")
    one_line(run_cli(*train, f"model_name_or_path={tiny_run}"),
             f"model_name_or_path: {tiny_run} is a training run, not a base model (it was trained on {tiny_llama_tied}, "
             f"its adapter is {adapter}); give {tiny_llama_tied} as model_name_or_path")
    one_line(run_cli("plan", "quickstart", f"model_name_or_path={adapter}"), is_adapter)
    one_line(run_cli("chat", "--base", str(adapter), "--prompt", "hi"), f"--base: {adapter} {is_adapter} --base")
    one_line(run_cli("chat", "--adapter", str(adapter), "--base", str(epoch), "--prompt", "hi"), f"--base: {epoch} {is_adapter}")
    one_line(run_cli("merge", str(adapter), "--base", str(tiny_run), "--out", str(tmp_path / "m")), "is a training run")
    assert not (tmp_path / "m").exists()


def test_a_copied_adapter_names_its_recorded_base(tiny_run, tmp_path, no_weights):
    shutil.copytree(tiny_run / "adapter", tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": "someone/llama-7b"}))
    one_line(run_cli("chat", "--base", str(tmp_path / "adapter"), "--prompt", "hi"),
             "(it was trained on someone/llama-7b); give someone/llama-7b as --base")


# ---------------------------------------------------------------- damaged model folders, seeds, the base's folder


def damaged_copy(tmp_path, source, change):
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    change(folder)
    return folder


@pytest.mark.parametrize("name, change, words", [
    ("no-tokenizer-files", lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
     "its tokenizer could not be loaded (ValueError"),
    ("tokenizer-json-cut", lambda f: truncate(f / "tokenizer.json"), "its tokenizer could not be loaded (JSONDecodeError"),
    ("config-a-list", lambda f: (f / "adapter_config.json").write_text("[1, 2]"),
     "adapter_config.json: not a JSON object but list"),
    ("token-indices-text", lambda f: (f / "adapter_config.json").write_text(json.dumps(
        {**json.loads((f / "adapter_config.json").read_text()), "trainable_token_indices": "512"})),
     "adapter_config.json: trainable_token_indices: expected token ids")])
def test_a_damaged_adapter_is_one_line_naming_the_file(tiny_run, tiny_llama_tied, tmp_path, name, change, words):
    adapter = damaged_copy(tmp_path, tiny_run / "adapter", change)
    one_line(run_cli("chat", "--adapter", str(adapter), "--base", str(tiny_llama_tied), "--prompt", "hi"), str(adapter), words)
    one_line(run_cli("merge", str(adapter), "--base", str(tiny_llama_tied), "--out", str(tmp_path / "m")), words)
    assert not (tmp_path / "m").exists()


def test_a_base_with_a_damaged_config_is_one_line(tiny_llama_tied, tmp_path):
    base = damaged_copy(tmp_path, tiny_llama_tied, lambda f: truncate(f / "config.json"))
    one_line(run_cli("chat", "--base", str(base), "--prompt", "hi"), f"{base}: its tokenizer could not be loaded",
             "config.json")


@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_a_seed_torch_cannot_take_is_a_usage_error(tiny_run, seed):
    result = run_cli("chat", "--adapter", str(tiny_run / "adapter"), "--prompt", "hi", "--seed", seed)
    assert result.returncode == 2 and "argument --seed: must be >= 0" in result.stderr and "Traceback" not in result.stderr


def test_merge_never_writes_into_the_base_it_reads_even_through_a_link(tiny_run, tiny_llama_tied, tmp_path):
    before = sorted(p.name for p in tiny_llama_tied.iterdir())
    (tmp_path / "link").symlink_to(tiny_llama_tied)  # the base named by the adapter, not given on the command line
    one_line(run_cli("merge", str(tiny_run / "adapter"), "--out", str(tmp_path / "link" / "merged")),
             f"is or holds an input ({tiny_llama_tied})")
    assert sorted(p.name for p in tiny_llama_tied.iterdir()) == before
