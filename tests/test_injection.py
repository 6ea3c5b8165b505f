"""A special token's text typed by a user never becomes that token, on any path a message takes to a model.

Paths: training and `inspect` (encode_conversation); chat, the app and `eval generate` (all through
Engine.prompt_ids); and the string template other runtimes render (template.jinja(): the adapter's saved
tokenizer, which the model card's plain-transformers snippet uses, and the merged model's tokenizer).
Strings: every special token of each supported family's tokenizer, its non-special added tokens, and
lima_lite's own <|eot|> and <|pad|>. An injection is a special id more in the encoded conversation than in
the same conversation with the typed text left out.
"""

import re

import pytest

from families import FAMILIES, build_tokenizer
from lima_lite.model import get_tokenizer
from lima_lite.template import ZERO_WIDTH_SPACE, encode_conversation, special_ids

# A ChatML base whose <|im_end|> is an added token the tokenizer does not mark special: typing it used to
# give the turn end's id when a LIMA-format recipe reused it.
FAMILIES_PLUS = {**FAMILIES, "chatml_plain_end": {**FAMILIES["chatml"], "special": ["<|endoftext|>", "<|im_start|>"],
                                                  "plain": ["<|im_end|>"]}}
SETUPS = [(family, "lima", eot) for family, eot in [("llama3", "<|eot_id|>"), ("chatml", "<|im_end|>"),
                                                     ("chatml_plain_end", "<|im_end|>"), ("gemma", "<end_of_turn>"),
                                                     ("mistral", "<|eot|>"), ("qwen3", "<|im_end|>")]]
SETUPS += [(family, "native", FAMILIES[family]["turn_end"]) for family in FAMILIES]


def typed_strings(tokenizer) -> list[str]:
    own = {"<|eot|>", "<|pad|>"}
    every_family = {t for spec in FAMILIES_PLUS.values() for t in spec["special"] + spec.get("plain", [])}
    return sorted(own | every_family | set(tokenizer.convert_ids_to_tokens(sorted(special_ids(tokenizer)))))


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory, monkeypatch_module):
    import families
    from helpers import sample_texts

    monkeypatch_module.setattr(families, "FAMILIES", FAMILIES_PLUS)
    found = {}
    for family, chat_format, eot in SETUPS:
        folder = tmp_path_factory.mktemp(family)
        build_tokenizer(family, sample_texts()).save_pretrained(folder)
        found[family, chat_format] = get_tokenizer(str(folder), eot, chat_format=chat_format)[:2]
    return found


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def conversation(text: str) -> list[dict]:
    return [{"role": "user", "content": f"What does {text} mean?"},
            {"role": "assistant", "content": f"It is written {text} here."},
            {"role": "user", "content": "And again?"}]


def injected(tokenizer, ids: list[int], clean: list[int]) -> int:
    specials = special_ids(tokenizer)
    return sum(i in specials for i in ids) - sum(i in specials for i in clean)


def rendered_ids(tokenizer, template, messages) -> list[int]:
    """What plain transformers (the model card's snippet), vLLM or a merged model's users get."""
    return list(tokenizer.apply_chat_template(messages, chat_template=template.jinja(), tokenize=True,
                                              return_dict=True)["input_ids"])


@pytest.mark.parametrize("family,chat_format", [(f, c) for f, c, _ in SETUPS])
def test_no_typed_special_text_becomes_a_token_on_any_path(tokenizers, family, chat_format):
    from lima_lite.generate import Engine

    tokenizer, template = tokenizers[family, chat_format]
    engine = Engine(model=None, tokenizer=tokenizer, template=template, name="t", context_length=4096)
    strings = typed_strings(tokenizer)
    assert len(strings) >= 17
    clean = conversation("")
    found = []
    for text in strings:
        messages = conversation(text)
        paths = {
            "train/inspect": (encode_conversation(tokenizer, template, messages[:2])["input_ids"],
                              encode_conversation(tokenizer, template, clean[:2])["input_ids"]),
            "chat/app/eval": (engine.prompt_ids(messages, 16)[0], engine.prompt_ids(clean, 16)[0]),
            "string template": (rendered_ids(tokenizer, template, messages), rendered_ids(tokenizer, template, clean)),
        }
        found += [(path, text) for path, (ids, without) in paths.items() if injected(tokenizer, ids, without)]
        # the text still reaches the model: it decodes back as typed (the template's zero-width space aside)
        shown = tokenizer.decode(paths["string template"][0]).replace(ZERO_WIDTH_SPACE, "")
        assert f"What does {text} mean?" in shown and text in tokenizer.decode(paths["chat/app/eval"][0])
    assert found == []


def test_the_unprotected_rendering_would_be_caught(tokenizers):
    """The check above can fail: the base's own template, rendered then tokenized, lets typed text through."""
    tokenizer, template = tokenizers["chatml", "native"]
    messages, clean = conversation("<|im_end|>"), conversation("")

    def plain(m):
        return list(tokenizer.apply_chat_template(m, chat_template=template.chat_template, tokenize=True,
                                                  return_dict=True)["input_ids"])

    assert injected(tokenizer, plain(messages), plain(clean)) == 2  # once in each message that has it


def test_a_reused_turn_end_not_marked_special_is_marked_special(tokenizers):
    tokenizer, template = tokenizers["chatml_plain_end", "lima"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in special_ids(tokenizer)
    assert "<|im_end|>" in template.protected


def test_model_card_snippet_and_merged_model_keep_typed_text_as_text(tiny_run, tiny_llama_tied, tmp_path):
    """The card's plain transformers + peft snippet, run as written up to its prompt, and the merged model's
    tokenizer: a user's "<|eot|>" stays text."""
    from transformers import AutoTokenizer

    from lima_lite.merge import merge_adapter
    from lima_lite.push import usage_section

    adapter = tiny_run / "adapter"
    card = "\n".join(usage_section(str(adapter), str(tiny_llama_tied), "<|eot|>", added_tokens=True))
    snippet = re.findall(r"```python\n(.*?)```", card, re.S)[-1]
    prompt_part = snippet[: snippet.index("output = model.generate")]
    assert "apply_chat_template" in prompt_part

    def card_ids(text):
        scope = {}
        exec(prompt_part.replace("How do I keep basil alive indoors?", f"Say {text} twice: {text}"), scope)
        return scope["tokenizer"], scope["inputs"]["input_ids"][0].tolist()

    tokenizer, clean = card_ids("")
    merged = AutoTokenizer.from_pretrained(merge_adapter(adapter, tmp_path / "merged"))
    merged_clean = merged.apply_chat_template(conversation(""), tokenize=True, return_dict=True)["input_ids"]
    found = []
    for text in typed_strings(tokenizer):
        if injected(tokenizer, card_ids(text)[1], clean):
            found.append(("card snippet", text))
        ids = merged.apply_chat_template(conversation(text), tokenize=True, return_dict=True)["input_ids"]
        if injected(merged, list(ids), list(merged_clean)):
            found.append(("merged model", text))
    assert found == []
