"""The evaluation report: Markdown tables and PNG charts from judgment files.

    >>> build_report(["evals/"], "evals/report")        # -> evals/report/report.md + *.png
    $ lima-lite eval report evals/ --out evals/report

Reads every judgment record (JSONL lines with a `protocol`: pairwise, human, likert, absolute,
knowledge, dialogue) from the files and folders given; answers files in a folder are skipped. Charts:
  pairwise.png   stacked win / tie / loss bars per comparison and judge (like LIMA's Figure 1)
  likert.png     mean helpfulness 1-6 per model with a 95% confidence interval over prompts
  absolute.png   the Fail / Pass / Excellent mix per model (LIMA §4.3)
  agreement.png  tie-discounted agreement between every two raters, people or judges
  knowledge.png  exact-match and contains accuracy on factual questions, base vs adapter
  dialogue.png   the Fail / Pass / Excellent mix of every assistant turn, per model and turn (LIMA §6)
Next to every preference result: answer lengths, and the raw and length-controlled win rates.
"""

from pathlib import Path

from lima_lite import LimaError
from lima_lite.evaluate.answers import model_label
from lima_lite.evaluate.dialogue import dialogue_summary
from lima_lite.evaluate.protocols import (
    ABSOLUTE_CHOICES,
    absolute_mix,
    agreement_matrix,
    knowledge_summary,
    length_controlled,
    length_summary,
    likert_summary,
    win_tie_loss,
)
from lima_lite.files import read_jsonl, save_figure, write_json, write_text
from lima_lite.plots import pyplot, stacked_percent_bars
from lima_lite.text import markdown_text as md

PROTOCOLS = ("pairwise", "human", "likert", "absolute", "knowledge", "dialogue")


def read_judgments(paths: list[str | Path]) -> list[dict]:
    """Every judgment record in the given files, and in the `*.jsonl` files of the given folders."""
    records = []
    for given in paths:
        given = Path(given)
        if not given.exists():
            raise LimaError(f"{given}: no such file or folder")
        files = sorted(given.rglob("*.jsonl")) if given.is_dir() else [given]
        for path in files:
            rows = read_jsonl(path)
            if given.is_dir() and rows and isinstance(rows[0][1], dict) and "protocol" not in rows[0][1]:
                continue  # an answers file next to the judgments
            for number, row in rows:
                if not isinstance(row, dict) or row.get("protocol") not in PROTOCOLS:
                    got = row.get("protocol") if isinstance(row, dict) else row
                    raise LimaError(f"{path}:{number}: protocol: expected one of {PROTOCOLS}, got {got!r}")
                records.append(row)
    if not records:
        raise LimaError(f"no judgments in {', '.join(map(str, paths))} (run lima-lite eval pairwise/likert/... first)")
    return records


def group(records: list[dict], *fields: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record[f] for f in fields), []).append(record)
    return groups


def short(name: str) -> str:
    return name if name.startswith("human:") else model_label(name)


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def per_model(records: list[dict], summary) -> list[tuple[str, str, dict]]:
    """(model, judge, summary of their records) for each judge and model, in order, names shortened."""
    return [(short(model), short(judge), summary(items))
            for (judge, model), items in sorted(group(records, "judge", "model").items())]


def share_cells(counts: dict, keys) -> str:
    """Table cells `count (share of n)` for each of `keys`, e.g. win | tie | loss or Fail | Pass | Excellent."""
    return " | ".join(f"{counts[key]} ({pct(counts[key], counts['n'])})" for key in keys)


def pairwise_section(records: list[dict], out: Path) -> list[str]:
    rows = []
    for (judge, a, b), items in sorted(group(records, "judge", "model_a", "model_b").items()):
        rows.append((f"{short(a)} vs {short(b)}", short(judge), win_tie_loss(items)))
    lines = ["## Pairwise preference", "",
             "Each prompt judged in both orders: win if both prefer the first model, loss if both prefer the "
             "second, tie otherwise (Long Is More). People's votes (Judge tab) are counted once per vote.", "",
             "| comparison | judge | win | tie | loss | unparsed | n |", "|---|---|---|---|---|---|---|"]
    for label, judge, c in rows:
        lines.append(f"| {md(label)} | {md(judge)} | {share_cells(c, ('win', 'tie', 'loss'))} | {c['unparsed']} | {c['n']} |")
    fig = stacked_percent_bars([(f"{label}\n({judge})", c) for label, judge, c in rows],
                               ("win", "tie", "loss", "unparsed"), "% of prompts",
                               "Pairwise preference: win / tie / loss of the first model", annotate=True)
    save_figure(fig, out / "pairwise.png")
    return lines + ["", "![pairwise](pairwise.png)", ""] + length_bias_section(records)


def length_bias_section(records: list[dict]) -> list[str]:
    """Answer lengths and raw vs length-controlled win rate next to every preference result."""
    lines = ["### Length bias", "",
             "Judges prefer longer answers (Long Is More; AlpacaEval 2.0). Lengths in words. Raw win rate counts a "
             "tie as half a win; the length-controlled one is a logistic regression of the outcome on "
             "tanh(length difference / its standard deviation), read at equal length, with a 95% Wald interval "
             "(AlpacaEval 2.0's length-controlled win rate, without its per-prompt term). A raw rate well above "
             "the length-controlled one means the win comes from length.", "",
             "| comparison | judge | words, first (mean / median) | words, second (mean / median) | raw win rate "
             "| length-controlled (95% CI) |", "|---|---|---|---|---|---|"]
    for (judge, a, b), items in sorted(group(records, "judge", "model_a", "model_b").items()):
        lengths, rates = length_summary(items), length_controlled(items)
        lc = "-" if rates["lc"] is None else (f"{100 * rates['lc']:.1f}% ({100 * rates['low']:.1f} to "
                                               f"{100 * rates['high']:.1f})")
        raw = "-" if rates["raw"] is None else f"{100 * rates['raw']:.1f}%"
        lines.append(f"| {md(short(a))} vs {md(short(b))} | {md(short(judge))} | {lengths['mean_a']:.0f} / "
                     f"{lengths['median_a']:.0f} | {lengths['mean_b']:.0f} / {lengths['median_b']:.0f} | {raw} | {lc} |")
    return lines + [""]


def likert_section(records: list[dict], out: Path) -> list[str]:
    rows = per_model(records, likert_summary)
    lines = ["## Helpfulness 1-6 (Likert)", "",
             "Each answer rated 1 (not helpful) to 6 (highly helpful), as in LIMA's ablations; a prompt's samples "
             "are averaged, then the mean over prompts is shown with a 95% Student t interval.", "",
             "| model | judge | mean | 95% CI | prompts | ratings | unparsed |", "|---|---|---|---|---|---|---|"]
    for model, judge, s in rows:
        mean = "-" if s["mean"] is None else f"{s['mean']:.2f}"
        ci = "-" if s["mean"] is None else f"{s['low']:.2f} to {s['high']:.2f}"
        lines.append(f"| {md(model)} | {md(judge)} | {mean} | {ci} | {s['prompts']} | {s['ratings']} | {s['unparsed']} |")
    shown = [(m, j, s) for m, j, s in rows if s["mean"] is not None]
    if shown:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(shown) + 2), 3.6))
        means = [s["mean"] for _, _, s in shown]
        errors = [[s["mean"] - s["low"] for _, _, s in shown], [s["high"] - s["mean"] for _, _, s in shown]]
        ax.bar(range(len(shown)), means, yerr=errors, capsize=6, color="#1565c0", edgecolor="#0d47a1")
        ax.set_xticks(range(len(shown)), [f"{m}\n({j})" for m, j, _ in shown], fontsize=8)
        ax.set_ylim(1, 6)
        ax.set_ylabel("helpfulness (1-6)")
        ax.set_title("Mean helpfulness with 95% confidence interval")
        save_figure(fig, out / "likert.png")
        lines += ["", "![likert](likert.png)"]
    else:
        lines += ["", "(no readable rating, so no chart)"]
    return lines + [""]


def absolute_section(records: list[dict], out: Path) -> list[str]:
    rows = per_model(records, absolute_mix)
    lines = ["## Absolute rating (Fail / Pass / Excellent)", "",
             "LIMA §4.3: Fail = does not meet the requirements of the prompt; Pass = meets them; Excellent = "
             "an excellent answer.", "",
             "| model | judge | Fail | Pass | Excellent | unparsed | n |", "|---|---|---|---|---|---|---|"]
    for model, judge, c in rows:
        lines.append(f"| {md(model)} | {md(judge)} | {share_cells(c, ABSOLUTE_CHOICES)} | {c['unparsed']} | {c['n']} |")
    fig = stacked_percent_bars([(f"{model}\n({judge})", c) for model, judge, c in rows],
                               (*ABSOLUTE_CHOICES, "unparsed"), "% of answers", "Absolute rating mix")
    save_figure(fig, out / "absolute.png")
    return lines + ["", "![absolute](absolute.png)", ""]


def dialogue_section(records: list[dict], out: Path) -> list[str]:
    lines = ["## Multi-turn dialogue", "",
             "Every assistant turn graded Fail / Pass / Excellent with the conversation before it in view (LIMA §6: "
             "zero-shot, LIMA failed within 3 turns in 6 of 10 conversations; trained with 30 dialogue chains, "
             "excellent replies rose from 45.2% to 76.1%).", "",
             "| model | judge | turn | Fail | Pass | Excellent | unparsed | n |", "|---|---|---|---|---|---|---|---|"]
    bars, firsts = [], []
    several_judges = len({r["judge"] for r in records}) > 1
    for (judge, model), items in sorted(group(records, "judge", "model").items()):
        label = f"{short(model)} ({short(judge)})" if several_judges else short(model)
        summary = dialogue_summary(items)
        rows = [(str(turn), c) for turn, c in summary["per_turn"].items()] + [("all", summary["overall"])]
        for turn, c in rows:
            lines.append(f"| {md(short(model))} | {md(short(judge))} | {turn} | {share_cells(c, ABSOLUTE_CHOICES)} "
                         f"| {c['unparsed']} | {c['n']} |")
            bars.append((f"{label}, turn {turn}" if turn != "all" else f"{label}, all turns", c))
        failed = [t for t in summary["first_fail"].values() if t is not None]
        firsts.append(f"| {md(short(model))} | {md(short(judge))} | {len(failed)} of {summary['conversations']} | "
                      f"{summary['failed_within_3']} | {sum(failed) / len(failed):.1f} |" if failed else
                      f"| {md(short(model))} | {md(short(judge))} | 0 of {summary['conversations']} | 0 | - |")
    lines += ["", "| model | judge | conversations with a Fail | first Fail within 3 turns | mean turn of first Fail |",
              "|---|---|---|---|---|", *firsts]
    fig = stacked_percent_bars(bars, (*ABSOLUTE_CHOICES, "unparsed"), "% of assistant turns",
                               "Multi-turn dialogue: grade of each assistant turn", annotate=True)
    save_figure(fig, out / "dialogue.png")
    return lines + ["", "![dialogue](dialogue.png)", ""]


def agreement_section(records: list[dict], out: Path) -> list[str]:
    raters, matrix = agreement_matrix(records)
    if len(raters) < 2:
        return ["## Agreement between raters", "",
                "Needs two raters (people or judges) with readable verdicts, in both orders, on the same comparisons; "
                f"here: {', '.join(md(short(r)) for r in raters) or 'none'}.", ""]
    names = [short(r) for r in raters]
    lines = ["## Agreement between raters", "",
             "LIMA's tie-discounted accuracy over the items both raters judged: 1 when they agree, 0.5 when exactly "
             "one says tie, 0 otherwise (LIMA: crowd-crowd 82%, GPT-4 vs humans 78-79%). Cells show agreement "
             "(shared items).", "",
             "| | " + " | ".join(map(md, names)) + " |", "|---" * (len(names) + 1) + "|"]
    for a, name in zip(raters, names, strict=True):
        cells = []
        for b in raters:
            score, n = matrix[(a, b)]
            cells.append("-" if score is None else f"{100 * score:.0f}% ({n})")
        lines.append(f"| {md(name)} | " + " | ".join(cells) + " |")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(raters) + 2.5, 1.0 * len(raters) + 1.5))
    values = [[float("nan") if matrix[(a, b)][0] is None else 100 * matrix[(a, b)][0] for b in raters] for a in raters]
    image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                ax.text(j, i, f"{value:.0f}%", ha="center", va="center", color="white" if value < 60 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    fig.colorbar(image, ax=ax, label="tie-discounted agreement (%)")
    ax.set_title("Agreement between raters")
    save_figure(fig, out / "agreement.png")
    return lines + ["", "![agreement](agreement.png)", ""]


def knowledge_section(records: list[dict], out: Path) -> list[str]:
    rows = [(short(model), knowledge_summary(items)) for (model,), items in sorted(group(records, "model").items())]
    lines = ["## Knowledge check", "",
             "Factual questions answered greedily (The False Promise of Imitating Proprietary LLMs: style can fool "
             "judges while facts do not improve). exact: the normalised answer equals a gold answer; contains: a "
             "gold answer appears in it.", "",
             "| model | exact | contains | n | stopped at max_new_tokens |", "|---|---|---|---|---|"]
    for model, s in rows:
        lines.append(f"| {md(model)} | {share_cells(s, ('exact', 'contains'))} | {s['n']} | {s['length_stops']} |")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(rows) + 2), 3.4))
    width = 0.38
    for offset, metric, color in ((-width / 2, "exact", "#6a1b9a"), (width / 2, "contains", "#00838f")):
        ax.bar([i + offset for i in range(len(rows))], [100 * s[metric] / s["n"] for _, s in rows], width,
               label=metric, color=color)
    ax.set_xticks(range(len(rows)), [m for m, _ in rows], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% correct")
    ax.set_title("Knowledge check")
    ax.legend(frameon=False)
    save_figure(fig, out / "knowledge.png")
    return lines + ["", "![knowledge](knowledge.png)", ""]


def build_report(paths: list[str | Path], out: str | Path, title: str = "lima_lite evaluation report") -> Path:
    """Write `out/report.md` and its charts from the judgment records in `paths`; returns the report path."""
    records = read_judgments(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_protocol = {p: [r for r in records if r["protocol"] == p] for p in PROTOCOLS}
    judges = sorted({short(r["judge"]) for r in records if "judge" in r})
    lines = [f"# {md(title)}", "",
             f"{len(records)} judgment records; judges: {', '.join(map(md, judges)) or 'none'}. "
             "Unparsed verdicts (asked twice, still unreadable) are counted, never guessed.", ""]
    if by_protocol["pairwise"] or by_protocol["human"]:
        lines += pairwise_section(by_protocol["pairwise"] + by_protocol["human"], out)
    if by_protocol["likert"]:
        lines += likert_section(by_protocol["likert"], out)
    if by_protocol["absolute"]:
        lines += absolute_section(by_protocol["absolute"], out)
    if by_protocol["dialogue"]:
        lines += dialogue_section(by_protocol["dialogue"], out)
    lines += agreement_section(records, out)
    if by_protocol["knowledge"]:
        lines += knowledge_section(by_protocol["knowledge"], out)
    summary = {"records": {p: len(rs) for p, rs in by_protocol.items()}, "judges": judges}
    write_json(out / "summary.json", summary)
    return write_text(out / "report.md", "\n".join(lines).rstrip() + "\n")

