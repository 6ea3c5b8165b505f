"""The one matplotlib set-up (no display needed) and the charts more than one command draws.

    >>> plt = pyplot()
    >>> fig = stacked_percent_bars(rows, ("win", "tie", "loss"), xlabel="% of prompts", title="LIMA vs base")
    >>> save_figure(fig, "report/pairwise.png")      # lima_lite.io: atomic, usual permissions
"""


def pyplot():
    """matplotlib.pyplot on the Agg backend: charts are written to files, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
