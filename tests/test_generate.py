"""The generation core: LIMA's reply budget on a short context, merged models' templates, light --help."""

import shutil
import subprocess
import sys

import pytest

from lima_lite.cli import COMMANDS
from lima_lite.generate import load_engine
from lima_lite.model import get_tokenizer
from lima_lite.template import ChatTemplate


def test_lima_max_new_tokens_on_a_short_context_is_capped_not_refused(tiny_llama):
    engine = load_engine(base=str(tiny_llama), load_in_4bit=False, dtype="float32")
    assert engine.context_length == 1024
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    ids, dropped = engine.prompt_ids(messages, max_new_tokens=2048)  # LIMA's 2,048 > the whole context
    assert dropped == 0 and 0 < len(ids) < 64
    long_history = []
    for i in range(40):
        long_history += [{"role": "user", "content": f"question {i} " * 10},
                         {"role": "assistant", "content": f"answer {i} " * 10}]
    ids, dropped = engine.prompt_ids(long_history + messages, max_new_tokens=2048)
    assert dropped > 0 and dropped % 2 == 0 and len(ids) <= 1024 // 2  # half the context kept for the reply
    reply = engine.reply(messages, max_new_tokens=2048, temperature=0)
    assert reply.new_tokens <= 1024 - 64


def test_a_merged_model_is_rendered_with_its_saved_template(tiny_llama, tmp_path):
    folder = tmp_path / "merged"
    shutil.copytree(tiny_llama, folder)
    tokenizer, template, added = get_tokenizer(str(tiny_llama), "<|eot|>")
    assert added  # the tiny base has no EOT: a merged model carries the added one
    tokenizer.save_pretrained(folder)
    template.save(folder)
    engine = load_engine(base=str(folder), load_in_4bit=False, dtype="float32")
    assert engine.template == template and engine.template.eot_token == "<|eot|>"  # the saved one, not a guess
    assert engine.template != ChatTemplate(eot_token="</s>", bos_token=template.bos_token)
    assert tokenizer.convert_tokens_to_ids("<|eot|>") in engine.stop_ids
    assert engine.model.get_input_embeddings().weight.shape[0] == len(tokenizer)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_is_light_no_torch_import(command):
    code = ("import sys\nfrom lima_lite.cli import main\n"
            f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules, 'gradio' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False False"
    assert "usage:" in result.stdout
