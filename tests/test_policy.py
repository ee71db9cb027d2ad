"""The cost-aware policy: optimal subtree selection, cost profiles, calibrated acceptance, and its effect on generate."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
import torch

from sam_decoding.drafters import Draft, Drafter, Verified
from sam_decoding.generation import generate
from sam_decoding.policy import AcceptanceModel, CostAwarePolicy, CostProfile, best_subtree
from sam_decoding.tree_shape import path_products
from sam_decoding.policy.cost_profile import CALIBRATION_LENGTH, Q_GRID, calibrate
from conftest import TINY_PAD


def _random_tree(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.array([rng.integers(-1, node) for node in range(size)], dtype=np.int32)


def _brute_force_best(path_probabilities: np.ndarray, parents: np.ndarray, costs: np.ndarray, overhead: float) -> float:
    best = 0.0
    n = len(parents)
    for mask in itertools.product([False, True], repeat=n):
        chosen = np.flatnonzero(mask)
        if any(parents[i] >= 0 and not mask[parents[i]] for i in chosen):
            continue  # not closed under parents: not a verifiable draft
        if len(chosen) + 1 > len(costs):
            continue
        rate = (1.0 + path_probabilities[chosen].sum()) / (costs[len(chosen)] + overhead)
        best = max(best, rate)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_selection_is_optimal_on_brute_forced_trees(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 9))
    parents = _random_tree(rng, size)
    probabilities = rng.uniform(0.0, 1.0, size) ** rng.uniform(0.3, 3.0)
    path = path_products(probabilities, parents)
    # Random, often non-monotonic cost curves (CPUs make 2-3 tokens dearer than 4-8).
    costs = np.cumsum(rng.uniform(0.0, 1.0, size + 1)) * rng.uniform(0.05, 1.0) + 1.0
    rng.shuffle(costs[1:])
    overhead = float(rng.uniform(0.0, 0.5))
    choice = best_subtree(path, costs, overhead)
    kept = choice.keep
    assert all(parents[i] < 0 or parents[i] in kept for i in kept), "selection must be closed under parents"
    rate = (1.0 + path[kept].sum()) / (costs[len(kept)] + overhead)
    assert rate == pytest.approx(choice.expected_rate)
    assert rate == pytest.approx(_brute_force_best(path, parents, costs, overhead), rel=1e-12)


def test_selection_keeps_nothing_when_any_draft_costs_more_than_it_can_emit() -> None:
    path = np.array([0.3, 0.2, 0.1])
    costs = np.array([1.0, 1.5, 2.0, 2.5])  # one more token costs half a step; P < 0.5 never pays
    assert len(best_subtree(path, costs, 0.0).keep) == 0


def test_selection_pads_past_an_expensive_small_q() -> None:
    # q = 2 costs more than q = 4 (as on this project's CPUs): a weak extra node rides along for free.
    path = np.array([0.9, 0.05, 0.04])
    costs = np.array([1.0, 1.9, 1.9, 1.35])
    assert list(best_subtree(path, costs, 0.0).keep) == [0, 1, 2]


def _flat_profile() -> CostProfile:
    return CostProfile.synthetic(lambda q, length: 0.010 + 1e-6 * q, key="gpu-like")


def _steep_profile() -> CostProfile:
    # Every extra fed token costs two plain steps: no draft pays, not even one certain to be accepted.
    return CostProfile.synthetic(lambda q, length: 0.010 * (2 * q - 1), key="steep")


def _tree_draft(depth: int = 6, width: int = 3) -> Draft:
    parents, tokens = [], []
    frontier = [-1]
    for level in range(depth):
        next_frontier = []
        for parent in frontier[:width]:
            for rank in range(width):
                parents.append(parent)
                tokens.append(10 + len(tokens) % 80)
                next_frontier.append(len(parents) - 1)
        frontier = next_frontier
    probabilities = np.array([0.6 if i % width == 0 else 0.15 for i in range(len(tokens))])
    return Draft(np.array(tokens, dtype=np.int64), np.array(parents, dtype=np.int32), "test", probabilities)


def test_flat_profile_verifies_large_trees_and_steep_profile_verifies_none() -> None:
    draft = _tree_draft()
    flat = CostAwarePolicy(profile=_flat_profile(), acceptance=AcceptanceModel(prior_strength=1e9))
    steep = CostAwarePolicy(profile=_steep_profile(), acceptance=AcceptanceModel(prior_strength=1e9))
    assert len(flat.select(draft, 100, 0.0).draft) >= 30
    assert len(steep.select(draft, 100, 0.0).draft) == 0


def test_profile_represents_non_monotonic_curves_and_growth_with_cache_length() -> None:
    measured = {1: 1.00, 2: 1.56, 3: 1.87, 4: 1.37, 6: 1.36, 8: 1.35, 12: 1.48, 16: 1.54, 32: 2.0, 64: 3.04}
    profile = CostProfile()
    for q, ratio in measured.items():
        profile.observe(q, 300, 0.065 * ratio)
        profile.observe(q, 3000, 0.065 * ratio * 1.5)
    curve = profile.curve(300, 64)
    for q, ratio in measured.items():
        assert curve[q - 1] == pytest.approx(0.065 * ratio)
    assert curve[2] > curve[3]  # 3 tokens dearer than 4
    assert profile.seconds(8, 3000) == pytest.approx(1.5 * profile.seconds(8, 300))
    # A cache-length bucket never measured borrows from its neighbours, growing with the length.
    assert profile.seconds(8, 300) < profile.seconds(8, 600) < profile.seconds(8, 3000)
    assert profile.curve(300, 200)[-1] > curve[-1]  # extrapolated beyond the largest q measured


def test_profile_learns_from_observations_robustly() -> None:
    profile = CostProfile()
    profile.observe(4, 100, 0.05)
    for _ in range(30):
        profile.observe(4, 100, 0.08)
    assert profile.seconds(4, 100) == pytest.approx(0.08, rel=0.05)
    fresh = CostProfile()
    fresh.observe(4, 100, 0.08)
    fresh.observe(4, 100, 0.08)
    fresh.observe(4, 100, 10.0)  # one pass stalled by the OS must not wreck a young estimate
    assert fresh.seconds(4, 100) < 0.11


def test_calibration_does_not_charge_the_first_pass_of_a_shape_to_its_cell(tiny_models) -> None:
    # On a GPU the first pass of each new shape also selects kernels and took 3x a normal pass
    # (bench/results/gpu/calibration-sweep-smollm2-bf16.json); simulate that one-time cost.
    model = tiny_models[("llama", "sdpa")]
    seen: set[tuple[int, ...]] = set()

    def slow_first_pass(module, args, kwargs) -> None:
        shape = tuple(kwargs["input_ids"].shape)
        if shape not in seen:
            seen.add(shape)
            time.sleep(0.2)

    handle = model.register_forward_pre_hook(slow_first_pass, with_kwargs=True)
    try:
        profile = CostProfile()
        calibrate(model, profile, budget_seconds=0.5)
    finally:
        handle.remove()
    for q in (1, 4, 16, 64):
        assert profile.seconds(q, CALIBRATION_LENGTH) < 0.06


def test_real_passes_move_the_cells_the_policy_never_chooses() -> None:
    # A sweep that ran slow everywhere (an idle GPU's clock still ramping up), then real steps at
    # the one size the policy chose: the other sizes must follow, or they are never tried again.
    profile = CostProfile()
    for _ in range(5):
        for q in Q_GRID:
            profile.observe(q, 300, 0.030, force=True)
    for _ in range(40):
        profile.observe(24, 300, 0.019)
    assert profile.seconds(24, 300) == pytest.approx(0.019, rel=0.1)
    assert profile.seconds(8, 300) < 0.025
    # The sweep's shape between sizes is kept: a real step moves its own cell furthest.
    assert profile.seconds(8, 300) > profile.seconds(24, 300)


def test_profile_file_round_trip_and_bad_files(tmp_path) -> None:
    profile = _flat_profile()
    path = tmp_path / "profile.json"
    profile.save(path)
    loaded = CostProfile.load(path)
    assert loaded.frozen
    np.testing.assert_allclose(loaded.curve(500, 100), profile.curve(500, 100))
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(ValueError, match="not a cost profile"):
        CostProfile.load(tmp_path / "junk.json")
    data = json.loads(path.read_text())
    data["log_time"] = data["log_time"][:2]
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="shape"):
        CostProfile.load(tmp_path / "short.json")
    data = json.loads(path.read_text())
    data["q_grid"] = [1, 2]
    (tmp_path / "grid.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="grid"):
        CostProfile.load(tmp_path / "grid.json")
    with pytest.raises(ValueError, match="cannot read"):
        CostProfile.load(tmp_path / "missing.json")
    assert len(Q_GRID) == len(data["weight"][0])


def test_acceptance_estimates_converge_to_what_is_observed() -> None:
    model = AcceptanceModel()
    draft = Draft.chain(np.arange(4), "overconfident", probabilities=np.full(4, 0.95), match_length=5)
    rng = np.random.default_rng(0)
    for _ in range(400):
        estimates = model.estimate(draft)
        accepted = rng.random(4) < 0.2
        judged = np.concatenate(([True], np.cumprod(accepted)[:-1].astype(bool)))
        model.learn(estimates, judged, accepted & judged)
    first = model.estimate(draft).probabilities[0]
    assert first == pytest.approx(0.2, abs=0.06)
    rows = model.calibration()
    assert sum(row["nodes"] for row in rows) > 400
    # Another match length is another coarse cell, never judged: it starts from the source's overall
    # correction (the drafter is 4-5x overconfident everywhere), not from the drafter's raw 0.95;
    # another source starts from its own prior.
    other = Draft.chain(np.arange(4), "overconfident", probabilities=np.full(4, 0.95), match_length=20)
    assert model.estimate(other).probabilities[0] == pytest.approx(0.2, abs=0.06)
    stranger = Draft.chain(np.arange(4), "unseen source", probabilities=np.full(4, 0.95), match_length=20)
    assert model.estimate(stranger).probabilities[0] == pytest.approx(0.95)


class _ScriptedDrafter(Drafter):
    """Always proposes a 6-token chain: the true continuation, so every node would be accepted."""

    def __init__(self, truth: list[int]) -> None:
        self.truth = truth
        self.position = 0

    def begin(self, prompt_ids: np.ndarray) -> None:
        self.position = 0

    def propose(self, max_tokens: int) -> Draft:
        return Draft.chain(self.truth[self.position : self.position + min(6, max_tokens)], "scripted")

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self.position += len(tokens)


@pytest.mark.parametrize("profile_kind", ["flat", "steep"])
def test_generate_follows_the_injected_profile_and_stays_exact(tiny_models, profile_kind: str) -> None:
    model = tiny_models[("llama", "sdpa")]
    prompt = torch.tensor([[5, 17, 17, 40, 3]])
    reference = model.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=TINY_PAD)
    profile = _flat_profile() if profile_kind == "flat" else _steep_profile()
    policy = CostAwarePolicy(profile=profile)
    drafter = _ScriptedDrafter(reference[0, prompt.shape[1] :].tolist())
    result = generate(model, prompt, max_new_tokens=30, drafter=drafter, eos_token_id=[], policy=policy)
    assert torch.equal(result.sequences, reference)
    if profile_kind == "flat":
        assert result.stats.drafted_tokens == result.stats.proposed_tokens
        assert result.stats.mean_accepted_tokens > 5
    else:
        assert result.stats.drafted_tokens == 0
        assert result.stats.verified_sizes == {1: result.stats.steps}


def test_a_call_whose_drafts_fail_stops_verifying_them_and_the_next_call_starts_fresh() -> None:
    # Every extra fed token costs 30% of a step; the acceptance model is frozen at the drafter's 0.8,
    # so only the per-call correction can learn that this request's drafts fail.
    profile = CostProfile.synthetic(lambda q, length: 0.010 * (1 + 0.3 * (q - 1)), key="linear")
    policy = CostAwarePolicy(profile=profile, acceptance=AcceptanceModel(prior_strength=1e9))
    draft = Draft.chain(np.array([5, 6]), "confident", np.array([0.8, 0.8]))
    policy.prepare(None)
    assert len(policy.select(draft, 100, 0.0).draft) == 2
    for _ in range(10):
        plan = policy.select(draft, 100, 0.0)
        if not len(plan.draft):
            break
        policy.learn(plan, [0], None)  # the target rejected the first node
    assert len(policy.select(draft, 100, 0.0).draft) == 0 and policy.call_correction < 0.4
    policy.prepare(None)  # a new generate call
    assert len(policy.select(draft, 100, 0.0).draft) == 2
