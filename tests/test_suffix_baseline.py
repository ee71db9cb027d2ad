"""SuffixDecoding (arctic-inference) as a baseline drafter: lossless in our loop, its estimates, learning or not."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from sam_decoding import StaticAutomaton
from sam_decoding.benchmark.suffix_decoding import (
    SuffixDecodingDrafter,
    SuffixDecodingUnavailable,
    conditional_probabilities,
    is_available,
    unavailable_message,
)
from sam_decoding.generation import generate
from conftest import TINY_PAD, TINY_VOCAB

needs_suffix = pytest.mark.skipif(not is_available(), reason=unavailable_message())
NEW_TOKENS = 40


def _vanilla(model: torch.nn.Module, prompt: torch.Tensor, eos: list[int]) -> torch.Tensor:
    return model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos or None, pad_token_id=TINY_PAD)


def _prompts() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    pattern = torch.randint(2, TINY_VOCAB, (6,), generator=generator)
    return {"random": torch.randint(2, TINY_VOCAB, (1, 23), generator=generator), "repetitive": pattern.repeat(5).unsqueeze(0)}


@needs_suffix
@pytest.mark.parametrize("use_tree", [False, True], ids=["chain", "tree"])
@pytest.mark.parametrize("stop", ["length", "eos"])
@pytest.mark.parametrize("policy", ["all", "cost"], ids=["every-node", "policy"])
def test_suffix_drafts_are_verified_losslessly(tiny_model, one_torch_thread, use_tree, stop, policy, assert_greedy_equal) -> None:
    for name, prompt in _prompts().items():
        eos: list[int] = []
        reference = _vanilla(tiny_model, prompt, eos)
        if stop == "eos":
            eos = [int(reference[0, prompt.shape[1] + 9])]
            reference = _vanilla(tiny_model, prompt, eos)
        # The corpus holds part of the answer (so drafts are accepted) and unrelated text (so some are not).
        noise = torch.randint(2, TINY_VOCAB, (60,), generator=torch.Generator().manual_seed(3))
        documents = [reference[0, prompt.shape[1] : prompt.shape[1] + 20].numpy(), noise.numpy()]
        drafter = SuffixDecodingDrafter(documents, use_tree=use_tree)
        result = generate(tiny_model, prompt, max_new_tokens=NEW_TOKENS, drafter=drafter, eos_token_id=eos, policy=policy)
        assert_greedy_equal(tiny_model, result.sequences, reference, f"{type(tiny_model).__name__}/{name}/{stop}")
        assert set(result.stats.drafted_by_source) <= {"suffix", "none"}


@needs_suffix
def test_suffix_drafts_from_its_corpus_are_accepted(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    prompt = _prompts()["random"]
    reference = _vanilla(model, prompt, [])
    drafter = SuffixDecodingDrafter([reference[0].numpy()])
    result = generate(model, prompt, max_new_tokens=NEW_TOKENS, drafter=drafter, eos_token_id=[], policy="all")
    assert torch.equal(result.sequences, reference)
    # The corpus holds the whole answer: every step but the first few accepts a long draft.
    assert result.stats.mean_accepted_tokens > 4
    assert result.stats.accepted_by_source["suffix"] > NEW_TOKENS // 2


@needs_suffix
@pytest.mark.parametrize("use_tree", [False, True], ids=["chain", "tree"])
def test_probabilities_are_child_count_ratios(use_tree) -> None:
    # After "7 8": 9 follows three times, 5 once, so P(9) = 3/4; after "7 8 9": 10 twice, 11 once.
    documents = [[7, 8, 9, 10], [7, 8, 9, 10], [7, 8, 9, 11], [7, 8, 5]]
    drafter = SuffixDecodingDrafter(documents, use_tree=use_tree, min_token_prob=0.0, max_spec_factor=4.0)
    drafter.begin(np.array([40, 7, 8], dtype=np.int64))
    draft = drafter.propose(16)
    assert draft.source == "suffix" and draft.match_length == 2
    expected = {(-1, 9): 3 / 4, (-1, 5): 1 / 4}
    expected_child = {10: 2 / 3, 11: 1 / 3}
    parents = draft.parents if draft.parents is not None else np.arange(len(draft)) - 1
    for index, (token, parent) in enumerate(zip(draft.tokens.tolist(), parents.tolist())):
        if parent == -1:
            assert draft.probabilities[index] == pytest.approx(expected[(-1, token)], rel=1e-6)
        else:
            assert draft.tokens[parent] == 9
            assert draft.probabilities[index] == pytest.approx(expected_child[token], rel=1e-6)
    # The chain is the most frequent path; the tree holds every continuation.
    assert draft.tokens.tolist()[:2] == [9, 10]
    assert len(draft) == (4 if use_tree else 2)


def test_conditional_probabilities_divide_by_the_parent_path() -> None:
    path = [0.8, 0.4, 0.2, 0.1]
    parents = [-1, 0, 1, 0]
    assert conditional_probabilities(path, parents) == pytest.approx([0.8, 0.5, 0.5, 0.125])


@needs_suffix
@pytest.mark.parametrize("learn", [False, True])
def test_learning_keeps_finished_responses_only_when_asked(learn) -> None:
    drafter = SuffixDecodingDrafter([[50, 51, 52]], learn=learn)
    drafter.begin(np.array([3, 4], dtype=np.int64))
    drafter.accept(np.array([20, 21, 22, 23, 24, 25], dtype=np.int64), None)
    drafter.finish()
    # An unfinished request (its run raised) is never learned, even when learning.
    drafter.begin(np.array([5, 6], dtype=np.int64))
    drafter.accept(np.array([30, 31, 32, 33, 34, 35], dtype=np.int64), None)
    drafter.begin(np.array([9, 20, 21, 22], dtype=np.int64))
    assert drafter.cached_responses == (2 if learn else 1)
    learned = drafter.propose(16).tokens.tolist()
    assert learned == ([23, 24, 25] if learn else [])
    drafter.begin(np.array([9, 30, 31, 32], dtype=np.int64))
    assert drafter.propose(16).tokens.tolist() == []
    # The corpus stays for every request.
    drafter.begin(np.array([8, 50, 51], dtype=np.int64))
    assert drafter.propose(16).tokens.tolist() == [52]


def test_missing_package_is_one_line_naming_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "arctic_inference.suffix_decoding", None)
    assert not is_available()
    with pytest.raises(SuffixDecodingUnavailable) as error:
        SuffixDecodingDrafter([])
    message = str(error.value)
    assert "\n" not in message
    assert "PIP_CONSTRAINT=" in message and "pip install arctic-inference==0.3.0" in message


@needs_suffix
@pytest.mark.parametrize("serving", [False, True])
def test_bench_method_learns_only_when_serving_and_never_from_its_warm_up(tiny_models, serving) -> None:
    from sam_decoding.benchmark.methods import suffix_method

    model = tiny_models[("llama", "sdpa")]
    prompts = _prompts()
    documents = [[5, 6, 7, 8]]
    method = suffix_method("suffix-tree", documents, serving=serving, policy=None)
    method.warm_up(model, prompts["repetitive"], max_new_tokens=8, eos=[])
    drafter = method._drafter
    assert drafter.cached_responses == 1
    outcome = method.run(model, prompts["random"], max_new_tokens=NEW_TOKENS, eos=[])
    assert outcome.tokens == _vanilla(model, prompts["random"], [])[0, prompts["random"].shape[1] :].tolist()
    assert drafter.cached_responses == (2 if serving else 1)
    # Answering the same request again: a server that learned drafts the whole answer from its tree.
    again = method.run(model, prompts["random"], max_new_tokens=NEW_TOKENS, eos=[])
    assert again.tokens == outcome.tokens
    assert (again.forward_passes < outcome.forward_passes / 2) == serving


def test_response_cache_methods_learn_from_runs_but_not_from_their_warm_up(tiny_models) -> None:
    from sam_decoding.benchmark.methods import cache_methods

    model = tiny_models[("qwen2", "sdpa")]
    prompts = _prompts()
    # A corpus with a tokenizer fingerprint: the cache must hold ids of the same tokenizer.
    corpus = StaticAutomaton.build([[5, 6, 7, 8]], tokenizer_fingerprint="toy-tokenizer")
    method = cache_methods(corpus, lambda: None, "no policy")["sam+cache"]()
    responses = method._make_drafter().responses
    method.warm_up(model, prompts["repetitive"], max_new_tokens=8, eos=[])
    assert responses.num_responses == 0
    outcome = method.run(model, prompts["random"], max_new_tokens=NEW_TOKENS, eos=[])
    assert outcome.tokens == _vanilla(model, prompts["random"], [])[0, prompts["random"].shape[1] :].tolist()
    assert responses.num_responses == 1 and responses.num_tokens == NEW_TOKENS
    again = method.run(model, prompts["random"], max_new_tokens=NEW_TOKENS, eos=[])
    assert again.tokens == outcome.tokens
    assert again.forward_passes < outcome.forward_passes / 2
