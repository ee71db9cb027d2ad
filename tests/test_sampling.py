"""Speculative sampling draws from exactly the ordinary sampling distribution (chi-square goodness of fit).

Drafts are deterministic given the context, so sampling the target at each node and descending
while the sample equals a draft child is exact. The tests compare observed frequencies of the
first tokens with probabilities computed exactly from the model, and check that the same test
rejects a deliberately biased acceptance rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from chi_square import chi_square_pvalue as shared_chi_square_pvalue
from sam_decoding.drafters import Draft, ModelDrafter, TokenRecyclingDrafter
from sam_decoding.generation import generate
from sam_decoding.verification import build_step_inputs, walk

Outcome = tuple[int, ...]


def chi_square_pvalue(observed: Counter[Outcome], expected: dict[Outcome, float]) -> float:
    """The shared chi-square p-value, failing outright (not with p = 0) on an impossible outcome."""
    assert set(observed) <= set(expected), f"impossible outcomes observed: {set(observed) - set(expected)}"
    return shared_chi_square_pvalue(observed, expected)


# A fixed tree over a vocabulary of 6 tokens, and fixed per-input logits.
TREE = Draft(np.array([2, 0, 3, 1, 4], dtype=np.int64), np.array([-1, -1, 0, 0, 2], dtype=np.int32), "fixed")
LOGITS = torch.log(
    torch.tensor(
        [
            [0.10, 0.05, 0.45, 0.05, 0.05, 0.30],  # root: children 2 (node 0) and 0 (node 1)
            [0.20, 0.30, 0.10, 0.25, 0.10, 0.05],  # after 2: children 3 (node 2), 1 (node 3)
            [0.05, 0.05, 0.30, 0.30, 0.20, 0.10],  # after 0: no children
            [0.15, 0.15, 0.15, 0.15, 0.25, 0.15],  # after 2,3: child 4 (node 4)
            [0.50, 0.10, 0.10, 0.10, 0.10, 0.10],  # after 2,1
            [0.05, 0.05, 0.05, 0.05, 0.05, 0.75],  # after 2,3,4
        ]
    )
)


def _exact_outcomes() -> dict[Outcome, float]:
    """Probability of every emitted token sequence of one tree step, by enumeration."""
    inputs = build_step_inputs(7, TREE, 0, dtype=torch.float32, device=torch.device("cpu"))
    probs = torch.softmax(LOGITS, dim=-1).tolist()
    out: dict[Outcome, float] = {}

    def expand(node: int, prefix: Outcome, p: float) -> None:
        for token, q in enumerate(probs[node]):
            child = inputs.child(node, token)
            if child is None:
                out[prefix + (token,)] = p * q
            else:
                expand(child, prefix + (token,), p * q)

    expand(0, (), 1.0)
    return out


def _run_walks(choose_factory: Callable[[torch.Generator], Callable[[int], int]], samples: int) -> Counter[Outcome]:
    inputs = build_step_inputs(7, TREE, 0, dtype=torch.float32, device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(2024)
    choose = choose_factory(generator)
    return Counter(tuple(walk(inputs, choose, lambda token: False)[0]) for _ in range(samples))


def _exact_sampler(generator: torch.Generator) -> Callable[[int], int]:
    probs = torch.softmax(LOGITS, dim=-1)
    return lambda node: int(torch.multinomial(probs[node], 1, generator=generator))


def _biased_sampler(generator: torch.Generator) -> Callable[[int], int]:
    """Wrong on purpose: takes the first draft child whenever there is one, without sampling."""
    probs = torch.softmax(LOGITS, dim=-1)
    first_child = {0: 2, 1: 3, 3: 4}
    return lambda node: first_child.get(node, int(torch.multinomial(probs[node], 1, generator=generator)))


def _mildly_biased_sampler(generator: torch.Generator) -> Callable[[int], int]:
    """Wrong on purpose: accepts a draft child with its own probability, else samples again from all tokens."""
    probs = torch.softmax(LOGITS, dim=-1)
    first_child = {0: 2, 1: 3, 3: 4}

    def choose(node: int) -> int:
        child = first_child.get(node)
        if child is not None and float(torch.rand(1, generator=generator)) < float(probs[node, child]):
            return child
        return int(torch.multinomial(probs[node], 1, generator=generator))

    return choose


def test_tree_walk_sampling_matches_the_exact_distribution() -> None:
    pvalue = chi_square_pvalue(_run_walks(_exact_sampler, 20000), _exact_outcomes())
    assert pvalue > 1e-3


@pytest.mark.parametrize("sampler", [_biased_sampler, _mildly_biased_sampler], ids=["greedy-accept", "double-chance"])
def test_chi_square_rejects_biased_acceptance(sampler) -> None:
    pvalue = chi_square_pvalue(_run_walks(sampler, 20000), _exact_outcomes())
    assert pvalue < 1e-6


TEMPERATURE = 0.8
TOP_K = 3
PROMPT = torch.tensor([[17, 4, 61, 33, 8, 8, 25]])


def _exact_first_tokens(model: torch.nn.Module, count: int) -> dict[Outcome, float]:
    """Exact probability of each possible first ``count`` sampled tokens under temperature + top-k."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(TEMPERATURE), TopKLogitsWarper(TOP_K)])
    out: dict[Outcome, float] = {}

    def expand(prefix: Outcome, p: float) -> None:
        sequence = torch.cat([PROMPT, torch.tensor([prefix], dtype=torch.long)], dim=1)
        with torch.no_grad():
            scores = warpers(sequence, model(sequence).logits[:, -1].float())
        probs = torch.softmax(scores, dim=-1)[0]
        for token in torch.nonzero(probs).reshape(-1).tolist():
            q = float(probs[token])
            if len(prefix) + 1 == count:
                out[prefix + (token,)] = p * q
            else:
                expand(prefix + (token,), p * q)

    expand((), 1.0)
    return out


@pytest.mark.parametrize("drafter_name", ["self_chain", "token_recycling_tree"])
def test_speculative_sampling_matches_ordinary_sampling(tiny_models, drafter_name: str) -> None:
    model = tiny_models[("llama", "sdpa")]
    count, runs = 3, 400
    expected = _exact_first_tokens(model, count)
    # The model drafting for itself (greedy) gets long drafts accepted; Token Recycling drafts trees
    # and its table is kept across the runs.
    drafter = ModelDrafter(model, num_tokens=3) if drafter_name == "self_chain" else TokenRecyclingDrafter(max_nodes=16)
    generator = torch.Generator().manual_seed(99)
    observed: Counter[Outcome] = Counter()
    accepted = 0
    for _ in range(runs):
        result = generate(
            model, PROMPT, max_new_tokens=count, drafter=drafter, do_sample=True, temperature=TEMPERATURE,
            top_k=TOP_K, generator=generator, eos_token_id=[],
            # Every drafted node is verified: whether the cost-aware policy would verify this
            # self-draft depends on the machine's timings, and this test is about acceptance itself.
            policy="all",
        )
        observed[tuple(result.new_tokens.tolist())] += 1
        accepted += result.stats.accepted_tokens
    assert accepted > runs // 4, "drafts must actually be accepted for this test to mean anything"
    assert chi_square_pvalue(observed, expected) > 1e-3


def test_sampling_is_reproducible_with_a_generator(tiny_models) -> None:
    model = tiny_models[("qwen2", "sdpa")]
    runs = [
        generate(model, PROMPT, max_new_tokens=20, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(5), eos_token_id=[]).sequences
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
