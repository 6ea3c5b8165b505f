"""End to end on the real embedded SmolLM2-135M-Instruct: the quick-start recipe trains in 4-bit NF4, writes
its artifacts, the adapter reloads with the same logits, and the chat reply ends at EOT before the limit."""

import json

import pytest
import torch

from lima_lite.layout import ADAPTER_CONFIG, ADAPTER_FILES
from lima_lite.precision import detect_hardware

pytestmark = pytest.mark.slow


def quickstart_epochs() -> int:
    """2 epochs, or 1 on a CPU without native bf16 (the recipe's slow_cpu_fallback, lima_lite.resolve)."""
    return 2 if detect_hardware().bf16 else 1


def test_quickstart_run_writes_every_artifact(quickstart_run):
    epochs = quickstart_epochs()
    last = f"epoch-{epochs:02d}"
    run = json.loads((quickstart_run / "run.json").read_text())
    assert run["status"] == "finished"
    assert run["base"]["name"] == "embedded:SmolLM2-135M-Instruct"
    # QLoRA where bf16 is native; a plain float32 base on a CPU without it (the recipe's slow_cpu_fallback, lima_lite.resolve)
    assert run["model"]["load_in_4bit"] == detect_hardware().bf16 and run["model"]["bnb_4bit_quant_type"] == "nf4"
    assert run["model"]["dtype"] == ("bfloat16" if detect_hardware().bf16 else "float32")
    assert run["counts"]["train"] == {"read": 60, "kept": 60, "cut": 0, "dropped": 0}
    assert run["template"]["eot_token"] == "<|im_end|>" and run["counts"]["added_tokens"] == []
    assert len(run["data"]["sha256"]) == 64 and run["versions"]["trl"]
    for name in (*ADAPTER_FILES, "tokenizer.json"):
        assert (quickstart_run / "adapter" / name).is_file()
        assert (quickstart_run / last / name).is_file()
    metrics = [json.loads(line) for line in (quickstart_run / "metrics.jsonl").read_text().splitlines()]
    steps = 8 * epochs  # 60 examples / 8 per step
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, steps + 1))
    assert [m["step"] for m in metrics if "eval_loss" in m] == list(range(0, steps + 1, 8))  # the base, then every epoch
    assert sorted(p.name for p in quickstart_run.glob("epoch-*")) == [f"epoch-{e:02d}" for e in range(1, epochs + 1)]
    assert (quickstart_run / "loss.png").stat().st_size > 10_000
    config = json.loads((quickstart_run / "adapter" / ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == "embedded:SmolLM2-135M-Instruct"


def test_adapter_reloads_with_the_same_logits_and_chat_stops_at_eot(quickstart_run):
    from lima_lite.generate import load_engine
    from lima_lite.template import encode_prompt

    engine = load_engine(adapter=quickstart_run / "adapter")
    messages = [{"role": "user", "content": "How do I keep basil fresh?"}]
    ids = torch.tensor([encode_prompt(engine.tokenizer, engine.template, messages)])
    with torch.no_grad():
        tuned = engine.model(input_ids=ids).logits
        with engine.model.disable_adapter():
            base = engine.model(input_ids=ids).logits
        again = load_engine(adapter=quickstart_run / f"epoch-{quickstart_epochs():02d}").model(input_ids=ids).logits
    assert (tuned - base).abs().max() > 1e-3  # the adapter changes the model
    assert torch.allclose(tuned, again, atol=1e-4)  # the final adapter is the last epoch's, reloaded
    torch.manual_seed(0)
    reply = engine.reply(messages, max_new_tokens=400)
    assert reply.finish_reason == "eot" and 0 < reply.new_tokens < 400
    assert reply.token_ids[-1] in engine.stop_ids and reply.text.strip()


def test_quickstart_command_compares_base_and_tuned(quickstart_run, capsys):
    from lima_lite.conversations import load_conversations
    from lima_lite.quickstart import SAMPLING_NOTE
    from lima_lite.quickstart import main as quickstart_main

    assert quickstart_main([f"output_dir={quickstart_run}", "--max-new-tokens", "32", "--prompts", "3"]) == 0
    out = capsys.readouterr().out
    assert "skipping training" in out  # the run exists: it is reused, not retrained
    for conversation in load_conversations("embedded:dev.jsonl")[:3]:
        assert conversation["messages"][0]["content"] in out
    assert out.count("--- base model ---") == 3 and out.count("--- after LIMA fine-tuning ---") == 3
    assert "after LIMA fine-tuning: " in out and "replies ended at the turn end before 32 tokens" in out
    assert SAMPLING_NOTE in out


def test_tuned_replies_end_cleanly_on_all_12_dev_prompts(quickstart_run):
    """The quick start's promise: the tuned replies end at the turn end before the limit, with no template
    words or role headers ("assistant", "<|im_start|>"); the base answers in its own ChatML format."""
    from lima_lite.conversations import load_conversations
    from lima_lite.generate import leaks_template, load_engine, stop_rates
    from lima_lite.template import ChatTemplate

    assert ChatTemplate.load(quickstart_run / "adapter").chat_format == "native"
    conversations = [[c["messages"][0]] for c in load_conversations("embedded:dev.jsonl")]
    assert len(conversations) == 12
    tuned = load_engine(quickstart_run / "adapter").replies(conversations, seed=0, max_new_tokens=400)
    rates = stop_rates(tuned)
    bad = [(r.finish_reason, r.special_tokens, r.text[:60]) for r in tuned
           if r.finish_reason != "eot" or leaks_template(r)]
    # Sampling spread: 11, 12 and 11 of 12 over seeds 0-2 on the 4-bit bf16 path, 10 on the float32 path of a CPU
    # without native bf16 (docs/benchmarks.md); a model that does not stop ends far fewer.
    assert rates["ended"] >= 10 and rates["leaked"] == 0, bad


def test_a_reply_that_ran_on_is_shown_cut_with_a_note():
    from lima_lite.generate import Reply
    from lima_lite.quickstart import SHOWN_CHARS, shown

    ended = Reply(text=" Water it weekly. " + "x" * 2000, finish_reason="eot")
    assert shown(ended, 400) == ended.text.strip()  # a reply that ended is shown whole, however long
    ran_on = Reply(text="Water it. " + "!@" * 1000, finish_reason="length")
    text = shown(ran_on, 400)
    assert text.endswith(" …\n[no turn end: ran on to the 400-token limit]")
    assert len(text.splitlines()[0]) <= SHOWN_CHARS + 2 and text.startswith("Water it. !@")
    assert shown(Reply(text="Short.", finish_reason="length"), 32) == "Short.\n[no turn end: ran on to the 32-token limit]"
