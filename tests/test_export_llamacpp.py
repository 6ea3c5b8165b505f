"""The exported GGUF, run where users run it: llama.cpp's own server (the `xllamacpp` wheel, the engine of
llama-server, llama-cli and LM Studio), with the chat template embedded in the file rendered by llama.cpp's
template engine (jinja, its default), for every turn-end family the recipes use.

For each family a tiny LLaMA over SmolLM2's vocabulary (the converter only accepts tokenizers it knows) with
the family's special tokens and chat template is trained until its greedy reply to one question is ANSWER,
exported, and served by lima_lite.serve.llamacpp_server. llama.cpp must then render the prompt exactly as
lima_lite does (text and token ids), answer ANSWER through the chat and the raw completion paths, and end with
finish_reason "stop" below max_tokens; the turn end must agree across labels, GGUF metadata and Modelfile.
"""

import json
import urllib.request

import pytest

from families import smol_family_tokenizer
from helpers import save_tiny_llama, train_tiny
from lima_lite.export import export_gguf
from lima_lite.serve import llamacpp_server
from lima_lite.template import IGNORE, ChatTemplate, encode_conversation, encode_prompt

ANSWER = "Water it once a week."
QUESTION = "How do I water a fern?"
QA = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
MAX_TOKENS = 40
# The model's own greedy reply. The export's sampling (and so a request that leaves it out) also has llama.cpp's
# repetition penalty, which counts the prompt's tokens too: the tiny model's turn end right before the reply is
# pushed down by it and the memorised reply runs on (docs/benchmarks.md, "Exported quick start in llama.cpp").
GREEDY = {"max_tokens": MAX_TOKENS, "temperature": 0, "repeat_penalty": 1.0}

# case -> (tokenizer family, chat_format, turn end), as the recipes train them
CASES = {
    "lima-added-eot": (None, "lima", "<|eot|>"),  # LLaMA-1 and Mistral base recipes: an added <|eot|>
    "llama3-eot-id": ("llama3", "lima", "<|eot_id|>"),  # llama3.1-8b/70b: Llama 3's own turn end
    "chatml-im-end": (None, "native", "<|im_end|>"),  # the quick start: SmolLM2's own ChatML (Qwen too)
    "gemma-end-of-turn": ("gemma", "native", "<end_of_turn>"),  # gemma3-1b-it
    "mistral-eos": ("mistral", "native", "</s>"),  # a Mistral-Instruct checkpoint: [INST] ... [/INST] reply</s>
}
# The lima format with an added token runs in the fast lane; the other families train one more tiny model
# each (about 40 s) and run in the slow lane, which CI runs too.
PARAMS = [pytest.param(case, marks=() if case == "lima-added-eot" else pytest.mark.slow) for case in CASES]


@pytest.fixture(scope="module", params=PARAMS)
def exported(request, tmp_path_factory):
    """(case, run folder, GGUF path, the address of a llama.cpp server over it)."""
    case = request.param
    family, chat_format, turn_end = CASES[case]
    root = tmp_path_factory.mktemp(case)
    # Weights drawn 10x wider than transformers' default (0.02): with hidden 64 a default head's logits stay
    # within about +-1.5, and a few dozen steps could not make ANSWER the greedy reply.
    base = save_tiny_llama(root / "base", smol_family_tokenizer(family), max_position_embeddings=512,
                           initializer_range=0.2)
    run = train_tiny(base, root / "run", [QA] * 8, eot_token=turn_end, chat_format=chat_format,
                     learning_rate=1e-2, max_steps=30, lora_r=16)
    gguf = export_gguf(run, root / "gguf" / f"fern-{case}")
    server = llamacpp_server(gguf, context=256, threads=2)
    yield case, run, gguf, server.listening_address
    del server  # stops llama.cpp's threads


def post(address: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(address + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def ours(run):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(run / "adapter"), ChatTemplate.load(run / "adapter")


def test_llama_cpp_renders_the_prompt_as_lima_lite_does(exported):
    _, run, _, address = exported
    tokenizer, template = ours(run)
    ids = encode_prompt(tokenizer, template, QA[:1])
    rendered = post(address, "/apply-template", {"messages": QA[:1]})["prompt"]
    assert rendered == tokenizer.decode(ids)
    assert post(address, "/tokenize", {"content": rendered, "add_special": True, "parse_special": True})["tokens"] == ids


def test_a_typed_turn_end_stays_text_in_llama_cpp(exported):
    """The template's guard (a zero-width space inside special tokens typed in a message) runs in llama.cpp's
    template engine too: the typed turn end is not a turn end there either."""
    _, run, _, address = exported
    tokenizer, template = ours(run)
    typed = [{"role": "user", "content": f"What does {template.eot_token} mean?"}]
    rendered = post(address, "/apply-template", {"messages": typed})["prompt"]
    ids = post(address, "/tokenize", {"content": rendered, "add_special": True, "parse_special": True})["tokens"]
    eot = tokenizer.convert_tokens_to_ids(template.eot_token)
    assert ids.count(eot) == encode_prompt(tokenizer, template, typed).count(eot)
    assert rendered.count(template.eot_token[0] + "\u200b" + template.eot_token[1:]) == 1


def test_llama_cpp_answers_and_stops_at_the_turn_end(exported):
    _, run, _, address = exported
    chat = post(address, "/v1/chat/completions", GREEDY | {"messages": QA[:1]})
    assert chat["choices"][0]["message"]["content"].strip() == ANSWER
    assert chat["choices"][0]["finish_reason"] == "stop" and chat["usage"]["completion_tokens"] < MAX_TOKENS
    # the raw completion path: the prompt as lima_lite renders it, as text
    tokenizer, template = ours(run)
    prompt = tokenizer.decode(encode_prompt(tokenizer, template, QA[:1]))
    raw = post(address, "/v1/completions", GREEDY | {"prompt": prompt})
    assert raw["choices"][0]["text"].strip() == ANSWER
    assert raw["choices"][0]["finish_reason"] == "stop" and raw["usage"]["completion_tokens"] < MAX_TOKENS


def test_the_turn_end_agrees_across_labels_gguf_and_modelfile(exported):
    from gguf import GGUFReader

    _, run, gguf, _ = exported
    tokenizer, template = ours(run)
    eot = tokenizer.convert_tokens_to_ids(template.eot_token)
    labels = encode_conversation(tokenizer, template, QA)["labels"]
    assert [token for token in labels if token != IGNORE][-1] == eot  # training taught this token as the end
    fields = GGUFReader(gguf).fields
    assert fields["tokenizer.ggml.eos_token_id"].contents() == eot
    assert fields["tokenizer.ggml.eot_token_id"].contents() == eot
    assert fields["tokenizer.ggml.tokens"].contents()[eot] == template.eot_token
    assert fields["tokenizer.chat_template"].contents() == template.jinja()
    assert fields["general.name"].contents() == gguf.parent.name  # the output's name, not a work folder's
    assert f'PARAMETER stop "{template.eot_token}"' in (gguf.parent / "Modelfile").read_text().splitlines()


@pytest.mark.parametrize("exported", ["lima-added-eot"], indirect=True)  # one family is enough for the client
def test_eval_generate_answers_through_lima_lite_serve_over_the_gguf(exported, tmp_path, capsys):
    _, _, _, address = exported
    from lima_lite.entry import run

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "fern", "prompt": QUESTION}) + "\n")
    out = tmp_path / "answers.jsonl"
    assert run("lima_lite.evaluate.cli:main", ["generate", "--model", f"fern@{address}/v1",
                                               "--prompts", str(prompts), "--out", str(out), "--temperature", "0",
                                               "--max-new-tokens", str(MAX_TOKENS)]) == 0, capsys.readouterr().err
    # the OpenAI API has no repetition penalty, so the server's own sampling applies: the answer is what the
    # server says to the same request, its finish_reason mapped ("stop" -> "eot")
    row = json.loads(out.read_text())
    direct = post(address, "/v1/chat/completions", {"messages": QA[:1], "max_tokens": MAX_TOKENS, "temperature": 0})
    assert row["answer"] == direct["choices"][0]["message"]["content"].strip() != ""
    assert row["finish_reason"] == {"stop": "eot", "length": "length"}[direct["choices"][0]["finish_reason"]]


@pytest.mark.parametrize("exported", ["lima-added-eot"], indirect=True)
def test_lima_lite_serve_runs_an_export_folder_in_llama_cpp(exported):
    """The command itself: an `export gguf` folder, a free port, the folder's name as the model's."""
    import re
    import subprocess
    import sys

    _, _, gguf, _ = exported
    process = subprocess.Popen([sys.executable, "-m", "lima_lite.serve", str(gguf.parent), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        address = re.search(r"on (http://127\.0\.0\.1:\d+)/v1 ", line)
        assert address and "in llama.cpp" in line, (line, process.stderr.read() if process.poll() is not None else "")
        with urllib.request.urlopen(f"{address[1]}/v1/models", timeout=30) as response:
            assert [m["id"] for m in json.loads(response.read())["data"]] == [gguf.parent.name]
        chat = post(address[1], "/v1/chat/completions", GREEDY | {"messages": QA[:1]})
        assert chat["choices"][0]["message"]["content"].strip() == ANSWER
    finally:
        process.terminate()
        process.wait(timeout=30)
