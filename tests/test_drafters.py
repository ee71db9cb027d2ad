"""Each built-in drafter against a brute-force reference or its documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sam_decoding import StaticAutomaton
from sam_decoding.drafters import (
    Draft,
    Drafter,
    ModelDrafter,
    PromptLookupDrafter,
    SamDrafter,
    TokenRecyclingDrafter,
    TreeTemplate,
    Verified,
)
from sam_decoding.drafters.token_recycling import largest_entries


def _brute_force_lookup(context: list[int], max_ngram: int, min_ngram: int, num_tokens: int) -> list[int]:
    for n in range(min(max_ngram, len(context) - 1), min_ngram - 1, -1):
        pattern = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start : start + n] == pattern:
                return context[start + n : start + n + num_tokens]
    return []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=40),
    st.lists(st.integers(0, 4), max_size=10),
    st.integers(1, 4),
    st.integers(1, 12),
)
def test_prompt_lookup_matches_brute_force(prompt: list[int], appended: list[int], max_ngram: int, limit: int) -> None:
    drafter = PromptLookupDrafter(max_ngram=max_ngram, min_ngram=1, num_tokens=8)
    drafter.begin(np.array(prompt, dtype=np.int64))
    if appended:
        drafter.accept(np.array(appended, dtype=np.int64), None)
    draft = drafter.propose(limit)
    assert draft.is_chain and draft.source == "prompt_lookup"
    assert draft.tokens.tolist() == _brute_force_lookup(prompt + appended, max_ngram, 1, min(8, limit))


def test_tree_template_is_breadth_first_and_bounded() -> None:
    template = TreeTemplate.best_first(40, top_k=6, max_depth=5)
    assert len(template) == 40
    assert np.all(np.diff(template.depth) >= 0)
    assert template.depth.max() <= 5 and template.ranks.max() < 6
    assert np.all(template.parents < np.arange(40))
    # Siblings use distinct ranks, so they draft distinct tokens.
    pairs = list(zip(template.parents.tolist(), template.ranks.tolist()))
    assert len(set(pairs)) == len(pairs)


def test_token_recycling_expands_its_table() -> None:
    vocab, k = 10, 3
    drafter = TokenRecyclingDrafter(top_k=k, max_nodes=12, max_depth=3)
    drafter.begin(np.array([4], dtype=np.int64))
    assert len(drafter.propose(5)) == 0, "an empty table drafts nothing"
    # Logits whose top-3 after token t are t+1, t+2, t+3 (mod vocab).
    tokens = torch.arange(vocab)
    logits = torch.zeros(vocab, vocab)
    for t in range(vocab):
        for rank in range(k):
            logits[t, (t + 1 + rank) % vocab] = 10.0 - rank
    drafter.accept(np.array([4], dtype=np.int64), Verified(tokens, logits))
    draft = drafter.propose(5)
    assert draft.source == "token_recycling" and len(draft) == 12
    template = drafter.template
    parents = draft.parents.tolist()
    for i, token in enumerate(draft.tokens.tolist()):
        parent_token = 4 if parents[i] < 0 else int(draft.tokens[parents[i]])
        assert token == (parent_token + 1 + int(template.ranks[i])) % vocab
    assert max(template.depth[: len(draft)]) <= 3
    shallow = drafter.propose(1)
    assert np.all(shallow.parents == -1) and len(shallow) == k


def test_token_recycling_nodes_carry_the_targets_probability() -> None:
    # Each node's estimate is the softmax the target gave that entry after its parent's token.
    vocab = 6
    drafter = TokenRecyclingDrafter(top_k=2, max_nodes=6, max_depth=2)
    drafter.begin(np.array([0], dtype=np.int64))
    logits = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(3)) * 3
    drafter.accept(np.array([0], dtype=np.int64), Verified(torch.arange(vocab), logits))
    draft = drafter.propose(2)
    softmax = torch.softmax(logits, dim=-1).numpy()
    parents = draft.parents.tolist()
    for i, token in enumerate(draft.tokens.tolist()):
        parent_token = 0 if parents[i] < 0 else int(draft.tokens[parents[i]])
        assert draft.probabilities[i] == pytest.approx(softmax[parent_token, token], rel=1e-5)


@pytest.mark.parametrize("vocab", [49152, 50257, 1000, 20])
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_largest_entries_equal_torch_topk(vocab: int, rows: int) -> None:
    # Vocabularies a whole number of blocks long, with a ragged last block, and too small to block.
    generator = torch.Generator().manual_seed(vocab + rows)
    logits = torch.randn(rows, vocab, generator=generator) * 4
    # The largest entries crowded into one block, and spread one per block, in some rows.
    logits[0, 5:13] += 100.0
    logits[-1, :: max(vocab // 8, 1)] += 100.0
    values, indices = largest_entries(logits, 8)
    expected = torch.topk(logits, 8, dim=-1)
    assert torch.equal(indices, expected.indices) and torch.equal(values, expected.values)


def test_token_recycling_skips_unknown_rows() -> None:
    drafter = TokenRecyclingDrafter(top_k=2, max_nodes=6, max_depth=3)
    drafter.begin(np.array([0], dtype=np.int64))
    logits = torch.zeros(1, 5)
    logits[0, 1], logits[0, 2] = 5.0, 4.0
    # Only token 0's row is known: the draft is its two children, nothing deeper.
    drafter.accept(np.array([0], dtype=np.int64), Verified(torch.tensor([0]), logits))
    draft = drafter.propose(3)
    assert draft.tokens.tolist() == [1, 2] and draft.parents.tolist() == [-1, -1]


class CountingFallback(Drafter):
    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[int] = []

    def begin(self, prompt_ids: np.ndarray) -> None:
        self.seen = prompt_ids.tolist()

    def propose(self, max_tokens: int) -> Draft:
        self.calls += 1
        return Draft.chain([0], "fallback")

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self.seen += tokens.tolist()


def test_sam_drafter_drafts_from_the_source_expected_to_be_accepted_furthest() -> None:
    tokens = np.arange(1, 13, dtype=np.int64)
    fallback = CountingFallback()
    # Nine agreeing occurrences in the corpus: each node is worth 9/10.
    drafter = SamDrafter(StaticAutomaton.build([tokens] * 9), fallback=fallback, max_draft=4, use_tree=False)
    # No match anywhere: the fallback drafts.
    drafter.begin(np.array([50, 51], dtype=np.int64))
    assert drafter.propose(10).source == "fallback"
    drafter.begin(np.array([50, 1, 2, 3, 4, 5], dtype=np.int64))
    draft = drafter.propose(10)
    assert draft.source == "static" and draft.tokens.tolist() == [6, 7, 8, 9]
    # 9 of 9 occurrences agree; the escape count 1 is weighed by trusted_length / context length
    # (the 5 matched tokens plus the path above the node).
    trusted = drafter.trusted_length
    np.testing.assert_allclose(draft.probabilities, [9 / (9 + min(1.0, trusted / (5 + depth))) for depth in range(4)])
    assert drafter.propose(2).tokens.tolist() == [6, 7]
    # The fallback sees the whole context.
    drafter.accept(np.array([6], dtype=np.int64), None)
    assert fallback.seen == [50, 1, 2, 3, 4, 5, 6]
    # A corpus seen once against a request that keeps repeating itself: its own text wins.
    drafter = SamDrafter(StaticAutomaton.build([tokens]), max_draft=4, use_tree=False)
    drafter.begin(np.array([1, 2, 3, 60, 61] * 4 + [1, 2, 3], dtype=np.int64))
    draft = drafter.propose(10)
    assert draft.source == "dynamic" and draft.tokens.tolist() == [60, 61, 1, 2]


class ConfidentFallback(CountingFallback):
    def propose(self, max_tokens: int) -> Draft:
        return Draft.chain([0, 0], "fallback", probabilities=np.array([0.99, 0.99]))


def test_sam_drafter_prefers_a_fallback_expected_to_do_better() -> None:
    drafter = SamDrafter(StaticAutomaton.build([np.arange(1, 13)]), fallback=ConfidentFallback(), use_tree=False)
    drafter.begin(np.array([50, 1, 2, 3], dtype=np.int64))
    assert drafter.propose(10).source == "fallback"  # 0.99 + 0.98 against a corpus seen once
    assert {draft.source for draft in drafter.propose_candidates(10)} == {"static", "fallback"}


def test_sam_drafter_static_tree() -> None:
    corpus = StaticAutomaton.build([np.array([1, 2, 3, 4], dtype=np.int64), np.array([1, 2, 3, 5, 6], dtype=np.int64)])
    drafter = SamDrafter(corpus, tree_nodes=8)
    assert drafter.proposes_trees and not drafter.wants_logits
    drafter.begin(np.array([9, 1, 2, 3], dtype=np.int64))
    draft = drafter.propose(5)
    assert draft.source == "static" and not draft.is_chain
    assert sorted(draft.tokens[draft.parents == -1].tolist()) == [4, 5]
    assert SamDrafter(None, fallback=TokenRecyclingDrafter()).wants_logits


def test_model_drafter_rolls_back_to_the_same_state_as_a_fresh_one(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    prompt = np.array([5, 9, 33, 71, 2], dtype=np.int64)
    drafter = ModelDrafter(model, num_tokens=4)
    drafter.begin(prompt)
    first = drafter.propose(4).tokens
    # Accept two of the drafted tokens and a different bonus token: the rest must be forgotten.
    appended = np.array([first[0], first[1], (first[2] + 1) % 96], dtype=np.int64)
    drafter.accept(appended, None)
    second = drafter.propose(4).tokens
    fresh = ModelDrafter(model, num_tokens=4)
    fresh.begin(np.concatenate([prompt, appended]))
    assert second.tolist() == fresh.propose(4).tokens.tolist()
    assert len(drafter.propose(2)) == 2
