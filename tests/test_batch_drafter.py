"""BatchDrafter: one native drafting step for a whole persistent batch, checked against a
per-request SamDrafter on the same texts, through a fake batch whose rows move like vLLM's."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sam_decoding import ResponseCache, StaticAutomaton
from sam_decoding.batch_drafter import SOURCE_NAMES, BatchDrafter
from sam_decoding.drafters.sam import SamDrafter

K = 8
VOCAB = 40
WIDTH = 512
SOURCE_OF = {"dynamic": "text", "static": "corpus", "responses": "response_cache"}


def _documents(seed: int = 0, count: int = 30, length: int = 120) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, length) for _ in range(count)]


@pytest.fixture(scope="module")
def documents() -> list[np.ndarray]:
    return _documents()


@pytest.fixture(scope="module")
def corpus(documents: list[np.ndarray]) -> StaticAutomaton:
    return StaticAutomaton.build(documents)


class FakeBatch:
    """A persistent batch: a request takes the first free row; when requests leave, the last rows
    move into the holes (as vLLM condenses its batch)."""

    def __init__(self, dtype: type = np.int32, width: int = WIDTH) -> None:
        self.rows: list[list[int] | None] = []
        self.sampled: list[int] = []
        self.dtype = dtype
        self.width = width

    def add(self, prompt: list[int], first: int) -> int:
        text = [*prompt, first]
        for row, held in enumerate(self.rows):
            if held is None:
                self.rows[row], self.sampled[row] = text, 1
                return row
        self.rows.append(text)
        self.sampled.append(1)
        return len(self.rows) - 1

    def remove(self, row: int) -> list[int]:
        text = self.rows[row]
        assert text is not None
        self.rows[row] = None
        return text

    def condense(self) -> None:
        kept = [(text, sampled) for text, sampled in zip(self.rows, self.sampled) if text is not None]
        self.rows = [text for text, _ in kept]
        self.sampled = [sampled for _, sampled in kept]

    def append(self, row: int, tokens: list[int]) -> None:
        text = self.rows[row]
        assert text is not None
        text.extend(tokens)
        self.sampled[row] = len(tokens)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table = np.zeros((len(self.rows), self.width), dtype=self.dtype)
        lengths = np.zeros(len(self.rows), dtype=np.int32)
        for row, text in enumerate(self.rows):
            if text is not None:
                table[row, : len(text)] = text
                lengths[row] = len(text)
        return table, lengths, np.asarray(self.sampled, dtype=np.int64)

    def step(self, drafter: BatchDrafter) -> None:
        drafter.step(*self.arrays())
        self.sampled = [0] * len(self.rows)


def _reference(corpus: StaticAutomaton | None, text: list[int], prompt_length: int, responses: ResponseCache | None = None):
    drafter = SamDrafter(corpus, use_tree=False, max_draft=K, response_cache=responses)
    drafter.begin(np.asarray(text[:prompt_length]))
    if len(text) > prompt_length:
        drafter.accept(np.asarray(text[prompt_length:]), None)
    return drafter.propose(K)


def _check_row(drafter: BatchDrafter, row: int, reference) -> None:
    length = int(drafter.draft_lengths[row])
    assert drafter.tokens[row, :length].tolist() == reference.tokens.tolist()
    if length:
        assert SOURCE_NAMES[drafter.sources[row]] == SOURCE_OF[reference.source]
        np.testing.assert_allclose(drafter.probabilities[row, :length], reference.probabilities)
        np.testing.assert_allclose(drafter.path_probabilities[row, :length], np.cumprod(reference.probabilities))
    else:
        assert drafter.sources[row] == 0
    assert not drafter.tokens[row, length:].any()


def _continuation(rng: np.random.Generator, documents: list[np.ndarray], size: int) -> list[int]:
    """Text that partly follows the corpus, so that corpus and own-text drafts both win sometimes."""
    if rng.random() < 0.6:
        document = documents[int(rng.integers(len(documents)))]
        start = int(rng.integers(0, len(document) - size))
        return document[start : start + size].tolist()
    return rng.integers(0, VOCAB, size).tolist()


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_drafts_equal_a_per_request_sam_drafter_as_rows_move(corpus, documents, dtype) -> None:
    rng = np.random.default_rng(1)
    drafter = BatchDrafter(corpus, max_draft=K)
    batch = FakeBatch(dtype)
    prompt_of: dict[int, int] = {}  # row -> prompt length of the request it holds
    begun = 0
    sources = set()
    for step in range(60):
        while len(batch.rows) < 6:
            prompt = _continuation(rng, documents, int(rng.integers(5, 30)))
            row = batch.add(prompt, int(rng.integers(VOCAB)))
            prompt_of[row] = len(prompt)
            begun += 1
        for row in range(len(batch.rows)):
            if batch.sampled[row] == 0 and rng.random() < 0.9:
                batch.append(row, _continuation(rng, documents, int(rng.integers(1, 4))))
        sampled = list(batch.sampled)
        batch.step(drafter)
        for row, text in enumerate(batch.rows):
            if sampled[row] == 0:
                assert drafter.draft_lengths[row] == 0
            else:
                _check_row(drafter, row, _reference(corpus, text, prompt_of[row]))
        sources.update(drafter.sources.tolist())
        if rng.random() < 0.4:  # a request leaves; the last rows move into its place
            leaving = int(rng.integers(len(batch.rows)))
            batch.remove(leaving)
            moved = [prompt_of[row] for row in range(len(batch.rows)) if row != leaving]
            batch.condense()
            prompt_of = dict(enumerate(moved))
    assert drafter.requests_begun == begun
    assert {1, 2} <= sources


def test_each_row_drafts_what_sam_drafter_drafts(corpus, documents) -> None:
    rng = np.random.default_rng(2)
    drafter = BatchDrafter(corpus, max_draft=K)
    batch = FakeBatch()
    prompt_lengths: list[int] = []
    for _ in range(5):
        prompt = _continuation(rng, documents, int(rng.integers(8, 30)))
        batch.add(prompt, int(rng.integers(VOCAB)))
        prompt_lengths.append(len(prompt))
    owners = list(range(5))  # row -> request index
    for step in range(25):
        decoding = [row for row in range(len(batch.rows)) if step == 0 or rng.random() < 0.8]
        if step:
            for row in decoding:
                batch.append(row, _continuation(rng, documents, int(rng.integers(1, 4))))
        sampled = list(batch.sampled)
        batch.step(drafter)
        for row, text in enumerate(batch.rows):
            if sampled[row] == 0:
                assert drafter.draft_lengths[row] == 0
                continue
            _check_row(drafter, row, _reference(corpus, text, prompt_lengths[owners[row]]))
        if step == 10:  # the first request leaves: the last row moves into its place
            batch.remove(0)
            batch.condense()
            owners = owners[1:]
    assert drafter.requests_begun == 5
    assert drafter.num_live == 4


def test_identical_prompts_each_continue_their_own_text(corpus) -> None:
    drafter = BatchDrafter(corpus, max_draft=K)
    batch = FakeBatch()
    prompt = [3, 4, 5, 6, 7, 3, 4, 5]
    batch.add(prompt, 6)
    batch.add(prompt, 6)
    batch.step(drafter)
    assert drafter.new_requests.tolist() == [1, 1]
    rng = np.random.default_rng(3)
    for _ in range(6):
        for row in range(2):
            batch.append(row, rng.integers(0, VOCAB, 2).tolist())
        batch.step(drafter)
        for row in range(2):
            _check_row(drafter, row, _reference(corpus, batch.rows[row], len(prompt)))
        # The rows swap places: each text is still found.
        batch.rows.reverse()
        batch.sampled.reverse()
    assert drafter.requests_begun == 2
    assert drafter.new_requests.tolist() == [0, 0]


def test_a_follow_up_turn_is_a_new_request(corpus) -> None:
    drafter = BatchDrafter(corpus, max_draft=K)
    batch = FakeBatch()
    batch.add([1, 2, 3, 4], 5)
    batch.step(drafter)
    batch.append(0, [6, 7])
    batch.step(drafter)
    first_turn = batch.remove(0)
    # The next turn's prompt is the whole earlier conversation plus the user's new message; it
    # lands on the same row.
    prompt = [*first_turn, 9, 9, 8]
    batch.rows[0], batch.sampled[0] = [*prompt, 11], 1
    batch.step(drafter)
    assert drafter.new_requests.tolist() == [1]
    assert drafter.requests_begun == 2
    _check_row(drafter, 0, _reference(corpus, batch.rows[0], len(prompt)))
    drafter.release_all()
    responses = sorted(finished.tokens.tolist() for finished in drafter.take_finished())
    assert responses == sorted([[5, 6, 7], [11]])


def test_a_request_skipped_for_a_few_steps_comes_back(corpus) -> None:
    drafter = BatchDrafter(corpus, max_draft=K, park_steps=4)
    batch = FakeBatch()
    batch.add([1, 2, 3, 1, 2], 3)
    batch.add([7, 8, 9], 10)
    batch.step(drafter)
    skipped = batch.remove(0)
    batch.condense()
    for _ in range(4):  # missing for park_steps steps: still held
        batch.append(0, [11])
        batch.step(drafter)
        assert drafter.num_parked == 1
    # It comes back on another row with one more token.
    skipped.append(3)
    batch.rows.append(skipped)
    batch.sampled.append(1)
    batch.append(0, [12])
    batch.step(drafter)
    assert drafter.new_requests.tolist() == [0, 0]
    assert drafter.requests_begun == 2
    assert drafter.num_parked == 0
    _check_row(drafter, 1, _reference(corpus, skipped, 5))


def test_parked_out_response_is_queued_once_with_its_flag(corpus) -> None:
    drafter = BatchDrafter(corpus, max_draft=K, park_steps=2)
    batch = FakeBatch()
    batch.add([1, 2, 3], 4)
    batch.add([5, 6, 7], 8)
    batch.step(drafter)
    batch.append(0, [9, 10])
    batch.step(drafter)
    batch.remove(0)
    batch.condense()
    taken = []
    for _ in range(3):
        batch.append(0, [12])
        batch.step(drafter)
        taken.append(drafter.take_finished())
    assert taken[0] == [] and taken[1] == []
    assert [(item.tokens.tolist(), item.parked_out) for item in taken[2]] == [([4, 9, 10], True)]
    assert drafter.num_parked == 0 and drafter.num_live == 1
    drafter.release_all()
    finished = drafter.take_finished()
    assert [(item.tokens.tolist(), item.parked_out) for item in finished] == [([8, 12, 12, 12], False)]
    assert drafter.num_live == 0


def test_previous_outcome_reports_given_and_accepted(corpus, documents) -> None:
    drafter = BatchDrafter(corpus, max_draft=K)
    batch = FakeBatch()
    document = documents[0].tolist()
    batch.add(document[:40], document[40])
    batch.step(drafter)
    assert drafter.draft_lengths[0] > 3
    handed = drafter.probabilities[0, :3].copy()
    drafter.given[0] = 3
    batch.append(0, document[41:44])  # two drafts accepted plus the bonus token
    batch.step(drafter)
    assert drafter.previous_given.tolist() == [3]
    assert drafter.previous_accepted.tolist() == [2]
    assert drafter.previous_sources.tolist() == [2]
    np.testing.assert_array_equal(drafter.previous_probabilities[0, :3], handed)
    assert not drafter.previous_probabilities[0, 3:].any()
    # Nothing written to `given`: the next step reports 0.
    batch.append(0, document[44:45])
    batch.step(drafter)
    assert drafter.previous_given.tolist() == [0] and drafter.previous_accepted.tolist() == [0]


def test_drafts_stop_at_max_model_len(corpus, documents) -> None:
    drafter = BatchDrafter(corpus, max_draft=K, max_model_len=43)
    batch = FakeBatch()
    document = documents[0].tolist()
    batch.add(document[:39], document[39])
    batch.step(drafter)
    assert drafter.draft_lengths.tolist() == [3]
    batch.append(0, document[40:43])
    batch.step(drafter)
    assert drafter.draft_lengths.tolist() == [0]


def test_response_cache_segments_serve_requests_that_begin_later(corpus) -> None:
    cache = ResponseCache(max_tokens=10_000)
    response = [33, 34, 35, 36, 37, 38, 39, 33, 35, 37, 39]
    cache.record(np.asarray(response))
    drafter = BatchDrafter(None, max_draft=K)
    batch = FakeBatch()
    batch.add([1, 2], 33)
    batch.step(drafter)
    assert drafter.draft_lengths.tolist() == [0]  # began before the segments were set
    drafter.set_response_segments(cache.snapshot())
    batch.add([5, 6], 33)
    batch.append(0, [34])
    batch.step(drafter)
    assert drafter.draft_lengths[0] == 0
    assert drafter.sources[1] == 3
    _check_row(drafter, 1, _reference(None, batch.rows[1], 2, cache))


def test_bad_input_is_refused_and_changes_nothing(corpus) -> None:
    drafter = BatchDrafter(corpus, max_draft=K)
    table = np.zeros((2, 8), dtype=np.int32)
    table[:, :3] = [1, 2, 3]
    lengths = np.array([3, 3])
    sampled = np.array([1, 1])
    with pytest.raises(TypeError, match="int32 or int64"):
        drafter.step(table.astype(np.float32), lengths, sampled)
    with pytest.raises(TypeError, match="int32 or int64"):
        drafter.step(table.astype(np.uint32), lengths, sampled)
    with pytest.raises(ValueError, match="2-D"):
        drafter.step(table[0], lengths, sampled)
    with pytest.raises(ValueError, match="C-contiguous"):
        drafter.step(np.asfortranarray(table), lengths, sampled)
    with pytest.raises(ValueError, match="lengths"):
        drafter.step(table, np.array([3, 9]), sampled)
    with pytest.raises(ValueError, match="lengths"):
        drafter.step(table, np.array([3]), np.array([1]))
    with pytest.raises(TypeError, match="lengths"):
        drafter.step(table, lengths.astype(np.float64), sampled)
    with pytest.raises(ValueError, match="sampled"):
        drafter.step(table, lengths, np.array([1, 4]))
    with pytest.raises(ValueError, match="sampled"):
        drafter.step(table, lengths, np.array([1, -1]))
    bad = table.copy()
    bad[1, 1] = -5
    with pytest.raises(ValueError, match=r"token_ids\[1, 1\] = -5"):
        drafter.step(bad, lengths, sampled)
    assert drafter.requests_begun == 0
    drafter.step(table, lengths, sampled)
    assert drafter.requests_begun == 2
    with pytest.raises(ValueError, match="max_draft"):
        BatchDrafter(corpus, max_draft=0)
    with pytest.raises(TypeError, match="StaticAutomaton"):
        BatchDrafter("corpus.sam")  # type: ignore[arg-type]


def test_memory_is_flat_over_ten_thousand_requests(corpus) -> None:
    rng = np.random.default_rng(4)
    drafter = BatchDrafter(corpus, max_draft=K, park_steps=2)
    batch = FakeBatch(width=64)
    rows = 32
    finished = 0
    held = 0
    while drafter.requests_begun < 10_000:
        for row in range(len(batch.rows)):
            if batch.rows[row] is not None:
                if len(batch.rows[row]) > 20:
                    batch.remove(row)
                else:
                    batch.append(row, rng.integers(0, VOCAB, 2).tolist())
        batch.condense()
        while len(batch.rows) < rows:
            batch.add(rng.integers(0, VOCAB, 12).tolist(), 1)
        batch.step(drafter)
        held = max(held, drafter.num_live + drafter.num_parked)
        finished += len(drafter.take_finished())
    assert held <= rows * 2
    assert drafter.num_live == rows
    assert finished >= 10_000 - rows * 3


def test_steps_and_segment_swaps_from_two_threads(corpus, documents) -> None:
    cache = ResponseCache(max_tokens=100_000)
    for document in documents[:5]:
        cache.record(document)
    drafter = BatchDrafter(corpus, max_draft=K, park_steps=1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def swap() -> None:
        try:
            while not stop.is_set():
                drafter.set_response_segments(cache.snapshot())
                drafter.set_response_segments(None)
                drafter.take_finished()
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    thread = threading.Thread(target=swap)
    thread.start()
    try:
        rng = np.random.default_rng(5)
        batch = FakeBatch()
        for step in range(300):
            if step % 3 == 0:
                if batch.rows:
                    batch.remove(0)
                    batch.condense()
                batch.add(documents[int(rng.integers(5))][:20].tolist(), 1)
            for row in range(len(batch.rows)):
                if batch.sampled[row] == 0:
                    batch.append(row, rng.integers(0, VOCAB, 1).tolist())
            batch.step(drafter)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert drafter.requests_begun == 100


def _corrected_expected_tokens(probabilities: np.ndarray, correction: float) -> float:
    return float(np.cumprod(np.minimum(probabilities * correction, 1.0)).sum())


@pytest.mark.parametrize("corrections", [(1.0, 1.0, 1.0), (1.0, 0.05, 1.0), (3.0, 0.5, 1.0)])
def test_source_corrections_decide_which_source_drafts_a_row(corpus, documents, corrections) -> None:
    rng = np.random.default_rng(5)
    texts = [_continuation(rng, documents, 40) + _continuation(rng, documents, 12) for _ in range(16)]
    drafter = BatchDrafter(corpus, max_draft=K)
    drafter.set_source_corrections(*corrections)
    batch = FakeBatch()
    for text in texts:
        batch.add(text[:-1], text[-1])
    batch.step(drafter)
    weight = dict(zip(("dynamic", "static"), corrections))
    chosen, switched = [], 0
    for row, text in enumerate(texts):
        reference = SamDrafter(corpus, use_tree=False, max_draft=K)
        reference.begin(np.asarray(text))
        candidates = reference._retrieval_drafts(K)  # by uncorrected expected tokens, best first
        if not candidates:
            assert drafter.draft_lengths[row] == 0
            continue
        expected = {draft.source: _corrected_expected_tokens(draft.probabilities, weight[draft.source]) for draft in candidates}
        source = SOURCE_NAMES[drafter.sources[row]]
        winner = next(draft for draft in candidates if SOURCE_OF[draft.source] == source)
        assert expected[winner.source] >= max(expected.values()) - 1e-12
        assert drafter.tokens[row, : drafter.draft_lengths[row]].tolist() == winner.tokens.tolist()
        chosen.append(source)
        switched += winner.source != candidates[0].source
    # Not vacuous: both sources draft rows, and a correction far from 1 moves some of them.
    assert {"text", "corpus"} <= set(chosen)
    assert (switched > 0) == (corrections != (1.0, 1.0, 1.0))


def test_source_corrections_must_be_positive_and_finite(corpus) -> None:
    drafter = BatchDrafter(corpus, max_draft=K)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            drafter.set_source_corrections(1.0, bad, 1.0)
