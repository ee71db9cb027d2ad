"""The llama.cpp path's sampling rule and target distribution, without llama.cpp.

``verify_position`` against a deterministic draft must emit tokens distributed exactly as the
target ``p`` whatever the draft token (chi-square, fixed seeds); a rule that forgets to remove the
rejected token from the residual must be caught by the same test. ``SamplingSettings.distribution``
is checked against a brute-force reading of the top-k, top-p, min-p, temperature order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chisquare

from sam_decoding.llama_cpp.sampling import SamplingSettings, verify_position

EXACT = 1e-3  # an exact rule passes above this p-value
REJECT = 1e-5  # a wrong one must fall below this
DRAWS = 20_000

P = np.array([0.42, 0.25, 0.15, 0.1, 0.05, 0.03, 0.0])


def emitted_pvalue(rule, p: np.ndarray, draft_token: int | None, seed: int) -> float:
    """Chi-square p-value of ``DRAWS`` emitted tokens against ``p``; 0 if a token of probability 0 came out."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(len(p))
    for _ in range(DRAWS):
        counts[rule(p, draft_token, rng)[0]] += 1
    if counts[p == 0].any():
        return 0.0
    support = p > 0
    return float(chisquare(counts[support], p[support] * DRAWS).pvalue)


@pytest.mark.parametrize("draft_token", [None, *range(len(P))])
def test_the_emitted_token_is_distributed_as_the_target(draft_token) -> None:
    assert emitted_pvalue(verify_position, P, draft_token, seed=7) > EXACT


def test_acceptance_happens_with_the_draft_tokens_probability() -> None:
    rng = np.random.default_rng(3)
    accepted = sum(verify_position(P, 1, rng)[1] for _ in range(DRAWS))
    assert abs(accepted / DRAWS - P[1]) < 4 * math.sqrt(P[1] * (1 - P[1]) / DRAWS)
    assert not any(verify_position(P, 6, rng)[1] for _ in range(200)), "a token of probability 0 was accepted"
    certain = np.array([0.0, 1.0, 0.0])
    assert all(verify_position(certain, 1, rng) == (1, True) for _ in range(200))


def residual_without_removal(p: np.ndarray, draft_token: int | None, rng: np.random.Generator) -> tuple[int, bool]:
    """A broken rule: after a rejection it draws from ``p`` itself, so the draft token gets a second chance."""
    if draft_token is not None and rng.random() < p[draft_token]:
        return draft_token, True
    return int(rng.choice(len(p), p=p)), False


def test_chi_square_catches_a_residual_that_keeps_the_draft_token() -> None:
    assert emitted_pvalue(residual_without_removal, P, 0, seed=7) < REJECT


def brute_force(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """The documented order, step by step over a sorted list (ties by token id)."""
    order = sorted(range(len(logits)), key=lambda token: (-logits[token], token))
    if settings.top_k:
        order = order[: settings.top_k]
    if settings.top_p < 1:
        weights = [math.exp(logits[t] - logits[order[0]]) for t in order]
        total, running = sum(weights), 0.0
        for index, weight in enumerate(weights):
            running += weight / total
            if running >= settings.top_p:
                order = order[: index + 1]
                break
    if settings.min_p > 0:
        order = [t for t in order if math.exp(logits[t] - logits[order[0]]) >= settings.min_p]
    p = np.zeros(len(logits))
    scaled = [math.exp((logits[t] - logits[order[0]]) / settings.temperature) for t in order]
    for token, weight in zip(order, scaled):
        p[token] = weight / sum(scaled)
    return p


@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(temperature=0.8),
        SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
        SamplingSettings(temperature=0.5, top_k=5, top_p=1.0, min_p=0.0),
        SamplingSettings(temperature=1.3, top_k=0, top_p=0.6, min_p=0.0),
        SamplingSettings(temperature=2.0, top_k=0, top_p=1.0, min_p=0.2),
        SamplingSettings(temperature=0.7, top_k=12, top_p=0.9, min_p=0.1),
    ],
)
def test_the_target_distribution_follows_the_documented_order(settings) -> None:
    rng = np.random.default_rng(11)
    for trial in range(20):
        logits = rng.normal(0, 2.5, 300).astype(np.float32)
        if trial % 4 == 0:
            logits[rng.integers(0, 300, 40)] = logits.max() - 1.0  # ties at every cut-off
        ours = settings.distribution(logits)
        assert ours.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(ours, brute_force(logits.astype(np.float64), settings), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.999])
def test_top_p_over_a_whole_vocabulary_widens_its_partial_sort(top_p) -> None:
    """Over 6000 tokens the nucleus is searched among the largest 256 first, then wider: same answer as a full sort."""
    settings = SamplingSettings(temperature=0.9, top_k=0, top_p=top_p, min_p=0.0)
    rng = np.random.default_rng(5)
    for trial in range(4):
        logits = rng.normal(0, 1.0 + trial, 6000).astype(np.float32)
        logits[rng.integers(0, 6000, 500)] = np.sort(logits)[-300]  # a tie group across the first partial sort's edge
        ours = settings.distribution(logits)
        np.testing.assert_allclose(ours, brute_force(logits.astype(np.float64), settings), rtol=1e-9, atol=1e-12)


def test_top_k_one_is_greedy_and_temperature_zero_has_no_distribution() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert SamplingSettings(temperature=5.0, top_k=1).distribution(logits).tolist() == [0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="greedy"):
        SamplingSettings().distribution(logits)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature must be"),
        ({"temperature": float("nan")}, "temperature must be"),
        ({"top_p": 0.0}, "top_p must lie in (0, 1]"),
        ({"top_p": 1.5}, "top_p must lie in (0, 1]"),
        ({"top_k": -1}, "top_k must be an int >= 0"),
        ({"top_k": 2.5}, "top_k must be an int >= 0"),
        ({"min_p": 1.0}, "min_p must lie in [0, 1)"),
        ({"min_p": -0.1}, "min_p must lie in [0, 1)"),
        ({"seed": -3}, "seed must be None or an int >= 0"),
    ],
)
def test_bad_settings_are_refused_in_one_line(kwargs, message) -> None:
    with pytest.raises(ValueError) as caught:
        SamplingSettings(**kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_seed_repeats_the_draws() -> None:
    first = [verify_position(P, 2, SamplingSettings(temperature=1.0, seed=5).generator()) for _ in range(3)]
    again = [verify_position(P, 2, SamplingSettings(temperature=1.0, seed=5).generator()) for _ in range(3)]
    assert first == again
