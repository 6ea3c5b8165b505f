"""The LIMA template: EOT after every utterance, labels on assistant tokens only, no injection, one BOS."""

import pytest

from lima_lite.model import get_tokenizer
from lima_lite.template import IGNORE, ChatTemplate, encode_conversation, encode_prompt, encode_text

SINGLE = [{"role": "user", "content": "How do I boil an egg?"},
          {"role": "assistant", "content": "Put it in boiling water for nine minutes."}]
MULTI = SINGLE + [{"role": "user", "content": "And a soft one?"},
                  {"role": "assistant", "content": "Six minutes, then cold water."}]


@pytest.fixture(scope="module")
def tok(tiny_llama):
    return get_tokenizer(str(tiny_llama), "<|eot|>")


def spans(tokenizer, template, messages):
    """Expected (ids, trained?) per turn, built independently of encode_conversation."""
    eot = tokenizer.convert_tokens_to_ids(template.eot_token)
    expected = []
    for m in messages:
        ids = tokenizer(m["content"], add_special_tokens=False)["input_ids"] + [eot]
        expected += [(i, m["role"] == "assistant") for i in ids]
    return expected


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single-turn", "multi-turn"])
def test_labels_cover_exactly_assistant_tokens_and_their_eot(tok, messages):
    tokenizer, template, _ = tok
    example = encode_conversation(tokenizer, template, messages)
    expected = spans(tokenizer, template, messages)
    assert example["input_ids"] == [i for i, _ in expected]
    assert example["labels"] == [i if trained else IGNORE for i, trained in expected]
    eot = tokenizer.convert_tokens_to_ids("<|eot|>")
    eot_positions = [p for p, i in enumerate(example["input_ids"]) if i == eot]
    assert len(eot_positions) == len(messages)  # one EOT per utterance
    for position, message in zip(eot_positions, messages, strict=True):  # user EOT untrained, assistant EOT trained
        assert (example["labels"][position] == eot) == (message["role"] == "assistant")


def test_user_typed_eot_string_stays_text(tok):
    tokenizer, template, _ = tok
    eot = tokenizer.convert_tokens_to_ids("<|eot|>")
    messages = [{"role": "user", "content": "Say <|eot|> please"}, {"role": "assistant", "content": "Done <|eot|>"}]
    example = encode_conversation(tokenizer, template, messages)
    assert example["input_ids"].count(eot) == 2  # only the two real turn ends
    assert eot not in encode_text(tokenizer, "Say <|eot|> please")
    # the naive call would have produced the token: the test would catch a regression to it
    assert eot in tokenizer("Say <|eot|> please", add_special_tokens=False)["input_ids"]


def test_one_bos_when_the_tokenizer_uses_one(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer, template, _ = get_tokenizer(str(tiny_llama), "<|eot|>")
    bos = tokenizer.bos_token_id
    # the tiny tokenizer adds no BOS on its own: none in the template, none in the ids
    assert template.bos_token is None
    assert bos not in encode_conversation(tokenizer, template, SINGLE)["input_ids"]
    with_bos = ChatTemplate(eot_token="<|eot|>", bos_token=AutoTokenizer.from_pretrained(tiny_llama).bos_token)
    ids = encode_conversation(tokenizer, with_bos, MULTI)["input_ids"]
    assert ids[0] == bos and ids.count(bos) == 1


def test_cut_at_max_length_keeps_the_left(tok):
    tokenizer, template, _ = tok
    full = encode_conversation(tokenizer, template, MULTI)
    cut = encode_conversation(tokenizer, template, MULTI, max_length=10)
    assert cut["input_ids"] == full["input_ids"][:10] and cut["labels"] == full["labels"][:10]
    assert cut["full_length"] == len(full["input_ids"]) > 10


def test_prompt_is_the_conversation_prefix_that_training_saw(tok):
    tokenizer, template, _ = tok
    full = encode_conversation(tokenizer, template, MULTI)["input_ids"]
    prompt = encode_prompt(tokenizer, template, MULTI[:3])
    assert full[: len(prompt)] == prompt
    with pytest.raises(ValueError):
        encode_prompt(tokenizer, template, MULTI)


def test_jinja_template_matches_token_level_encoding(tok):
    tokenizer, template, _ = tok
    rendered = tokenizer.apply_chat_template(MULTI, tokenize=True, return_dict=True)["input_ids"]
    assert list(rendered) == encode_conversation(tokenizer, template, MULTI)["input_ids"]


def test_pad_is_never_eos_or_eot(tiny_llama, tiny_llama_tied):
    for folder, eot in ((tiny_llama, "<|eot|>"), (tiny_llama_tied, "<|im_end|>")):
        tokenizer, _, _ = get_tokenizer(str(folder), eot)
        assert tokenizer.pad_token_id is not None
        assert tokenizer.pad_token_id not in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(eot))
