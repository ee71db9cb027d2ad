"""The batch draft budget: the step-cost curve, the budget it chooses, the guard, the hand-out."""

from __future__ import annotations

import numpy as np

from sam_decoding.policy import AcceptanceModel, BatchBudget, DraftGuard, StepCostCurve, best_budget
from sam_decoding.policy.acceptance import estimate_chains, learn_chains
from sam_decoding.policy.batch_budget import BUCKET_WINDOW, CONTROL_EVERY, GUARD_CHECK_EVERY, GUARD_WINDOW, MAX_BACKOFF, SWEEP_ROUNDS, Outcome

K = 8


def _curve(cost, totals) -> StepCostCurve:
    curve = StepCostCurve()
    for _ in range(5):
        for tokens in totals:
            curve.observe(int(tokens), cost(tokens))
    return curve


def _run_steps(budget: BatchBudget, cost, rows: int, prior: float, steps: int, accept) -> list[int]:
    """Drive ``budget`` through ``steps`` clean steps on a simulated engine; the budgets it chose."""
    now = 0.0
    chosen = []
    priors = np.full((rows, K), prior)
    lengths = np.full(rows, K)
    codes = np.zeros(rows, dtype=np.int64)
    matches = np.full(rows, 8)
    accepted = None
    for _ in range(steps):
        counts = budget.allot(codes, priors, lengths, matches) if budget.begin(now, rows) else np.zeros(rows, dtype=np.int64)
        chosen.append(int(counts.sum()))
        accepted = accept(counts)
        now += cost(rows + counts.sum())
        budget.learn(now, True, 1.0 + accepted.mean(), Outcome(counts, accepted, codes, priors, matches))
    return chosen


def test_a_steep_cost_curve_gives_no_drafts() -> None:
    # Every token costs as much as a whole step's fixed part: no draft of p < 1 pays.
    def cost(tokens):
        return 1e-3 * tokens

    budget = BatchBudget(K, ["static"])
    chosen = _run_steps(budget, cost, rows=16, prior=0.6, steps=200, accept=lambda counts: np.minimum(counts, 1))
    assert sum(chosen[-100:]) == 0
    # Not only because the guard backed off: the curve itself says no, before any drafting work
    # (not even nodes sure to be accepted would pay), and the hand-out agrees.
    budget.guards.clear()
    budget.steps = 0
    assert not budget.begin(0.0, 16)
    counts = budget.allot(np.zeros(16, dtype=np.int64), np.full((16, K), 0.6), np.full(16, K), np.full(16, 8))
    assert counts.sum() == 0
    # Once the curve flattens (the engine got faster per token), steps draft again.
    for _ in range(3 * BUCKET_WINDOW):
        for tokens in (16, 32, 64, 128):
            budget.curve.observe(tokens, 0.02 + 1e-7 * tokens)
    assert budget.begin(0.0, 16)


def test_a_flat_cost_curve_drafts() -> None:
    def cost(tokens):
        return 0.02 + 1e-7 * tokens

    budget = BatchBudget(K, ["static"])
    chosen = _run_steps(budget, cost, rows=16, prior=0.8, steps=200, accept=lambda counts: counts * 3 // 4)
    drafting = [b for b in chosen[-100:] if b]
    assert len(drafting) >= 100 - 100 // CONTROL_EVERY - 1 and min(drafting) > 16


def test_a_lone_request_drafts_as_soon_as_its_chain_pays_after_steps_without_one() -> None:
    # One request on a curve where a good chain pays: steps with no chain (the text matched nothing)
    # must not stop the very next step that has one from drafting.
    def cost(tokens):
        return 0.07 + 0.004 * tokens

    budget = BatchBudget(K, ["static"])
    codes, matches = np.zeros(1, dtype=np.int64), np.full(1, 8)
    good, no_chain = np.full((1, K), 0.9), np.zeros((1, K))
    _run_steps(budget, cost, rows=1, prior=0.9, steps=60, accept=lambda counts: counts)
    now, drafted_at_once = 100.0, []
    for step in range(40):
        has_chain = step % 4 == 3  # three steps without a chain, then one with
        priors, lengths = (good, np.full(1, K)) if has_chain else (no_chain, np.zeros(1, dtype=np.int64))
        counts = budget.allot(codes, priors, lengths, matches) if budget.begin(now, 1) else np.zeros(1, dtype=np.int64)
        if has_chain and budget.steps % CONTROL_EVERY and budget.guard(1).allows(budget.steps):
            drafted_at_once.append(int(counts.sum()) > 0)
        now += cost(1 + counts.sum())
        budget.learn(now, True, 1.0 + counts.mean(), Outcome(counts, counts, codes, priors, matches))
    assert drafted_at_once and all(drafted_at_once), drafted_at_once


def test_a_curve_seen_only_at_large_totals_is_not_flat_below_them() -> None:
    def cost(tokens):
        return 0.005 + 1e-4 * tokens

    curve = _curve(cost, [256, 320, 384, 512])
    small, middle, seen = curve.seconds(np.array([8, 64, 256]))
    assert small < middle < seen
    assert abs(small - cost(8)) < 0.2 * cost(8), "the slope seen above extends below"


def test_a_curve_seen_at_one_total_still_grows() -> None:
    curve = _curve(lambda tokens: 0.01, [64])
    low, at, high = curve.seconds(np.array([8, 64, 512]))
    assert low < at < high


def test_the_curve_is_monotone_and_ignores_idle_gaps() -> None:
    rng = np.random.default_rng(0)
    curve = StepCostCurve()
    for _ in range(400):
        tokens = int(rng.integers(1, 200))
        curve.observe(tokens, (0.01 + 1e-4 * tokens) * rng.uniform(0.8, 1.25))
    assert not curve.observe(50, 10.0), "a gap 600x the step's cost is idle time"
    estimates = curve.seconds(np.arange(1, 400))
    assert np.all(np.diff(estimates) >= 0)
    assert abs(curve.seconds(np.array([100]))[0] - 0.02) < 0.004


def test_the_guard_backs_off_while_drafted_steps_lose_and_recovers() -> None:
    guard = DraftGuard()
    for _ in range(10 * GUARD_CHECK_EVERY):
        guard.observe(1.0, 1.0, drafted=False)
        guard.observe(1.0, 1.4, drafted=True)
    assert guard.backoff == MAX_BACKOFF
    assert sum(guard.allows(step) for step in range(1024)) == 1024 >> MAX_BACKOFF
    for _ in range(GUARD_WINDOW // 2 + (MAX_BACKOFF + 1) * GUARD_CHECK_EVERY):
        guard.observe(1.0, 1.0, drafted=False)
        guard.observe(1.5, 1.1, drafted=True)
    assert guard.backoff == 0 and all(guard.allows(step) for step in range(64))


def test_the_guard_judges_a_lone_request_by_its_tokens_per_second_not_its_median_step() -> None:
    # One row: most drafted steps are rejected (1 token in 1.1 step-times, a loss), one in three
    # accepts 3 draft tokens (4 tokens in 1.1): together 2 tokens per 1.1 step-times, 1.8x a
    # control step. The median drafted step loses; the guard must not back off.
    guard = DraftGuard()
    for step in range(30 * GUARD_CHECK_EVERY):
        guard.observe(1.0, 1.0, drafted=False)
        guard.observe(4.0 if step % 3 == 0 else 1.0, 1.1, drafted=True)
        assert guard.backoff == 0


def test_the_guard_does_not_back_off_on_unlucky_runs_of_a_winning_lone_request() -> None:
    # One row whose drafts win 8% on average (15% of them are accepted: 3 tokens instead of 1, at
    # 1.2 step-times), in random orders: runs of rejected drafts happen, and they prove nothing
    # against a winning average; the guard stays (nearly) at full drafting with every seed.
    for seed in range(6):
        rng = np.random.default_rng(seed)
        guard = DraftGuard()
        backoffs = []
        for _ in range(400):
            guard.observe(1.0, float(rng.uniform(0.95, 1.05)), drafted=False)
            accepted = rng.random() < 0.15
            guard.observe(3.0 if accepted else 1.0, float(rng.uniform(1.1, 1.3)), drafted=True)
            backoffs.append(guard.backoff)
        assert np.mean(backoffs) < 0.5, (seed, np.bincount(backoffs))


def test_the_budget_backs_off_when_accepted_drafts_lose_to_control_steps() -> None:
    # The curve starts out saying drafting is nearly free, but every drafted step is slow in fact
    # and drafts are seldom accepted: the budget must stop drafting (by its curve, its calibration
    # or its guard).
    def cost(tokens):
        return 0.02 + 1e-7 * tokens

    def slow(tokens):
        return cost(tokens) * (3.0 if tokens > 16 else 1.0)

    budget = BatchBudget(K, ["static"])
    budget.curve = _curve(cost, [16, 32, 64, 144])
    budget._sweep.clear()
    chosen = _run_steps(budget, slow, rows=16, prior=0.9, steps=600, accept=lambda counts: counts // 4)
    assert sum(b > 0 for b in chosen[-200:]) <= 200 // 8 + 1


def test_the_budget_goes_to_the_most_probable_nodes_as_prefixes() -> None:
    def cost(tokens):
        return 0.01 + 0.004 * tokens

    budget = BatchBudget(K, ["static"])
    budget.curve = _curve(cost, [4, 8, 16, 36])
    budget._sweep.clear()
    assert budget.begin(0.0, 4)
    priors = np.array([[0.99] * K, [0.5] * K, [0.9] * K, [0.2] * K])
    counts = budget.allot(np.zeros(4, dtype=np.int64), priors, np.array([K, K, 3, K]), np.full(4, 8))
    paths = np.cumprod(priors, axis=1)
    assert counts[3] <= counts[1] <= counts[2] <= counts[0] and counts[2] <= 3 and counts.sum() > 0
    # The kept nodes are exactly the most probable ones: every kept node beats every dropped one.
    kept = np.arange(K)[None, :] < counts[:, None]
    valid = np.arange(K)[None, :] < np.array([K, K, 3, K])[:, None]
    assert paths[kept].min() >= paths[valid & ~kept].max()
    # And the budget is the best one: compare with the brute-force maximum over every B.
    ordered = np.sort(paths[valid])[::-1]
    rates = [(4 + ordered[:b].sum()) / cost(4 + b) for b in range(len(ordered) + 1)]
    assert counts.sum() == int(np.argmax(rates))
    assert best_budget(ordered, 4, budget.curve) == counts.sum()


def test_the_first_steps_sweep_budgets_and_control_steps_draft_nothing() -> None:
    budget = BatchBudget(K, ["static"])
    chosen = _run_steps(budget, lambda tokens: 0.02, rows=4, prior=0.9, steps=(K + 1) * SWEEP_ROUNDS + 2 * CONTROL_EVERY, accept=lambda c: c)
    assert chosen[: K + 1] == [4 * level for level in range(K + 1)]
    sweep = (K + 1) * SWEEP_ROUNDS
    controls = [step for step in range(CONTROL_EVERY, len(chosen) + 1, CONTROL_EVERY) if step > sweep]
    assert controls and all(chosen[step - 1] == 0 for step in controls)
    assert all(chosen[step - 1] > 0 for step in range(sweep + 1, len(chosen) + 1) if step not in controls)


def test_chain_calibration_learns_in_one_call() -> None:
    model = AcceptanceModel()
    ids = np.zeros(64, dtype=np.int64)
    priors = np.full((64, K), 0.9)
    lengths = np.full(64, K)
    before = estimate_chains(model, ids, priors, lengths, np.full(64, 4))
    for _ in range(20):  # the target accepts only the first token of each chain
        estimates = estimate_chains(model, ids, priors, lengths, np.full(64, 4))
        learn_chains(model, estimates, lengths, np.ones(64, dtype=np.int64))
    after = estimate_chains(model, ids, priors, lengths, np.full(64, 4))
    assert after.probabilities[0, 0] > 0.85 and after.probabilities[0, 1] < 0.2 < before.probabilities[0, 1]
    assert np.all(after.path_probabilities[:, 1:] <= after.path_probabilities[:, :-1])
