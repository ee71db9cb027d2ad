"""The PNG bar chart of a benchmark run: speed-up over vanilla per category and method."""

from __future__ import annotations

import os
from collections.abc import Sequence

from sam_decoding.benchmark.results import OVERALL, REFERENCE_METHOD, Summary


def write_speedup_chart(path: str | os.PathLike[str], summaries: Sequence[Summary], title: str) -> None:
    """Draw grouped bars (one group per category plus ``overall``, one bar per non-vanilla method).

    Uses matplotlib's Agg backend, so it needs no display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in dict.fromkeys(s.method for s in summaries) if m != REFERENCE_METHOD]
    groups = [g for g in dict.fromkeys(s.group for s in summaries) if g != OVERALL] + [OVERALL]
    by_key = {(s.group, s.method): s for s in summaries}
    width = 0.8 / max(len(methods), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(1, len(methods)) * 0.35 + 3), 4.5))
    for index, method in enumerate(methods):
        positions = [g + (index - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        values = [
            (by_key[(group, method)].speedup or 0.0) if (group, method) in by_key else 0.0 for group in groups
        ]
        axes.bar(positions, values, width=width, label=method)
    axes.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    axes.set_xticks(range(len(groups)))
    axes.set_xticklabels(groups, rotation=30, ha="right")
    axes.set_ylabel("speed-up over vanilla (×)")
    axes.set_title(title)
    axes.legend(fontsize="small", ncol=min(3, max(1, len(methods))))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
