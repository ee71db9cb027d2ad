"""What a benchmark run measures, and the per-category and overall summaries derived from it."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: The method every other one is compared with (token for token, and for speed).
REFERENCE_METHOD = "vanilla"
#: The summary row that pools every question of the suite.
OVERALL = "overall"


@dataclass(frozen=True)
class Measurement:
    """One method answering one question.

    ``seconds`` is the wall time of the generation call alone (prompt already tokenized) and
    ``cpu_seconds`` the CPU time this process spent in it: with one torch thread the latter is what
    the wall time would be on an idle machine, so it is the figure to trust on a busy one;
    ``forward_passes`` counts the target model's forward calls, prefill included, so
    ``new_tokens / forward_passes`` is the mean accepted tokens per step (MAT).
    ``equal_to_reference`` compares the new tokens with vanilla's (``None`` for vanilla itself);
    ``first_mismatch`` is the index of the first differing new token.
    """

    question_id: str
    category: str
    method: str
    new_tokens: int
    seconds: float
    forward_passes: int
    cpu_seconds: float = 0.0
    equal_to_reference: bool | None = None
    first_mismatch: int | None = None
    drafted_by_source: dict[str, int] = field(default_factory=dict)
    accepted_by_source: dict[str, int] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of wall time."""
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_json`."""
        return cls(**record)


@dataclass(frozen=True)
class Summary:
    """One method over a group of questions (a category or ``overall``).

    ``speedup`` is the method's tokens/s over vanilla's on the same questions (pooled: total
    tokens over total seconds); ``median_speedup`` is the median of the per-question ratios;
    ``cpu_speedup`` is the pooled ratio measured in CPU seconds instead of wall seconds.
    """

    group: str
    method: str
    questions: int
    new_tokens: int
    seconds: float
    tokens_per_second: float
    speedup: float | None
    median_speedup: float | None
    cpu_speedup: float | None
    mat: float
    mismatches: int
    speedup_quartiles: tuple[float, float] | None = None
    drafted_per_step: float | None = None
    expected_accepted: float | None = None
    accepted: float | None = None
    overhead_share: float | None = None
    modelled_speedup: float | None = None

    @property
    def all_equal(self) -> bool:
        """Whether every output equals vanilla's token for token."""
        return self.mismatches == 0


def _pooled_rate(measurements: Sequence[Measurement], cpu: bool = False) -> float:
    seconds = sum(m.cpu_seconds if cpu else m.seconds for m in measurements)
    return sum(m.new_tokens for m in measurements) / seconds if seconds > 0 else 0.0


def summarize_group(group: str, method: str, measurements: Sequence[Measurement], reference: Sequence[Measurement]) -> Summary:
    """Summarize ``measurements`` of ``method`` against the ``reference`` (vanilla) ones of the same questions."""
    rate = _pooled_rate(measurements)
    reference_by_question = {m.question_id: m for m in reference}
    speedup = median_speedup = cpu_speedup = quartiles = None
    if reference:
        matched = [reference_by_question[m.question_id] for m in measurements if m.question_id in reference_by_question]
        reference_rate = _pooled_rate(matched)
        speedup = rate / reference_rate if reference_rate > 0 else None
        reference_cpu_rate = _pooled_rate(matched, cpu=True)
        cpu_rate = _pooled_rate(measurements, cpu=True)
        cpu_speedup = cpu_rate / reference_cpu_rate if reference_cpu_rate > 0 and cpu_rate > 0 else None
        ratios = [
            m.tokens_per_second / reference_by_question[m.question_id].tokens_per_second
            for m in measurements
            if m.question_id in reference_by_question and reference_by_question[m.question_id].tokens_per_second > 0
        ]
        median_speedup = statistics.median(ratios) if ratios else None
        quartiles = _quartiles(ratios)
    passes = sum(m.forward_passes for m in measurements)
    return Summary(
        group=group,
        method=method,
        questions=len(measurements),
        new_tokens=sum(m.new_tokens for m in measurements),
        seconds=sum(m.seconds for m in measurements),
        tokens_per_second=rate,
        speedup=speedup,
        median_speedup=median_speedup,
        cpu_speedup=cpu_speedup,
        mat=sum(m.new_tokens for m in measurements) / passes if passes else 0.0,
        mismatches=sum(1 for m in measurements if m.equal_to_reference is False),
        speedup_quartiles=quartiles,
        modelled_speedup=_modelled_speedup(measurements, reference),
        **_engine_summary(measurements),
    )


def _modelled_speedup(measurements: Sequence[Measurement], reference: Sequence[Measurement]) -> float | None:
    """Pooled tokens per modelled second over vanilla's on the same questions (``None`` without modelled times)."""
    by_question = {m.question_id: m for m in reference if "modelled_seconds" in m.engine}
    mine = [m for m in measurements if "modelled_seconds" in m.engine and m.question_id in by_question]
    if not mine or len(mine) != len(measurements):
        return None
    theirs = [by_question[m.question_id] for m in mine]
    rate = sum(m.new_tokens for m in mine) / sum(m.engine["modelled_seconds"] for m in mine)
    reference_rate = sum(m.new_tokens for m in theirs) / sum(m.engine["modelled_seconds"] for m in theirs)
    return rate / reference_rate


def _quartiles(values: Sequence[float]) -> tuple[float, float] | None:
    """First and third quartiles (``None`` for fewer than two values)."""
    if len(values) < 2:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q1, q3)


def _engine_summary(measurements: Sequence[Measurement]) -> dict[str, float | None]:
    """Policy figures pooled over the engine's measurements: verified draft tokens per step, expected vs
    realized accepted tokens per step, and the share of generation time spent drafting and in the policy."""
    engine = [m.engine for m in measurements if m.engine]
    steps = sum(e.get("steps", 0) for e in engine)
    total = sum(e.get("total_seconds", 0.0) for e in engine)
    if not steps or not total:
        return {}
    return {
        "drafted_per_step": sum(e.get("drafted_tokens", 0) for e in engine) / steps,
        "expected_accepted": sum(e.get("expected_accepted_tokens", 0.0) for e in engine) / steps,
        "accepted": sum(e.get("accepted_tokens", 0) for e in engine) / steps,
        "overhead_share": sum(e.get("draft_seconds", 0.0) + e.get("policy_seconds", 0.0) for e in engine) / total,
    }


def summarize(measurements: Iterable[Measurement]) -> list[Summary]:
    """Summaries for every (category, method) and every (``overall``, method), in first-seen order."""
    measurements = list(measurements)
    methods = list(dict.fromkeys(m.method for m in measurements))
    groups = list(dict.fromkeys(m.category for m in measurements)) + [OVERALL]
    summaries = []
    for group in groups:
        in_group = [m for m in measurements if group == OVERALL or m.category == group]
        reference = [m for m in in_group if m.method == REFERENCE_METHOD]
        for method in methods:
            selected = [m for m in in_group if m.method == method]
            if selected:
                summaries.append(summarize_group(group, method, selected, reference))
    return summaries
