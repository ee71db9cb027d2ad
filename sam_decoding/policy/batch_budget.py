"""How many draft tokens a whole batch should verify per step, from measured step costs.

An engine that decodes a batch (vLLM) runs one forward pass per step over every row's tokens: a
row with no draft feeds one token, a row with ``d`` draft tokens feeds ``1 + d``. So the step's
cost depends on the *total* ``rows + B`` tokens it schedules, and the batch's question each step
is how large a draft budget ``B`` pays. With path probabilities ``P`` (P(node accepted)) of every
row's chain, the step emits ``rows + sum(P of the B chosen nodes)`` tokens on average, so
:class:`BatchBudget` keeps the ``B`` most probable nodes that maximize

    (rows + sum of the B largest P) / t(rows + B)

and hands them to their rows (a chain's path probabilities never increase with depth, so each row
gets a prefix of its chain). ``B = 0`` whenever drafting does not pay.

``t`` is a :class:`StepCostCurve` learned from the wall time between the engine's calls: medians per
bucket of total tokens, made monotone (isotonic), and extrapolated linearly (never flat) outside the
totals seen. The first steps sweep budgets (0, rows, 2 rows, ...) so the curve sees both ends; a
no-draft control step every :data:`CONTROL_EVERY` steps keeps ``t(rows)`` honest; steps with
prefill and idle gaps (far above the curve) are not learned. A :class:`DraftGuard` compares the
emitted tokens per second of recent drafted steps with those of control steps and halves how often
the batch drafts while drafting loses (down to one step in ``2 ** MAX_BACKOFF``), recovering as it wins.

Every call is O(1) NumPy calls, whatever the batch size.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from sam_decoding.policy.acceptance import (
    MOST_LIKELY_ACCEPTANCE,
    AcceptanceModel,
    ChainEstimates,
    chain_source_ids,
    estimate_chains,
    learn_chains,
)

#: Buckets of total tokens per step: this many per doubling.
BUCKETS_PER_OCTAVE = 4
#: Step times kept per bucket (the bucket's cost is their median).
BUCKET_WINDOW = 15
#: With too few buckets to fit a slope, this share of a step's cost is assumed to grow with its tokens.
DEFAULT_TOKEN_SHARE = 0.5
#: The extrapolation slope is at least this share of the mean cost per token (never flat).
MIN_TOKEN_SHARE = 0.05
#: Below the totals seen a step costs at least this share of the smallest one seen.
MIN_COST_SHARE = 0.05
#: A gap longer than this many times the curve's estimate was idle time, not a step.
IDLE_FACTOR = 4.0
#: After this many gaps in a row judged idle, the curve is too low: the next gap is learned anyway.
MAX_IDLE_IN_A_ROW = 8
#: The curve is refitted after this many new step times while it holds fewer than
#: :data:`SETTLED_OBSERVATIONS`, and after :data:`SETTLED_REFIT_EVERY` once it holds more (a fit costs
#: several times a step's choice: refitting every 8 steps doubled a 64-row budget-0 step's median
#: time and set its p99); a new bucket of total tokens is fitted at once either way.
REFIT_EVERY = 8
SETTLED_OBSERVATIONS = 128
SETTLED_REFIT_EVERY = 128
#: One step in this many drafts nothing (a control step).
CONTROL_EVERY = 16
#: Sweep rounds at start: budget levels 0, 1, ..., k draft tokens per row, each once per round.
SWEEP_ROUNDS = 2
#: Steps the guard compares (each of drafted and control steps), and how many new drafted steps
#: it waits for between decisions (a window slides: a lone request's drafted steps are so varied
#: that only tens of them tell a win from a loss).
GUARD_WINDOW = 64
GUARD_CHECK_EVERY = 16
#: The guard acts when drafted steps are this much slower (or faster) than control steps.
GUARD_MARGIN = 0.03
#: Most backoff: the batch then drafts in one step out of ``2 ** MAX_BACKOFF``.
MAX_BACKOFF = 6


def _bucket(tokens: int) -> int:
    return int(round(BUCKETS_PER_OCTAVE * math.log2(max(tokens, 1))))


def _median(values: deque[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def _isotonic(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted least squares (pool adjacent violators)."""
    values: list[float] = []
    sizes: list[float] = []
    counts: list[int] = []
    for value, weight in zip(y.tolist(), weights.tolist()):
        values.append(value)
        sizes.append(weight)
        counts.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            total = sizes[-2] + sizes[-1]
            values[-2] = (values[-2] * sizes[-2] + values[-1] * sizes[-1]) / total
            sizes[-2] = total
            counts[-2] += counts[-1]
            del values[-1], sizes[-1], counts[-1]
    return np.repeat(values, counts)


class StepCostCurve:
    """Seconds per engine step as a function of the total tokens it schedules, learned online."""

    def __init__(self) -> None:
        self._times: dict[int, deque[float]] = {}
        self._tokens: dict[int, deque[int]] = {}
        self._new = 0
        self._observed = 0
        self._idle_in_a_row = 0
        self._x = np.zeros(0)
        self._y = np.zeros(0)
        self._slope = 0.0
        self._points: tuple[list[float], list[float]] = ([], [])
        #: Incremented at every refit (callers may cache what they derive from the curve).
        self.generation = 0

    @property
    def observations(self) -> int:
        """Step times held (over every bucket)."""
        return sum(len(times) for times in self._times.values())

    @property
    def buckets(self) -> int:
        """Buckets of total tokens with at least one step time."""
        return len(self._times)

    def observe(self, tokens: int, seconds: float) -> bool:
        """Learn that a step of ``tokens`` total tokens took ``seconds``; returns ``False`` (and learns
        nothing) when the gap was idle time (far above the curve)."""
        if seconds <= 0.0:
            return False
        if len(self._x) and seconds > IDLE_FACTOR * self.seconds_at(tokens):
            self._idle_in_a_row += 1
            if self._idle_in_a_row <= MAX_IDLE_IN_A_ROW:
                return False
        self._idle_in_a_row = 0
        key = _bucket(tokens)
        if key not in self._times:
            self._times[key] = deque(maxlen=BUCKET_WINDOW)
            self._tokens[key] = deque(maxlen=BUCKET_WINDOW)
        self._times[key].append(seconds)
        self._tokens[key].append(tokens)
        self._new += 1
        self._observed += 1
        every = REFIT_EVERY if self._observed < SETTLED_OBSERVATIONS else SETTLED_REFIT_EVERY
        if self._new >= every or len(self._times) != len(self._x):
            self._fit()
        return True

    def _fit(self) -> None:
        keys = sorted(self._times)
        x = np.array([sum(self._tokens[key]) / len(self._tokens[key]) for key in keys])
        medians = np.array([_median(self._times[key]) for key in keys])
        weights = np.array([len(self._times[key]) for key in keys], dtype=np.float64)
        y = _isotonic(medians, weights)
        mean_per_token = float(np.average(y / x, weights=weights))
        if len(x) >= 2:
            centred = x - np.average(x, weights=weights)
            slope = float(np.sum(weights * centred * (y - np.average(y, weights=weights))) / np.sum(weights * centred**2))
            self._slope = max(slope, MIN_TOKEN_SHARE * mean_per_token)
        else:
            self._slope = DEFAULT_TOKEN_SHARE * mean_per_token
        self._x, self._y, self._new = x, y, 0
        self._points = (x.tolist(), y.tolist())
        self.generation += 1

    def seconds_at(self, tokens: int) -> float:
        """:meth:`seconds` of one total, without NumPy (a step's scalar lookups)."""
        x, y = self._points
        if not x:
            return 0.0
        if tokens <= x[0]:
            return max(y[0] - self._slope * (x[0] - tokens), MIN_COST_SHARE * y[0])
        if tokens >= x[-1]:
            return y[-1] + self._slope * (tokens - x[-1])
        right = bisect.bisect_right(x, tokens)
        share = (tokens - x[right - 1]) / (x[right] - x[right - 1])
        return y[right - 1] + share * (y[right] - y[right - 1])

    def seconds(self, tokens: np.ndarray) -> np.ndarray:
        """Estimated seconds of steps of ``tokens`` total tokens (float64, same shape); all zeros
        before any step was learned."""
        tokens = np.asarray(tokens, dtype=np.float64)
        x, y = self._x, self._y
        if not len(x):
            return np.zeros_like(tokens)
        inside = np.interp(tokens, x, y)
        below = np.maximum(y[0] - self._slope * (x[0] - tokens), MIN_COST_SHARE * y[0])
        above = y[-1] + self._slope * (tokens - x[-1])
        return np.where(tokens < x[0], below, np.where(tokens > x[-1], above, inside))


class DraftGuard:
    """Backs off drafting while drafted steps emit fewer tokens per second than control steps.

    Each learned step gives its emitted tokens per row and its *relative time*: its seconds over
    ``t(rows)``, the curve's cost of a no-draft step of the same rows. The speed of a window of steps
    is their emitted tokens over their relative time (a ratio of sums, so about 1 for control
    steps). While recent drafted steps are clearly slower than recent control steps (by more than
    the margin and two standard errors), the guard doubles the spacing of drafting steps (at most
    ``2 ** MAX_BACKOFF``); while they are faster, it halves it. A drafted step's speed does not
    depend on the spacing, so the window keeps its steps across decisions. :class:`BatchBudget`
    keeps one guard per octave of rows: whether drafting pays at 32 rows says nothing of one row.

    A ratio of sums with its standard error, not a median of per-step gains: with few rows a drafted
    step's gain is bimodal (a rejected draft costs a little, an accepted one pays several times
    over), so the median step can lose while the steps together win, and a few steps prove little.
    """

    def __init__(self) -> None:
        self.backoff = 0
        self._drafted: deque[tuple[float, float]] = deque(maxlen=GUARD_WINDOW)
        self._control: deque[tuple[float, float]] = deque(maxlen=GUARD_WINDOW)
        self._since_check = 0

    def observe(self, emitted_per_row: float, relative_seconds: float, drafted: bool) -> None:
        """Learn one step: tokens each row emitted and its seconds over ``t(rows)``."""
        if relative_seconds <= 0.0:
            return
        if not drafted:
            self._control.append((emitted_per_row, relative_seconds))
            return
        self._drafted.append((emitted_per_row, relative_seconds))
        self._since_check += 1
        if self._since_check < GUARD_CHECK_EVERY:
            return
        self._since_check = 0
        control = _speed(self._control)[0] if self._control else 1.0
        speed, error = _speed(self._drafted)
        if speed + 2.0 * error < control * (1.0 - GUARD_MARGIN):
            self.backoff = min(self.backoff + 1, MAX_BACKOFF)
        elif speed > control * (1.0 + GUARD_MARGIN) and self.backoff > 0:
            self.backoff -= 1

    def allows(self, step: int) -> bool:
        """Whether step number ``step`` may draft."""
        return step % (1 << self.backoff) == 0


def _speed(steps: deque[tuple[float, float]]) -> tuple[float, float]:
    """Emitted tokens per relative second over ``(emitted, relative seconds)`` pairs, and the
    standard error of that ratio (0 for a single step)."""
    emitted = sum(e for e, _ in steps)
    seconds = sum(s for _, s in steps)
    speed = emitted / seconds
    n = len(steps)
    if n < 2:
        return speed, 0.0
    squares = sum((e - speed * s) ** 2 for e, s in steps)
    return speed, math.sqrt(squares * n / (n - 1)) / seconds


def best_budget(sorted_paths: np.ndarray, rows: int, curve: StepCostCurve) -> int:
    """The number ``B`` of the most probable nodes that maximizes ``(rows + sum of the first B) /
    t(rows + B)``, given path probabilities sorted in decreasing order."""
    if not len(sorted_paths):
        return 0
    gains = rows + np.concatenate(([0.0], np.cumsum(sorted_paths)))
    costs = curve.seconds(rows + np.arange(len(sorted_paths) + 1))
    if costs[0] <= 0.0:
        return len(sorted_paths)
    return int(np.argmax(gains / costs))


@dataclass(frozen=True)
class Outcome:
    """What each row's request was handed at its previous step and what the target accepted, ``[rows]``
    arrays in the current step's row order (a row whose request is new, or drafted nothing, has ``given`` 0).

    Attributes:
        given: Draft tokens handed. accepted: Of those, accepted.
        sources: The previous draft's source code. priors: ``[rows, k]``: its per-node estimates.
        match_lengths: Match length behind each row's chain (this step's, when the previous one is not known).
    """

    given: np.ndarray
    accepted: np.ndarray
    sources: np.ndarray
    priors: np.ndarray
    match_lengths: np.ndarray


@dataclass
class _Pending:
    """What the last step scheduled, kept until the next call measures it."""

    started: float
    rows: int
    budget: int
    drafted: bool
    estimates: ChainEstimates | None
    given: np.ndarray | None


@dataclass
class BatchBudget:
    """The draft budget of each batch step and its hand-out to rows (see the module docstring).

    Args:
        max_depth: Most draft tokens per row (vLLM's ``num_speculative_tokens``).
        sources: Names of the drafter's source codes (``sources[code]``), for calibration cells.
        acceptance: The acceptance model (shared with :class:`~sam_decoding.CostAwarePolicy` if given).
        verify_all: Give every row its whole chain (no budget, no guard): policy ``"all"``.
    """

    max_depth: int
    sources: list[str]
    acceptance: AcceptanceModel = field(default_factory=AcceptanceModel)
    verify_all: bool = False
    curve: StepCostCurve = field(default_factory=StepCostCurve)
    guards: dict[int, DraftGuard] = field(default_factory=dict)
    steps: int = 0
    drafted_steps: int = 0
    _pending: _Pending | None = None
    _source_ids: np.ndarray = field(init=False)
    _sweep: list[int] = field(init=False)
    _level: int | None = None
    _payable: dict[int, bool] = field(default_factory=dict)
    _payable_generation: int = -1

    def __post_init__(self) -> None:
        self._source_ids = chain_source_ids(self.acceptance, self.sources)
        self._sweep = list(range(self.max_depth + 1)) * SWEEP_ROUNDS

    def source_corrections(self) -> np.ndarray:
        """How far each source code's own estimates are off so far (observed over predicted
        acceptance, float64 ``[len(sources)]``): the drafter weighs its sources with these."""
        return self.acceptance.source_corrections(self._source_ids)

    def learn(self, now: float, clean: bool, emitted_per_row: float, outcome: Outcome | None = None) -> None:
        """Learn the last step's outcome.

        Args:
            now: The clock (seconds) at the start of this call.
            clean: The last step was a pure decode step (no prefill, no new request): its time is learned.
            emitted_per_row: Mean tokens each of the last step's decoding rows emitted (accepted + 1).
            outcome: What each request was given and accepted at its previous step, in this step's
                row order (``None``: learn no acceptance).
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if outcome is not None and pending.estimates is not None and outcome.given.any():
            if pending.given is not None and len(outcome.given) == len(pending.given) and np.array_equal(outcome.given, pending.given):
                estimates = pending.estimates  # the rows did not move: the very estimates the step used
            else:
                estimates = estimate_chains(
                    self.acceptance, self._source_ids[outcome.sources], outcome.priors, outcome.given, outcome.match_lengths
                )
            learn_chains(self.acceptance, estimates, outcome.given.astype(np.int64), outcome.accepted.astype(np.int64))
        if not clean or pending.rows == 0:
            return
        seconds = now - pending.started
        tokens = pending.rows + pending.budget
        if not self.curve.observe(tokens, seconds):
            return
        baseline = self.curve.seconds_at(pending.rows)
        if baseline > 0.0:
            self.guard(pending.rows).observe(emitted_per_row, seconds / baseline, pending.drafted)

    def begin(self, now: float, rows: int) -> bool:
        """Start a step of ``rows`` decoding rows at clock ``now`` (seconds); returns whether it may
        draft at all. ``False`` (a sweep level of 0, a control step, the guard's backoff, a curve on
        which no budget pays at this batch size): the step
        drafts nothing, and the drafter need only read the rows.
        Otherwise call :meth:`allot` with the rows' chains."""
        self.steps += 1
        self._level = None
        self._pending = _Pending(now, rows, 0, False, None, None)
        if rows == 0:
            return False
        if self.verify_all:
            return True
        if self._sweep:
            self._level = self._sweep.pop(0)
            return self._level > 0
        # Whether this step's chains pay is for allot() to judge: they change from step to step (a lone
        # request's text may match nothing at one step and copy a long span at the next). Only when
        # not even certain nodes could pay is the drafting skipped here.
        return self.steps % CONTROL_EVERY != 0 and self.guard(rows).allows(self.steps) and self._any_budget_pays(rows)

    def _any_budget_pays(self, rows: int) -> bool:
        """Whether some budget of draft tokens, each as likely accepted as an estimate may claim
        (:data:`MOST_LIKELY_ACCEPTANCE`), makes a step of ``rows`` rows emit more tokens per second
        than no draft on the curve (cached per curve fit)."""
        if self.curve.generation != self._payable_generation:
            self._payable.clear()
            self._payable_generation = self.curve.generation
        pays = self._payable.get(rows)
        if pays is None:
            budgets = np.arange(rows * self.max_depth + 1)
            costs = self.curve.seconds(rows + budgets)
            best = rows + MOST_LIKELY_ACCEPTANCE * budgets[1:]
            pays = bool(costs[0] <= 0.0 or np.max(best / costs[1:]) > rows / costs[0])
            self._payable[rows] = pays
        return pays

    def guard(self, rows: int) -> DraftGuard:
        """The guard of batches of ``rows`` rows (one per octave: 1, 2-3, 4-7, ...)."""
        octave = rows.bit_length()
        if octave not in self.guards:
            self.guards[octave] = DraftGuard()
        return self.guards[octave]

    def allot(self, source_codes: np.ndarray, priors: np.ndarray, lengths: np.ndarray, match_lengths: np.ndarray) -> np.ndarray:
        """Draft tokens to give each row this step (after :meth:`begin` returned ``True``): int64
        ``[rows]``, a prefix of each row's chain.

        Args:
            source_codes: int ``[rows]``: each row's source (an index into ``sources``).
            priors: float ``[rows, k]``: the drafter's per-node estimates.
            lengths: int ``[rows]``: nodes drafted per row (0: none, or a row that is not decoding).
            match_lengths: int ``[rows]``: match length behind each row's chain (tokens).
        """
        pending = self._pending
        assert pending is not None, "begin() first"
        estimates = estimate_chains(self.acceptance, self._source_ids[source_codes], priors, lengths, match_lengths)
        paths = estimates.path_probabilities
        if self.verify_all:
            counts = lengths.astype(np.int64, copy=True)
        elif self._level is not None:
            counts = np.minimum(lengths, self._level).astype(np.int64)
        else:
            counts = self._choose(pending.rows, paths)
        drafted = bool(counts.any())
        self.drafted_steps += drafted
        pending.budget, pending.drafted, pending.estimates, pending.given = int(counts.sum()), drafted, estimates, counts
        return counts

    def _choose(self, rows: int, paths: np.ndarray) -> np.ndarray:
        flat = paths.ravel()
        order = np.argsort(-flat, kind="stable")  # ties: the shallower node of a row first
        valid = int(np.count_nonzero(flat > 0.0))
        budget = best_budget(flat[order[:valid]], rows, self.curve)
        return np.bincount(order[:budget] // paths.shape[1], minlength=paths.shape[0]).astype(np.int64)
