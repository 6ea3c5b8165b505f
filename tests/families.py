"""Tiny tokenizers (and models) with the special tokens and chat templates of today's LLaMA-family bases.

Built in the test session from the sample texts: no download. The templates are short but keep what
matters for the turn end and the labels: Llama 3's headers and <|eot_id|> (and the system header with
dates that Llama 3.1 always writes), ChatML as Qwen2.5 writes it (a default system turn), Qwen3's empty
<think></think> block before the last reply, Mistral's [INST] with </s> closing each reply, Gemma's
<start_of_turn>/<end_of_turn> with the "model" role and the system text folded into the first user turn.
The pre-tokenizer is Llama 3's split pattern (also Qwen2's), then byte-level BPE.
"""

from pathlib import Path

LLAMA3 = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
CHATML = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
QWEN3 = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if loop.last %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
MISTRAL = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}"
    "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)
GEMMA = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set first_user_prefix = '' %}"
    "{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

# family -> special tokens (the first ones are bos, eos), non-special added tokens, bos, eos, pad, template,
# the turn end its template writes.
FAMILIES = {
    "llama3": dict(special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                            "<|eot_id|>"], bos="<|begin_of_text|>", eos="<|end_of_text|>", pad=None,
                   template=LLAMA3, turn_end="<|eot_id|>"),
    # Qwen base checkpoints: eos and pad are <|endoftext|>, the turn end is <|im_end|>
    "chatml": dict(special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, eos="<|endoftext|>",
                   pad="<|endoftext|>", template=CHATML, turn_end="<|im_end|>"),
    "qwen3": dict(special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], plain=["<think>", "</think>"], bos=None,
                  eos="<|im_end|>", pad="<|endoftext|>", template=QWEN3, turn_end="<|im_end|>"),
    "mistral": dict(special=["<s>", "</s>", "[INST]", "[/INST]"], bos="<s>", eos="</s>", pad=None,
                    template=MISTRAL, turn_end="</s>"),
    # Gemma-3: eos is <eos>, the turn end <end_of_turn>; pad is its own <pad>
    "gemma": dict(special=["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>", eos="<eos>",
                  pad="<pad>", template=GEMMA, turn_end="<end_of_turn>"),
}
# Llama 3's pre-tokenizer split (Qwen2 uses the same): newlines stay one piece, so prefixes tokenize stably.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def build_tokenizer(family: str, texts: list[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast

    spec = FAMILIES[family]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=spec["special"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=spec["bos"], eos_token=spec["eos"],
                                        pad_token=spec["pad"])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec.get("plain", [])])
    tokenizer.chat_template = spec["template"]
    return tokenizer


def build_family_model(folder: Path, family: str, texts: list[str]) -> Path:
    """A 2-layer LLaMA (hidden 64) with the family's tokenizer, saved to `folder`."""
    from helpers import save_tiny_llama

    return save_tiny_llama(folder, build_tokenizer(family, texts))


def smol_family_tokenizer(family: str | None):
    """SmolLM2's tokenizer (one llama.cpp's converter knows) with a family's special tokens, bos, eos, pad and
    chat template: a tokenizer of that turn-end family that a GGUF can carry. None: SmolLM2's own (ChatML).

    The added tokens do not change how the converter recognises the pre-tokenizer: it hashes the ids of a
    fixed text that contains none of them."""
    from transformers import AutoTokenizer

    from lima_lite.config import EMBEDDED_BASE
    from lima_lite.model import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(EMBEDDED_BASE))
    if family is None:
        return tokenizer
    spec = FAMILIES[family]
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in spec["special"] if t not in tokenizer.get_vocab()]},
                                 replace_extra_special_tokens=False)
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = spec["bos"], spec["eos"], spec["pad"]
    tokenizer.chat_template = spec["template"]
    return tokenizer
