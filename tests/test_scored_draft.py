"""Scored drafts against brute-force counts over small corpora, at every matched suffix length.

The reference below counts occurrences directly in the documents' token lists: no automaton. It
derives the matched orders (the suffix lengths where the occurrence count changes), the blended
Witten-Bell estimate of every possible node, and the best-first tree, and the native search must
give the same tree with the same probabilities, for static, sharded and dynamic automata.
"""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sam_decoding as sd
from sam_decoding.automaton import ScoredDraftOptions

# Every matched suffix length the tests' small corpora have, and the search's own default cut-off.
SCORED_MAX_ORDERS = 8
SCORED_ENOUGH_OCCURRENCES = ScoredDraftOptions().enough_occurrences


def _occurrences(documents: list[list[int]], pattern: list[int]) -> list[tuple[int, int]]:
    """(document, end index exclusive) of every occurrence of ``pattern``."""
    found = []
    width = len(pattern)
    for number, document in enumerate(documents):
        for end in range(width, len(document) + 1):
            if document[end - width:end] == pattern:
                found.append((number, end))
    return found


class BruteForce:
    """Scored drafts from raw counts. ``dynamic``: one text whose last position is the context's end."""

    def __init__(self, documents: list[list[int]], context: list[int], *, dynamic: bool,
                 max_orders: int = SCORED_MAX_ORDERS, enough: int = SCORED_ENOUGH_OCCURRENCES,
                 trusted_length: float = 0.0) -> None:
        self.documents = documents
        self.trusted_length = trusted_length
        self.orders = self._select(self._matched_lengths(context, dynamic), context, max_orders, enough)
        self.suffixes = [context[len(context) - length:] for length in self.orders]

    def _count(self, pattern: list[int]) -> int:
        return len(_occurrences(self.documents, pattern))

    def _matched_lengths(self, context: list[int], dynamic: bool) -> list[int]:
        # Longest suffix that occurs (dynamically: that also ends before the last position).
        minimum = 2 if dynamic else 1
        longest = 0
        for length in range(1, len(context) + 1):
            if self._count(context[len(context) - length:]) >= minimum:
                longest = length
            else:
                break
        counts = {length: self._count(context[len(context) - length:]) for length in range(1, longest + 2)}
        return [length for length in range(longest, 0, -1)
                if length == longest or counts[length] != counts[length + 1]]

    def _continuations(self, pattern: list[int]) -> dict[int, int]:
        following: dict[int, int] = {}
        for number, end in _occurrences(self.documents, pattern):
            if end < len(self.documents[number]):
                token = self.documents[number][end]
                following[token] = following.get(token, 0) + 1
        return following

    def _select(self, lengths: list[int], context: list[int], max_orders: int, enough: int) -> list[int]:
        chosen = []
        for length in lengths:
            if len(chosen) >= max_orders:
                break
            suffix = context[len(context) - length:]
            if not self._continuations(suffix):
                continue
            chosen.append(length)
            if self._count(suffix) >= enough:
                break
        return chosen

    def probabilities(self, path: list[int]) -> dict[int, float]:
        """Blended P(token | context + path) for every token that follows in some order."""
        per_order = [self._continuations(suffix + path) for suffix in self.suffixes]
        tokens = sorted({token for following in per_order for token in following})
        result = {}
        for token in tokens:
            probability = 0.0
            for length, following in reversed(list(zip(self.orders, per_order))):  # shortest order first
                total = sum(following.values())
                if total == 0:
                    continue
                context_length = length + len(path)
                weight = 1.0
                if self.trusted_length > 0 and context_length > self.trusted_length:
                    weight = self.trusted_length / context_length
                escape = len(following) * weight
                probability = (following.get(token, 0) + escape * probability) / (total + escape)
            result[token] = probability
        return result

    def tree(self, max_nodes: int, max_depth: int, min_probability: float, chain: bool = False):
        nodes: list[tuple[int, int, float, float]] = []  # token, parent, probability, path probability
        paths: list[list[int]] = []
        frontier: list[tuple[float, int, int, float, int, list[int]]] = []

        def expand(parent: int, path: list[int], parent_path: float, depth: int) -> None:
            options = [(parent_path * p, token, p) for token, p in self.probabilities(path).items()
                       if parent_path * p >= min_probability]
            options.sort(key=lambda option: (-option[0], option[1]))
            for path_probability, token, p in options[:1] if chain else options:
                heapq.heappush(frontier, (-path_probability, token, parent, p, depth, path + [token]))

        if not self.orders:
            return nodes
        expand(-1, [], 1.0, 1)
        while frontier and len(nodes) < max_nodes:
            negative_path, token, parent, p, depth, path = heapq.heappop(frontier)
            nodes.append((token, parent, p, -negative_path))
            paths.append(path)
            if depth < max_depth:
                expand(len(nodes) - 1, path, -negative_path, depth + 1)
        return nodes


def _assert_same(draft: sd.ScoredDraft, expected, orders: list[int]) -> None:
    assert draft.tokens.tolist() == [node[0] for node in expected]
    assert draft.parents.tolist() == [node[1] for node in expected]
    np.testing.assert_allclose(draft.probabilities, [node[2] for node in expected], rtol=1e-12)
    np.testing.assert_allclose(draft.path_probabilities, [node[3] for node in expected], rtol=1e-12)
    assert draft.num_orders == len(orders)
    assert draft.match_length == (orders[0] if orders else 0)
    assert draft.expected_tokens == pytest.approx(sum(node[3] for node in expected))


documents_strategy = st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=30), min_size=1, max_size=4)
settings_kwargs = dict(max_examples=150, deadline=None)


@settings(**settings_kwargs)
@given(documents=documents_strategy, context=st.lists(st.integers(0, 4), min_size=1, max_size=8),
       min_probability=st.sampled_from([0.0, 0.05, 0.3]), max_orders=st.sampled_from([1, 2, 8]),
       enough=st.sampled_from([1, 3, 64]), chain=st.booleans(), trusted=st.sampled_from([0.0, 1.0, 2.5]))
def test_static_scored_draft_matches_brute_force(documents, context, min_probability, max_orders, enough, chain,
                                                 trusted):
    corpus = sd.StaticAutomaton.build(documents)
    cursor = corpus.cursor()
    cursor.feed(context)
    draft = cursor.scored_draft(12, max_depth=5, min_probability=min_probability, chain=chain,
                                max_orders=max_orders, enough_occurrences=enough, trusted_length=trusted)
    # The cursor's match is the longest suffix found inside one document.
    reference = BruteForce(documents, context[len(context) - cursor.match_length:] if cursor.match_length else [],
                           dynamic=False, max_orders=max_orders, enough=enough, trusted_length=trusted)
    _assert_same(draft, reference.tree(12, 5, min_probability, chain), reference.orders)


@settings(**settings_kwargs)
@given(documents=documents_strategy, context=st.lists(st.integers(0, 4), min_size=1, max_size=8),
       split=st.integers(1, 3), min_probability=st.sampled_from([0.0, 0.1]))
def test_sharded_scored_draft_matches_one_automaton_and_brute_force(documents, context, split, min_probability):
    shards = [documents[index::split] for index in range(split)]
    shards = [shard for shard in shards if shard]
    sharded = sd.ShardedAutomaton([sd.StaticAutomaton.build(shard) for shard in shards])
    cursor = sharded.cursor()
    cursor.feed(context)
    options = ScoredDraftOptions(min_probability=min_probability, max_orders=SCORED_MAX_ORDERS, trusted_length=0.0)
    draft = cursor.scored_draft(10, options, max_depth=4)
    whole = sd.StaticAutomaton.build(documents).cursor()
    whole.feed(context)
    same = whole.scored_draft(10, options, max_depth=4)
    reference = BruteForce(documents, context[len(context) - cursor.match_length:] if cursor.match_length else [],
                           dynamic=False)
    _assert_same(draft, reference.tree(10, 4, min_probability), reference.orders)
    assert draft.tokens.tolist() == same.tokens.tolist()


@settings(**settings_kwargs)
@given(text=st.lists(st.integers(0, 3), min_size=1, max_size=60), min_probability=st.sampled_from([0.0, 0.1]),
       max_orders=st.sampled_from([1, 8]), chain=st.booleans(), trusted=st.sampled_from([0.0, 2.0]))
def test_dynamic_scored_draft_matches_brute_force(text, min_probability, max_orders, chain, trusted):
    automaton = sd.DynamicAutomaton()
    automaton.extend(text)
    draft = automaton.scored_draft(12, max_depth=5, min_probability=min_probability, chain=chain,
                                   max_orders=max_orders, trusted_length=trusted)
    reference = BruteForce([text], text, dynamic=True, max_orders=max_orders, trusted_length=trusted)
    _assert_same(draft, reference.tree(12, 5, min_probability, chain), reference.orders)


@settings(**settings_kwargs)
@given(pieces=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=20), min_size=1, max_size=6),
       probes=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=4), min_size=1, max_size=5))
def test_dynamic_counts_stay_exact_while_growing(pieces, probes):
    automaton = sd.DynamicAutomaton()
    text: list[int] = []
    for piece in pieces:
        automaton.extend(piece)
        text.extend(piece)
        for probe in probes:
            assert automaton.occurrences(probe) == len(_occurrences([text], probe))


def test_dynamic_counts_exact_in_a_long_run_of_one_token():
    # The suffix-link chain of a run is as long as the run: counts are recomputed, not walked.
    automaton = sd.DynamicAutomaton()
    automaton.extend([7] * 300)
    assert automaton.occurrences([7] * 10) == 291
    automaton.extend([7, 8, 7])  # a run of 301, then 8, 7
    assert automaton.occurrences([7, 8]) == 1
    assert automaton.occurrences([7] * 10) == 292
    assert automaton.occurrences([7]) == 302


def test_single_occurrence_is_worth_one_half_and_agreement_more():
    once = sd.StaticAutomaton.build([[1, 2, 3]]).cursor()
    once.feed([1, 2])
    assert once.scored_draft(1, trusted_length=0.0).probabilities.tolist() == [0.5]
    agreed = sd.StaticAutomaton.build([[1, 2, 3]] * 9).cursor()
    agreed.feed([1, 2])
    assert agreed.scored_draft(1, trusted_length=0.0).probabilities.tolist() == [0.9]


def test_depth_ends_where_confidence_ends():
    corpus = sd.StaticAutomaton.build([[5, 6, 7, 8, 9, 10, 11, 12]])
    cursor = corpus.cursor()
    cursor.feed([5, 6])
    assert len(cursor.scored_draft(16, min_probability=0.0, trusted_length=0.0)) == 6
    shallow = cursor.scored_draft(16, min_probability=0.2, trusted_length=0.0)
    assert np.all(shallow.path_probabilities >= 0.2) and len(shallow) < 6


@pytest.mark.parametrize("bad", [{"min_probability": -0.1}, {"min_probability": 1.5}, {"max_orders": 0}, {"trusted_length": -1.0},
                                 {"max_nodes": -1}])
def test_bad_options_are_refused(bad):
    cursor = sd.StaticAutomaton.build([[1, 2, 3]]).cursor()
    options = {"max_nodes": 4, **bad}
    with pytest.raises(ValueError):
        cursor.scored_draft(**options)


@pytest.mark.parametrize("bad", [{"min_probability": float("nan")}, {"max_orders": 0}, {"trusted_length": float("nan")},
                                 {"enough_occurrences": -1}])
def test_options_are_checked_when_made(bad):
    with pytest.raises(ValueError):
        ScoredDraftOptions(**bad)


def test_options_and_settings_give_the_same_draft_and_do_not_mix():
    cursor = sd.StaticAutomaton.build([[1, 2, 3, 1, 2, 4]]).cursor()
    cursor.feed([1, 2])
    options = ScoredDraftOptions(min_probability=0.0, max_orders=2)
    by_options = cursor.scored_draft(4, options)
    by_settings = cursor.scored_draft(4, min_probability=0.0, max_orders=2)
    assert by_options.tokens.tolist() == by_settings.tokens.tolist()
    assert by_options.probabilities.tolist() == by_settings.probabilities.tolist()
    with pytest.raises(TypeError):
        cursor.scored_draft(4, options, max_orders=1)
