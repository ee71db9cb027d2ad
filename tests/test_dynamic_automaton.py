"""The dynamic automaton (over the live sequence) against a brute-force reference."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sam_decoding import DynamicAutomaton

MAX_TOKEN = 2**31 - 1


def earlier_ends(text: list[int], length: int) -> list[int]:
    """End positions e < len(text) - 1 where text[-length:] also ends."""
    suffix = text[len(text) - length :]
    return [
        end
        for end in range(length - 1, len(text) - 1)
        if text[end - length + 1 : end + 1] == suffix
    ]


def match_length(text: list[int]) -> int:
    best = 0
    for length in range(1, len(text)):
        if not earlier_ends(text, length):
            break  # a suffix that never ended earlier has no longer one that did
        best = length
    return best


def check_text(automaton: DynamicAutomaton, text: list[int], sizes=(0, 1, 4, 16)) -> None:
    expected = match_length(text)
    assert automaton.match_length == expected, text
    assert automaton.num_tokens == len(text)
    ends = earlier_ends(text, expected) if expected else []
    for size in sizes:
        draft = automaton.draft(size).tolist()
        if expected == 0 or size == 0:
            assert draft == []
            continue
        # The draft is what followed an earlier occurrence of the matched suffix, as much of it
        # as fits; the docstring promises the first such occurrence.
        matching = [end for end in ends if text[end + 1 : end + 1 + size] == draft]
        assert matching, (text, size, draft)
        assert len(draft) == min(size, len(text) - 1 - matching[0])
        assert text[ends[0] + 1 : ends[0] + 1 + size] == draft


def test_small_example_by_hand():
    automaton = DynamicAutomaton()
    automaton.extend([1, 2, 3, 1, 2])
    assert automaton.match_length == 2
    assert automaton.draft(10).tolist() == [3, 1, 2]
    automaton.extend(9)
    assert automaton.match_length == 0
    assert automaton.draft(10).tolist() == []


def test_overlapping_occurrence_drafts_into_the_suffix_itself():
    automaton = DynamicAutomaton()
    automaton.extend([5, 5, 5, 5])
    assert automaton.match_length == 3
    assert automaton.draft(8).tolist() == [5]


def test_empty_and_single_token():
    automaton = DynamicAutomaton()
    assert automaton.match_length == 0
    assert automaton.draft(4).tolist() == []
    automaton.extend([])
    assert automaton.num_tokens == 0
    automaton.extend(np.array([MAX_TOKEN], dtype=np.int64))
    assert automaton.match_length == 0
    automaton.extend(MAX_TOKEN)
    assert automaton.match_length == 1
    assert automaton.draft(3).tolist() == [MAX_TOKEN]


def test_reset_forgets_the_text():
    automaton = DynamicAutomaton()
    automaton.extend([1, 2, 1, 2])
    assert automaton.match_length == 2
    automaton.reset()
    assert automaton.num_tokens == 0
    assert automaton.match_length == 0
    automaton.extend([3, 3])
    assert automaton.match_length == 1
    assert automaton.draft(5).tolist() == [3]


def test_properties_and_repr():
    automaton = DynamicAutomaton()
    automaton.extend(np.arange(100, dtype=np.int32) % 7)
    assert automaton.num_tokens == 100
    assert automaton.num_states >= 101
    assert automaton.nbytes > 0
    assert automaton.tokenizer_fingerprint == ""
    assert "num_tokens=100" in repr(automaton)


def test_one_call_equals_token_by_token():
    rng = np.random.default_rng(3)
    text = rng.integers(0, 3, size=300)
    whole, stepwise = DynamicAutomaton(), DynamicAutomaton()
    whole.extend(text)
    for token in text:
        stepwise.extend(int(token))
    assert whole.match_length == stepwise.match_length
    assert whole.draft(50).tolist() == stepwise.draft(50).tolist()


def test_long_text_against_brute_force():
    rng = np.random.default_rng(8)
    chunk = rng.integers(0, 4, size=50).tolist()
    text = chunk + rng.integers(0, 4, size=60).tolist() + chunk[10:40] + chunk
    automaton = DynamicAutomaton()
    for position, token in enumerate(text):
        automaton.extend(token)
        check_text(automaton, text[: position + 1], sizes=(3, 30))


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64, np.uint64, np.int8, np.uint16])
def test_integer_dtypes(dtype):
    text = np.array([1, 2, 3, 1, 2], dtype=dtype)
    automaton = DynamicAutomaton()
    automaton.extend(text)
    assert automaton.draft(3).tolist() == [3, 1, 2]


@st.composite
def texts(draw):
    if draw(st.booleans()):
        alphabet = st.integers(0, draw(st.integers(1, 4)))
    else:
        values = draw(st.lists(st.integers(0, MAX_TOKEN), min_size=1, max_size=4, unique=True))
        alphabet = st.sampled_from(values)
    parts = draw(st.lists(st.lists(alphabet, max_size=20), min_size=1, max_size=4))
    # Repeat an earlier stretch now and then, so long earlier occurrences are common.
    text: list[int] = []
    for part in parts:
        if text and draw(st.booleans()):
            start = draw(st.integers(0, len(text) - 1))
            text += text[start : start + draw(st.integers(1, 20))]
        text += part
    return text


@settings(max_examples=300, deadline=None)
@given(texts())
def test_every_prefix_matches_brute_force(text):
    automaton = DynamicAutomaton()
    for position, token in enumerate(text):
        automaton.extend(token)
        check_text(automaton, text[: position + 1])


@settings(max_examples=100, deadline=None)
@given(texts(), texts())
def test_extend_in_chunks_after_reset(first, second):
    automaton = DynamicAutomaton()
    automaton.extend(first)
    automaton.reset()
    automaton.extend(np.array(second, dtype=np.int64))
    check_text(automaton, second)


def test_single_token_extends_grow_memory_geometrically():
    """A generation appends one token per step: memory must grow by doubling (amortized O(1)
    per token), not be reallocated, and the whole text copied, on every call."""
    automaton = DynamicAutomaton()
    sizes = set()
    for token in range(20_000):
        automaton.extend(token % 5)
        sizes.add(automaton.nbytes)
    assert len(sizes) <= 60


CONCURRENT_USE = textwrap.dedent(
    """
    import threading
    import numpy as np
    from sam_decoding import DynamicAutomaton

    automaton = DynamicAutomaton()
    done = threading.Event()
    bad = []

    def read():
        while not done.is_set():
            draft = automaton.draft(64)
            if draft.size and (int(draft.min()) < 0 or int(draft.max()) > 3):
                bad.append(draft.tolist())
            automaton.match_length, automaton.num_tokens, automaton.nbytes

    def write(seed):
        rng = np.random.default_rng(seed)
        for round in range(60):
            # Long inputs: extend releases the GIL while it grows (and reallocates) its arrays.
            automaton.extend(rng.integers(0, 4, size=int(rng.integers(5_000, 60_000))))
            automaton.extend(int(rng.integers(0, 4)))
            if round % 15 == 14:
                automaton.reset()

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert not bad, bad[:3]
    print("done", automaton.num_tokens)
    """
)


def test_concurrent_extend_and_draft_from_several_threads():
    """extend() releases the GIL on long inputs; draft() and the properties from other threads
    must never see the arrays half-grown. In a child process: a use-after-free would crash it."""
    with tempfile.TemporaryDirectory() as elsewhere:
        result = subprocess.run([sys.executable, "-c", CONCURRENT_USE], capture_output=True,
                                text=True, timeout=300, check=False, cwd=elsewhere)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.startswith("done")
