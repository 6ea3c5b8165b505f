"""`lima-lite eval`: answers, judgments and a report, one command per step, each resumable.

    $ lima-lite eval generate --model runs/quickstart/adapter --prompts embedded:dev.jsonl --out evals/adapter.jsonl
    $ lima-lite eval generate --model runs/quickstart/adapter --no-adapter --prompts embedded:dev.jsonl --out evals/base.jsonl
    $ lima-lite eval pairwise --judge gpt-4o@https://api.openai.com/v1 --ours evals/adapter.jsonl --baseline evals/base.jsonl --out evals/pairwise.jsonl
    $ lima-lite eval likert   --judge JUDGE --answers evals/adapter.jsonl --out evals/likert.jsonl
    $ lima-lite eval absolute --judge JUDGE --answers evals/adapter.jsonl --out evals/absolute.jsonl
    $ lima-lite eval knowledge --model runs/quickstart/adapter --out evals/knowledge.jsonl
    $ lima-lite eval dialogue --model runs/lima-1k --model runs/lima-1030 --judge JUDGE --out evals/dialogue.jsonl
    $ lima-lite eval human votes.jsonl --ours quickstart/adapter --out evals/human.jsonl
    $ lima-lite eval select-epoch runs/quickstart --prompts embedded:dev.jsonl --epochs 1-3
    $ lima-lite eval report evals/ --out evals/report
"""  # noqa: E501 (a shell command shown whole)

import argparse
import sys
from pathlib import Path

from lima_lite import LimaError, judges
from lima_lite.conversations import read_prompts
from lima_lite.data.overlap import run_overlap_warning
from lima_lite.evaluate import dialogue, steps
from lima_lite.evaluate.answers import answerer_name, answerer_source, check_resumable, generate_answers, get_answerer
from lima_lite.evaluate.dialogue import dialogue_file, dialogue_summary, read_dialogues
from lima_lite.evaluate.protocols import (
    HUMAN_VOTE_FIELDS,
    PROMPTS,
    absolute_mix,
    knowledge_summary,
    length_controlled,
    length_summary,
    likert_summary,
    load_prompt,
    outcome_agreement,
    win_tie_loss,
)
from lima_lite.evaluate.report import build_report
from lima_lite.evaluate.select_epoch import select_epoch
from lima_lite.files import add_overwrite_flag, check_outputs, write_jsonl
from lima_lite.flags import add_sampling_args, bounded, sampling_args
from lima_lite.judges import parse_endpoint
from lima_lite.layout import RUN_FILE, read_run

COUNT = bounded(int, 1)  # --samples, --limit, token budgets: 0 or less would do nothing, silently

STEPS = {
    "generate": "answer every prompt once with LIMA's sampling (resumable)",
    "pairwise": "judge ours vs a baseline in both orders: win / tie / loss",
    "likert": "rate helpfulness 1-6 (LIMA's ablations)",
    "absolute": "grade Fail / Pass / Excellent (LIMA §4.3)",
    "knowledge": "exact-match / contains on factual questions, base vs adapter",
    "human": "import the Judge tab's votes (JSONL) for the report and agreement",
    "dialogue": "multi-turn conversations, every assistant turn graded Fail / Pass / Excellent (LIMA §6)",
    "select-epoch": "score a run's epochs with a judge and name the best",
    "report": "Markdown report and PNG charts from judgment files",
}
SPEC_HELP = ("an adapter folder, a run's epoch-NN, a run folder (its final adapter), a base model "
             "(folder, Hub id, embedded:SmolLM2-135M-Instruct) or MODEL@http://HOST:PORT/v1 (OpenAI-compatible)")
JUDGE_HELP = ("a local model (any model SPEC; greedy, through the generation core) or MODEL@URL for an "
              "OpenAI-compatible server (vLLM, llama.cpp server, TGI, OpenAI; key from OPENAI_API_KEY)")


def parse_epochs(text: str) -> list[int]:
    """'5-10' or '5,7,9' -> epochs."""
    try:
        if "-" in text:
            low, high = (int(x) for x in text.split("-"))
            return list(range(low, high + 1))
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range like 5-10 or a list like 5,7,9, got {text!r}") from None


def prompt_epilog(protocol: str, extra: str = "") -> str:
    return (f"{extra}The judging prompt ({PROMPTS / (protocol + '.txt')}); the verdict is read from the judge's "
            f"last line,\nasked again once if unreadable, then counted as unparsed:\n\n" + load_prompt(protocol))


def add_judge(parser, required: bool = True) -> None:
    parser.add_argument("--judge", required=required, metavar="SPEC", help=JUDGE_HELP)
    parser.add_argument("--judge-max-new-tokens", type=COUNT, default=256,
                        help="longest verdict reply, reasoning included (default 256)")


def add_concurrency(parser, who: str) -> None:
    parser.add_argument("--concurrency", type=COUNT, metavar="N",
                        help=f"requests in flight at once when the {who} is MODEL@URL (default "
                             f"{ENDPOINT_CONCURRENCY}; results are saved in prompt order either way); a local "
                             "model runs one generation at a time")


# Small, so a rate-limited API sees a few requests at once, not a burst; a local vLLM server takes 32 or more.
ENDPOINT_CONCURRENCY = 4


def concurrency(spec: str, given: int | None) -> int:
    """--concurrency for a judge or answerer SPEC: endpoints default to ENDPOINT_CONCURRENCY; a local model
    shares one engine, so more than 1 is refused rather than silently ignored."""
    if parse_endpoint(spec):
        return given or ENDPOINT_CONCURRENCY
    if given and given > 1:
        raise LimaError(f"--concurrency {given}: {spec} is a local model, which runs one generation at a time; "
                        "--concurrency is for MODEL@URL endpoints (eval generate batches a local model's prompts: "
                        "--batch-size)")
    return 1


# On a CPU a batch of 8 answered the quick start's 12 dev prompts 3.3-6.5x faster than one at a time (float32 /
# bf16; docs/benchmarks.md, "Batched local generation"); 8, not more, keeps the padding (a batch's rows wait for its
# longest answer) and what a killed batch loses small.
LOCAL_BATCH_SIZE = 8


def batch_size(spec: str, given: int | None) -> int:
    """--batch-size for an answerer SPEC: LOCAL_BATCH_SIZE for a local model; refused for an endpoint, where
    --concurrency is what sends several prompts at once."""
    if parse_endpoint(spec):
        if given is not None:
            raise LimaError(f"--batch-size {given}: {spec} is an endpoint; use --concurrency N to send N "
                            "prompts at once")
        return 1
    return given or LOCAL_BATCH_SIZE


def step_parser(steps, name: str, func, epilog: str = ""):
    """The subcommand `name`, run by `func(args)`; its help from STEPS, its epilog shown as written."""
    parser = steps.add_parser(name, help=STEPS[name], description=STEPS[name], epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def generate_parser(steps) -> None:
    p = step_parser(steps, "generate", generate_step, "prompts: JSONL with a `prompt` per line, JSONL conversations "
                    "(first user turn), or plain text, one per line.\nout: JSONL {id, prompt, answer, model, "
                    "finish_reason, sample}; rerun to resume.")
    p.add_argument("--model", required=True, metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--prompts", required=True, metavar="FILE", help="prompts file, or embedded:dev.jsonl")
    p.add_argument("--out", required=True, metavar="FILE", help="answers JSONL")
    p.add_argument("--name", help="the model's name in judgments and charts (default: short form of SPEC)")
    p.add_argument("--no-adapter", action="store_true", help="answer with the adapter's base model (adapter off)")
    p.add_argument("--samples", type=COUNT, default=1, help="answers per prompt (LIMA §5 rates 5 with likert)")
    p.add_argument("--limit", type=COUNT, help="only the first N prompts")
    add_concurrency(p, "model")
    p.add_argument("--batch-size", type=COUNT, metavar="N",
                   help=f"a local model answers N prompts at a time, in one left-padded batch saved together (default "
                        f"{LOCAL_BATCH_SIZE}; 1: one at a time). Batches are the prompts in order, so a rerun skips "
                        "those saved; each batch is seeded from its first prompt id, so a sampled answer depends on "
                        "its batch, while greedy (--temperature 0) answers equal those of --batch-size 1 in float32 "
                        "(in bf16 the padding changes the rounding, and long answers can part). MODEL@URL answerers use "
                        "--concurrency instead")
    add_sampling_args(p)


def pairwise_parser(steps) -> None:
    p = step_parser(steps, "pairwise", pairwise_step, prompt_epilog(
        "pairwise", "Each prompt is judged twice, answers swapped: win if both orders prefer ours,\nloss if both "
        "prefer the baseline, tie otherwise.\n\n"))
    add_judge(p)
    p.add_argument("--ours", required=True, metavar="FILE", help="answers of the model under test")
    p.add_argument("--baseline", required=True, metavar="FILE", help="answers of the baseline, same prompts")
    p.add_argument("--out", required=True, metavar="FILE", help="judgments JSONL (resumable)")
    add_concurrency(p, "judge")
    p.add_argument("--judge-prompt", choices=("default", "length-penalised", "both"), default="default",
                   help="length-penalised: a prompt that counts needless length against an answer (Long Is "
                        "More's check of length bias); both: judge with each and print their agreement")


def rating_parser(steps, name: str) -> None:
    """likert and absolute: one judge, one answers file."""
    p = step_parser(steps, name, rating_step, prompt_epilog(name))
    add_judge(p)
    p.add_argument("--answers", required=True, metavar="FILE", help="answers JSONL (several samples: averaged)")
    p.add_argument("--out", required=True, metavar="FILE", help="judgments JSONL (resumable)")
    add_concurrency(p, "judge")


def knowledge_parser(steps) -> None:
    epilog = prompt_epilog("knowledge", "Questions file: JSONL {id, question, answers: [...]}. Answered greedily. "
                           "exact: the normalised\nanswer equals a gold answer; contains: a gold answer appears in "
                           "it.\n\nThe question prompt:\n").replace("The judging prompt", "Prompt file")
    p = step_parser(steps, "knowledge", knowledge_step, epilog)
    p.add_argument("--model", required=True, metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--questions", default="embedded:knowledge.jsonl", metavar="FILE",
                   help="factual QA JSONL (default: the 40 embedded questions)")
    p.add_argument("--out", required=True, metavar="FILE", help="knowledge records JSONL (resumable)")
    p.add_argument("--no-base", action="store_true", help="for an adapter, skip scoring its base model too")
    p.add_argument("--limit", type=COUNT, help="only the first N questions")
    p.add_argument("--max-new-tokens", type=COUNT, default=32, help="default 32")


def human_parser(steps) -> None:
    p = step_parser(steps, "human", human_step, "One JSON object per line, as the UI's Judge tab saves it:\n  "
                    + ", ".join(HUMAN_VOTE_FIELDS) + "\nvote is a, b or tie (for the answers as shown); "
                    "winner the winning model's name or tie.")
    p.add_argument("votes", metavar="VOTES", help="the Judge tab's JSONL")
    p.add_argument("--out", required=True, metavar="FILE", help="records for the report")
    p.add_argument("--ours", help="the model to report wins for (default: the alphabetically first of each pair)")
    add_overwrite_flag(p)


def dialogue_parser(steps) -> None:
    p = step_parser(steps, "dialogue", dialogue_step,
                    dialogue.__doc__.split("\n\n", 2)[2] + "\n\n" + prompt_epilog("dialogue"))
    p.add_argument("--model", required=True, action="append", metavar="SPEC",
                   help=f"a model to converse with; repeat for several (adapters, epochs, the base). {SPEC_HELP}")
    p.add_argument("--name", action="append", help="each --model's name in the report, in the same order")
    p.add_argument("--dialogues", default="embedded:dialogues.jsonl", metavar="FILE",
                   help="JSONL {id, turns: [user turns]} (default: the embedded openings and scripts)")
    p.add_argument("--turns", type=COUNT, help="assistant turns per conversation (default: the script's length; "
                   "more than the script needs --simulator)")
    p.add_argument("--simulator", metavar="SPEC", help="a model (any SPEC) that writes the user's turns after "
                   "the scripted ones, seeded; its turns are stored with the conversation")
    add_judge(p)
    p.add_argument("--out", required=True, metavar="FILE", help="one record per graded turn (resumable; a "
                   "second judge on the same file grades the stored conversations)")
    add_sampling_args(p)


def select_epoch_parser(steps) -> None:
    p = step_parser(steps, "select-epoch", select_epoch_step, prompt_epilog("pairwise"))
    p.add_argument("run", metavar="RUN", help="a training run folder with epoch-NN/ adapters")
    p.add_argument("--prompts", default="embedded:dev.jsonl", metavar="FILE", help="dev prompts (default embedded)")
    add_judge(p, required=False)
    p.add_argument("--epochs", type=parse_epochs, default=list(range(5, 11)), help="e.g. 5-10 (default) or 5,7,9")
    p.add_argument("--against", choices=("base", "each-other"), default="base",
                   help="compare each epoch with the base model (default) or every pair of epochs")
    p.add_argument("--out", metavar="DIR", help="default RUN/select-epoch")
    p.add_argument("--limit", type=COUNT, help="only the first N prompts")
    add_sampling_args(p)


def report_parser(steps) -> None:
    p = step_parser(steps, "report", report_step,
                    "Charts: pairwise.png, likert.png, absolute.png, agreement.png, knowledge.png.")
    p.add_argument("inputs", nargs="+", metavar="PATH", help="judgment files, or folders of them")
    p.add_argument("--out", required=True, metavar="DIR", help="where report.md and the charts go")
    p.add_argument("--title", default="lima_lite evaluation report")
    add_overwrite_flag(p)


STEP_PARSERS = {"generate": generate_parser, "pairwise": pairwise_parser,
                "likert": lambda steps: rating_parser(steps, "likert"),
                "absolute": lambda steps: rating_parser(steps, "absolute"), "knowledge": knowledge_parser,
                "human": human_parser, "dialogue": dialogue_parser, "select-epoch": select_epoch_parser,
                "report": report_parser}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lima-lite eval", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__.split("\n\n")[0],
                                     epilog="\n".join(f"  {k:<13} {v}" for k, v in STEPS.items()))
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name in STEPS:
        STEP_PARSERS[name](steps)
    return parser


def default_judge(run) -> str:
    """select-epoch without --judge: the run's own base model, as recorded in run.json."""
    info = f"{run}/{RUN_FILE}"
    settings = read_run(run)
    if settings is None:
        raise LimaError(f"{info}: not found; name a judge with --judge")
    name = settings.base["name"]
    if not name:
        raise LimaError(f"{info}: base.name: empty; name a judge with --judge")
    print(f"judge: {name} (the run's base model; a stronger judge gives a more trustworthy choice: --judge)")
    return name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    check_eval_outputs(args)
    return args.func(args) or 0


def generate_step(args) -> None:
    workers, batch = concurrency(args.model, args.concurrency), batch_size(args.model, args.batch_size)
    prompts = read_prompts(args.prompts)[: args.limit]
    warning = run_overlap_warning(args.model, args.prompts, prompts)
    if warning:
        print(warning)
    # refused before the model is loaded: an --out made by another model, for other prompts or with other settings
    source = answerer_source(args.model, not args.no_adapter)
    check_resumable(args.out, prompts, answerer_name(args.model, args.name, not args.no_adapter), sampling_args(args),
                    source)
    model = get_answerer(args.model, name=args.name, use_adapter=not args.no_adapter)
    rows = generate_answers(model, prompts, args.out, samples=args.samples, concurrency=workers, batch_size=batch,
                            source=source, **sampling_args(args))
    stopped = sum(r["finish_reason"] == "length" for r in rows)
    print(f"{len(rows)} answers from {model.name} in {args.out} ({stopped} stopped at max_new_tokens)")


def report_step(args) -> None:
    print(f"report: {build_report(args.inputs, args.out, args.title)}")


def human_step(args) -> None:
    records = steps.human_file(args.votes, args.out, args.ours)
    print(f"{len(records)} votes from {len({r['judge'] for r in records})} rater(s) -> {args.out}")


def knowledge_step(args) -> None:
    records = steps.knowledge_file(args.model, args.questions, args.out, with_base=not args.no_base,
                                   limit=args.limit, max_new_tokens=args.max_new_tokens)
    for model in dict.fromkeys(r["model"] for r in records):
        s = knowledge_summary([r for r in records if r["model"] == model])
        print(f"{model}: exact {s['exact']}/{s['n']}, contains {s['contains']}/{s['n']}")


def select_epoch_step(args) -> None:
    judge = judges.get_judge(args.judge or default_judge(args.run), max_new_tokens=args.judge_max_new_tokens)
    prompts = args.prompts
    if args.limit:
        prompts = limited_prompts(args.prompts, args.limit, args.out or f"{args.run}/select-epoch")
    result = select_epoch(args.run, prompts, judge, args.epochs, args.against, args.out, **sampling_args(args))
    print(f"best: {result['best']} (top two: {', '.join(result['top_two'])}); table in "
          f"{args.out or args.run + '/select-epoch'}/select-epoch.md")


def pairwise_step(args) -> None:
    workers = concurrency(args.judge, args.concurrency)  # before a local judge is loaded for nothing
    judge = judges.get_judge(args.judge, max_new_tokens=args.judge_max_new_tokens)
    variants = ("default", "length-penalised") if args.judge_prompt == "both" else (args.judge_prompt,)
    for variant in variants:  # the file keeps both; each call returns all of it
        records = steps.pairwise_file(judge, args.ours, args.baseline, args.out, variant, workers)
    by = {v: [r for r in records if r.get("judge_prompt", "pairwise") == steps.JUDGE_PROMPTS[v]] for v in variants}
    for variant in variants:
        print(f"{variant} prompt: {win_tie_loss(by[variant])}\n  {length_bias_line(by[variant])}")
    if len(variants) == 2:
        same = outcome_agreement(*by.values())
        print(f"the two prompts agree on {pct_of(same['same'])} of {same['n']} outcomes "
              f"({pct_of(same['tie_discounted'])} tie-discounted; Long Is More: 94%)")


def rating_step(args) -> None:
    """likert or absolute: one judge rates one answers file."""
    workers = concurrency(args.judge, args.concurrency)  # before a local judge is loaded for nothing
    judge = judges.get_judge(args.judge, max_new_tokens=args.judge_max_new_tokens)
    if args.step == "likert":
        print(likert_summary(steps.likert_file(judge, args.answers, args.out, workers)))
    else:
        print(absolute_mix(steps.absolute_file(judge, args.answers, args.out, workers)))


def dialogue_step(args) -> None:
    names = args.name or [None] * len(args.model)
    if len(names) != len(args.model):
        raise LimaError(f"--name: {len(names)} given for {len(args.model)} --model; give one per model or none")
    dialogues = read_dialogues(args.dialogues)
    judge = judges.get_judge(args.judge, max_new_tokens=args.judge_max_new_tokens)
    simulator = get_answerer(args.simulator) if args.simulator else None
    models = [(answerer_name(spec, name), lambda spec=spec, name=name: get_answerer(spec, name=name))
              for spec, name in zip(args.model, names, strict=True)]
    records = dialogue_file(models, judge, dialogues, args.out, args.turns, simulator, **sampling_args(args))
    for name, _ in models:
        summary = dialogue_summary([r for r in records if r["model"] == name and r["judge"] == judge.name])
        turns = "; ".join(f"turn {t}: " + " ".join(f"{g} {c[g]}" for g in ("Fail", "Pass", "Excellent"))
                          for t, c in summary["per_turn"].items())
        c = summary["overall"]
        print(f"{name}: {turns}; all: Fail {c['Fail']}, Pass {c['Pass']}, Excellent {c['Excellent']}, unparsed "
              f"{c['unparsed']} of {c['n']}; failed within 3 turns: {summary['failed_within_3']} of "
              f"{summary['conversations']}")


def pct_of(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def length_bias_line(records: list[dict]) -> str:
    """Answer lengths, raw and length-controlled win rate of the first model, on one line."""
    lengths, rates = length_summary(records), length_controlled(records)
    interval = "" if rates["lc"] is None else f" (95% CI {pct_of(rates['low'])} to {pct_of(rates['high'])})"
    return (f"words (mean / median): ours {fmt(lengths['mean_a'])} / {fmt(lengths['median_a'])}, baseline "
            f"{fmt(lengths['mean_b'])} / {fmt(lengths['median_b'])}; win rate raw {pct_of(rates['raw'])}, "
            f"length-controlled {pct_of(rates['lc'])}{interval}")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


# What each step reads from files the user names (models are folders, never written). These steps resume: a
# rerun reads --out back and asks only what it lacks, so an existing --out is taken up, not refused.
# select-epoch resumes too, in its own folder.
RESUMABLE_INPUTS = {"generate": ("prompts",), "pairwise": ("ours", "baseline"), "likert": ("answers",),
                    "absolute": ("answers",), "knowledge": ("questions",), "dialogue": ("dialogues",)}
# What `report` writes into its folder: with report.md and summary.json replaced, the charts are too.
REPORT_FILES = ("report.md", "summary.json")


def check_eval_outputs(args) -> None:
    """files.check_outputs for every step, before a model, judge or file is read: --out is never an input or a
    folder; the steps that do not resume (human, report) replace an existing output only with --overwrite."""
    if args.step in RESUMABLE_INPUTS:
        check_outputs([args.out], [getattr(args, name) for name in RESUMABLE_INPUTS[args.step]], overwrite=True)
    elif args.step == "human":
        check_outputs([args.out], [args.votes], args.overwrite)
    elif args.step == "report":
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise LimaError(f"{args.out}: --out is a file; give the folder for report.md and its charts")
        check_outputs([Path(args.out) / name for name in REPORT_FILES], args.inputs, args.overwrite)


def limited_prompts(prompts: str, limit: int, out: str) -> str:
    """The first `limit` prompts, written as a prompts file in `out` so the selection records what it used."""
    return str(write_jsonl(read_prompts(prompts)[:limit], Path(out) / "prompts.jsonl"))


if __name__ == "__main__":
    from lima_lite.entry import run

    sys.exit(run("lima_lite.evaluate.cli:main", sys.argv[1:]))
