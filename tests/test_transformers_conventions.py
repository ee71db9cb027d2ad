"""``generate()`` resolves its options as ``model.generate`` does: the model's generation config, then the
caller's config, then keyword arguments; the same processors and warpers in the same order.

The processors transformers itself builds are captured through a ``custom_generate`` callable (the
public hook that receives them), so the comparison follows whatever the installed transformers does.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import LogitsProcessor, LogitsProcessorList, TopKLogitsWarper

from sam_decoding.drafters import PromptLookupDrafter, SamDrafter, TokenRecyclingDrafter
from sam_decoding.generation import generate
from sam_decoding.generation_config import logits_processors, resolve_generation_config
from sam_decoding.hf_integration import custom_generate
from conftest import TINY_PAD, TINY_VOCAB

PROMPT = torch.tensor([[3, 77, 14, 14, 52, 9, 30, 77, 14, 52, 9]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _transformers_processors(model: torch.nn.Module, **kwargs) -> LogitsProcessorList:
    """The processor list ``model.generate`` builds for ``kwargs`` (captured, nothing generated)."""
    captured: list[LogitsProcessorList] = []

    def capture(model, input_ids, logits_processor=None, **_):
        captured.append(logits_processor)
        return input_ids

    model.generate(PROMPT, pad_token_id=TINY_PAD, custom_generate=capture, **kwargs)
    return captured[0]


def _ours(model: torch.nn.Module, **kwargs) -> LogitsProcessorList:
    config, _ = resolve_generation_config(model, None, kwargs)
    max_new = kwargs.get("max_new_tokens", 20)
    return logits_processors(config, PROMPT.shape[1], PROMPT.shape[1] + max_new)


RICH_OPTIONS = [
    {"do_sample": False, "repetition_penalty": 1.3, "no_repeat_ngram_size": 3},
    {"do_sample": True},  # transformers' default top_k=50 applies
    {"do_sample": True, "top_k": 0, "temperature": 0.7},  # top_k=0: no top-k warper
    {"do_sample": True, "temperature": 0.8, "top_k": 7, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.2},
    {
        "do_sample": True, "min_new_tokens": 3, "bad_words_ids": [[5], [7, 8]], "suppress_tokens": [9],
        "begin_suppress_tokens": [10], "typical_p": 0.9, "epsilon_cutoff": 1e-4, "renormalize_logits": True,
        "sequence_bias": [[[11], 2.0]], "exponential_decay_length_penalty": (4, 1.1), "forced_eos_token_id": 1,
        "remove_invalid_values": True,
    },
]


@pytest.mark.parametrize("options", RICH_OPTIONS, ids=["greedy-penalties", "sample-defaults", "top-k-0", "sample-all", "everything"])
def test_processors_are_transformers_own_in_its_order(tiny_models, options) -> None:
    model = tiny_models[("llama", "sdpa")]
    theirs = _transformers_processors(model, max_new_tokens=12, **options)
    ours = _ours(model, max_new_tokens=12, **options)
    assert [type(p).__name__ for p in ours] == [type(p).__name__ for p in theirs]
    # Same parameters too: the processed scores agree on random logits after a prefix.
    generator = torch.Generator().manual_seed(0)
    sequence = torch.cat([PROMPT, torch.randint(2, TINY_VOCAB, (1, 4), generator=generator)], dim=1)
    scores = torch.randn(1, TINY_VOCAB, generator=generator)
    assert torch.equal(ours(sequence, scores.clone()), theirs(sequence, scores.clone()))


def test_sampling_adds_top_k_50_unless_disabled(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    top_k = [p for p in _ours(model, do_sample=True) if isinstance(p, TopKLogitsWarper)]
    assert len(top_k) == 1 and top_k[0].top_k == 50
    assert not any(isinstance(p, TopKLogitsWarper) for p in _ours(model, do_sample=True, top_k=0))
    assert not any(isinstance(p, TopKLogitsWarper) for p in _ours(model, do_sample=False, top_k=5))


@pytest.mark.parametrize(
    "options",
    [{"repetition_penalty": 1.5}, {"no_repeat_ngram_size": 2}, {"repetition_penalty": 0.7, "min_new_tokens": 5}],
    ids=["repetition-penalty", "no-repeat-ngram", "penalty-below-1+min-new"],
)
@pytest.mark.parametrize("drafter_name", ["default", "pld"])
def test_greedy_with_processors_equals_model_generate(tiny_model, options, drafter_name, assert_greedy_equal) -> None:
    reference = tiny_model.generate(PROMPT, max_new_tokens=40, do_sample=False, pad_token_id=TINY_PAD, eos_token_id=None, **options)
    drafter = None if drafter_name == "default" else SamDrafter(None, fallback=PromptLookupDrafter(), use_tree=False)
    ours = generate(tiny_model, PROMPT, max_new_tokens=40, eos_token_id=None, drafter=drafter, **options)
    assert_greedy_equal(tiny_model, ours.sequences, reference, f"{type(tiny_model).__name__}/{options}")
    through_hf = tiny_model.generate(
        PROMPT, max_new_tokens=40, do_sample=False, pad_token_id=TINY_PAD, eos_token_id=None,
        custom_generate=custom_generate, **options,
    )
    assert torch.equal(through_hf, ours.sequences)


def test_the_models_generation_config_is_the_base(tiny_models, assert_greedy_equal) -> None:
    model = copy.deepcopy(tiny_models[("qwen2", "sdpa")])
    model.generation_config.repetition_penalty = 1.4
    model.generation_config.max_new_tokens = 25
    model.generation_config.eos_token_id = None
    reference = model.generate(PROMPT, pad_token_id=TINY_PAD)
    ours = generate(model, PROMPT)
    assert ours.sequences.shape[1] == PROMPT.shape[1] + 25
    assert_greedy_equal(model, ours.sequences, reference, "model-generation-config")
    # Without the penalty the output changes: the test above would notice a config that was ignored.
    assert not torch.equal(generate(model, PROMPT, repetition_penalty=1.0).sequences, ours.sequences)


def test_a_generation_config_overrides_the_model_and_kwargs_override_it(tiny_models) -> None:
    model = copy.deepcopy(tiny_models[("gpt2", "sdpa")])
    model.generation_config.repetition_penalty = 1.4
    model.generation_config.eos_token_id = None
    config = GenerationConfig(max_new_tokens=18, no_repeat_ngram_size=2)
    reference = model.generate(PROMPT, config, pad_token_id=TINY_PAD)
    assert torch.equal(generate(model, PROMPT, config).sequences, reference)
    reference = model.generate(PROMPT, config, pad_token_id=TINY_PAD, max_new_tokens=9, repetition_penalty=1.0)
    assert torch.equal(generate(model, PROMPT, config, max_new_tokens=9, repetition_penalty=1.0).sequences, reference)
    assert model.generation_config.max_new_tokens is None, "the model's own config must not be modified"


def test_max_length_counts_the_prompt_and_the_default_is_20_new_tokens(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    assert generate(model, PROMPT, eos_token_id=[]).sequences.shape[1] == PROMPT.shape[1] + 20
    assert generate(model, PROMPT, max_length=PROMPT.shape[1] + 5, eos_token_id=[]).sequences.shape[1] == PROMPT.shape[1] + 5


@pytest.mark.parametrize(
    "options",
    [
        {"do_sample": True},
        {"do_sample": True, "temperature": 0.7, "top_p": 0.8},
        {"do_sample": True, "top_k": 0, "min_p": 0.1, "repetition_penalty": 1.3},
    ],
    ids=["defaults", "temperature-top-p", "min-p-penalty"],
)
def test_custom_generate_and_generate_agree_on_sampled_tokens(tiny_models, options) -> None:
    model = tiny_models[("llama", "sdpa")]
    ours = generate(
        model, PROMPT, max_new_tokens=30, eos_token_id=None, drafter=TokenRecyclingDrafter(),
        generator=torch.Generator().manual_seed(11), **options,
    ).sequences
    theirs = model.generate(
        PROMPT, max_new_tokens=30, eos_token_id=None, pad_token_id=TINY_PAD, custom_generate=custom_generate,
        drafter=TokenRecyclingDrafter(), generator=torch.Generator().manual_seed(11), **options,
    )
    assert torch.equal(ours, theirs)


class _Ban(LogitsProcessor):
    """Bans one token everywhere."""

    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[:, self.token] = -float("inf")
        return scores


def test_a_callers_processor_runs_after_the_built_ones_and_before_the_warpers(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    ban = _Ban(5)
    theirs = _transformers_processors(model, max_new_tokens=5, do_sample=True, repetition_penalty=1.2, logits_processor=LogitsProcessorList([ban]))
    config, _ = resolve_generation_config(model, None, {"do_sample": True, "repetition_penalty": 1.2})
    ours = logits_processors(config, PROMPT.shape[1], PROMPT.shape[1] + 5, extra=[ban])
    assert [type(p).__name__ for p in ours] == [type(p).__name__ for p in theirs]
    free = generate(model, PROMPT, max_new_tokens=30, eos_token_id=[]).new_tokens
    banned_token = int(free[3])
    out = generate(model, PROMPT, max_new_tokens=30, eos_token_id=[], logits_processor=[_Ban(banned_token)]).new_tokens
    assert banned_token not in out.tolist()


def test_stop_strings_need_the_tokenizer(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, PROMPT, max_new_tokens=4, stop_strings=["x"])


def test_the_output_is_an_ordinary_tensor_as_model_generate_returns(tiny_models) -> None:
    # generate runs in inference mode for speed; what it returns must still work with autograd.
    model = tiny_models[("llama", "sdpa")]
    result = generate(model, torch.tensor([[5, 6, 7, 5, 6]]), drafter=PromptLookupDrafter(), max_new_tokens=4, policy="all")
    assert not result.sequences.is_inference()
    try:
        model(result.sequences).logits.sum().backward()
    finally:
        model.zero_grad(set_to_none=True)
