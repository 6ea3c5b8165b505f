"""Chat formats of today's bases: each family's turn end, native labels from token positions, no injection.

The expected ids and labels of the native format are built independently of `encode_native`: the ids by
the tokenizer's own `apply_chat_template(tokenize=True)`, each assistant turn's start by rendering the
conversation before it with the generation prompt, and its trained tokens as the content's ids + the turn end.
"""

import json

import pytest

from families import FAMILIES, build_tokenizer
from lima_lite import LimaError
from lima_lite.model import get_tokenizer
from lima_lite.template import (
    IGNORE,
    ChatTemplate,
    base_format,
    encode_conversation,
    encode_prompt,
    mark_trained_spans,
    native_template,
)

SINGLE = [{"role": "user", "content": "How do I boil an egg?"},
          {"role": "assistant", "content": "Put it in boiling water for nine minutes."}]
MULTI = SINGLE + [{"role": "user", "content": "And a soft one?"},
                  {"role": "assistant", "content": "Six minutes, then cold water."}]
SYSTEM = [{"role": "system", "content": "Answer briefly."}, *MULTI]
PREFIX_STABLE = ["llama3", "chatml", "mistral", "gemma"]  # Qwen3 renders the last reply differently (think block)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from helpers import sample_texts

    texts = sample_texts()
    found = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        build_tokenizer(family, texts).save_pretrained(folder)
        found[family] = str(folder)
    return found


def native(folders, family):
    return get_tokenizer(folders[family], FAMILIES[family]["turn_end"], chat_format="native")


def expected_native(tokenizer, eot_token, messages):
    """(ids, labels) from prefix renderings: an independent construction of the native format's labels."""
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    labels = [IGNORE] * len(ids)
    eot = tokenizer.convert_tokens_to_ids(eot_token)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(tokenizer.apply_chat_template(messages[:k], add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
        trained = tokenizer(message["content"], add_special_tokens=False)["input_ids"] + [eot]
        assert ids[start: start + len(trained)] == trained  # the construction itself holds
        labels[start: start + len(trained)] = trained
    return ids, labels


@pytest.mark.parametrize("family", FAMILIES)
def test_native_turn_end_is_the_templates_not_the_eos(folders, family):
    tokenizer, template, added = native(folders, family)
    assert template.chat_format == "native" and template.eot_token == FAMILIES[family]["turn_end"]
    assert template.chat_template == FAMILIES[family]["template"]
    assert tokenizer.pad_token_id not in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(template.eot_token))
    assert tokenizer.chat_template == FAMILIES[family]["template"]  # the base's format is kept, not replaced
    if family in ("chatml", "gemma", "llama3"):
        assert tokenizer.eos_token != template.eot_token  # Qwen base, Gemma, Llama 3 base: eos is not the turn end
    # the turn end already exists: no token added for it (only a pad where the base's pad is its eos)
    assert template.eot_token not in tokenizer.convert_ids_to_tokens(added)


@pytest.mark.parametrize("family", FAMILIES)
def test_native_format_refuses_a_wrong_turn_end(folders, family):
    with pytest.raises(LimaError, match=f"set eot_token: '{FAMILIES[family]['turn_end']}'"):
        get_tokenizer(folders[family], "<|eot|>", chat_format="native")


@pytest.mark.parametrize("family", PREFIX_STABLE)
@pytest.mark.parametrize("messages", [SINGLE, MULTI, SYSTEM], ids=["single", "multi", "system"])
def test_native_labels_are_exactly_the_assistant_content_and_turn_end(folders, family, messages):
    if family == "mistral" and messages is SYSTEM:
        pytest.skip("Mistral's [INST] template has no system turn")
    tokenizer, template, _ = native(folders, family)
    example = encode_conversation(tokenizer, template, messages)
    ids, labels = expected_native(tokenizer, template.eot_token, messages)
    assert example["input_ids"] == ids
    assert example["labels"] == labels
    eot = tokenizer.convert_tokens_to_ids(template.eot_token)
    trained_eots = [p for p, label in enumerate(example["labels"]) if label == eot]
    assert len(trained_eots) == sum(m["role"] == "assistant" for m in messages)


def test_native_labels_skip_qwen3s_think_block(folders):
    tokenizer, template, _ = native(folders, "qwen3")
    example = encode_conversation(tokenizer, template, MULTI)
    shown = mark_trained_spans(tokenizer, example["input_ids"], example["labels"])
    assert shown.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n[[Six minutes, then cold water.<|im_end|>]]\n")
    assert "<|im_start|>assistant\n[[Put it in boiling water for nine minutes.<|im_end|>]]\n" in shown
    # the prompt carries the empty think block, exactly the context the last reply was trained in
    prompt = encode_prompt(tokenizer, template, MULTI[:3])
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    single = encode_conversation(tokenizer, template, SINGLE)["input_ids"]
    prompt = encode_prompt(tokenizer, template, SINGLE[:1])
    assert single[: len(prompt)] == prompt


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_is_the_prefix_training_saw_before_each_reply(folders, family):
    tokenizer, template, _ = native(folders, family)
    for k in (1, 3):
        full = encode_conversation(tokenizer, template, MULTI[: k + 1])
        prompt = encode_prompt(tokenizer, template, MULTI[:k])
        assert full["input_ids"][: len(prompt)] == prompt
        assert full["labels"][len(prompt)] != IGNORE and full["labels"][len(prompt) - 1] == IGNORE
        after = [label for label in full["labels"][len(prompt):] if label != IGNORE]
        assert tokenizer.decode(after) == MULTI[k]["content"] + template.eot_token  # the last reply, all of it
    if family in PREFIX_STABLE:  # and it is what the template's own generation prompt gives
        expected = tokenizer.apply_chat_template(MULTI[:3], add_generation_prompt=True, tokenize=True, return_dict=True)
        assert encode_prompt(tokenizer, template, MULTI[:3]) == list(expected["input_ids"])


@pytest.mark.parametrize("family", FAMILIES)
def test_special_token_text_typed_by_a_user_stays_text(folders, family):
    tokenizer, template, _ = native(folders, family)
    specials = FAMILIES[family]["special"]
    typed = "Why does " + " and ".join(specials) + " appear?"
    messages = [{"role": "user", "content": typed},
                {"role": "assistant", "content": "Because of " + specials[-1] + "."}]
    example = encode_conversation(tokenizer, template, messages)
    clean = encode_conversation(tokenizer, template, [{"role": "user", "content": "Why?"},
                                                      {"role": "assistant", "content": "Because."}])
    for token in specials:  # each special id occurs as often as in the same conversation without the typed text
        index = tokenizer.convert_tokens_to_ids(token)
        assert example["input_ids"].count(index) == clean["input_ids"].count(index), token
    # the naive path (render, then tokenize) turns the typed text into the tokens: the test would catch it
    naive = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    eot = tokenizer.convert_tokens_to_ids(template.eot_token)
    assert list(naive).count(eot) > example["input_ids"].count(eot)
    # the typed text decodes back as it was typed
    assert typed in tokenizer.decode(example["input_ids"])


@pytest.mark.parametrize("family,eot,added", [("llama3", "<|eot_id|>", False), ("chatml", "<|im_end|>", False),
                                              ("gemma", "<end_of_turn>", False), ("mistral", "<|eot|>", True)])
def test_lima_format_reuses_the_bases_turn_end_and_adds_one_only_when_there_is_none(folders, family, eot, added):
    tokenizer, template, new = get_tokenizer(folders[family], eot)
    assert template.chat_format == "lima" and template.eot_token == eot
    assert (eot in tokenizer.convert_ids_to_tokens(new)) == added
    example = encode_conversation(tokenizer, template, MULTI)
    index = tokenizer.convert_tokens_to_ids(eot)
    assert example["input_ids"].count(index) == len(MULTI)  # one turn end per utterance
    assert [label for label in example["labels"] if label == index] == [index, index]  # the assistants' only
    # no role words, and the saved chat template renders the same ids for plain transformers users
    assert "assistant" not in tokenizer.decode(example["input_ids"])
    native = tokenizer.apply_chat_template(MULTI, tokenize=True, return_dict=True)["input_ids"]
    assert list(native) == example["input_ids"]


def test_template_round_trips_and_old_files_still_load(tmp_path, folders):
    tokenizer, template, _ = native(folders, "llama3")
    template.save(tmp_path)
    assert ChatTemplate.load(tmp_path) == template
    (tmp_path / "lima_template.json").write_text(json.dumps({"eot_token": "<|eot|>", "bos_token": "<s>"}))
    assert ChatTemplate.load(tmp_path) == ChatTemplate(eot_token="<|eot|>", bos_token="<s>", chat_format="lima")


def test_native_needs_a_chat_template(tiny_llama):
    with pytest.raises(LimaError, match="no chat template"):
        get_tokenizer(str(tiny_llama), "</s>", chat_format="native")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_bare_base_is_talked_to_in_its_own_format_with_its_own_turn_end(folders, family, tiny_llama):
    from transformers import AutoTokenizer

    assert base_format(AutoTokenizer.from_pretrained(folders[family])) == (FAMILIES[family]["turn_end"], "native")
    plain = AutoTokenizer.from_pretrained(tiny_llama)  # no chat template: LIMA's format, ended by its eos
    assert plain.chat_template is None and base_format(plain) == (plain.eos_token, "lima")


def test_inspect_shows_trained_spans_in_both_formats(tmp_path, capsys):
    from families import build_family_model
    from helpers import sample_texts
    from lima_lite.inspection import main as inspect_main

    base = build_family_model(tmp_path / "llama3", "llama3", sample_texts())
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"messages": SINGLE}) + "\n")
    common = [f"model_name_or_path={base}", f"dataset_name={data}", "eot_token=<|eot_id|>"]
    assert inspect_main([str(_recipe(tmp_path)), *common, "chat_format=native"]) == 0
    out = capsys.readouterr().out
    assert ("<|start_header_id|>assistant<|end_header_id|>\n\n[[Put it in boiling water for nine minutes.<|eot_id|>]]"
            in out)
    assert "native format, turn end '<|eot_id|>'" in out
    assert inspect_main([str(_recipe(tmp_path)), *common]) == 0
    out = capsys.readouterr().out
    assert "How do I boil an egg?<|eot_id|>[[Put it in boiling water for nine minutes.<|eot_id|>]]" in out
    assert "lima format" in out


def _recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("load_in_4bit: false\n")
    return recipe


def test_native_template_of_a_tokenizer_without_a_turn_end_token_is_refused(folders):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folders["chatml"])
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(LimaError, match="no special token after an assistant turn"):
        native_template(tokenizer)


# today's bases: recipe -> (family of its tokenizer, whether the recipe's EOT is added, size in billions)
TODAYS_RECIPES = {"llama3.1-8b": ("llama3", False, 8), "llama3.1-70b": ("llama3", False, 70),
                  "llama3.2-3b-instruct": ("llama3", False, 3), "qwen3-8b": ("chatml", False, 8),
                  "mistral-7b": ("mistral", True, 7), "gemma3-1b-it": ("gemma", False, 1)}


@pytest.mark.parametrize("name", TODAYS_RECIPES)
def test_todays_recipes_keep_lima_values_and_handle_their_turn_end(name, folders):
    from pathlib import Path

    from lima_lite.config import load_recipe

    family, added, size = TODAYS_RECIPES[name]
    read = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml")
    sft, model_args, lima = read.sft_config, read.model_args, read.lima_args
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps == (64 if size <= 13 else 32)
    assert lima.residual_dropout == (0.2 if size <= 30 else 0.3)
    assert sft.num_train_epochs == 15 and sft.max_length == 2048 and model_args.load_in_4bit
    # the recipe's format and EOT on a tokenizer with that family's tokens and template
    tokenizer, template, new = get_tokenizer(folders[family], lima.eot_token, chat_format=lima.chat_format)
    assert (lima.eot_token in tokenizer.convert_ids_to_tokens(new)) == added
    if lima.chat_format == "native":
        assert template.eot_token == FAMILIES[family]["turn_end"]
    example = encode_conversation(tokenizer, template, SINGLE)
    trained = [label for label in example["labels"] if label != IGNORE]
    assert tokenizer.decode(trained) == SINGLE[1]["content"] + lima.eot_token


def test_stop_rates_count_turn_ends_and_template_leaks():
    from lima_lite.generate import Reply, leaks_template, stop_rates

    clean = Reply(text="Loosen the nuts first.", finish_reason="eot")
    header = Reply(text="assistant\nLoosen the nuts first.", finish_reason="eot")  # the old quick start's replies
    user_turn = Reply(text="Done.\nUser: and then?", finish_reason="length")
    special = Reply(text="Done.", finish_reason="eot", special_tokens=["<|im_start|>"])
    prose = Reply(text="The assistant manager and the user group agreed.", finish_reason="eot")
    assert [leaks_template(r) for r in (clean, header, user_turn, special, prose)] == [False, True, True, True, False]
    rates = stop_rates([clean, header, user_turn, special, prose])
    assert (rates["replies"], rates["ended"], rates["leaked"]) == (5, 4, 3)
    assert rates["ended_rate"] == 0.8 and rates["leak_rate"] == 0.6


def test_engine_records_special_tokens_generated_before_the_stop(tiny_llama_tied):
    """A model that writes <|im_start|> mid-reply (a turn header) is caught from its token ids."""
    import torch

    from lima_lite.generate import Engine, leaks_template
    from lima_lite.model import get_model

    tokenizer, template, _ = get_tokenizer(str(tiny_llama_tied), "<|im_end|>")
    model = get_model(str(tiny_llama_tied), load_in_4bit=False, dtype="float32", vocab_size=len(tokenizer))
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    bos = tokenizer.convert_tokens_to_ids("<s>")
    plan = [bos, 40, eot]  # a special token, a word, then the turn end

    def scripted(**kwargs):  # generate() as the streamer sees it: the prompt, then the planned tokens
        ids, streamer = kwargs["input_ids"], kwargs["streamer"]
        streamer.put(ids)
        for token in plan:
            streamer.put(torch.tensor([token]))
        streamer.end()
        return torch.cat([ids, torch.tensor([plan])], dim=1)

    model.generate = scripted
    engine = Engine(model=model, tokenizer=tokenizer, template=template, name="tiny", context_length=512)
    reply = engine.reply([{"role": "user", "content": "Hi"}])
    assert reply.finish_reason == "eot" and reply.special_tokens == ["<s>"] and leaks_template(reply)
