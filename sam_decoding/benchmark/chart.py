"""The PNG bar chart of a benchmark run: speed-up over vanilla per category and method."""

from __future__ import annotations

import os
from collections.abc import Sequence

from sam_decoding.benchmark.results import OVERALL, REFERENCE_METHOD, Summary


def write_speedup_chart(path: str | os.PathLike[str], summaries: Sequence[Summary], title: str) -> None:
    """Draw grouped bars (one group per category plus ``overall``, one bar per non-vanilla method):
    speed-up by wall time on top, by CPU time below.

    Uses matplotlib's Agg backend, so it needs no display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in dict.fromkeys(s.method for s in summaries) if m != REFERENCE_METHOD]
    groups = [g for g in dict.fromkeys(s.group for s in summaries) if g != OVERALL] + [OVERALL]
    by_key = {(s.group, s.method): s for s in summaries}
    width = 0.8 / max(len(methods), 1)
    figure, panels = plt.subplots(2, 1, figsize=(max(7.0, 0.75 * len(groups) + 3), 8), sharex=True)
    for panel, (attribute, label) in zip(panels, (("speedup", "wall time"), ("cpu_speedup", "CPU time"))):
        for index, method in enumerate(methods):
            positions = [g + (index - (len(methods) - 1) / 2) * width for g in range(len(groups))]
            values = []
            for group in groups:
                summary = by_key.get((group, method))
                values.append((getattr(summary, attribute) or 0.0) if summary is not None else 0.0)
            panel.bar(positions, values, width=width, label=method)
        panel.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        panel.set_ylabel(f"speed-up over vanilla (×), {label}")
    panels[0].set_title(title)
    panels[0].legend(fontsize="small", ncol=min(3, max(1, len(methods))))
    panels[1].set_xticks(range(len(groups)))
    panels[1].set_xticklabels(groups, rotation=30, ha="right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
