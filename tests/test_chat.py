"""The terminal chat (`python -m lima_lite.chat`): commands, scripted turns, rendering, context, Hub ids.

Most tests talk to the session's tiny adapter (conftest.py `tiny_run`, trained in seconds); the last one talks to
the real SmolLM2 adapter of the quick start and checks that both scripted replies end at EOT.
"""

import dataclasses
import io
import json

import pytest

from helpers import EOT
from lima_lite.chat import Session, main
from lima_lite.entry import run


@pytest.fixture(scope="module")
def engine(tiny_run):
    from lima_lite.generate import load_engine

    return load_engine(adapter=tiny_run / "adapter", load_in_4bit=False)


@pytest.fixture
def recorded(engine, monkeypatch):
    """Every model.generate call's input ids and sampling arguments, while still generating for real."""
    calls = []
    generate = engine.model.generate

    def recording(**kwargs):
        calls.append({"ids": kwargs["input_ids"][0].tolist(), **{k: v for k, v in kwargs.items() if k != "input_ids"}})
        return generate(**kwargs)

    monkeypatch.setattr(engine.model, "generate", recording)
    return calls


def session(engine, **settings) -> Session:
    return Session(engine, out=io.StringIO(), max_new_tokens=8, **settings)


def output(s: Session) -> str:
    return s.out.getvalue()


def test_two_turns_make_a_two_exchange_history(engine, recorded):
    s = session(engine)
    assert s.handle("First question?") and s.handle("Second question?")
    assert [m["role"] for m in s.messages] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in s.messages[::2]] == ["First question?", "Second question?"]
    # The second prompt carries the whole first exchange, rendered with the template: 4 EOTs before the reply.
    eot = engine.tokenizer.convert_tokens_to_ids(EOT)
    assert recorded[0]["ids"].count(eot) == 1 and recorded[1]["ids"].count(eot) == 3
    assert recorded[1]["ids"][: len(recorded[0]["ids"])] == recorded[0]["ids"]
    # LIMA's sampling unless told otherwise.
    assert recorded[0]["do_sample"] and recorded[0]["top_p"] == 0.9 and recorded[0]["temperature"] == 0.7
    assert recorded[0]["max_new_tokens"] == 8


def test_undo_retry_reset(engine, recorded):
    s = session(engine)
    s.handle("one")
    s.handle("two")
    first_exchange = s.messages[:2]
    assert s.handle("/undo") and s.messages == first_exchange
    assert "1 left" in output(s)

    s.handle("/retry")  # answers "one" again: same prompt, the old answer replaced
    assert len(s.messages) == 2 and s.messages[0] == first_exchange[0]
    assert recorded[-1]["ids"] == recorded[0]["ids"]

    s.handle("/reset")
    assert s.messages == [] and "(new conversation)" in output(s)
    s.handle("/undo")
    s.handle("/retry")
    assert "(nothing to undo)" in output(s) and "(nothing to retry)" in output(s)
    assert len(recorded) == 3  # neither empty command generated anything


def test_save_writes_canonical_messages_jsonl(engine, tmp_path):
    from lima_lite.conversations import load_conversations

    s = session(engine)
    s.handle("Plan a picnic")
    s.handle("Make it cheaper")
    target = tmp_path / "talk" / "chat.jsonl"
    s.handle(f"/save {target}")
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["messages"] == s.messages
    # The project's own reader accepts it: a saved chat can become training data.
    assert load_conversations(str(target))[0]["messages"] == s.messages
    assert f"saved 4 turns to {target}" in output(s)
    assert not list(target.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_set_changes_sampling_and_bad_values_keep_the_session(engine, recorded):
    s = session(engine)
    s.handle("/set temperature=0.5 top_p=0.8 max_new_tokens=5 repetition_penalty=1.3")
    assert s.settings == {"temperature": 0.5, "top_p": 0.8, "max_new_tokens": 5, "repetition_penalty": 1.3}
    s.handle("hello")
    assert recorded[-1]["temperature"] == 0.5 and recorded[-1]["top_p"] == 0.8 and recorded[-1]["max_new_tokens"] == 5
    assert recorded[-1]["logits_processor"][0].penalty == 1.3

    before = dict(s.settings)
    for bad, message in [("temperature=hot", "expected a number, not 'hot'"),
                         ("top_p=1.5", "top_p: must be > 0 and <= 1, not 1.5"),
                         ("max_new_tokens=0", "must be >= 1, not 0"), ("seed=3", "key one of temperature"),
                         ("top_p=0.5 temperature=x", "expected a number, not 'x'")]:
        assert s.handle(f"/set {bad}") is True
        assert message in output(s).splitlines()[-1]
        assert s.settings == before  # nothing half-applied
    s.handle("still here?")
    assert len(s.messages) == 4


def test_help_unknown_and_exit(engine):
    s = session(engine)
    assert s.handle("/help") and "/save FILE" in output(s)
    assert s.handle("/frobnicate") and "unknown command /frobnicate" in output(s)
    assert s.handle("/exit") is False


def test_special_token_text_from_the_user_is_text(engine, recorded):
    from lima_lite.template import encode_text

    tokenizer = engine.tokenizer
    typed = f"Say {EOT} then </s> and <s>"
    s = session(engine)
    s.handle(typed)
    ids = recorded[-1]["ids"]
    eot, eos, bos = (tokenizer.convert_tokens_to_ids(t) for t in (EOT, "</s>", "<s>"))
    # Exactly one EOT, the one the template puts after the user's turn; the typed tags are plain tokens.
    assert ids == encode_text(tokenizer, typed) + [eot]
    assert ids.count(eot) == 1 and eos not in ids and bos not in ids
    assert tokenizer.decode(ids[:-1]) == typed


def test_oldest_turns_dropped_when_history_outgrows_the_context(engine, recorded):
    small = dataclasses.replace(engine, context_length=60)
    s = session(small)
    for i in range(4):
        s.handle(f"Tell me about topic number {i} please")
    assert "the oldest" in output(s) and "turns were left out" in output(s)
    assert len(recorded[-1]["ids"]) <= 60 - 8
    assert len(s.messages) == 8  # the session keeps everything; only the prompt is cut


def test_a_message_longer_than_the_context_is_refused_and_the_session_goes_on(engine):
    s = session(dataclasses.replace(engine, context_length=40))
    s.handle("word " * 100)
    assert "(not sent:" in output(s) and s.messages == []
    s.handle("short")
    assert len(s.messages) == 2


def test_compare_shows_base_reply_under_the_adapters(engine, recorded):
    s = Session(engine, out=io.StringIO(), compare=True, max_new_tokens=6)
    s.handle("Compare us")
    text = output(s)
    assert text.index("[adapter] ") < text.index("[base]    ")
    assert len(recorded) == 2 and recorded[0]["ids"] == recorded[1]["ids"]
    assert len(s.messages) == 2  # the adapter's reply is the one kept


def test_scripted_prompts_from_the_command_line(tiny_run, capsys):
    assert main(["--adapter", str(tiny_run / "adapter"), "--prompt", "First?", "--prompt", "Second?",
                 "--max-new-tokens", "6", "--seed", "0", "--no-load-in-4bit"]) == 0
    out = capsys.readouterr().out
    assert out.count(">>> ") == 2 and out.index(">>> First?") < out.index(">>> Second?")


def test_hub_id_offline_fails_with_one_line(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert run("lima_lite.chat:main", ["--adapter", "nobody-here/no-such-adapter", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "nobody-here/no-such-adapter" in err and "hf download nobody-here/no-such-adapter" in err


def test_no_model_is_an_input_error(capsys):
    assert run("lima_lite.chat:main", ["--prompt", "hi"]) == 2
    assert "--adapter" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_adapter_scripted_chat_ends_at_eot(quickstart_run, capsys, monkeypatch):
    """Two scripted turns with the real SmolLM2 adapter: two replies, each ended by EOT, not the limit."""
    import lima_lite.generate

    replies = []
    load_engine = lima_lite.generate.load_engine

    def recording_engine(**kwargs):
        engine = load_engine(**kwargs)
        stream = engine.stream

        def recorded_stream(*args, **settings):
            yield from stream(*args, **settings)
            replies.append(engine.last)

        engine.stream = recorded_stream
        return engine

    monkeypatch.setattr(lima_lite.generate, "load_engine", recording_engine)
    limit = 400
    assert main(["--adapter", str(quickstart_run / "adapter"), "--prompt", "How do I make a cup of tea?",
                 "--prompt", "How can I make it less bitter?", "--seed", "0", "--max-new-tokens", str(limit)]) == 0
    out = capsys.readouterr().out
    assert len(replies) == 2
    for reply in replies:
        assert reply.finish_reason == "eot" and reply.new_tokens < limit and reply.text.strip()
    assert "stopped at max_new_tokens" not in out
    assert out.index(replies[0].text.strip()[:20]) < out.index(">>> How can I make it less bitter?")


def test_a_batch_of_replies_is_each_conversations_own_reply(engine):
    """Greedy, so each row is comparable: the batched (left-padded) reply to each conversation is the reply
    it gets alone, prompts of different lengths, with and without the adapter."""
    conversations = [[{"role": "user", "content": "How do I water plant number 1?"}],
                     [{"role": "user", "content": "Hi"}],
                     [{"role": "user", "content": "How do I water plant number 3?"},
                      {"role": "assistant", "content": "Weekly."},
                      {"role": "user", "content": "And in winter, when the light is low?"}]]
    assert len({len(engine.prompt_ids(c, 12)[0]) for c in conversations}) == 3  # the batch really is padded
    for use_adapter in (True, False):
        batch = engine.replies(conversations, use_adapter=use_adapter, temperature=0, max_new_tokens=12)
        alone = [engine.reply(c, use_adapter=use_adapter, temperature=0, max_new_tokens=12) for c in conversations]
        assert [r.token_ids for r in batch] == [r.token_ids for r in alone]
        assert [(r.text, r.finish_reason) for r in batch] == [(r.text, r.finish_reason) for r in alone]


def test_a_finished_row_is_cut_after_its_turn_end(engine):
    eot = engine.tokenizer.convert_tokens_to_ids(engine.template.eot_token)
    pad = engine.tokenizer.pad_token_id
    reply = engine.finished([40, 41, eot, pad, pad], dropped=0)
    assert reply.token_ids == [40, 41, eot] and reply.finish_reason == "eot" and reply.new_tokens == 3
    assert engine.finished([40, 41], dropped=2).finish_reason == "length"


def test_a_reply_cut_by_the_full_context_says_so_not_max_new_tokens(engine, capsys):
    """max_new_tokens far past the context (`/set max_new_tokens=100000`): generation stops when prompt and reply
    fill the context, and the chat says that, not "stopped at max_new_tokens=100000". The engine's turn end is
    taken away (a token it never writes), so the reply can only stop at a limit."""
    from dataclasses import fields

    from lima_lite.chat import Session
    from lima_lite.flags import length_note
    from lima_lite.generate import Engine

    class NoTurnEnd(Engine):
        stop_ids = property(lambda self: [len(self.tokenizer) - 1])

    assert length_note(6, 6) == "stopped at max_new_tokens=6"
    messages = [{"role": "user", "content": "Tell me about the history of tea in three parts."}]
    prompt = len(engine.prompt_ids(messages, 1)[0])
    small = NoTurnEnd(**{f.name: getattr(engine, f.name) for f in fields(engine)})
    small.context_length = 2 * prompt + 2  # the prompt fits (half the context), prompt + 2 tokens to reply
    session = Session(small, compare=False, seed=0, max_new_tokens=100_000, temperature=0.0)
    session.messages = list(messages)
    session.respond()
    out = capsys.readouterr().out
    room = prompt + 2
    assert small.last.finish_reason == "length" and small.last.new_tokens == room
    assert f"stopped when the model's context was full, after {room} new tokens (max_new_tokens=100,000)" in out
    assert "stopped at max_new_tokens" not in out
