"""Greedy speculative generation equals ``model.generate(do_sample=False)`` token for token, for every drafter."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sam_decoding import StaticAutomaton
from sam_decoding.drafters import (
    Drafter,
    ModelDrafter,
    PromptLookupDrafter,
    SamDrafter,
    TokenRecyclingDrafter,
)
from sam_decoding.generation import generate
from conftest import TINY_PAD, TINY_VOCAB

NEW_TOKENS = 48


def _prompts() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    prompts = {f"random{i}": torch.randint(2, TINY_VOCAB, (1, 5 + 9 * i), generator=generator) for i in range(2)}
    pattern = torch.randint(2, TINY_VOCAB, (7,), generator=generator)
    prompts["repetitive"] = pattern.repeat(6).unsqueeze(0)
    prompts["single_token"] = torch.tensor([[5]])
    return prompts


PROMPTS = _prompts()


def _vanilla(model: torch.nn.Module, prompt: torch.Tensor, eos: list[int], new_tokens: int = NEW_TOKENS) -> torch.Tensor:
    return model.generate(
        prompt, max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos or None, pad_token_id=TINY_PAD
    )


def _drafters(draft_model: torch.nn.Module, corpus: torch.Tensor) -> dict[str, Callable[[], Drafter | None]]:
    return {
        "default": lambda: None,
        "sam_chain_pld": lambda: SamDrafter(None, fallback=PromptLookupDrafter(), use_tree=False),
        "sam_static_tree": lambda: SamDrafter(
            StaticAutomaton.build([corpus[0].numpy()]), fallback=TokenRecyclingDrafter()
        ),
        "sam_static_chain": lambda: SamDrafter(StaticAutomaton.build([corpus[0].numpy()]), use_tree=False),
        "token_recycling": lambda: TokenRecyclingDrafter(max_nodes=24),
        "prompt_lookup": lambda: PromptLookupDrafter(),
        "model": lambda: ModelDrafter(draft_model, num_tokens=4),
    }


@pytest.mark.parametrize("prompt_name", sorted(PROMPTS))
@pytest.mark.parametrize("stop", ["length", "eos"])
def test_every_drafter_matches_vanilla_greedy(tiny_model, tiny_models, prompt_name, stop, assert_greedy_equal) -> None:
    prompt = PROMPTS[prompt_name]
    eos: list[int] = []
    reference = _vanilla(tiny_model, prompt, eos)
    if stop == "eos":
        # Make a token the model really produces (the 8th new one) the EOS, so generation stops mid-draft.
        eos = [int(reference[0, prompt.shape[1] + 7])]
        reference = _vanilla(tiny_model, prompt, eos)
    # An unrelated tiny model drafts for ModelDrafter (same vocabulary, different weights).
    draft_model = tiny_models[("gpt2", "sdpa")] if tiny_model is not tiny_models[("gpt2", "sdpa")] else tiny_models[("llama", "sdpa")]
    for name, make in _drafters(draft_model, reference).items():
        result = generate(tiny_model, prompt, max_new_tokens=NEW_TOKENS, drafter=make(), eos_token_id=eos)
        where = f"{type(tiny_model).__name__}/{prompt_name}/{stop}/{name}"
        assert_greedy_equal(tiny_model, result.sequences, reference, where)
        stats = result.stats
        assert stats.new_tokens == result.sequences.shape[1] - prompt.shape[1]
        assert stats.accepted_tokens + stats.steps >= stats.new_tokens
        assert stats.accepted_tokens == sum(stats.accepted_by_source.values())


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_eager_attention_matches_vanilla(tiny_models, family, assert_greedy_equal) -> None:
    model = tiny_models[(family, "eager")]
    for name, prompt in PROMPTS.items():
        reference = _vanilla(model, prompt, [])
        result = generate(model, prompt, max_new_tokens=NEW_TOKENS, eos_token_id=[])
        assert_greedy_equal(model, result.sequences, reference, f"{family}-eager/{name}")


def test_repetitive_prompt_accepts_long_drafts(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    prompt = PROMPTS["repetitive"]
    reference = _vanilla(model, prompt, [])
    drafter = SamDrafter(StaticAutomaton.build([reference[0].numpy()]), use_tree=False, min_probability=0.0)
    # policy="all": every drafted token is verified, so MAT shows the drafts themselves (the policy's
    # sizing depends on the machine's timings).
    result = generate(model, prompt, max_new_tokens=NEW_TOKENS, drafter=drafter, eos_token_id=[], policy="all")
    assert torch.equal(result.sequences, reference)
    # The corpus holds the exact continuation: far more than one token per step.
    assert result.stats.mean_accepted_tokens > 4


def test_max_new_tokens_inside_a_draft_ends_exactly_there(tiny_models) -> None:
    model = tiny_models[("qwen2", "sdpa")]
    prompt = PROMPTS["repetitive"]
    reference = _vanilla(model, prompt, [], new_tokens=40)
    for limit in (0, 1, 2, 3, 17):
        drafter = SamDrafter(StaticAutomaton.build([reference[0].numpy()]), use_tree=False, min_probability=0.0)
        result = generate(model, prompt, max_new_tokens=limit, drafter=drafter, eos_token_id=[])
        assert torch.equal(result.sequences, reference[:, : prompt.shape[1] + limit])
        assert result.stats.new_tokens == limit


REAL_PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number, then explain it.",
    "List the planets of the solar system in order, one per line, with one fact each.",
]


@pytest.fixture(scope="module")
def real_references(default_model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for text in REAL_PROMPTS:
        ids = default_model.chat_ids(text)
        out[text] = (ids, default_model.model.generate(ids, max_new_tokens=40, do_sample=False))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("drafter_name", ["default", "sam_chain_pld", "sam_static_tree"])
def test_default_model_matches_vanilla_greedy(default_model, real_references, drafter_name, assert_greedy_equal) -> None:
    model = default_model.model
    # The default drafter runs on both prompts, the others on one: a real-model step costs ~0.1 s.
    items = list(real_references.items())
    for text, (ids, reference) in items if drafter_name == "default" else items[:1]:
        if drafter_name == "default":
            drafter = None
        elif drafter_name == "sam_chain_pld":
            drafter = SamDrafter(None, fallback=PromptLookupDrafter(), use_tree=False)
        else:
            # A corpus that holds the other prompt's answer: static drafts are offered, mostly wrong.
            other = [ref for t, (_, ref) in real_references.items() if t != text][0]
            drafter = SamDrafter(StaticAutomaton.build([other[0].numpy()]), fallback=TokenRecyclingDrafter())
        result = generate(model, ids, max_new_tokens=40, drafter=drafter)
        assert_greedy_equal(model, result.sequences, reference, f"smollm2/{drafter_name}/{text[:20]}")
