"""Benchmark reports: the raw JSON record of a run and its Markdown tables."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sam_decoding.benchmark.results import OVERALL, REFERENCE_METHOD, Measurement, Summary

#: Version of the raw JSON layout written by :func:`write_json`.
JSON_FORMAT = 1


@dataclass(frozen=True)
class RunInfo:
    """The conditions of a run, printed above its tables so the numbers can be reproduced.

    ``methods`` maps each method name to a one-line description, in run order.
    """

    suite: str
    model: str
    max_new_tokens: int
    methods: dict[str, str]
    command: str
    machine: str
    started_at: str
    static_corpus: str | None = None
    questions_per_category: int | None = None
    notes: list[str] = field(default_factory=list)
    policies: dict[str, Any] = field(default_factory=dict)
    serving: bool = False


def write_json(
    path: str | os.PathLike[str],
    info: RunInfo,
    measurements: Sequence[Measurement],
    summaries: Sequence[Summary],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write everything measured (each question and method, in the order run) and the summaries as one JSON file.

    ``extra``: further top-level sections (e.g. a serving run's learning curve), ignored by :func:`read_json`.
    """
    document = {
        "format": JSON_FORMAT,
        "run": asdict(info),
        "summaries": [asdict(summary) for summary in summaries],
        "measurements": [measurement.to_json() for measurement in measurements],
        **(extra or {}),
    }
    Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike[str]) -> tuple[RunInfo, list[Measurement]]:
    """The run conditions and measurements of a file written by :func:`write_json`."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if document.get("format") != JSON_FORMAT:
        raise ValueError(f"{path}: not a benchmark results file of format {JSON_FORMAT}")
    info = RunInfo(**document["run"])
    return info, [Measurement.from_json(record) for record in document["measurements"]]


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _equal_cell(summary: Summary) -> str:
    if summary.method == REFERENCE_METHOD:
        return "reference"
    return "yes" if summary.all_equal else f"no ({summary.mismatches} of {summary.questions} differ)"


def _spread(summary: Summary) -> str:
    if not summary.speedup_quartiles:
        return ""
    low, high = summary.speedup_quartiles
    return f" ({low:.2f}–{high:.2f})"


def _policy_table(methods: Sequence[str], by_key: dict[tuple[str, str], Summary]) -> list[str]:
    rows = []
    for method in methods:
        summary = by_key.get((OVERALL, method))
        if summary is None or summary.drafted_per_step is None:
            continue
        rows.append(
            f"| {method} | {summary.drafted_per_step:.1f} | {summary.expected_accepted:.2f} | {summary.accepted:.2f} "
            f"| {100 * summary.overhead_share:.1f}% |"
        )
    if not rows:
        return []
    modelled = [
        f"| {method} | {_ratio(by_key[(OVERALL, method)].modelled_speedup)} |"
        for method in methods
        if (OVERALL, method) in by_key and by_key[(OVERALL, method)].modelled_speedup is not None
    ]
    lines = [
        "",
        "Engine methods per verification step: draft tokens verified, accepted draft tokens the policy "
        "expected and those accepted, and the share of generation time spent drafting and in the policy:",
        "",
        "| method | verified draft tokens | expected accepted | accepted | drafting + policy time |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ]
    if modelled:
        lines += [
            "",
            "Modelled speed-up: each method's verification passes timed by the reference cost profile "
            "(not by this machine's clock, so other load does not move it), plus its measured drafting and policy time:",
            "",
            "| method | modelled speed-up |",
            "|---|---:|",
            *modelled,
        ]
    return lines


def render_markdown(info: RunInfo, summaries: Sequence[Summary]) -> str:
    """The Markdown report: run conditions, an overall table per method, a speed-up table per category."""
    methods = list(info.methods) or list(dict.fromkeys(s.method for s in summaries))
    by_key = {(s.group, s.method): s for s in summaries}
    groups = list(dict.fromkeys(s.group for s in summaries if s.group != OVERALL))
    limit = (
        f", first {info.questions_per_category} questions per category"
        if info.questions_per_category is not None
        else ""
    )
    lines = [
        f"### {info.suite}: {info.model}, greedy, {info.max_new_tokens} new tokens{limit}",
        "",
        f"Command: `{info.command}`  ",
        f"Machine: {info.machine}; started {info.started_at}.  ",
    ]
    if info.static_corpus:
        lines.append(f"Static corpus for the SAM methods: {info.static_corpus}.  ")
    if info.serving:
        lines.append(
            "Serving run: questions answered one after another in the order listed in the JSON; each method keeps "
            "what it learned from its earlier responses.  "
        )
    lines += [f"{note}  " for note in info.notes]
    lines += [
        "",
        "| method | questions | tokens/s | speed-up | median speed-up (quartiles) | CPU-time speed-up | MAT | outputs equal vanilla |",
        "|---|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for method in methods:
        summary = by_key.get((OVERALL, method))
        if summary is None:
            continue
        lines.append(
            f"| {method} | {summary.questions} | {summary.tokens_per_second:.1f} | {_ratio(summary.speedup)} "
            f"| {_ratio(summary.median_speedup)}{_spread(summary)} | {_ratio(summary.cpu_speedup)} | {summary.mat:.2f} "
            f"| {_equal_cell(summary)} |"
        )
    lines += _policy_table(methods, by_key)
    others = [method for method in methods if method != REFERENCE_METHOD]
    if len(groups) > 1:
        header = "| category | n | vanilla tokens/s | " + " | ".join(others) + " | all outputs equal vanilla |"
        lines += [
            "",
            "Speed-up over vanilla per category: by wall time / by CPU time (MAT in parentheses):",
            "",
            header,
            "|---|---:|---:|" + "---:|" * len(others) + ":---|",
        ]
        for group in groups + [OVERALL]:
            reference = by_key.get((group, REFERENCE_METHOD))
            cells = []
            differing = []
            for method in others:
                summary = by_key.get((group, method))
                if summary is None:
                    cells.append("")
                    continue
                cells.append(f"{_ratio(summary.speedup)} / {_ratio(summary.cpu_speedup)} ({summary.mat:.2f})")
                if not summary.all_equal:
                    differing.append(f"{method} {summary.mismatches}")
            name = f"**{group}**" if group == OVERALL else group
            count = reference.questions if reference else max(
                (s.questions for s in summaries if s.group == group), default=0
            )
            rate = f"{reference.tokens_per_second:.1f}" if reference else "n/a"
            equal = "yes" if not differing else "no: " + ", ".join(differing)
            lines.append(f"| {name} | {count} | {rate} | " + " | ".join(cells) + f" | {equal} |")
    lines += [
        "",
        "Methods: " + "; ".join(f"`{name}`: {description}" for name, description in info.methods.items()) + ".",
        "tokens/s pools all new tokens over all generation seconds; speed-up is that rate over vanilla's on the "
        "same questions, median speed-up the median of per-question ratios, CPU-time speed-up the same ratio "
        "in CPU seconds of this process (with one torch thread, robust to other load on the machine); MAT is new tokens per target-model "
        "forward pass that emits tokens (the engine's separate prompt prefill is not counted). Each question "
        "runs every method back to back, in an order rotated per question.",
        "",
    ]
    return "\n".join(lines)


def write_markdown(path: str | os.PathLike[str], info: RunInfo, summaries: Sequence[Summary]) -> None:
    """Write :func:`render_markdown` to ``path``."""
    Path(path).write_text(render_markdown(info, summaries), encoding="utf-8")


def describe_json(summary: Summary) -> dict[str, Any]:
    """A summary as a JSON-able dict."""
    return asdict(summary)
