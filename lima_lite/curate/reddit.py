"""Build LIMA's Reddit examples from Pushshift-style NDJSON dumps (one JSON object per line, plain or .zst).

    $ lima-lite curate reddit --submissions RS_2019-01.zst --comments RC_2019-01.zst \\
          --out data/writingprompts.jsonl --test-out data/askreddit-test.jsonl

Submissions need `id`, `subreddit`, `title`, `score`; comments need `id`, `link_id` (`t3_<submission id>`),
`parent_id`, `body`, `score` (Pushshift's field names). Two passes, submissions then comments:

- r/WritingPrompts: the prompt is the submission title without its `[WP]` tag; the answer is the
  top-level comment with the highest score (not deleted, not a bot), links removed. Rules, each counted:
  `comment_score_low` (< --min-score), `story_too_short` / `story_too_long` (--min-chars/--max-chars),
  `no_story`. Then `--n` stories are drawn at random (seeded) from those that pass (LIMA: 150, by hand).
- r/AskReddit: self-contained titles (filters.title_self_contained: a question that does not need a body) are
  written to `--test-out` as test prompts only (`{"id", "source", "prompt"}`); their answers are never used.
"""

import argparse
import json
import random
from pathlib import Path

from lima_lite.curate import filters
from lima_lite.curate.report import Funnel, check_kept, dedupe, read_lines, with_report, write_report
from lima_lite.files import add_overwrite_flag, check_outputs, write_jsonl
from lima_lite.flags import DRAW_SEED, bounded

BOTS = {"AutoModerator", "WritingPromptsRobot"}


def json_lines(paths: list[Path], kind: str, funnel: Funnel, on_error: str):
    """Yield the JSON objects of NDJSON files; a corrupted line is reported as file:line."""
    for path in paths:
        for number, line in read_lines(path, f"{path.name}: {kind}"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"a line must hold a JSON object, not {type(row).__name__}")
            except UnicodeDecodeError as error:
                funnel.bad(f"{path}:{number}", f"not UTF-8 text (byte {error.start} of the line)", on_error)
                continue
            except (json.JSONDecodeError, ValueError) as error:
                funnel.bad(f"{path}:{number}", f"invalid JSON ({error})", on_error)
                continue
            except RecursionError:
                funnel.bad(f"{path}:{number}", "invalid JSON: nested too deeply", on_error)
                continue
            yield f"{path}:{number}", row


def curate_reddit(submissions: list[Path], comments: list[Path], out: Path, test_out: Path | None, n: int = 150,
                  n_test: int = 70, min_score: int = 10, min_chars: int = 1000, max_chars: int = 4096,
                  seed: int = 0, on_error: str = "stop") -> list[dict]:
    funnel, prompts, tests = Funnel(seed), {}, []
    for _where, row in json_lines(submissions, "submissions", funnel, on_error):
        subreddit = str(row.get("subreddit", "")).lower()
        title = str(row.get("title", "")).strip()
        if subreddit == "writingprompts":
            funnel.count("r/WritingPrompts submissions")
            if not title.startswith("[WP]"):
                funnel.drop("not_a_writing_prompt", f"reddit/writingprompts/{row.get('id')}", title)
                continue
            prompts[str(row.get("id"))] = title.removeprefix("[WP]").strip()
        elif subreddit == "askreddit":
            funnel.count("r/AskReddit submissions")
            if filters.title_self_contained(title) and not row.get("over_18"):
                tests.append({"id": f"reddit/askreddit/{row.get('id')}", "source": "reddit/askreddit", "prompt": title})
            else:
                funnel.drop("askreddit_title_not_self_contained", f"reddit/askreddit/{row.get('id')}", title)

    best = {}  # submission id -> (score, comment id, body): only the current top comment of each prompt
    for where, row in json_lines(comments, "comments", funnel, on_error):
        link = str(row.get("link_id", "")).removeprefix("t3_")
        if link not in prompts or row.get("parent_id") != row.get("link_id"):
            continue
        body = str(row.get("body", ""))
        if body in ("[deleted]", "[removed]") or row.get("author") in BOTS:
            continue
        try:
            score = int(row.get("score", 0))
        except (TypeError, ValueError):
            funnel.bad(where, f"score: not an integer ({row.get('score')!r})", on_error)
            continue
        current = best.get(link)
        if current is None or score > current[0] or (score == current[0] and str(row.get("id")) < current[1]):
            best[link] = (score, str(row.get("id")), body)

    candidates, before = [], []
    for link in sorted(prompts):
        example_id = f"reddit/writingprompts/{link}"
        if link not in best:
            funnel.drop("no_story", example_id, prompts[link])
            continue
        score, _, body = best[link]
        story = filters.strip_plain_links(body)
        before.append(len(story))
        reason = ("comment_score_low" if score < min_score else "story_too_short" if len(story) < min_chars
                  else "story_too_long" if len(story) > max_chars else None)
        if reason:
            funnel.drop(reason, example_id, story)
            continue
        candidates.append({"messages": [{"role": "user", "content": prompts[link]},
                                        {"role": "assistant", "content": story}],
                           "source": "reddit/writingprompts", "id": example_id})
    funnel.count("stories that pass every rule", len(candidates))
    candidates = dedupe(candidates, funnel, seed=seed)
    kept = random.Random(seed).sample(candidates, min(n, len(candidates)))
    funnel.count("sampled stories", len(kept))
    check_kept(kept, submissions[0] if len(submissions) == 1 else "--submissions", funnel)
    write_jsonl(kept, out)
    if test_out is not None:
        tests = random.Random(seed).sample(tests, min(n_test, len(tests)))
        funnel.count("AskReddit test prompts written", len(tests))
        write_jsonl(tests, test_out)
    settings = {"command": "curate reddit", "submissions": [str(p) for p in submissions],
                "comments": [str(p) for p in comments], "n": n, "n_test": n_test, "min_score": min_score,
                "chars": [min_chars, max_chars], "seed": seed, "test_out": str(test_out) if test_out else None}
    write_report(out, funnel, before, kept, settings, seed)
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lima-lite curate reddit", description=__doc__.split("\n\n")[1],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=Path, nargs="+", required=True, help="Pushshift submissions NDJSON (.zst ok)")
    parser.add_argument("--comments", type=Path, nargs="+", required=True, help="Pushshift comments NDJSON (.zst ok)")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL of stories; the report is written next to it")
    parser.add_argument("--test-out", type=Path, help="where to write the r/AskReddit test prompts (JSONL)")
    parser.add_argument("--n", type=bounded(int, 1), default=150, help="stories to keep (LIMA: 150)")
    parser.add_argument("--n-test", type=bounded(int, 0), default=70, help="AskReddit test prompts to keep (LIMA: 70)")
    parser.add_argument("--min-score", type=int, default=10, help="least score of the top comment")
    parser.add_argument("--min-chars", type=bounded(int, 0), default=1000, help="shortest story kept")
    parser.add_argument("--max-chars", type=bounded(int, 1), default=4096, help="longest story kept")
    parser.add_argument("--seed", type=DRAW_SEED, default=0, help="seed for the draws")
    parser.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                        help="on a corrupted JSON line: stop with its file:line, or count it in the report and go on")
    add_overwrite_flag(parser)
    args = parser.parse_args(argv)
    check_outputs(with_report(args.out, args.test_out), [*args.submissions, *args.comments], args.overwrite)
    kept = curate_reddit(args.submissions, args.comments, args.out, args.test_out, args.n, args.n_test,
                         args.min_score, args.min_chars, args.max_chars, args.seed, args.on_error)
    print(f"wrote {len(kept)} stories to {args.out}" + (f"; test prompts to {args.test_out}" if args.test_out else ""))
    return 0
