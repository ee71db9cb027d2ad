"""Bad input is refused with TypeError/ValueError, never a crash or a silently wrong answer."""

from __future__ import annotations

import numpy as np
import pytest

from sam_decoding import DynamicAutomaton, StaticAutomaton, TokenizerMismatchError

MAX_TOKEN = 2**31 - 1


@pytest.fixture(scope="module")
def automaton() -> StaticAutomaton:
    return StaticAutomaton.build([[1, 2, 3, 1, 2, 4], [5, 6]], tokenizer_fingerprint="tok-a")


# Values that are not token sequences, and the error each must raise wherever tokens go in.
BAD_SEQUENCES = [
    pytest.param(np.array([1.0, 2.0]), TypeError, id="float-array"),
    pytest.param([1.5, 2.0], TypeError, id="float-list"),
    pytest.param(np.array([True, False]), TypeError, id="bool-array"),
    pytest.param([True, False], TypeError, id="bool-list"),
    pytest.param("abc", TypeError, id="str"),
    pytest.param(b"abc", TypeError, id="bytes"),
    pytest.param(["a", "b"], TypeError, id="list-of-str"),
    pytest.param(np.array(["1", "2"]), TypeError, id="str-array"),
    pytest.param(np.array([1 + 2j]), TypeError, id="complex-array"),
    pytest.param([1, None], TypeError, id="none-in-list"),
    pytest.param([2**70], TypeError, id="python-int-beyond-int64"),
    pytest.param([-1, 2], ValueError, id="negative"),
    pytest.param(np.array([3, -1], dtype=np.int32), ValueError, id="negative-int32"),
    pytest.param(np.array([-5], dtype=np.int8), ValueError, id="negative-int8"),
    pytest.param([MAX_TOKEN + 1], ValueError, id="2^31"),
    pytest.param(np.array([MAX_TOKEN + 1], dtype=np.uint32), ValueError, id="2^31-uint32"),
    pytest.param(np.array([2**32 - 1], dtype=np.uint32), ValueError, id="2^32-1-uint32"),
    pytest.param(np.array([2**40], dtype=np.int64), ValueError, id="2^40-int64"),
    pytest.param(np.array([2**63 - 1], dtype=np.int64), ValueError, id="int64-max"),
    pytest.param(np.array([2**64 - 1], dtype=np.uint64), ValueError, id="uint64-max"),
    pytest.param(np.array([2**63 + 5], dtype=np.uint64), ValueError, id="uint64-wraps-positive"),
    pytest.param(np.array([2**32 + 1], dtype=np.uint64), ValueError, id="uint64-wraps-to-1"),
    pytest.param(np.array([[1, 2], [3, 4]]), ValueError, id="2-d"),
    pytest.param(np.array([[1, 2]], dtype=np.int32), ValueError, id="2-d-int32"),
]


@pytest.mark.parametrize(("tokens", "error"), BAD_SEQUENCES)
def test_build_refuses(tokens, error):
    with pytest.raises(error):
        StaticAutomaton.build([[1, 2], tokens])


@pytest.mark.parametrize(("tokens", "error"), BAD_SEQUENCES)
def test_feed_refuses_and_keeps_the_state(automaton, tokens, error):
    cursor = automaton.cursor()
    cursor.feed([1, 2])
    with pytest.raises(error):
        cursor.feed(tokens)
    assert cursor.match_length == 2
    assert cursor.draft(2).tolist() in ([3, 1], [4])


@pytest.mark.parametrize(("tokens", "error"), BAD_SEQUENCES)
def test_extend_refuses_and_keeps_the_text(tokens, error):
    dynamic = DynamicAutomaton()
    dynamic.extend([7, 8, 7])
    with pytest.raises(error):
        dynamic.extend(tokens)
    assert dynamic.num_tokens == 3
    assert dynamic.match_length == 1
    assert dynamic.draft(4).tolist() == [8, 7]


@pytest.mark.parametrize(
    ("token", "error"),
    [(-1, ValueError), (MAX_TOKEN + 1, ValueError), (2**64, ValueError), (2**100, ValueError),
     (np.int64(-3), ValueError), (np.uint64(2**64 - 1), ValueError), (1.0, TypeError),
     (None, TypeError)],
)
def test_single_token_refused(automaton, token, error):
    cursor = automaton.cursor()
    with pytest.raises(error):
        cursor.feed(token)
    assert cursor.match_length == 0
    dynamic = DynamicAutomaton()
    with pytest.raises(error):
        dynamic.extend(token)
    assert dynamic.num_tokens == 0


def test_bool_is_not_a_token(automaton):
    with pytest.raises(TypeError):
        automaton.cursor().feed(True)
    with pytest.raises(TypeError):
        DynamicAutomaton().extend(False)


@pytest.mark.parametrize(
    "documents",
    [[], [[]], [[], [], []], [np.zeros(0, dtype=np.int32)], iter([])],
    ids=["no-documents", "one-empty", "all-empty", "empty-array", "empty-iterator"],
)
def test_corpus_without_tokens_is_refused(documents):
    with pytest.raises(ValueError, match="no tokens"):
        StaticAutomaton.build(documents)


def test_one_flat_array_is_not_a_corpus():
    with pytest.raises(TypeError):
        StaticAutomaton.build(np.array([1, 2, 3]))


def test_empty_documents_are_skipped():
    automaton = StaticAutomaton.build([[], [1, 2], [], [], [2, 3], []])
    assert automaton.num_documents == 2
    assert automaton.num_tokens == 4
    cursor = automaton.cursor()
    assert cursor.feed([1, 2, 3]) == 2  # "2 3" in document two; "1 2 3" spans a boundary


@pytest.mark.parametrize("count", [-1, -(2**40)])
def test_negative_counts_are_refused(automaton, count):
    cursor = automaton.cursor()
    cursor.feed([1])
    with pytest.raises(ValueError):
        cursor.draft(count)
    with pytest.raises(ValueError):
        cursor.draft_tree(count)
    with pytest.raises(ValueError):
        cursor.draft_tree(4, max_depth=count)
    with pytest.raises(ValueError):
        DynamicAutomaton().draft(count)


@pytest.mark.parametrize("count", [1.0, "3", None, True, np.float64(2.0)])
def test_non_integer_counts_are_refused(automaton, count):
    cursor = automaton.cursor()
    with pytest.raises(TypeError):
        cursor.draft(count)
    with pytest.raises(TypeError):
        cursor.draft_tree(count)
    with pytest.raises(TypeError):
        DynamicAutomaton().draft(count)


def test_zero_counts_give_empty_results(automaton):
    cursor = automaton.cursor()
    cursor.feed([1, 2])
    assert cursor.draft(0).tolist() == []
    assert cursor.draft(np.int64(0)).tolist() == []
    assert len(cursor.draft_tree(0)) == 0
    dynamic = DynamicAutomaton()
    dynamic.extend([1, 1, 1])
    assert dynamic.draft(0).tolist() == []


def test_huge_counts_are_capped_by_the_corpus(automaton):
    cursor = automaton.cursor()
    cursor.feed([1])
    assert len(cursor.draft(2**40)) <= automaton.num_tokens
    assert len(cursor.draft_tree(10**6)) <= automaton.num_tokens


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64, np.uint64, np.int16, np.uint8])
def test_strided_views_are_read_correctly(dtype):
    backing = np.array([1, 99, 2, 99, 3, 99, 1, 99, 2, 99, 4], dtype=dtype)
    view = backing[::2]
    assert not view.flags.c_contiguous
    documents = [[1, 2, 3, 1, 2, 4]]
    automaton = StaticAutomaton.build([view, backing[::-2][:3]])  # reversed: 4 2 1
    assert automaton.num_tokens == 9
    reference = StaticAutomaton.build([[1, 2, 3, 1, 2, 4], [4, 2, 1]])
    cursor, expected = automaton.cursor(), reference.cursor()
    assert cursor.feed(view[:2]) == expected.feed(documents[0][:2]) == 2
    assert cursor.draft(9).tolist() == expected.draft(9).tolist()
    dynamic = DynamicAutomaton()
    dynamic.extend(view)
    dynamic.extend(backing[::-2][:3])
    assert dynamic.num_tokens == 9
    assert dynamic.match_length == 1  # "1" ends at position 3 and at the end
    assert dynamic.draft(3).tolist() == [2, 3, 1]  # after the first occurrence


def test_column_of_a_fortran_array_is_read_correctly():
    matrix = np.asfortranarray(np.array([[1, 2], [3, 4], [1, 5]], dtype=np.int32))
    row = matrix[0]  # 1 2, not contiguous in Fortran order
    assert not row.flags.c_contiguous
    cursor = StaticAutomaton.build([matrix[:, 0], matrix[:, 1]]).cursor()  # 1 3 1 / 2 4 5
    assert cursor.feed(row) == 1  # "1 2" spans two documents; "2" starts document two
    assert cursor.draft(5).tolist() == [4, 5]


@pytest.mark.parametrize("dtype", [">i4", ">u4", ">i8", ">u2"])
def test_byte_swapped_arrays_are_read_by_value(dtype):
    """Big-endian arrays hold the same values; they must not be reinterpreted as raw bytes."""
    tokens = np.array([1, 2, 3, 1, 2], dtype=dtype)
    assert not tokens.dtype.isnative
    automaton = StaticAutomaton.build([tokens])
    cursor = automaton.cursor()
    assert cursor.feed(tokens[:2]) == 2
    assert cursor.draft(3).tolist() == [3, 1, 2]
    dynamic = DynamicAutomaton()
    dynamic.extend(tokens)
    assert dynamic.match_length == 2
    assert dynamic.draft(3).tolist() == [3, 1, 2]


def test_read_only_arrays_are_accepted():
    tokens = np.array([1, 2, 1, 2], dtype=np.int32)
    tokens.flags.writeable = False
    cursor = StaticAutomaton.build([tokens]).cursor()
    assert cursor.feed(tokens[:2]) == 2
    dynamic = DynamicAutomaton()
    dynamic.extend(tokens)
    assert dynamic.match_length == 2


def test_tokenizer_mismatch(automaton):
    automaton.check_tokenizer("tok-a")
    with pytest.raises(TokenizerMismatchError, match="tok-b") as raised:
        automaton.check_tokenizer("tok-b")
    assert isinstance(raised.value, ValueError)
    unrecorded = StaticAutomaton.build([[1]])
    with pytest.raises(TokenizerMismatchError, match="none recorded"):
        unrecorded.check_tokenizer("tok-a")
    unrecorded.check_tokenizer("")


def test_metadata_must_be_json():
    with pytest.raises(TypeError):
        StaticAutomaton.build([[1, 2]], metadata={"bad": object()})
