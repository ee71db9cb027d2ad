"""The serving benchmark's view of a run: how each method does as it answers more requests.

In a serving run the questions are requests answered one after another, and a method may learn
from the responses it produced before (SuffixDecoding's global tree, SAM's response cache). The
runner measures them as usual; this module reads the measurements in request order and reports MAT
and speed-up over vanilla per request index (a learning curve) and per block of requests.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sam_decoding.benchmark.results import REFERENCE_METHOD, Measurement, Summary, summarize_group

#: Requests per row of the Markdown table and per point of the chart's smoothed curves.
DEFAULT_WINDOW = 10


@dataclass(frozen=True)
class RequestPoint:
    """One method on one request: ``index`` counts requests from 1 in the order they were answered.

    ``speedup`` is the method's tokens/s over vanilla's on the same request (``None`` without vanilla).
    """

    index: int
    question_id: str
    category: str
    method: str
    new_tokens: int
    seconds: float
    forward_passes: int
    mat: float
    speedup: float | None


def request_order(measurements: Sequence[Measurement]) -> list[str]:
    """Question ids in the order the run answered them (the order of their first measurement)."""
    return list(dict.fromkeys(m.question_id for m in measurements))


def learning_curve(measurements: Sequence[Measurement]) -> list[RequestPoint]:
    """Every (request, method) as a :class:`RequestPoint`, in request order, then method order."""
    index = {question: number + 1 for number, question in enumerate(request_order(measurements))}
    reference = {m.question_id: m for m in measurements if m.method == REFERENCE_METHOD}
    points = []
    for m in sorted(measurements, key=lambda m: index[m.question_id]):
        vanilla = reference.get(m.question_id)
        speedup = None
        if vanilla is not None and vanilla.tokens_per_second > 0:
            speedup = m.tokens_per_second / vanilla.tokens_per_second
        mat = m.new_tokens / m.forward_passes if m.forward_passes else 0.0
        points.append(RequestPoint(
                index[m.question_id], m.question_id, m.category, m.method, m.new_tokens, m.seconds, m.forward_passes, mat, speedup
            ))
    return points


def block_summaries(measurements: Sequence[Measurement], window: int = DEFAULT_WINDOW) -> list[Summary]:
    """Each method pooled over consecutive blocks of ``window`` requests (group ``"requests A-B"``)."""
    if window < 1:
        raise ValueError("window must be at least 1 request")
    order = request_order(measurements)
    methods = list(dict.fromkeys(m.method for m in measurements))
    summaries = []
    for start in range(0, len(order), window):
        block = set(order[start : start + window])
        group = f"requests {start + 1}-{start + len(block)}"
        in_block = [m for m in measurements if m.question_id in block]
        reference = [m for m in in_block if m.method == REFERENCE_METHOD]
        for method in methods:
            selected = [m for m in in_block if m.method == method]
            if selected:
                summaries.append(summarize_group(group, method, selected, reference))
    return summaries


def serving_json(measurements: Sequence[Measurement], window: int = DEFAULT_WINDOW) -> dict[str, Any]:
    """The learning curve and block summaries as a JSON-able dict."""
    return {
        "window": window,
        "requests": len(request_order(measurements)),
        "learning_curve": [asdict(point) for point in learning_curve(measurements)],
        "blocks": [asdict(summary) for summary in block_summaries(measurements, window)],
    }


def render_serving_markdown(measurements: Sequence[Measurement], window: int = DEFAULT_WINDOW) -> str:
    """A table of MAT and speed-up over vanilla per block of ``window`` requests, one column per method."""
    summaries = block_summaries(measurements, window)
    methods = [m for m in dict.fromkeys(s.method for s in summaries) if m != REFERENCE_METHOD]
    groups = list(dict.fromkeys(s.group for s in summaries))
    by_key = {(s.group, s.method): s for s in summaries}
    lines = [
        "",
        f"Serving: requests answered one after another, each method keeping what it learned from the responses "
        f"it produced before. Speed-up over vanilla by wall time (MAT in parentheses), pooled over blocks of "
        f"{window} requests:",
        "",
        "| requests | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for group in groups:
        cells = []
        for method in methods:
            summary = by_key.get((group, method))
            if summary is None:
                cells.append("")
            elif summary.speedup is None:
                cells.append(f"n/a ({summary.mat:.2f})")
            else:
                cells.append(f"{summary.speedup:.2f}× ({summary.mat:.2f})")
        lines.append(f"| {group.removeprefix('requests ')} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _rate(points: Sequence[RequestPoint]) -> float:
    seconds = sum(p.seconds for p in points)
    return sum(p.new_tokens for p in points) / seconds if seconds > 0 else 0.0


def _rolling(points: Sequence[RequestPoint], vanilla: dict[int, RequestPoint], window: int) -> tuple[list[int], list[float], list[float]]:
    """Request indices, and MAT and speed-up over vanilla pooled over the last ``window`` requests up to each."""
    indices, mats, speedups = [], [], []
    for end in range(len(points)):
        recent = points[max(0, end - window + 1) : end + 1]
        passes = sum(p.forward_passes for p in recent)
        indices.append(points[end].index)
        mats.append(sum(p.new_tokens for p in recent) / passes if passes else 0.0)
        matched = [p for p in recent if p.index in vanilla]
        reference_rate = _rate([vanilla[p.index] for p in matched])
        speedups.append(_rate(matched) / reference_rate if matched and reference_rate > 0 else float("nan"))
    return indices, mats, speedups


def write_learning_curve_chart(path: str | os.PathLike[str], measurements: Sequence[Measurement], title: str, window: int = DEFAULT_WINDOW) -> None:
    """Draw MAT (top) and speed-up over vanilla (bottom) per request index, one line per method.

    Each point pools the last ``window`` requests (per-request figures are as faint dots), so a method
    that learns from its responses rises from left to right. Uses matplotlib's Agg backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = learning_curve(measurements)
    methods = [m for m in dict.fromkeys(p.method for p in points) if m != REFERENCE_METHOD]
    vanilla = {p.index: p for p in points if p.method == REFERENCE_METHOD}
    figure, panels = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    for number, method in enumerate(methods):
        mine = [p for p in points if p.method == method]
        indices, mats, speedups = _rolling(mine, vanilla, window)
        color = f"C{number % 10}"
        panels[0].scatter([p.index for p in mine], [p.mat for p in mine], s=8, alpha=0.25, color=color)
        panels[0].plot(indices, mats, color=color, label=method)
        panels[1].scatter([p.index for p in mine if p.speedup], [p.speedup for p in mine if p.speedup], s=8, alpha=0.25, color=color)
        panels[1].plot(indices, speedups, color=color, label=method)
    panels[0].set_ylabel(f"MAT (tokens per pass), last {window} requests")
    panels[1].set_ylabel(f"speed-up over vanilla (×), last {window} requests")
    panels[1].axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    panels[1].set_xlabel("request (in the order answered)")
    panels[0].set_title(title)
    panels[0].legend(fontsize="small", ncol=min(3, max(1, len(methods))))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
