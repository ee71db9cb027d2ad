"""Speculative sampling draws the first tokens from exactly ordinary sampling's joint distribution, for every built-in drafter.

For a tiny llama, the exact probability of every possible sequence of the first ``COUNT`` tokens is
computed by enumeration with transformers' own processors (repetition penalty, then temperature,
top-k and top-p, the order ``model.generate`` uses), independently of the engine's processor code.
Speculative runs with each drafter are compared against it with a chi-square test. Each drafter's
drafts must actually be accepted, and each test is shown to have teeth: the same test rejects a
biased acceptance rule (a second chance for a rejected draft token), a repetition penalty applied
twice, and a top-p that is ignored. Runs are seeded, so outcomes are deterministic.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from chi_square import chi_square_pvalue

from sam_decoding import speculation
from sam_decoding.automaton import StaticAutomaton
from sam_decoding.drafters import Drafter, ModelDrafter, PromptLookupDrafter, SamDrafter, TokenRecyclingDrafter
from sam_decoding.generation import generate
from sam_decoding.verification import StepInputs, walk

Outcome = tuple[int, ...]

COUNT = 3  # tokens per run whose joint distribution is tested
RUNS = 300  # samples per test: enough to reject every wrong variant below by orders of magnitude
PENALTY, TEMPERATURE, TOP_K, TOP_P = 1.3, 0.8, 4, 0.9
OPTIONS = {"do_sample": True, "repetition_penalty": PENALTY, "temperature": TEMPERATURE, "top_k": TOP_K, "top_p": TOP_P}
EXACT = 1e-3  # an exact sampler passes above this p-value
REJECT = 1e-5  # a wrong one must fall below this


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_models) -> torch.nn.Module:
    """The tiny llama with its output layer scaled up: a freshly initialized model's logits are ~0.1,
    its next-token distribution nearly uniform, and then neither the penalty nor top-p would matter."""
    sharp = copy.deepcopy(tiny_models[("llama", "sdpa")])
    with torch.no_grad():
        sharp.lm_head.weight.mul_(30.0)
    return sharp


@pytest.fixture(scope="module")
def prompt(model) -> torch.Tensor:
    """A seed plus the model's own greedy continuation (a cycle), so retrieval drafts predict likely tokens."""
    seed = torch.tensor([[17, 4, 61, 33, 8, 8, 25]])
    return model.generate(seed, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)


def reference_processors() -> LogitsProcessorList:
    return LogitsProcessorList(
        [RepetitionPenaltyLogitsProcessor(PENALTY), TemperatureLogitsWarper(TEMPERATURE), TopKLogitsWarper(TOP_K), TopPLogitsWarper(TOP_P)]
    )


def exact_outcomes(model: torch.nn.Module, prompt: torch.Tensor, eos: frozenset[int] = frozenset()) -> dict[Outcome, float]:
    """Probability of every sequence of the first ``COUNT`` tokens (shorter if it ends with EOS), by enumeration."""
    processors = reference_processors()
    out: dict[Outcome, float] = {}

    def expand(prefix: Outcome, p: float) -> None:
        sequence = torch.cat([prompt, torch.tensor([prefix], dtype=torch.long)], dim=1)
        with torch.no_grad():
            scores = processors(sequence, model(sequence).logits[:, -1].float())
        probs = torch.softmax(scores, dim=-1)[0]
        for token in torch.nonzero(probs).reshape(-1).tolist():
            outcome, q = prefix + (token,), p * float(probs[token])
            if len(outcome) == COUNT or token in eos:
                out[outcome] = q
            else:
                expand(outcome, q)

    expand((), 1.0)
    return out


def drafter_factories(model: torch.nn.Module, prompt: torch.Tensor, exact: dict[Outcome, float]) -> dict[str, Callable[[], Drafter]]:
    """Each built-in drafter, set up so that its drafts are often right. Returns fresh-per-run factories
    (Token Recycling keeps one instance: its table learns across runs, as in a session)."""
    # A corpus holding the prompt followed by its five likeliest continuations: the static
    # automaton matches the whole prompt and drafts a tree that branches where they differ.
    likeliest = sorted(exact, key=exact.get, reverse=True)[:5]
    corpus = StaticAutomaton.build([prompt[0].tolist() + list(outcome) for outcome in likeliest])
    recycling = TokenRecyclingDrafter(max_nodes=16)
    return {
        "prompt_lookup": lambda: PromptLookupDrafter(),
        "token_recycling": lambda: recycling,
        "sam_static_tree": lambda: SamDrafter(corpus, use_tree=True),
        "model": lambda: ModelDrafter(model, num_tokens=COUNT),
    }


DRAFTERS = ("prompt_lookup", "token_recycling", "sam_static_tree", "model")


def sample(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    make_drafter: Callable[[], Drafter],
    *,
    runs: int = RUNS,
    eos: frozenset[int] = frozenset(),
    policy: object = "all",
    **overrides: object,
) -> tuple[Counter[Outcome], int]:
    """Observed first-token sequences of ``runs`` seeded speculative runs, and the draft tokens accepted in all."""
    generator = torch.Generator().manual_seed(2024)
    observed: Counter[Outcome] = Counter()
    accepted = 0
    for _ in range(runs):
        result = generate(
            model, prompt, max_new_tokens=COUNT, drafter=make_drafter(), generator=generator,
            eos_token_id=sorted(eos), policy=policy, **{**OPTIONS, **overrides},
        )
        observed[tuple(result.new_tokens.tolist())] += 1
        accepted += result.stats.accepted_tokens
    return observed, accepted


@pytest.fixture(scope="module")
def exact(model, prompt) -> dict[Outcome, float]:
    return exact_outcomes(model, prompt)


@pytest.mark.parametrize("drafter_name", DRAFTERS)
def test_speculative_sampling_is_exact(model, prompt, exact, drafter_name) -> None:
    make = drafter_factories(model, prompt, exact)[drafter_name]
    observed, accepted = sample(model, prompt, make)
    assert accepted >= RUNS // 3, f"{drafter_name}: drafts must be accepted for this test to mean anything ({accepted})"
    assert chi_square_pvalue(observed, exact) > EXACT


@pytest.mark.parametrize("drafter_name", ["prompt_lookup", "sam_static_tree"])
def test_speculative_sampling_is_exact_with_eos_inside_drafts(model, prompt, exact, drafter_name) -> None:
    # EOS = the likeliest second token: the static tree (built from the likeliest outcomes) drafts it
    # at depth 2, so runs end inside a draft; prompt lookup drafts it whenever it follows in the prompt.
    second: Counter[int] = Counter()
    for outcome, p in exact.items():
        second[outcome[1]] += p
    eos = frozenset({second.most_common(1)[0][0]})
    expected = exact_outcomes(model, prompt, eos)
    make = drafter_factories(model, prompt, exact)[drafter_name]
    observed, accepted = sample(model, prompt, make, eos=eos)
    assert sum(n for outcome, n in observed.items() if len(outcome) < COUNT) >= RUNS // 10, "EOS must end runs early"
    assert accepted > 0
    assert chi_square_pvalue(observed, expected) > EXACT


def test_the_cost_aware_policy_keeps_sampling_exact(model, prompt, exact) -> None:
    make = drafter_factories(model, prompt, exact)["sam_static_tree"]
    observed, _ = sample(model, prompt, make, policy="cost")
    assert chi_square_pvalue(observed, exact) > EXACT


# --- The same test rejects wrong samplers -------------------------------------------------------


def _draft_children(inputs: StepInputs, node: int) -> list[int]:
    """Tokens of the draft children of input ``node`` (a chain has at most one)."""
    if inputs.children is None:
        tokens = inputs.input_ids[0].tolist()
        return [tokens[node + 1]] if node + 1 < len(tokens) else []
    return [token for (parent, token) in inputs.children if parent == node]


def second_chance_walk(inputs: StepInputs, choose: Callable[[int], int], stop: Callable[[int], bool]) -> tuple[list[int], list[int]]:
    """Wrong on purpose: while the target's sample matches no draft child, draw again, up to three
    draws in all (a plausible way to "boost" acceptance; it favours drafted tokens)."""

    def choose_again(node: int) -> int:
        children = _draft_children(inputs, node)
        token = choose(node)
        for _ in range(2):
            if not children or token in children:
                break
            token = choose(node)
        return token

    return walk(inputs, choose_again, stop)


@pytest.mark.parametrize("drafter_name", DRAFTERS)
def test_chi_square_rejects_a_biased_acceptance_rule(model, prompt, exact, drafter_name, monkeypatch) -> None:
    monkeypatch.setattr(speculation, "walk", second_chance_walk)
    make = drafter_factories(model, prompt, exact)[drafter_name]
    observed, _ = sample(model, prompt, make)
    assert chi_square_pvalue(observed, exact) < REJECT


class _PenaltyAgain(RepetitionPenaltyLogitsProcessor):
    """Wrong on purpose: a second repetition penalty (a distinct type, so it is not merged with the built one)."""


@pytest.mark.parametrize(
    "wrong",
    [{"logits_processor": [_PenaltyAgain(PENALTY)]}, {"top_p": 1.0}, {"repetition_penalty": 1.0}],
    ids=["penalty-applied-twice", "top-p-ignored", "penalty-ignored"],
)
def test_chi_square_rejects_wrong_processors(model, prompt, exact, wrong) -> None:
    make = drafter_factories(model, prompt, exact)["sam_static_tree"]
    observed, _ = sample(model, prompt, make, **wrong)
    assert chi_square_pvalue(observed, exact) < REJECT
