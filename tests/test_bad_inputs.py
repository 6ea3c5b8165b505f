"""Bad input, table-driven: every case is a command (through lima_lite.cli.main) or an app handler fed
something wrong. Each must end in exit status 2 (or the handler's LimaError), with no traceback, one
error line naming the file and, where there is one, the line and the field as the user wrote it, and
every file that was in the case's folder before must be byte-identical after.

    $ PYTHONPATH=$PWD python -m pytest tests/test_bad_inputs.py -q --tb=no
    # each failure's message starts with what happened instead: traceback / silent / vague / changed

Cases that need a model share one tiny trained adapter (test_chat.train_tiny) and fail before loading
weights where the input allows.
"""

import json
import shutil
from pathlib import Path

import pytest

from bad_input import (
    ANSWER,
    ARTICLE,
    BAD_UTF8,
    COMMENT,
    JUDGE,
    NESTED,
    PROMPTS,
    QA,
    SUBMISSION,
    VOTES_DIR,
    WIKIHOW_HEADER,
    Case,
    NoModels,
    check_case,
    jsonl,
)
from helpers import truncate

CASES: list[Case] = []


def case(*args, **kwargs) -> None:
    CASES.append(Case(*args, **kwargs))


# ---------------------------------------------------------------- data forms, through `lima-lite inspect`


def inspect_case(name: str, content, expect: tuple, file: str = "d.jsonl", extra=()) -> None:
    argv = ["inspect", "quickstart", f"dataset_name={{tmp}}/{file}", "model_name_or_path={base}", *extra]
    case(f"inspect-{name}", argv, (f"{{tmp}}/{file}", *expect), files={file: content}, needs=("base",))


inspect_case("utf8-jsonl", jsonl(QA).encode() + BAD_UTF8 + b"\n", (":2", "UTF-8"))
inspect_case("utf8-json", b'[{"messages": "' + BAD_UTF8 + b'"}]', ("UTF-8",), file="d.json")
inspect_case("nested-jsonl", jsonl(QA, NESTED), (":2", "nested"))
inspect_case("nested-json", NESTED, ("nested",), file="d.json")
inspect_case("invalid-json-line", jsonl(QA, "{oops"), (":2", "invalid JSON"))
inspect_case("invalid-json-file", '[{"messages": ]', (":1", "invalid JSON"), file="d.json")
inspect_case("json-number", "3", ("JSON object",), file="d.json")
inspect_case("json-list-of-strings", '["a", "b"]', (":1", "JSON object"), file="d.json")
inspect_case("line-is-list", jsonl(QA, [1, 2]), (":2", "JSON object"))
inspect_case("line-is-number", jsonl(QA, "7"), (":2", "JSON object"))
inspect_case("empty-file", "", ("no conversations",))
inspect_case("blank-lines", "\n\n  \n", ("no conversations",))
inspect_case("unknown-form", jsonl({"question": "q", "answer": "a"}), (":1", "unknown form"))
inspect_case("messages-not-list", jsonl({"messages": "hi"}), (":1", "messages"))
inspect_case("messages-item-string", jsonl({"messages": ["hi", "there"]}), (":1", "messages"))
inspect_case("messages-content-null", jsonl({"messages": [{"role": "user", "content": "q"},
                                                          {"role": "assistant", "content": None}]}),
             (":1", "messages[1].content"))
inspect_case("messages-content-list", jsonl({"messages": [{"role": "user", "content": ["q"]},
                                                          {"role": "assistant", "content": "a"}]}),
             (":1", "messages[0].content"))
inspect_case("messages-role-bad", jsonl({"messages": [{"role": "human", "content": "q"},
                                                      {"role": "assistant", "content": "a"}]}),
             (":1", "messages[0].role"))
inspect_case("messages-two-users", jsonl({"messages": [{"role": "user", "content": "q"},
                                                       {"role": "user", "content": "a"}]}),
             (":1", "messages[1].role"))
inspect_case("messages-ends-user", jsonl({"messages": [{"role": "user", "content": "q"}]}),
             (":1", "messages[0].role"))
inspect_case("messages-empty", jsonl({"messages": []}), (":1", "messages", "no turns"))
inspect_case("messages-only-system", jsonl({"messages": [{"role": "system", "content": "s"}]}),
             (":1", "only a system turn"))
inspect_case("messages-empty-turn", jsonl({"messages": [{"role": "user", "content": "  "},
                                                        {"role": "assistant", "content": "a"}]}),
             (":1", "messages[0].content", "empty"))
# Alpaca and Dolly: the field named as the user's file has it, never the converted messages[i].
inspect_case("alpaca-output-null", jsonl({"instruction": "q", "input": "", "output": None}), (":1", "output"))
inspect_case("alpaca-output-list", jsonl({"instruction": "q", "output": ["a", "b"]}), (":1", "output"))
inspect_case("alpaca-output-dict", jsonl({"instruction": "q", "output": {"text": "a"}}), (":1", "output"))
inspect_case("alpaca-output-number", jsonl({"instruction": "q", "output": 42}), (":1", "output"))
inspect_case("alpaca-output-empty", jsonl({"instruction": "q", "output": " "}), (":1", "output", "empty"))
inspect_case("alpaca-instruction-null", jsonl({"instruction": None, "output": "a"}), (":1", "instruction"))
inspect_case("alpaca-instruction-list", jsonl({"instruction": ["q"], "output": "a"}), (":1", "instruction"))
inspect_case("alpaca-instruction-empty", jsonl({"instruction": "", "output": "a"}), (":1", "instruction"))
inspect_case("alpaca-input-list", jsonl({"instruction": "q", "input": ["x"], "output": "a"}), (":1", "input"))
inspect_case("alpaca-input-dict", jsonl({"instruction": "q", "input": {"x": 1}, "output": "a"}), (":1", "input"))
inspect_case("dolly-response-null", jsonl({"instruction": "q", "context": "", "response": None}), (":1", "response"))
inspect_case("dolly-response-list", jsonl({"instruction": "q", "response": ["a"]}), (":1", "response"))
inspect_case("dolly-context-dict", jsonl({"instruction": "q", "context": {"c": 1}, "response": "a"}), (":1", "context"))
inspect_case("dolly-instruction-number", jsonl({"instruction": 3, "response": "a"}), (":1", "instruction"))
# ShareGPT: conversations[i].value / .from
inspect_case("sharegpt-value-null", jsonl({"conversations": [{"from": "human", "value": "q"},
                                                             {"from": "gpt", "value": None}]}),
             (":1", "conversations[1].value"))
inspect_case("sharegpt-value-number", jsonl({"conversations": [{"from": "human", "value": 5},
                                                               {"from": "gpt", "value": "a"}]}),
             (":1", "conversations[0].value"))
inspect_case("sharegpt-value-empty", jsonl({"conversations": [{"from": "human", "value": "q"},
                                                              {"from": "gpt", "value": ""}]}),
             (":1", "conversations[1].value", "empty"))
inspect_case("sharegpt-from-bad", jsonl({"conversations": [{"from": "bot", "value": "q"}]}),
             (":1", "conversations[0].from"))
inspect_case("sharegpt-turn-number", jsonl({"conversations": [{"from": "human", "value": "q"}, 7]}),
             (":1", "conversations[1]"))
inspect_case("sharegpt-two-humans", jsonl({"conversations": [{"from": "human", "value": "q"},
                                                             {"from": "human", "value": "q2"}]}),
             (":1", "conversations[1].from"))
inspect_case("sharegpt-ends-human", jsonl({"conversations": [{"from": "human", "value": "q"},
                                                             {"from": "gpt", "value": "a"},
                                                             {"from": "human", "value": "q2"}]}),
             (":1", "conversations[2].from"))
# GAIR/lima: conversations[i] is the string itself
inspect_case("gair-empty", jsonl({"conversations": []}), (":1", "conversations", "no turns"))
inspect_case("gair-only-user", jsonl({"conversations": ["q"]}), (":1", "conversations[0]"))
inspect_case("gair-empty-turn", jsonl({"conversations": ["q", " "]}), (":1", "conversations[1]", "empty"))
inspect_case("gair-mixed", jsonl({"conversations": ["q", 5]}), (":1", "conversations[1]"))
inspect_case("gair-null", jsonl({"conversations": ["q", None]}), (":1", "conversations[1]"))
inspect_case("conversations-string", jsonl({"conversations": "q"}), (":1", "conversations"))
inspect_case("alpaca-among-good", jsonl(QA, QA, {"instruction": "q", "output": None}), (":3", "output"))
case("inspect-data-missing", ["inspect", "quickstart", "dataset_name={tmp}/none.jsonl", "model_name_or_path={base}"],
     ("{tmp}/none.jsonl", "not found"), needs=("base",))
case("inspect-dev-nested", ["inspect", "quickstart", "dataset_name={tmp}/d.jsonl", "dev_dataset={tmp}/dev.jsonl",
                            "model_name_or_path={base}"],
     ("{tmp}/dev.jsonl", ":1", "nested"), files={"d.jsonl": jsonl(QA), "dev.jsonl": NESTED + "\n"}, needs=("base",))

# ---------------------------------------------------------------- recipes

RECIPE = "model_name_or_path: {base}\ndataset_name: {tmp}/d.jsonl\n"


def recipe_case(name: str, text: str | bytes, expect: tuple) -> None:
    case(f"recipe-{name}", ["inspect", "{tmp}/r.yaml"], ("{tmp}/r.yaml", *expect),
         files={"r.yaml": text, "d.jsonl": jsonl(QA)}, needs=("base",))


recipe_case("unknown-key", RECIPE + "learning_rat: 1e-4\n", (":3", "learning_rat", "learning_rate"))
recipe_case("bad-float", RECIPE + "learning_rate: fast\n", (":3", "learning_rate"))
recipe_case("negative-lr", RECIPE + "learning_rate: -1\n", (":3", "learning_rate", "> 0"))
recipe_case("bad-int", RECIPE + "lora_r: 1.5\n", (":3", "lora_r"))
recipe_case("lora-dropout", RECIPE + "lora_dropout: 1.5\n", (":3", "lora_dropout"))
recipe_case("residual-dropout", RECIPE + "residual_dropout: -0.1\n", (":3", "residual_dropout"))
recipe_case("eot-word", RECIPE + "eot_token: end\n", (":3", "eot_token"))
recipe_case("max-length", RECIPE + "max_length: 1\n", (":3", "max_length"))
recipe_case("duplicate", RECIPE + "lora_r: 8\nlora_r: 16\n", (":4", "lora_r", "twice"))
recipe_case("invalid-yaml", RECIPE + "lora_r: [8\n", ("invalid YAML",))
recipe_case("not-mapping", "- a\n- b\n", (":1", "mapping"))
recipe_case("not-utf8", RECIPE.encode() + b"# " + BAD_UTF8 + b"\n", ("UTF-8",))
recipe_case("bool", RECIPE + "load_in_4bit: maybe\n", (":3", "load_in_4bit"))
case("recipe-missing", ["inspect", "{tmp}/none.yaml"], ("none.yaml", "not found"))
case("recipe-override-unknown", ["inspect", "{tmp}/r.yaml", "lora_rr=8"], ("command line", "lora_rr"),
     files={"r.yaml": RECIPE, "d.jsonl": jsonl(QA)}, needs=("base",))
case("recipe-override-not-pair", ["inspect", "{tmp}/r.yaml", "lora_r"], ("lora_r", "key=value"),
     files={"r.yaml": RECIPE, "d.jsonl": jsonl(QA)}, needs=("base",))

# ---------------------------------------------------------------- train: the same data and recipes, before any weight is loaded


def train_case(name: str, overrides: list, expect: tuple, files: dict | None = None) -> None:
    argv = ["train", "quickstart", "dataset_name={tmp}/d.jsonl", "model_name_or_path={base}",
            "output_dir={tmp}/run", *overrides]
    # run/notes.txt: a file the user keeps in the output folder, which a failed run must leave as it was
    case(f"train-{name}", argv, expect, files={"d.jsonl": jsonl(QA), "run/notes.txt": "mine\n", **(files or {})},
         needs=("base",))


train_case("utf8", [], ("{tmp}/d.jsonl", ":2", "UTF-8"), {"d.jsonl": jsonl(QA).encode() + BAD_UTF8 + b"\n"})
train_case("nested", [], ("{tmp}/d.jsonl", ":2", "nested"), {"d.jsonl": jsonl(QA, NESTED)})
train_case("unknown-form", [], ("{tmp}/d.jsonl", ":1", "unknown form"), {"d.jsonl": jsonl({"q": "a"})})
train_case("alpaca-output-list", [], ("{tmp}/d.jsonl", ":1", "output"),
           {"d.jsonl": jsonl({"instruction": "q", "output": ["a"]})})
train_case("epochs-negative", ["num_train_epochs=-1"], ("command line", "num_train_epochs"))
train_case("epochs-word", ["num_train_epochs=three"], ("command line", "num_train_epochs"))
train_case("lr-list", ["learning_rate=[1, 2]"], ("command line", "learning_rate"))
train_case("max-length-negative", ["max_length=-5"], ("command line", "max_length"))
train_case("dtype-float8", ["dtype=float8"], ("command line", "dtype"))
train_case("eot-empty", ["eot_token="], ("command line", "eot_token"))
train_case("dev-missing", ["dev_dataset={tmp}/dev.jsonl"], ("{tmp}/dev.jsonl", "not found"))
case("train-recipe-multi-turn-number", ["train", "{tmp}/r.yaml", "output_dir={tmp}/run"],
     ("{tmp}/r.yaml", ":3", "multi_turn"), files={"r.yaml": RECIPE + "multi_turn: 2\n", "d.jsonl": jsonl(QA),
                                                 "run/notes.txt": "mine\n"}, needs=("base",))

# ---------------------------------------------------------------- export, data mix

case("export-missing", ["export", "gguf", "{tmp}/none", "--out", "{tmp}/g"], ("{tmp}/none",))
case("export-not-adapter", ["export", "gguf", "{tmp}/run", "--out", "{tmp}/g"], ("{tmp}/run",),
     files={"run/notes.txt": "mine\n"})
case("export-out-exists", ["export", "gguf", "{adapter}", "--out", "{tmp}/g"], ("{tmp}/g", "exists"),
     files={"g/keep.txt": "mine\n"}, needs=("adapter",))
case("mix-missing", ["data", "mix", "--single", "{tmp}/none.jsonl", "--dialogues", "{tmp}/d.jsonl",
                     "--out", "{tmp}/mix.jsonl"], ("{tmp}/none.jsonl", "not found"), files={"d.jsonl": jsonl(QA)})
case("mix-bad-line", ["data", "mix", "--single", "{tmp}/s.jsonl", "--dialogues", "{tmp}/d.jsonl",
                      "--out", "{tmp}/mix.jsonl"], ("{tmp}/s.jsonl", ":2"),
     files={"s.jsonl": jsonl(QA, "{oops"), "d.jsonl": jsonl(QA)})

# ---------------------------------------------------------------- curate

def wikihow_case(name: str, content, expect: tuple, extra=()) -> None:
    case(f"wikihow-{name}", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out.jsonl", *extra],
         ("{tmp}/w.csv", *expect), files={"w.csv": content})


wikihow_case("utf8", (WIKIHOW_HEADER + ARTICLE).encode() + BAD_UTF8 + b"\n", ("UTF-8",))
wikihow_case("no-columns", "a,b\n1,2\n", (":1", "header"))
wikihow_case("empty", "", (":1", "header"))
wikihow_case("short-row", WIKIHOW_HEADER + ARTICLE + '"x","How to Y"\n', (":3", "columns"))
wikihow_case("cut-in-quote", WIKIHOW_HEADER + ARTICLE + '"x","How to Y","an article cut in the middle\n',
             (":3", "quote"))
case("wikihow-folder", ["curate", "wikihow", "--csv", "{tmp}", "--out", "{tmp}/out.jsonl"], ("{tmp}", "not found"))
case("wikihow-missing", ["curate", "wikihow", "--csv", "{tmp}/none.csv", "--out", "{tmp}/out.jsonl"],
     ("{tmp}/none.csv", "not found"))
case("wikihow-n-zero", ["curate", "wikihow", "--csv", "{tmp}/w.csv", "--out", "{tmp}/out.jsonl", "--n", "0"],
     ("--n",), files={"w.csv": WIKIHOW_HEADER + ARTICLE})

def reddit_case(name: str, files: dict, expect: tuple, subs="{tmp}/rs.jsonl", comments="{tmp}/rc.jsonl") -> None:
    files = {"rs.jsonl": jsonl(SUBMISSION), "rc.jsonl": jsonl(COMMENT), **files}
    case(f"reddit-{name}", ["curate", "reddit", "--submissions", subs, "--comments", comments,
                            "--out", "{tmp}/out.jsonl"], expect, files=files)


reddit_case("missing-submissions", {}, ("{tmp}/none.jsonl", "not found"), subs="{tmp}/none.jsonl")
reddit_case("missing-comments", {}, ("{tmp}/none.zst", "not found"), comments="{tmp}/none.zst")
reddit_case("zst-not-zstd", {"rs.zst": jsonl(SUBMISSION)}, ("{tmp}/rs.zst", "zstd"), subs="{tmp}/rs.zst")
reddit_case("zst-empty", {"rc.zst": b""}, ("{tmp}/rc.zst", "zstd"), comments="{tmp}/rc.zst")
reddit_case("invalid-json", {"rs.jsonl": jsonl(SUBMISSION, "{nope")}, ("{tmp}/rs.jsonl:2", "invalid JSON"))
reddit_case("line-is-list", {"rs.jsonl": jsonl(SUBMISSION, [1])}, ("{tmp}/rs.jsonl:2", "JSON object"))
reddit_case("utf8", {"rc.jsonl": jsonl(COMMENT).encode() + BAD_UTF8 + b"\n"}, ("{tmp}/rc.jsonl:2", "UTF-8"))
reddit_case("nested", {"rc.jsonl": jsonl(COMMENT, NESTED)}, ("{tmp}/rc.jsonl:2", "nested"))
reddit_case("score", {"rc.jsonl": jsonl({**COMMENT, "score": "lots"})}, ("{tmp}/rc.jsonl:1", "score"))
case("curate-unknown-source", ["curate", "tumblr"], ("tumblr",))
case("stackexchange-missing", ["curate", "stackexchange", "--dump", "{tmp}/none", "--out", "{tmp}/out.jsonl"],
     ("{tmp}/none",))

# ---------------------------------------------------------------- select


def select_case(name: str, files: dict, expect: tuple, extra=(), source="{tmp}/in.jsonl") -> None:
    case(f"select-{name}", ["select", "--strategy", "longest", "--k", "1", *extra, source, "{tmp}/out.jsonl"],
         expect, files=files)


select_case("utf8", {"in.jsonl": BAD_UTF8 + b"\n"}, ("{tmp}/in.jsonl", "UTF-8"))
select_case("nested", {"in.jsonl": NESTED + "\n"}, ("{tmp}/in.jsonl:1", "nested"))
select_case("alpaca-null", {"in.jsonl": jsonl({"instruction": "q", "output": None})}, ("{tmp}/in.jsonl:1", "output"))
select_case("missing", {}, ("{tmp}/none.jsonl", "not found"), source="{tmp}/none.jsonl")
select_case("tokenizer-missing", {"in.jsonl": jsonl(QA)}, ("{tmp}/no-tokenizer", "--tokenizer"),
            extra=("--by", "tokens", "--tokenizer", "{tmp}/no-tokenizer"))
select_case("tokenizer-not-given", {"in.jsonl": jsonl(QA)}, ("--tokenizer",), extra=("--by", "tokens"))
select_case("k-zero", {"in.jsonl": jsonl(QA)}, ("--k",), extra=("--k", "0"))

# ---------------------------------------------------------------- eval

def generate_case(name: str, extra: list, expect: tuple, files: dict = PROMPTS, prompts="{tmp}/p.jsonl",
                  out="{tmp}/out.jsonl", needs=("adapter",), model="{adapter}") -> None:
    case(f"eval-generate-{name}", ["eval", "generate", "--model", model, "--prompts", prompts, "--out", out,
                                   *extra], expect, files=files, needs=needs)


generate_case("max-new-tokens-negative", ["--max-new-tokens", "-5"], ("--max-new-tokens", ">= 1"))
generate_case("max-new-tokens-zero", ["--max-new-tokens", "0"], ("--max-new-tokens", ">= 1"))
generate_case("temperature-negative", ["--temperature", "-1"], ("--temperature", ">= 0"))
generate_case("temperature-word", ["--temperature", "warm"], ("--temperature",))
generate_case("top-p-seven", ["--top-p", "7"], ("--top-p", "1"))
generate_case("top-p-zero", ["--top-p", "0"], ("--top-p",))
generate_case("repetition-penalty-zero", ["--repetition-penalty", "0"], ("--repetition-penalty", "> 0"))
generate_case("samples-zero", ["--samples", "0"], ("--samples", ">= 1"))
generate_case("samples-negative", ["--samples", "-2"], ("--samples", ">= 1"))
generate_case("limit-zero", ["--limit", "0"], ("--limit", ">= 1"))
generate_case("out-is-folder", [], ("{tmp}/outdir", "folder"), files={**PROMPTS, "outdir/keep.txt": "x"},
              out="{tmp}/outdir")
generate_case("prompts-missing", [], ("{tmp}/none.jsonl", "not found"), prompts="{tmp}/none.jsonl", needs=())
generate_case("prompts-utf8-jsonl", [], ("{tmp}/p.jsonl", "UTF-8"), files={"p.jsonl": BAD_UTF8}, needs=())
generate_case("prompts-utf8-txt", [], ("{tmp}/p.txt", "UTF-8"), files={"p.txt": b"one\n" + BAD_UTF8},
              prompts="{tmp}/p.txt", needs=())
generate_case("prompts-nested", [], ("{tmp}/p.jsonl:1", "nested"), files={"p.jsonl": NESTED}, needs=())
generate_case("prompts-prompt-null", [], ("{tmp}/p.jsonl:1", "prompt"), files={"p.jsonl": jsonl({"prompt": None})},
              needs=())
generate_case("prompts-row-list", [], ("{tmp}/p.jsonl:2", "JSON object"),
              files={"p.jsonl": jsonl({"prompt": "q"}, [1, 2])}, needs=())
generate_case("prompts-duplicate-id", [], ("{tmp}/p.jsonl:2", "id"),
              files={"p.jsonl": jsonl({"id": "a", "prompt": "q"}, {"id": "a", "prompt": "r"})}, needs=())
generate_case("prompts-empty", [], ("{tmp}/p.txt", "no prompts"), files={"p.txt": "\n\n"}, prompts="{tmp}/p.txt",
              needs=())
generate_case("prompts-alpaca-null", [], ("{tmp}/p.jsonl:1", "instruction"),
              files={"p.jsonl": jsonl({"instruction": None, "output": "a"})}, needs=())
generate_case("model-missing", [], ("{tmp}/no-model",), needs=(), model="{tmp}/no-model")


def answers_case(name: str, content, expect: tuple, step="likert") -> None:
    argv = (["eval", "pairwise", "--judge", JUDGE, "--ours", "{tmp}/a.jsonl", "--baseline", "{tmp}/b.jsonl"]
            if step == "pairwise" else ["eval", step, "--judge", JUDGE, "--answers", "{tmp}/a.jsonl"])
    case(f"eval-{step}-{name}", [*argv, "--out", "{tmp}/out.jsonl"], ("{tmp}/a.jsonl", *expect),
         files={"a.jsonl": content, "b.jsonl": jsonl(ANSWER)})


answers_case("row-list", jsonl(ANSWER, [ANSWER]), (":2", "JSON object"))
answers_case("row-list", jsonl([ANSWER]), (":1", "JSON object"), step="pairwise")
answers_case("answer-null", jsonl({**ANSWER, "answer": None}), (":1", "answer"))
answers_case("id-number", jsonl({**ANSWER, "id": 3}), (":1", "id"), step="absolute")
answers_case("nested", jsonl(ANSWER, NESTED), (":2", "nested"))
answers_case("utf8", BAD_UTF8, ("UTF-8",), step="absolute")
answers_case("empty", "", ("no answers",))
answers_case("sample-text", jsonl({**ANSWER, "sample": "first"}), (":1", "sample"))
case("eval-likert-missing", ["eval", "likert", "--judge", JUDGE, "--answers", "{tmp}/none.jsonl", "--out",
                             "{tmp}/out.jsonl"], ("{tmp}/none.jsonl",))
case("eval-human-not-object", ["eval", "human", "{tmp}/v.jsonl", "--out", "{tmp}/out.jsonl"], ("{tmp}/v.jsonl:1",),
     files={"v.jsonl": jsonl([1])})
case("eval-human-vote-bad", ["eval", "human", "{tmp}/v.jsonl", "--out", "{tmp}/out.jsonl"], ("{tmp}/v.jsonl:1", "vote"),
     files={"v.jsonl": jsonl({"prompt": "p", "model_a": "x", "model_b": "y", "answer_a": "1", "answer_b": "2",
                              "vote": "maybe", "winner": "x", "rater": "r", "time": "t"})})
case("eval-knowledge-answers-not-list", ["eval", "knowledge", "--model", "{tmp}/no-model", "--questions",
                                         "{tmp}/q.jsonl", "--out", "{tmp}/out.jsonl"], ("{tmp}/q.jsonl:1", "answers"),
     files={"q.jsonl": jsonl({"id": "q", "question": "Capital of France?", "answers": "Paris"})})
case("eval-knowledge-nested", ["eval", "knowledge", "--model", "{tmp}/no-model", "--questions",
                               "{tmp}/q.jsonl", "--out", "{tmp}/out.jsonl"], ("{tmp}/q.jsonl:1", "nested"),
     files={"q.jsonl": NESTED})
case("eval-report-missing", ["eval", "report", "{tmp}/none", "--out", "{tmp}/rep"], ("{tmp}/none",))
case("eval-select-epoch-epochs", ["eval", "select-epoch", "{tmp}", "--epochs", "five"], ("--epochs",))
case("eval-select-epoch-run-json", ["eval", "select-epoch", "{tmp}"], ("{tmp}/run.json",),
     files={"run.json": "{broken"})

# ---------------------------------------------------------------- push, merge, chat (one shared tiny adapter)


def damage(name: str | None, content=None):
    """prepare(): the shared adapter copied into the case's folder as adapter/, with `name` replaced
    (bytes or text), changed (a function of its path) or removed (None)."""
    def prepare(tmp: Path, fixtures: dict) -> None:
        shutil.copytree(fixtures["adapter"], tmp / "adapter")
        target = tmp / "adapter" / str(name)
        if name is None:
            return
        if content is None:
            target.unlink()
        elif callable(content):
            content(target)
        else:
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return prepare


def drop_base(path: Path) -> None:
    config = json.loads(path.read_text())
    del config["base_model_name_or_path"]
    path.write_text(json.dumps(config))


CONFIG = "adapter_config.json"
COPY = "{tmp}/adapter"
for tool, argv in {"push": ["push", COPY, "--repo", "me/x", "--dry-run", "--out", "{tmp}/hub"],
                   "merge": ["merge", COPY, "--out", "{tmp}/merged"],
                   "chat": ["chat", "--adapter", COPY, "--prompt", "hi"]}.items():
    case(f"{tool}-config-invalid", argv, (f"{COPY}/{CONFIG}",), prepare=damage(CONFIG, "{not json"), needs=("adapter",))
    case(f"{tool}-config-list", argv, (f"{COPY}/{CONFIG}",), prepare=damage(CONFIG, "[1, 2]"), needs=("adapter",))
    case(f"{tool}-config-utf8", argv, (f"{COPY}/{CONFIG}",), prepare=damage(CONFIG, BAD_UTF8), needs=("adapter",))
    case(f"{tool}-config-no-base", argv, (f"{COPY}/{CONFIG}", "base_model_name_or_path"),
         prepare=damage(CONFIG, drop_base), needs=("adapter",))
    case(f"{tool}-no-template", argv, (COPY, "lima_template.json"), prepare=damage("lima_template.json", None),
         needs=("adapter",))
    case(f"{tool}-missing", [a.replace(COPY, "{tmp}/none") for a in argv], ("{tmp}/none",))
for tool, argv in {"merge": ["merge", COPY, "--out", "{tmp}/merged"],
                   "chat": ["chat", "--adapter", COPY, "--prompt", "hi"]}.items():
    case(f"{tool}-adapter-truncated", argv, (f"{COPY}/adapter_model.safetensors",),
         prepare=damage("adapter_model.safetensors", truncate), needs=("adapter",))
    case(f"{tool}-adapter-weights-garbage", argv, (f"{COPY}/adapter_model.safetensors",),
         prepare=damage("adapter_model.safetensors", b"not safetensors at all"), needs=("adapter",))


def damaged_base(tmp: Path, fixtures: dict) -> None:
    shutil.copytree(fixtures["base"], tmp / "base")
    truncate(tmp / "base" / "model.safetensors")


case("chat-base-truncated", ["chat", "--base", "{tmp}/base", "--prompt", "hi"], ("{tmp}/base/model.safetensors",),
     prepare=damaged_base, needs=("base",))
case("merge-base-truncated", ["merge", "{adapter}", "--base", "{tmp}/base", "--out", "{tmp}/merged"],
     ("{tmp}/base/model.safetensors",), prepare=damaged_base, needs=("base", "adapter"))
case("merge-out-exists", ["merge", "{adapter}", "--out", "{tmp}/merged"], ("{tmp}/merged", "exists"),
     files={"merged/keep.txt": "mine"}, needs=("adapter",))
case("merge-run-json-invalid", ["merge", COPY, "--out", "{tmp}/merged"], ("{tmp}/run.json",),
     files={"run.json": "{oops"}, prepare=damage(None),
     needs=("adapter",))
case("merge-run-json-no-model", ["merge", COPY, "--out", "{tmp}/merged"], ("{tmp}/run.json", "load_in_4bit"),
     files={"run.json": "{}"}, prepare=damage(None), needs=("adapter",))
case("push-repo-bad", ["push", "{adapter}", "--repo", "not a repo", "--dry-run", "--out", "{tmp}/hub"], ("--repo",),
     needs=("adapter",))
case("push-out-foreign", ["push", "{adapter}", "--repo", "me/x", "--base-model", "me/base", "--dry-run", "--out",
                          "{tmp}/hub"],
     ("{tmp}/hub", "not written"), files={"hub/mine.txt": "keep"}, needs=("adapter",))
for flag, value, expect in [("--temperature", "-1", ">= 0"), ("--top-p", "7", "1"), ("--max-new-tokens", "0", ">= 1"),
                            ("--repetition-penalty", "-2", "> 0")]:
    case(f"chat-{flag[2:]}", ["chat", "--adapter", "{adapter}", flag, value, "--prompt", "hi"], (flag, expect),
         needs=("adapter",))
    case(f"ui-{flag[2:]}", ["ui", "--runs", "{tmp}", flag, value], (flag, expect))
case("chat-nothing", ["chat", "--prompt", "hi"], ("--adapter",))
case("ui-auth", ["ui", "--runs", "{tmp}", "--auth", "nopassword"], ("--auth",))
case("ui-no-adapters", ["ui", "--runs", "{tmp}", "--no-train"], ("{tmp}", "no adapters"))  # with the Train tab: starts empty

# ---------------------------------------------------------------- app handlers


U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
SLIDERS = (0.7, 0.9, 1.2, 16)


def handler_case(name: str, call, expect: tuple) -> None:
    case(f"app-{name}", call, expect)


def chat_turn(history, message="next", cap=4000):
    from lima_lite.app.ui import chat_turn
    return chat_turn(NoModels(), cap, message, history, "m", *SLIDERS)


def chat_retry(history):
    from lima_lite.app.ui import chat_retry
    return chat_retry(NoModels(), 4000, history, "m", *SLIDERS)


def compare_turn(left, right, message="next", cap=4000):
    from lima_lite.app.ui import compare_turn
    return compare_turn(NoModels(), cap, 0, message, left, right, "m", "n", *SLIDERS)


def judge_vote(rater="me", choice="a", record=None):
    from lima_lite.app.ui import Votes, judge_vote
    record = record or {"prompt": "p", "id": "1", "model_a": "m", "model_b": "n", "answer_a": "x", "answer_b": "y"}
    return judge_vote(Votes(Path(VOTES_DIR[0]) / "votes.jsonl"), choice, record, "m", "n", rater)


handler_case("chat-two-users", lambda: chat_turn([U]), ("history[0]", "user"))
handler_case("chat-starts-assistant", lambda: chat_turn([A]), ("history[0].role",))
handler_case("chat-role-unknown", lambda: chat_turn([{"role": "tool", "content": "x"}, A]), ("history[0].role",))
handler_case("chat-system-late", lambda: chat_turn([U, A, {"role": "system", "content": "x"}, A]), ("history[2].role",))
handler_case("chat-content-none", lambda: chat_turn([U, {"role": "assistant", "content": None}]),
             ("history[1].content",))
handler_case("chat-message-not-dict", lambda: chat_turn(["hi", "hello"]), ("history[0]",))
handler_case("chat-history-not-list", lambda: chat_turn("hi"), ("history",))
handler_case("chat-history-too-long", lambda: chat_turn([U, {"role": "assistant", "content": "x" * 400_001}]),
             ("history", "characters"))
handler_case("chat-message-too-long", lambda: chat_turn([], message="x" * 4001), ("4,001", "4,000"))
handler_case("chat-message-empty", lambda: chat_turn([], message="  "), ("type a message",))
handler_case("retry-two-users", lambda: chat_retry([U, U]), ("history[1]",))
handler_case("retry-empty", lambda: chat_retry([]), ("nothing to retry",))
handler_case("retry-too-long", lambda: chat_retry([{"role": "user", "content": "x" * 400_001}]),
             ("history", "characters"))
handler_case("undo-not-list", lambda: __import__("lima_lite.app.ui").app.ui.chat_undo("hi"), ("history",))
handler_case("undo-bad-message", lambda: __import__("lima_lite.app.ui").app.ui.chat_undo([{"text": "hi"}]),
             ("history[0]",))
handler_case("compare-left-two-users", lambda: compare_turn([U], []), ("history[0]",))
handler_case("compare-right-bad", lambda: compare_turn([], [A]), ("history[0].role",))
handler_case("compare-too-long", lambda: compare_turn([U, {"role": "assistant", "content": "x" * 400_001}], []),
             ("history", "characters"))
handler_case("compare-message-too-long", lambda: compare_turn([], [], message="y" * 5000), ("5,000", "4,000"))
handler_case("judge-same-models", lambda: __import__("lima_lite.app.ui").app.ui.judge_next(
    NoModels(), [{"id": "1", "prompt": "p"}], __import__("random").Random(0), 0, "m", "m", *SLIDERS),
    ("two different models",))
handler_case("vote-rater-long", lambda: judge_vote(rater="r" * 81), ("rater", "80"))
handler_case("vote-choice-bad", lambda: judge_vote(choice="c"), ("vote",))
handler_case("vote-no-record", lambda: __import__("lima_lite.app.ui").app.ui.judge_vote(
    None, "a", None, "m", "n", "me"), ("Next prompt",))


# ---------------------------------------------------------------- the runner


def test_enough_cases():
    assert len(CASES) >= 100 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input(c: Case, tmp_path, request):
    check_case(c, tmp_path, request)


# ---------------------------------------------------------------- what the table cannot show: cost and the app's routes


@pytest.fixture(scope="module")
def tokenizer_template(tiny_adapter):
    from transformers import AutoTokenizer

    from lima_lite.template import ChatTemplate

    return AutoTokenizer.from_pretrained(tiny_adapter), ChatTemplate.load(tiny_adapter)


def counting(monkeypatch, module, name: str) -> list[int]:
    """Characters of message content each call of module.name tokenizes."""
    seen, real = [], getattr(module, name)

    def wrapper(tokenizer, template, messages, *args):
        seen.append(sum(len(m["content"]) for m in messages))
        return real(tokenizer, template, messages, *args)

    monkeypatch.setattr(module, name, wrapper)
    return seen


def test_a_huge_example_is_cut_to_characters_before_it_is_tokenized(tokenizer_template, monkeypatch):
    import lima_lite.template
    from lima_lite.conversations import CHARS_PER_TOKEN, encode_dataset
    from lima_lite.template import encode_conversation

    tokenizer, template = tokenizer_template
    text = "Water the plant once a week, in the morning. " * 50_000  # 2.3 MB
    messages = [{"role": "user", "content": "How?"}, {"role": "assistant", "content": text}]
    expected = encode_conversation(tokenizer, template, messages, 64)["input_ids"]
    seen = counting(monkeypatch, lima_lite.template, "encode_conversation")
    rows, counts, _ = encode_dataset([{"id": "x", "messages": messages}], tokenizer, template, 64)
    assert max(seen) <= 64 * CHARS_PER_TOKEN  # not 2.3 MB
    assert counts == {"read": 1, "kept": 1, "cut": 1, "dropped": 0}
    assert rows[0]["input_ids"] == expected  # the same first 64 tokens as cutting after tokenizing everything


def test_a_long_history_is_tokenized_once_and_dropped_as_before(tokenizer_template, monkeypatch):
    import lima_lite.generate
    from lima_lite.generate import Engine
    from lima_lite.template import encode_prompt

    tokenizer, template = tokenizer_template
    engine = Engine(model=None, tokenizer=tokenizer, template=template, name="tiny", context_length=200)
    history = []
    for i in range(40):
        history += [{"role": "user", "content": f"Question {i}: how often " * (1 + i % 3)},
                    {"role": "assistant", "content": f"Answer {i}, once a week. " * (1 + i % 5)}]
    history.append({"role": "user", "content": "And the last one?"})

    def one_by_one(messages, max_new_tokens):  # what prompt_ids did before: re-encode after each drop
        budget, turns, dropped = 200 - min(max_new_tokens, 100), messages, 0
        while len(ids := encode_prompt(tokenizer, template, turns)) > budget and len(turns) > 1:
            turns, dropped = turns[2:], dropped + 2
        return ids, dropped

    for count in (1, 3, 21, 81):
        assert engine.prompt_ids(history[-count:], 50) == one_by_one(history[-count:], 50)
    seen = counting(monkeypatch, lima_lite.generate, "encode_conversation")
    prompts = counting(monkeypatch, lima_lite.generate, "encode_prompt")
    ids, dropped = engine.prompt_ids(history, 50)
    assert dropped > 60 and len(ids) <= 150
    chars = sum(len(m["content"]) for m in history)
    assert sum(seen) + sum(prompts) <= 1.1 * chars  # each turn once, then the few kept ones


def test_the_guard_closes_cancel_and_reset_to_strangers_and_says_busy(tmp_path):
    import socket

    import httpx

    from lima_lite.app.ui import Guard, Models, build_app, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(Models({"m": ("unused", True), "m/base": ("unused", False)}), [{"id": "1", "prompt": "p"}],
                    tmp_path / "votes.jsonl")
    launch(app, "127.0.0.1", port, False, ("me", "secret"), 4, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/gradio_api"
        body = {"session_hash": "s", "fn_index": 0, "event_id": "e"}
        with httpx.Client() as stranger:
            assert stranger.post(f"{url}/cancel", json=body).status_code == 401
            assert stranger.post(f"{url}/reset", json=body).status_code == 401
            assert stranger.post(f"{url}/reset/", json=body).status_code == 401
        with httpx.Client() as user:
            assert user.post(f"http://127.0.0.1:{port}/login", data={"username": "me", "password": "secret"}).is_success
            assert user.post(f"{url}/cancel", json=body).status_code == 200
            assert user.post(f"{url}/reset", json=body).status_code == 200
    finally:
        app.close()

    async def full_queue(scope, receive, send):
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    import asyncio

    async def join():
        transport = httpx.ASGITransport(app=Guard(full_queue, queue_size=16))
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return await client.post("/gradio_api/queue/join", json={})

    refused = asyncio.run(join())
    assert refused.status_code == 503 and "busy" in refused.json()["detail"] and "try again" in refused.json()["detail"]
