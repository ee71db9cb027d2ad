"""Invalid requests fail early with clear errors instead of generating something wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_decoding.drafters import (
    Draft,
    Drafter,
    PromptLookupDrafter,
    SamDrafter,
    TokenRecyclingDrafter,
    Verified,
)
from sam_decoding.generation import generate
from sam_decoding.verification import UnsupportedModelError

PROMPT = torch.tensor([[4, 8, 15, 16, 23, 42]])


@pytest.fixture
def model(tiny_models):
    return tiny_models[("llama", "sdpa")]


def test_batch_larger_than_one(model) -> None:
    with pytest.raises(ValueError, match="batch size 1"):
        generate(model, PROMPT.repeat(3, 1), max_new_tokens=4)


@pytest.mark.parametrize("bad", [-1, -100])
def test_negative_max_new_tokens(model, bad: int) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, PROMPT, max_new_tokens=bad)


@pytest.mark.parametrize("bad", [2.5, "7", True])
def test_non_integer_max_new_tokens(model, bad) -> None:
    with pytest.raises(TypeError, match="max_new_tokens"):
        generate(model, PROMPT, max_new_tokens=bad)


def test_zero_new_tokens_returns_the_prompt(model) -> None:
    result = generate(model, PROMPT, max_new_tokens=0)
    assert torch.equal(result.sequences, PROMPT) and result.stats.steps == 0


@pytest.mark.parametrize("prompt", [torch.zeros((1, 0), dtype=torch.long), torch.zeros((1, 2, 3), dtype=torch.long)])
def test_bad_prompt_shapes(model, prompt) -> None:
    with pytest.raises(ValueError):
        generate(model, prompt, max_new_tokens=2)


def test_float_prompt(model) -> None:
    with pytest.raises(TypeError, match="integer"):
        generate(model, PROMPT.float(), max_new_tokens=2)


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0.0}, {"temperature": -1.0}, {"top_k": -1}, {"top_k": 2.5}, {"top_p": 0.0}, {"top_p": 1.5}, {"min_p": 1.5}],
)
def test_bad_sampling_parameters(model, kwargs) -> None:
    with pytest.raises(ValueError):
        generate(model, PROMPT, max_new_tokens=2, do_sample=True, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"repetition_penalty": 0.0}, {"no_repeat_ngram_size": -1}, {"max_length": 3}, {"num_beams": 2}, {"guidance_scale": 1.5}],
)
def test_bad_or_unsupported_generation_options(model, kwargs) -> None:
    with pytest.raises(ValueError):
        generate(model, PROMPT, **kwargs)


@pytest.mark.parametrize("kwargs", [{"max_new_token": 4}, {"top_q": 0.5}, {"use_model_defaults": True, "foo": 1}])
def test_unknown_keyword_arguments_are_a_type_error(model, kwargs) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        generate(model, PROMPT, **kwargs)


def test_generation_config_must_be_a_generation_config(model) -> None:
    with pytest.raises(TypeError, match="GenerationConfig"):
        generate(model, PROMPT, {"max_new_tokens": 4})


def test_padded_attention_mask_is_refused(model) -> None:
    mask = torch.ones_like(PROMPT)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="padded"):
        generate(model, PROMPT, attention_mask=mask, max_new_tokens=2)


def test_not_a_drafter(model) -> None:
    with pytest.raises(TypeError, match="Drafter"):
        generate(model, PROMPT, max_new_tokens=2, drafter=object())


def test_flash_attention_model_refuses_tree_drafters_but_runs_chains(tiny_models) -> None:
    model = tiny_models[("qwen2", "sdpa")]
    original = model.config._attn_implementation
    # Pretend the model was loaded with flash attention (not installable on this CPU machine).
    model.config._attn_implementation_internal = "flash_attention_2"
    try:
        assert model.config._attn_implementation == "flash_attention_2"
        with pytest.raises(UnsupportedModelError, match="4-D mask"):
            generate(model, PROMPT, max_new_tokens=4, drafter=TokenRecyclingDrafter())
        with pytest.raises(UnsupportedModelError, match="4-D mask"):
            generate(model, PROMPT, max_new_tokens=4)
    finally:
        model.config._attn_implementation_internal = original
    chain_only = SamDrafter(None, fallback=PromptLookupDrafter(), use_tree=False)
    assert not chain_only.proposes_trees


class LyingDrafter(Drafter):
    """Claims to draft chains only but returns a tree."""

    def begin(self, prompt_ids: np.ndarray) -> None:
        pass

    def propose(self, max_tokens: int) -> Draft:
        return Draft(np.array([1, 2], dtype=np.int64), np.array([-1, -1], dtype=np.int32), "liar")

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        pass


class OutOfVocabularyDrafter(LyingDrafter):
    def propose(self, max_tokens: int) -> Draft:
        return Draft.chain([10_000], "oov")


def test_malformed_drafts_from_a_custom_drafter(model) -> None:
    with pytest.raises(ValueError, match="draft tokens"):
        generate(model, PROMPT, max_new_tokens=4, drafter=OutOfVocabularyDrafter())
