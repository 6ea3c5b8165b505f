"""Eval answers belong to (prompt text, model, sampling settings): a rerun without flags goes on with the
settings its file was made with; a changed setting is refused by file:line, naming the setting and the way on.

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_eval.py -q
"""

import json

import pytest

from helpers import run_cli
from lima_lite import LimaError
from lima_lite.evaluate.answers import generate_answers, read_records
from lima_lite.flags import LIMA_SAMPLING

PROMPTS = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(4)]


class Recorder:
    """An answerer that records the settings of every call; `stop_after` calls, then an interruption."""

    def __init__(self, stop_after=None):
        self.name, self.calls, self.stop_after = "m", [], stop_after

    def answer(self, prompt, seed=0, **sampling):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(sampling)
        return f"{sampling['temperature']}: {prompt}", "eot"


def test_a_rerun_without_flags_goes_on_with_the_settings_the_file_was_made_with(tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_answers(Recorder(stop_after=2), PROMPTS, out, temperature=0, max_new_tokens=8)
    rest = Recorder()
    rows = generate_answers(rest, PROMPTS, out)  # no flags: as `eval generate` rerun without them
    greedy = {**LIMA_SAMPLING, "temperature": 0, "max_new_tokens": 8}
    assert rest.calls == [greedy, greedy]  # not LIMA's 0.7 and 2,048 for the last two
    assert [r["sampling"] for r in rows] == [greedy] * 4
    assert "going on with the settings it was made with (temperature 0.0, max_new_tokens 8)" in capsys.readouterr().out
    same = Recorder()
    generate_answers(same, PROMPTS, out, temperature=0.0)  # the same settings given again: taken up
    assert same.calls == []


@pytest.mark.parametrize("given, named", [({"temperature": 0.3}, "temperature 0, not 0.3"),
                                          ({"max_new_tokens": 9}, "max_new_tokens 8, not 9"),
                                          ({"top_p": 0.5}, "top_p 0.9, not 0.5"),
                                          ({"repetition_penalty": 1.0}, "repetition_penalty 1.2, not 1.0")])
def test_a_changed_setting_is_refused_naming_the_file_the_setting_and_the_way_on(tmp_path, given, named):
    out = tmp_path / "answers.jsonl"
    generate_answers(Recorder(), PROMPTS, out, temperature=0, max_new_tokens=8)
    before = out.read_bytes()
    again = Recorder()
    with pytest.raises(LimaError) as error:
        generate_answers(again, PROMPTS + [{"id": "new", "prompt": "more"}], out, **given)
    message = str(error.value)
    flag = "--" + next(iter(given)).replace("_", "-")
    assert message.startswith(f"{out}:1: answered with {named}: rerun without {flag} ") and "another --out" in message
    assert "\n" not in message and again.calls == [] and out.read_bytes() == before


def test_a_file_from_before_settings_were_recorded_goes_on_only_without_flags(tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_text("".join(json.dumps({"id": p["id"], "prompt": p["prompt"], "answer": "old", "model": "m",
                                       "finish_reason": "eot", "sample": 0}) + "\n" for p in PROMPTS[:2]))
    with pytest.raises(LimaError, match=r"answers.jsonl:1: no record of the sampling settings .* --temperature cannot"):
        generate_answers(Recorder(), PROMPTS, out, temperature=0)
    rest = Recorder()
    generate_answers(rest, PROMPTS, out)
    assert rest.calls == [LIMA_SAMPLING, LIMA_SAMPLING]


@pytest.mark.parametrize("sampling, problem", [({"temperature": "hot"}, "sampling: temperature: expected a number"),
                                               ({"beam": 4}, "sampling: unknown setting 'beam'"),
                                               ({"temperature": 1e-40}, "sampling: temperature:")])
def test_a_hand_edited_setting_is_refused_by_line(tmp_path, sampling, problem):
    out = tmp_path / "answers.jsonl"
    out.write_text(json.dumps({"id": "p0", "prompt": "prompt 0", "answer": "a", "model": "m", "finish_reason": "eot",
                               "sample": 0, "sampling": {**LIMA_SAMPLING, **sampling}}) + "\n")
    with pytest.raises(LimaError, match=f"^{out}:1: {problem}"):
        generate_answers(Recorder(), PROMPTS, out)


def test_eval_generate_refuses_other_settings_before_loading_the_model(tiny_llama, tmp_path, monkeypatch):
    from lima_lite.evaluate import cli

    out, prompts = tmp_path / "answers.jsonl", tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "How?"}) + "\n")
    common = ["eval", "generate", "--model", str(tiny_llama), "--prompts", str(prompts), "--out", str(out)]
    assert run_cli(*common, "--max-new-tokens", "2", "--temperature", "0").returncode == 0
    made = out.read_bytes()
    assert run_cli(*common).returncode == 0 and out.read_bytes() == made  # rerun without flags: nothing to do

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "get_answerer", no_model)
    refused = run_cli(*common, "--max-new-tokens", "3")
    assert refused.returncode == 2 and out.read_bytes() == made
    assert refused.stderr.strip().splitlines() == [f"error: {out}:1: answered with max_new_tokens 2, not 3: rerun without "
                                                   "--max-new-tokens to go on with the file's settings, or choose another "
                                                   "--out (or delete this file) to answer anew with these"]
    assert read_records(out)[0][1]["sampling"] == {**LIMA_SAMPLING, "temperature": 0, "max_new_tokens": 2}


def test_another_model_under_the_same_name_is_refused(tiny_run, tmp_path):
    out, prompts = tmp_path / "answers.jsonl", tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "How?"}) + "\n")
    common = ["eval", "generate", "--name", "tuned", "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "2"]
    assert run_cli(*common, "--model", str(tiny_run)).returncode == 0  # the run: its final adapter
    made = out.read_bytes()
    assert run_cli(*common, "--model", str(tiny_run / "adapter")).returncode == 0  # the same adapter: taken up
    other = run_cli(*common, "--model", str(tiny_run / "epoch-01"))
    assert other.returncode == 2 and out.read_bytes() == made
    assert other.stderr.strip() == (f"error: {out}:1: answered by {(tiny_run / 'adapter').resolve()}, not "
                                    f"{(tiny_run / 'epoch-01').resolve()}, under the same name 'tuned': the file would "
                                    "hold two models' answers as one's; use one file per model (another --out)")
    assert run_cli(*common, "--model", str(tiny_run), "--no-adapter").returncode == 2  # its base, also named tuned
