"""Build LIMA's Stack Exchange examples from the official Stack Exchange data dump.

    $ lima-lite curate stackexchange --dump dumps/ --out data/stackexchange.jsonl --n 200 --seed 0

`--dump` holds one folder per site as the archive.org dump unpacks (`math.stackexchange.com/Posts.xml`,
`stackoverflow.com/Posts.xml`, ...). Posts.xml is read line by line (the dump writes one `<row .../>` per
line), twice: pass 1 finds each question's top answer (highest score; ties go to the older answer) keeping
only integers; pass 2 keeps the questions whose top answer scores >= 10 and applies LIMA's rules (§2.1):

    title_not_self_contained  the title needs its body: not a question ("Integration by parts"), under 3
                              words, pointing at the body ("What does this code do?", "Error in the following
                              query", "See attached image", "Why doesn't it work?"), about the writer's own
                              work ("Why doesn't my script compile?", "Is my proof correct?", "Where did I go
                              wrong?") or a vague request ("Help with my homework"). First person alone is
                              fine: "How do I remove rust from cast iron?", "Can I freeze cooked rice?",
                              "Should I learn C before C++?" stand alone. Borderline, kept: "Why is my
                              sourdough starter not rising?" (a starter is a thing every baker has and its
                              usual causes answer it; code, a proof or homework is a text only the body holds)
    answer_too_short/long     the top answer, as Markdown, is outside 1,200 to 4,096 characters
    first_person              the answer's prose (not code, TeX or quoted examples) says "I", "me", "my",
                              "mine", "myself", "IMO"; "type I error", "World War I", "Henry I" do not count
    refers_to_others          it mentions other answers, comments, votes, edits, the asker or the site ("as
                              mentioned", "the accepted answer", "EDIT:", "the OP", "Stack Exchange"); a stack
                              overflow in a program or a comment in code does not count

HTML becomes Markdown with markdownify: code blocks and lists kept; links (the words stay), images and
other tags removed. Sites are split into STEM and other (`--stem-sites` overrides the built-in list) and
`--n` examples are drawn from each group with temperature sampling over sites: a draw picks a site with
probability proportional to size^(1/tau) (size = the site's number of questions), then takes that site's
highest-scoring question not yet taken. The prompt is the title or the question body, at random per
example. Meta sites are skipped. Everything is seeded: the same dump and seed give the same file.
Memory: pass 2 holds titles, scores and byte offsets, not texts; only the `--pool` best-scored passing
questions of each site are re-read in full for de-duplication and sampling.
"""

import argparse
import random
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from lima_lite import LimaError
from lima_lite.curate import filters
from lima_lite.curate.report import SNIPPET, Funnel, check_kept, dedupe, read_lines, with_report, write_report
from lima_lite.files import add_overwrite_flag, check_outputs, write_jsonl
from lima_lite.flags import DRAW_SEED, bounded

# Sites counted as STEM (LIMA: 75 STEM communities out of 179). Anything else is "other".
STEM_SITES = frozenset("""
stackoverflow superuser serverfault askubuntu math mathoverflow stats physics chemistry biology cs cstheory
datascience ai softwareengineering programmers codereview unix tex dba security crypto electronics engineering
astronomy earthscience quant economics bioinformatics matheducators scicomp robotics networkengineering
dsp gis mathematica sharepoint salesforce drupal wordpress webmasters webapps apple android raspberrypi arduino
emacs vi sqa devops reverseengineering quantumcomputing materials medicalsciences psychology computergraphics
codegolf gamedev ux hardwarerecs softwarerecs opendata or3d 3dprinting blender magento joomla tridion ethereum
bitcoin iot cseducators retrocomputing ham mechanics diy space aviation proofassistants hsm
""".split())


def site_name(folder: Path) -> str:
    """`math.stackexchange.com` -> `math`; `stackoverflow.com` -> `stackoverflow`; `mathoverflow.net` -> `mathoverflow`."""
    name = folder.name.lower()
    for suffix in (".7z", ".stackexchange.com", ".com", ".net"):
        name = name.removesuffix(suffix)
    return name


def find_sites(dump: Path) -> dict[str, Path]:
    """Site name -> its Posts.xml, for `dump` itself (one site) or each of its sub-folders."""
    if not dump.is_dir():
        raise LimaError(f"{dump}: --dump must be a folder of site folders, each holding Posts.xml")
    folders = [dump] if (dump / "Posts.xml").is_file() else sorted(p for p in dump.iterdir() if (p / "Posts.xml").is_file())
    if not folders:
        raise LimaError(f"{dump}: no Posts.xml found in it or in its sub-folders (unpack the dump's .7z archives first)")
    return {site_name(folder): folder / "Posts.xml" for folder in folders}


def parse_row(line: bytes, where: str, funnel: Funnel, on_error: str) -> dict | None:
    """One `<row .../>` line -> its attributes; None for the XML header, `<posts>` and blank lines."""
    stripped = line.strip()
    if not stripped.startswith(b"<row"):
        if stripped and not stripped.startswith((b"<?xml", b"<posts", b"</posts")):
            funnel.bad(where, f"not a <row .../> element: {stripped[:60].decode('utf-8', 'replace')!r}", on_error)
        return None
    try:
        row = ET.fromstring(stripped).attrib
    except ET.ParseError as error:
        funnel.bad(where, f"malformed XML row ({error})", on_error)
        return None
    for field in ("Id", "PostTypeId", "Score") + (("ParentId",) if row.get("PostTypeId") == "2" else ()):
        if not row.get(field, "").lstrip("-").isdigit():
            funnel.bad(where, f"{field}: missing or not an integer ({row.get(field)!r})", on_error)
            return None
    return row


def top_answers(site: str, posts: Path, funnel: Funnel, on_error: str) -> tuple[dict[int, tuple[int, int]], int]:
    """Pass 1: question id -> (score, id) of its top answer, and the site's number of questions."""
    top, questions = {}, 0
    for number, line in read_lines(posts, f"{site}: pass 1/2"):
        row = parse_row(line, f"{posts}:{number}", funnel, on_error)
        if row is None:
            continue
        if row["PostTypeId"] == "1":
            questions += 1
        elif row["PostTypeId"] == "2":
            parent, score, answer = int(row["ParentId"]), int(row["Score"]), int(row["Id"])
            best = top.get(parent)
            if best is None or score > best[0] or (score == best[0] and answer < best[1]):
                top[parent] = (score, answer)
    return top, questions


def row_at(posts: Path, offset: int) -> dict:
    """Re-read the one row that starts at byte `offset` (pass 2 keeps offsets, not texts)."""
    with posts.open("rb") as handle:
        handle.seek(offset)
        return ET.fromstring(handle.readline().strip()).attrib


def site_candidates(site: str, posts: Path, top: dict, funnel: Funnel, min_score: int, min_chars: int,
                    max_chars: int, seed: int, pool: int) -> tuple[list[dict], list[int]]:
    """Pass 2: the site's (question, top answer) pairs that pass every rule, as examples, best question first,
    and the lengths of every top answer that was checked (the "before" histogram).

    Memory stays small on any dump: for a question or answer that passes, only its title, score and byte
    offset are held; the texts of the `pool` best-scored passing pairs are re-read at the end.
    """
    wanted = {answer: question for question, (score, answer) in top.items() if score >= min_score}
    questions, answers, lengths, offset = {}, {}, [], 0
    for number, line in read_lines(posts, f"{site}: pass 2/2"):
        start, offset = offset, offset + len(line)
        row = parse_row(line, f"{posts}:{number}", funnel, on_error="ignore")  # pass 1 reported them
        if row is None:
            continue
        post = int(row["Id"])
        if row["PostTypeId"] == "1" and post not in top:
            funnel.drop("no_answer", f"stackexchange/{site}/{post}", row.get("Title", ""))
        elif row["PostTypeId"] == "1" and top[post][0] < min_score:
            funnel.drop("top_answer_score_low", f"stackexchange/{site}/{post}", row.get("Title", ""))
        elif row["PostTypeId"] == "1":
            title = row.get("Title", "")
            questions[post] = (title, start, int(row["Score"])) if filters.title_self_contained(title) \
                else ("title_not_self_contained", title)
        elif row["PostTypeId"] == "2" and post in wanted:
            answer = filters.html_to_markdown(row.get("Body", ""))
            lengths.append(len(answer))
            reason = ("answer_too_short" if len(answer) < min_chars else "answer_too_long" if len(answer) > max_chars
                      else "first_person" if filters.first_person(answer)
                      else "refers_to_others" if filters.refers_to_others(answer) else None)
            answers[wanted[post]] = (reason, answer[:SNIPPET] if reason else start)

    funnel.count("questions with a top answer", len(top))
    funnel.count(f"top answer score >= {min_score}", len(wanted))
    passing = []
    for question in sorted(questions, key=lambda q: (-questions[q][-1] if len(questions[q]) == 3 else 0, q)):
        example_id = f"stackexchange/{site}/{question}"
        if len(questions[question]) == 2:
            funnel.drop("title_not_self_contained", example_id, questions[question][1])
            continue
        funnel.count("title self-contained")
        reason, answer = answers.get(question, ("answer_missing", ""))
        if reason:
            funnel.drop(reason, example_id, answer)
            continue
        passing.append((question, answer))
    funnel.count("passed every rule", len(passing))
    if len(passing) > pool:
        funnel.count(f"best-scored pool kept for sampling (--pool {pool})", pool)
    examples = []
    for question, answer_offset in passing[:pool]:
        title, question_offset, _ = questions[question]
        # The prompt is the title for some examples and the body for others (LIMA §2.1), fixed per question.
        use_body = random.Random(f"{seed}-{site}-{question}").random() < 0.5
        prompt = filters.html_to_markdown(row_at(posts, question_offset).get("Body", "")) if use_body else title.strip()
        answer = filters.html_to_markdown(row_at(posts, answer_offset).get("Body", ""))
        examples.append({"messages": [{"role": "user", "content": prompt or title.strip()},
                                      {"role": "assistant", "content": answer}],
                         "source": f"stackexchange/{site}", "id": f"stackexchange/{site}/{question}"})
    return examples, lengths


def temperature_counts(sizes: dict[str, int], available: dict[str, int], n: int, tau: float,
                       rng: random.Random) -> Counter:
    """How many examples to take from each site: n draws, each picking a site with p ∝ size^(1/tau).

    A site whose `available` examples are used up leaves the draw; the rest are renormalised.
    """
    taken, sites = Counter(), sorted(s for s in sizes if available.get(s, 0) > 0)
    weights = {s: sizes[s] ** (1 / tau) for s in sites}
    for _ in range(n):
        if not sites:
            break
        site = rng.choices(sites, weights=[weights[s] for s in sites])[0]
        taken[site] += 1
        if taken[site] == available[site]:
            sites.remove(site)
    return taken


def curate_stackexchange(dump: Path, out: Path, n: int = 200, tau: float = 3.0, seed: int = 0,
                         stem_sites: frozenset = STEM_SITES, min_score: int = filters.MIN_ANSWER_SCORE,
                         min_chars: int = filters.MIN_ANSWER_CHARS, max_chars: int = filters.MAX_ANSWER_CHARS,
                         near_duplicate: float = 0.8, on_error: str = "stop", pool: int | None = None) -> list[dict]:
    funnel, pool = Funnel(seed), pool or 5 * n
    sites, by_site, sizes, before = find_sites(dump), {}, {}, []
    for site, posts in sites.items():
        if site.startswith("meta.") or ".meta" in site or site == "meta":
            funnel.drop("meta_site", site)
            continue
        top, sizes[site] = top_answers(site, posts, funnel, on_error)
        funnel.count("questions", sizes[site])
        by_site[site], lengths = site_candidates(site, posts, top, funnel, min_score, min_chars, max_chars, seed,
                                                   pool)
        before += lengths
    candidates = [e for site in sorted(by_site) for e in by_site[site]]
    funnel.count("candidates pooled over sites", len(candidates))
    unique = {e["id"] for e in dedupe(candidates, funnel, near_duplicate, seed)}
    by_site = {site: [e for e in examples if e["id"] in unique] for site, examples in by_site.items()}

    rng, kept, groups = random.Random(seed), [], {}
    for group in ("stem", "other"):
        members = {s: sizes[s] for s in by_site if (s in stem_sites) == (group == "stem")}
        taken = temperature_counts(members, {s: len(by_site[s]) for s in members}, n, tau, rng)
        groups[group] = dict(sorted(taken.items()))
        funnel.count(f"sampled ({group}, tau = {tau:g})", sum(taken.values()))
        for site in sorted(taken):
            kept += by_site[site][: taken[site]]
    check_kept(kept, dump, funnel)
    write_jsonl(kept, out)
    settings = {"command": "curate stackexchange", "dump": str(dump), "n_per_group": n, "tau": tau, "seed": seed,
                "min_score": min_score, "chars": [min_chars, max_chars], "near_duplicate": near_duplicate,
                "sites": {s: {"group": "stem" if s in stem_sites else "other", "questions": sizes[s],
                              "candidates": len(by_site[s])} for s in sorted(by_site)},
                "sampled_per_site": groups}
    write_report(out, funnel, before, kept, settings, seed)
    return kept


def measured_rules() -> str:
    """The wording rules' precision and recall, as measured (filters.RULE_QUALITY), for --help."""
    lines = ["Measured on labelled titles and answers written for lima_lite (tests/assets/curate/rules/; precision:",
             "share of the drops that were right; recall: share of the items that should go that were dropped):"]
    return "\n".join(lines + [f"    {rule:<25} {filters.rule_quality(rule)}" for rule in filters.RULE_QUALITY]) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="lima-lite curate stackexchange", description=__doc__.split("\n\n")[1],
                                     epilog=__doc__.split("\n\n", 2)[2] + "\n" + measured_rules(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dump", type=Path, required=True, help="folder of unpacked site folders, each with Posts.xml")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL; the report is written next to it")
    parser.add_argument("--n", type=bounded(int, 1), default=200,
                        help="examples drawn from each group, STEM and other (LIMA: 200)")
    parser.add_argument("--tau", type=bounded(float, 0, 1e6, low_open=True), default=3.0,
                        help="sampling temperature over sites: p ∝ size^(1/tau)")
    parser.add_argument("--seed", type=DRAW_SEED, default=0, help="seed for site draws and title-or-body prompt choice")
    parser.add_argument("--stem-sites", help="comma-separated site names counted as STEM (default: a built-in list "
                        "of science, maths and computing sites)")
    parser.add_argument("--min-score", type=int, default=filters.MIN_ANSWER_SCORE, help="least score of the top answer")
    parser.add_argument("--min-chars", type=bounded(int, 0), default=filters.MIN_ANSWER_CHARS, help="shortest answer kept")
    parser.add_argument("--max-chars", type=int, default=filters.MAX_ANSWER_CHARS, help="longest answer kept")
    parser.add_argument("--near-duplicate", type=float, default=0.8,
                        help="MinHash Jaccard threshold above which a later answer counts as a near-duplicate")
    parser.add_argument("--pool", type=bounded(int, 1), help="per site, how many of the best-scored passing questions are "
                        "loaded for de-duplication and sampling (default 5 x --n: a site gives at most --n)")
    parser.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                        help="on a corrupted XML row: stop with its file:line, or count it in the report and go on")
    add_overwrite_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_outputs(with_report(args.out), [args.dump], args.overwrite)
    stem = frozenset(s.strip() for s in args.stem_sites.split(",")) if args.stem_sites else STEM_SITES
    kept = curate_stackexchange(args.dump, args.out, args.n, args.tau, args.seed, stem, args.min_score,
                                args.min_chars, args.max_chars, args.near_duplicate, args.on_error, args.pool)
    print(f"wrote {len(kept)} examples to {args.out} (report: {args.out.with_suffix('')}.report.md)")
    return 0
