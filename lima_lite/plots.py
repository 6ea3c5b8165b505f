"""The one matplotlib set-up (no display needed) and the charts more than one command draws.

    >>> plt = pyplot()
    >>> fig = stacked_percent_bars([("tuned vs base\\n(gpt-4o)", {"win": 31, "tie": 12, "loss": 7, "n": 50})],
    ...                            ("win", "tie", "loss"), xlabel="% of prompts", title="LIMA vs base")
    >>> save_figure(fig, "report/pairwise.png")      # lima_lite.files: atomic, usual permissions

`stacked_percent_bars` draws LIMA's Figure 1: one horizontal bar per comparison, stacked win / tie / loss
as a share of its n. The evaluation report (pairwise, absolute) and the UI's Judge tab both use it; `plot_loss`
draws a run's loss.png.
"""

from pathlib import Path

from lima_lite.files import save_figure
from lima_lite.layout import LOSS_PLOT, read_metrics

COLORS = {"win": "#2e7d32", "tie": "#9e9e9e", "loss": "#c62828", "unparsed": "#ffffff",
          "Fail": "#c62828", "Pass": "#f9a825", "Excellent": "#2e7d32"}


def pyplot():
    """matplotlib.pyplot on the Agg backend: charts are written to files, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stacked_percent_bars(rows: list[tuple[str, dict]], categories: tuple, xlabel: str, title: str,
                         annotate: bool = False):
    """A figure with one horizontal bar per (label, counts) row, stacked by category as % of counts["n"]
    (a row with n = 0 is an empty bar); `annotate` writes each share of 6% or more on its segment."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.4))
    labels = [label for label, _ in rows]
    left = [0.0] * len(rows)
    for category in categories:
        widths = [100 * c[category] / c["n"] if c["n"] else 0.0 for _, c in rows]
        bars = ax.barh(labels, widths, left=left, color=COLORS[category], edgecolor="#424242", label=category)
        if annotate:
            for bar, width in zip(bars, widths, strict=True):
                if width >= 6:
                    ax.text(bar.get_x() + width / 2, bar.get_y() + bar.get_height() / 2, f"{width:.0f}%", ha="center",
                            va="center", color="black" if category in ("tie", "unparsed") else "white", fontsize=8)
        left = [x + w for x, w in zip(left, widths, strict=True)]
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def plot_loss(run: Path) -> Path | None:
    """Training loss per step and dev loss per epoch (metrics.jsonl), as the PNG people look at first (loss.png)."""

    rows = read_metrics(run)
    train = [(r["epoch"], r["loss"]) for r in rows if "loss" in r]
    dev = [(r["epoch"] or 0.0, r["eval_loss"]) for r in rows if "eval_loss" in r]  # epoch 0: the base
    if not train:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=120)
    ax.plot(*zip(*train, strict=True), label="train loss", lw=1.2)
    if dev:
        ax.plot(*zip(*dev, strict=True), "o-", label="dev loss", lw=1.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (assistant tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, run / LOSS_PLOT)
