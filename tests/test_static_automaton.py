"""The static (corpus) automaton against a brute-force reference over the raw documents.

Small alphabets make matches long and documents repeat themselves, which is where suffix
automata go wrong (clones, suffix links crossing document boundaries, counts).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sam_decoding import DraftTree, StaticAutomaton

MAX_TOKEN = 2**31 - 1


# ---- brute-force reference --------------------------------------------------------------------


def occurrences(documents: list[list[int]], pattern: list[int]) -> int:
    """Start positions, within one document, where ``pattern`` occurs contiguously."""
    size = len(pattern)
    return sum(
        1
        for document in documents
        for start in range(len(document) - size + 1)
        if document[start : start + size] == pattern
    )


def continuations(documents: list[list[int]], pattern: list[int]) -> dict[int, int]:
    """Token -> number of occurrences of ``pattern`` followed by it inside one document."""
    size = len(pattern)
    found: dict[int, int] = {}
    for document in documents:
        for start in range(len(document) - size):
            if document[start : start + size] == pattern:
                token = document[start + size]
                found[token] = found.get(token, 0) + 1
    return found


def match_length(documents: list[list[int]], stream: list[int]) -> int:
    best = 0
    for length in range(1, len(stream) + 1):
        if occurrences(documents, stream[len(stream) - length :]) == 0:
            break  # a suffix that does not occur has no occurring extension
        best = length
    return best


def draft_context(documents: list[list[int]], stream: list[int], matched: int) -> list[int] | None:
    """The longest matched suffix that some document continues (what drafts extend), or None."""
    for length in range(matched, 0, -1):
        suffix = stream[len(stream) - length :]
        if continuations(documents, suffix):
            return suffix
    return None


def greedy_draft_is_valid(documents, context: list[int], draft: list[int], limit: int) -> None:
    """``context + draft`` is in one document, each step picks a most frequent continuation
    while there is a choice, and the draft stops only at ``limit`` or where nothing follows."""
    assert occurrences(documents, context + draft) >= 1
    for step, token in enumerate(draft):
        options = continuations(documents, context + draft[:step])
        assert token in options
        if occurrences(documents, context + draft[:step]) > 1:
            assert options[token] == max(options.values()), (step, token, options)
    if len(draft) < limit:
        assert not continuations(documents, context + draft)


def tree_paths(tree: DraftTree) -> list[list[int]]:
    paths: list[list[int]] = []
    for index in range(len(tree)):
        parent = int(tree.parents[index])
        paths.append((paths[parent] if parent >= 0 else []) + [int(tree.tokens[index])])
    return paths


def check_tree(documents, context: list[int], tree: DraftTree, max_nodes: int, max_depth: int) -> None:
    size = len(tree)
    assert size <= max_nodes
    assert tree.tokens.shape == tree.parents.shape == tree.probabilities.shape == tree.counts.shape
    paths = tree_paths(tree)
    total = occurrences(documents, context)
    for index, path in enumerate(paths):
        parent = int(tree.parents[index])
        assert -1 <= parent < index
        assert len(path) <= max_depth
        assert int(tree.counts[index]) == occurrences(documents, context + path) >= 1
        parent_count = int(tree.counts[parent]) if parent >= 0 else total
        assert tree.probabilities[index] == pytest.approx(tree.counts[index] / parent_count, rel=1e-12)
        if parent >= 0:
            assert tree.counts[index] <= tree.counts[parent]
    assert tree.probabilities.dtype == np.float64
    assert tree.path_probabilities() == pytest.approx(tree.counts / max(total, 1), rel=1e-12)
    assert len({tuple(path) for path in paths}) == size, "a path appears twice"
    # Best-first: no candidate left out (a root child or a child of a chosen node, within the
    # depth limit) is more frequent than the least frequent chosen node.
    chosen = {tuple(path) for path in paths}
    omitted = 0
    for prefix in [()] + [tuple(path) for path in paths if len(path) < max_depth]:
        for token, count in continuations(documents, context + list(prefix)).items():
            if prefix + (token,) not in chosen:
                omitted = max(omitted, count)
    if size:
        assert omitted <= int(tree.counts.min())
    if size < max_nodes:
        assert omitted == 0, "the tree stopped early while candidates remained"


def check_stream(automaton: StaticAutomaton, documents, stream: list[int], draft_sizes=(0, 1, 3, 40)):
    cursor = automaton.cursor()
    for position in range(len(stream)):
        returned = cursor.feed(stream[position])
        prefix = stream[: position + 1]
        expected = match_length(documents, prefix)
        assert returned == cursor.match_length == expected, prefix
        context = draft_context(documents, prefix, expected)
        for size in draft_sizes:
            draft = cursor.draft(size).tolist()
            assert len(draft) <= size
            if size == 0 or context is None:
                assert draft == []
                continue
            greedy_draft_is_valid(documents, context, draft, size)
            chain = cursor.draft_with_counts(size)
            assert chain.tokens.tolist() == draft
            assert chain.counts.tolist() == [occurrences(documents, context + draft[: i + 1]) for i in range(len(draft))]
            assert chain.state_counts.tolist() == [occurrences(documents, context + draft[:i]) for i in range(len(draft))]
            assert chain.probabilities == pytest.approx(chain.counts / chain.state_counts, rel=1e-12)
        tree = cursor.draft_tree(12)
        if context is None:
            assert len(tree) == 0
        else:
            check_tree(documents, context, tree, 12, 12)
            shallow = cursor.draft_tree(12, max_depth=2)
            check_tree(documents, context, shallow, 12, 2)


# ---- examples ---------------------------------------------------------------------------------


def test_small_example_by_hand():
    documents = [[1, 2, 3, 1, 2, 4], [5, 1, 2]]
    automaton = StaticAutomaton.build(documents)
    assert automaton.num_tokens == 9
    assert automaton.num_documents == 2
    assert automaton.vocab_bound == 6
    assert automaton.is_memory_mapped is False
    cursor = automaton.cursor()
    assert cursor.feed([7, 1, 2]) == 2
    # "1 2" occurs three times, followed by 3 and by 4 once each, and ends document two.
    assert cursor.draft(5).tolist() in ([3, 1, 2, 4], [4])
    tree = cursor.draft_tree(2, max_depth=1)
    assert sorted(tree.tokens.tolist()) == [3, 4]
    assert tree.counts.tolist() == [1, 1]
    assert tree.probabilities.tolist() == pytest.approx([1 / 3, 1 / 3])


def test_match_never_spans_two_documents():
    documents = [[1, 2, 3], [4, 5, 6]]
    cursor = StaticAutomaton.build(documents).cursor()
    assert cursor.feed([1, 2, 3, 4]) == 1
    assert cursor.feed(5) == 2
    assert cursor.draft(10).tolist() == [6]


def test_draft_never_crosses_a_document_end():
    documents = [[9, 9, 1, 2], [3, 4, 5]]
    cursor = StaticAutomaton.build(documents).cursor()
    cursor.feed([1])
    assert cursor.draft(10).tolist() == [2]
    cursor.feed(2)
    # "1 2" and "2" end document one and nothing else: no continuation at all.
    assert cursor.match_length == 2
    assert cursor.draft(10).tolist() == []
    assert len(cursor.draft_tree(8)) == 0


def test_draft_falls_back_to_a_shorter_suffix_with_a_continuation():
    documents = [[7, 1, 2], [1, 2, 5, 2, 6]]
    cursor = StaticAutomaton.build(documents).cursor()
    assert cursor.feed([7, 1, 2]) == 3  # "7 1 2" ends document one
    assert cursor.draft(1).tolist() == [5]  # from "1 2"
    tree = cursor.draft_tree(4)
    assert tree.tokens.tolist() == [5, 2, 6]
    assert tree.counts.tolist() == [1, 1, 1]
    # "1 2" occurs twice (once ending document one): 5 follows it in half of its occurrences,
    # and then 2 and 6 follow always.
    assert tree.probabilities.tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert tree.path_probabilities().tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_draft_prefers_the_most_frequent_continuation():
    documents = [[1, 2, 1, 3, 1, 3, 1, 3, 9]]
    cursor = StaticAutomaton.build(documents).cursor()
    cursor.feed([5, 1])
    assert cursor.draft(1).tolist() == [3]
    chain = cursor.draft_with_counts(3)
    tokens, counts, state_counts = chain
    assert tokens.tolist() == [3, 1, 3]
    assert counts.tolist() == [3, 2, 2] and state_counts.tolist() == [4, 3, 2]
    assert chain.probabilities.tolist() == pytest.approx([3 / 4, 2 / 3, 1.0])
    tree = cursor.draft_tree(2, max_depth=1)
    assert tree.tokens.tolist() == [3, 2]
    assert tree.counts.tolist() == [3, 1]
    assert tree.probabilities.tolist() == pytest.approx([0.75, 0.25])
    assert tree.depths().tolist() == [1, 1]


def test_draft_takes_the_most_frequent_continuation_at_any_degree():
    """3000 distinct tokens follow 7 once each and 5 follows it three times: the draft takes 5,
    not the text after 7's earliest occurrence, however many continuations there are."""
    rng = np.random.default_rng(5)
    documents = [[7, int(token), 8] for token in rng.permutation(np.arange(100, 3100))]
    documents[1000:1000] = [[7, 5, 6]] * 3
    cursor = StaticAutomaton.build(documents).cursor()
    cursor.feed([1, 7])
    assert cursor.draft(4).tolist() == [5, 6]
    greedy_draft_is_valid(documents, [7], [5, 6], 4)
    assert cursor.draft_tree(3, max_depth=1).tokens.tolist()[0] == 5


@st.composite
def large_vocabulary_corpus(draw):
    """Documents over thousands of token ids around a few frequent hub tokens, so that states
    with hundreds of distinct continuations are common."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    hubs = rng.integers(0, 5000, size=2)
    documents = []
    for _ in range(draw(st.integers(100, 200))):
        size = int(rng.integers(2, 14))
        rare = rng.integers(0, 5000, size=size)
        # Rare tokens drawn from a skewed distribution: some continuations repeat, most do not.
        rare = np.where(rng.random(size) < 0.3, rng.integers(0, 4, size=size), rare)
        document = np.where(np.arange(size) % 2 == 0, rng.choice(hubs, size=size), rare)
        documents.append(document.tolist())
    source = documents[draw(st.integers(0, len(documents) - 1))]
    stream = [int(hubs[0])] + source[draw(st.integers(0, len(source) - 1)):]
    return documents, stream


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(large_vocabulary_corpus())
def test_large_vocabulary_queries_match_brute_force(case):
    documents, stream = case
    check_stream(StaticAutomaton.build(documents), documents, stream, draft_sizes=(1, 8))


def test_unmatched_stream_drafts_nothing():
    cursor = StaticAutomaton.build([[1, 2, 3]]).cursor()
    assert cursor.feed([8, 9]) == 0
    assert cursor.draft(5).size == 0
    assert len(cursor.draft_tree(5)) == 0
    assert cursor.draft(5).dtype == np.int32


def test_cursor_copy_and_reset_are_independent():
    automaton = StaticAutomaton.build([[1, 2, 3, 4, 5]])
    cursor = automaton.cursor()
    cursor.feed([1, 2])
    twin = cursor.copy()
    assert twin.feed(3) == 3
    assert cursor.match_length == 2
    cursor.reset()
    assert cursor.match_length == 0
    assert twin.match_length == 3
    assert cursor.feed(3) == 1


def test_feed_forms_agree():
    """One call, a list, a NumPy array of any integer dtype and token by token: same state."""
    rng = np.random.default_rng(5)
    documents = [rng.integers(0, 4, size=60).tolist() for _ in range(3)]
    automaton = StaticAutomaton.build(documents)
    stream = rng.integers(0, 4, size=200)
    expected = automaton.cursor()
    lengths = [expected.feed(int(token)) for token in stream]
    for form in (stream.tolist(), stream.astype(np.int32), stream.astype(np.uint32),
                 stream.astype(np.int64), stream.astype(np.uint8), stream.astype(np.int16)):
        cursor = automaton.cursor()
        assert cursor.feed(form) == lengths[-1]
        assert cursor.draft(30).tolist() == expected.draft(30).tolist()
        assert cursor.draft_tree(16).counts.tolist() == expected.draft_tree(16).counts.tolist()


def test_numpy_integer_scalars_are_fed_as_tokens():
    cursor = StaticAutomaton.build([[1, 2, 3]]).cursor()
    assert cursor.feed(np.int64(1)) == 1
    assert cursor.feed(np.uint32(2)) == 2


def test_tree_depth_and_node_limits():
    documents = [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 9]]
    cursor = StaticAutomaton.build(documents).cursor()
    cursor.feed([1])
    assert len(cursor.draft_tree(0)) == 0
    assert len(cursor.draft_tree(5, max_depth=0)) == 0
    assert cursor.draft_tree(5, max_depth=1).tokens.tolist() == [2]
    deep = cursor.draft_tree(100)
    assert len(deep) == 7 + 1  # 2 3 4 5 6 7 8 and the branch to 9
    assert deep.depths().max() == 7


def test_a_long_repetitive_corpus_against_brute_force():
    rng = np.random.default_rng(11)
    base = rng.integers(0, 3, size=40).tolist()
    documents = [base + rng.integers(0, 3, size=30).tolist(), base[:25], [], base[10:]]
    automaton = StaticAutomaton.build(documents)
    assert automaton.num_documents == 3
    stream = base[5:30] + rng.integers(0, 3, size=40).tolist() + base
    check_stream(automaton, [d for d in documents if d], stream, draft_sizes=(2, 40))


def test_single_token_corpus():
    automaton = StaticAutomaton.build([[MAX_TOKEN]])
    assert automaton.vocab_bound == MAX_TOKEN + 1
    cursor = automaton.cursor()
    assert cursor.feed(MAX_TOKEN) == 1
    assert cursor.draft(3).tolist() == []


def test_properties_and_repr():
    automaton = StaticAutomaton.build(
        [[1, 2], [2, 1]], tokenizer_fingerprint="tok-1", metadata={"source": "unit test", "n": 2}
    )
    assert automaton.tokenizer_fingerprint == "tok-1"
    assert automaton.metadata == {"n": 2, "source": "unit test"}
    assert automaton.num_states >= automaton.num_tokens + 1
    assert automaton.num_edges >= 0
    assert automaton.nbytes > 0
    assert automaton.format_version == 2
    assert "num_tokens=4" in repr(automaton)


def test_a_corpus_too_large_for_one_automaton_is_refused_before_building():
    from sam_decoding.automaton import MAX_BUILD_TEXT_LENGTH

    # Zero-stride views: 1.6G tokens in a few bytes, refused from their lengths alone.
    half = np.broadcast_to(np.int32(1), (800_000_000,))
    assert 2 * half.shape[0] + 2 > MAX_BUILD_TEXT_LENGTH
    with pytest.raises(ValueError, match="too large for one automaton.*shards"):
        StaticAutomaton.build([half, half])


def test_documents_may_be_a_generator_of_arrays():
    automaton = StaticAutomaton.build(np.arange(5, dtype=np.int32) + offset for offset in (0, 10))
    assert automaton.num_tokens == 10
    assert automaton.num_documents == 2


# ---- properties -------------------------------------------------------------------------------


def documents_strategy(alphabet):
    document = st.lists(alphabet, min_size=0, max_size=24)
    return st.lists(document, min_size=1, max_size=5).filter(lambda docs: any(docs))


@st.composite
def corpus_and_stream(draw):
    if draw(st.booleans()):
        alphabet = st.integers(0, draw(st.integers(1, 4)))
    else:  # a few large ids, the maximum among them sometimes
        values = draw(st.lists(st.integers(0, MAX_TOKEN), min_size=1, max_size=4, unique=True))
        if draw(st.booleans()):
            values.append(MAX_TOKEN)
        alphabet = st.sampled_from(values)
    documents = draw(documents_strategy(alphabet))
    stream = draw(st.lists(alphabet, min_size=0, max_size=30))
    # A stream mostly copied from a document, so long matches are common.
    source = draw(st.sampled_from([document for document in documents if document]))
    start = draw(st.integers(0, len(source) - 1))
    stream = stream[: len(stream) // 2] + source[start:] + stream[len(stream) // 2 :]
    return documents, stream


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus_and_stream())
def test_queries_match_brute_force(case):
    documents, stream = case
    automaton = StaticAutomaton.build(documents)
    nonempty = [document for document in documents if document]
    assert automaton.num_tokens == sum(len(document) for document in documents)
    assert automaton.num_documents == len(nonempty)
    assert automaton.vocab_bound == max(max(document) for document in nonempty) + 1
    check_stream(automaton, nonempty, stream)


@settings(max_examples=200, deadline=None)
@given(corpus_and_stream(), st.integers(1, 40), st.integers(1, 6))
def test_tree_is_top_k_for_any_size(case, max_nodes, max_depth):
    documents, stream = case
    nonempty = [document for document in documents if document]
    cursor = StaticAutomaton.build(documents).cursor()
    cursor.feed(stream)
    context = draft_context(nonempty, stream, match_length(nonempty, stream))
    tree = cursor.draft_tree(max_nodes, max_depth=max_depth)
    if context is None:
        assert len(tree) == 0
    else:
        check_tree(nonempty, context, tree, max_nodes, max_depth)
        check_tree(nonempty, context, cursor.draft_tree(max_nodes), max_nodes, max_nodes)


# ---- the two constructions --------------------------------------------------------------------


def _saved_bytes(automaton: StaticAutomaton, directory) -> bytes:
    path = directory / "automaton.sam"
    automaton.save(path)
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([1, 2, 3, 5, 40, 3000, MAX_TOKEN + 1]).flatmap(
        lambda alphabet: st.lists(st.lists(st.integers(0, alphabet - 1), max_size=60), min_size=1, max_size=12)
    ).filter(lambda documents: any(documents)),
)
def test_suffix_array_and_online_constructions_write_the_same_file(tmp_path_factory, documents):
    """The suffix-array build (the default) and the online reference give identical files."""
    directory = tmp_path_factory.mktemp("constructions")
    by_suffix_array = StaticAutomaton.build(documents, metadata={"k": 1})
    online = StaticAutomaton.build(documents, metadata={"k": 1}, construction="online")
    assert _saved_bytes(by_suffix_array, directory) == _saved_bytes(online, directory)


def test_unknown_construction_is_refused():
    with pytest.raises(ValueError, match="construction"):
        StaticAutomaton.build([[1, 2]], construction="suffix_tree")
