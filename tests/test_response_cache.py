"""The response cache: budget and eviction order, drafts from every recorded response (against one
automaton over the kept responses), immutable snapshots, persistence and refused files, threads."""

from __future__ import annotations

import hashlib
import struct
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_shards import answers

from sam_decoding import FormatError, ResponseCache, StaticAutomaton, TokenizerMismatchError
from sam_decoding.response_cache import FORMAT_VERSION, MAGIC

DATA = Path(__file__).parent / "data"
GOLDEN_V1 = DATA / "golden_response_cache_v1.bin"
FINGERPRINT = "test-tokenizer"


def random_responses(count: int, *, seed: int = 0, vocab: int = 5000, low: int = 20, high: int = 120) -> list[np.ndarray]:
    """Responses of random tokens: over a large vocabulary an 8-token prefix occurs once."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, int(rng.integers(low, high))) for _ in range(count)]


def kept_lists(cache: ResponseCache) -> list[list[int]]:
    return [response.tolist() for response in cache.responses()]


def filled_cache(count: int = 40, **options) -> tuple[ResponseCache, list[np.ndarray]]:
    cache = ResponseCache(options.pop("max_tokens", 100_000), tokenizer_fingerprint=FINGERPRINT, **options)
    responses = random_responses(count)
    for response in responses:
        cache.record(response)
    return cache, responses


# ---- budget, eviction order, drafts -----------------------------------------------------------


def test_budget_is_respected_and_eviction_keeps_the_newest() -> None:
    cache = ResponseCache(2000, tokenizer_fingerprint=FINGERPRINT, segment_tokens=500)
    responses = random_responses(400, seed=1)
    evicting = False
    for index, response in enumerate(responses):
        cache.record(response)
        kept = kept_lists(cache)
        assert cache.num_tokens <= cache.max_tokens
        assert cache.num_tokens == sum(map(len, kept)) == cache.snapshot().num_tokens
        assert cache.num_responses == len(kept) == cache.snapshot().num_documents
        # Oldest first: what is kept is exactly the newest responses, in order.
        assert kept == [r.tolist() for r in responses[index + 1 - len(kept) : index + 1]]
        evicting = evicting or len(kept) < index + 1
        if evicting:
            assert cache.num_tokens > cache.max_tokens - cache.eviction_slack - 120
    assert evicting and cache.num_segments < 12


def test_a_response_longer_than_the_budget_keeps_its_end_and_empty_ones_are_ignored() -> None:
    cache = ResponseCache(50, tokenizer_fingerprint=FINGERPRINT)
    cache.record([1, 2, 3])
    cache.record([])
    cache.record(np.arange(120))
    assert kept_lists(cache) == [list(range(70, 120))]
    cache.record([7, 8])
    assert kept_lists(cache)[-1] == [7, 8] and cache.num_tokens <= 50


def test_every_recorded_response_is_drafted_from_the_next_snapshot() -> None:
    cache = ResponseCache(3000, tokenizer_fingerprint=FINGERPRINT, segment_tokens=800)
    for response in random_responses(120, seed=2):
        cache.record(response)
        cursor = cache.snapshot().cursor()
        cursor.feed(response[:8])
        assert cursor.draft(len(response)).tolist() == response[8:].tolist()


@st.composite
def recordings(draw):
    alphabet = st.integers(0, draw(st.sampled_from([2, 5, 2**31 - 1])))
    responses = draw(st.lists(st.lists(alphabet, max_size=40), min_size=1, max_size=30))
    return responses, draw(st.integers(10, 200)), draw(st.integers(1, 80)), draw(st.lists(alphabet, max_size=25))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recordings())
def test_a_snapshot_answers_as_one_automaton_over_the_kept_responses(case) -> None:
    responses, max_tokens, segment_tokens, stream = case
    cache = ResponseCache(max_tokens, segment_tokens=segment_tokens)
    for response in responses:
        cache.record(response)
    kept = kept_lists(cache)
    recorded = [response for response in responses if response]
    if not recorded:
        assert kept == [] and cache.snapshot() is None
        return
    newest = recorded[-1][-max_tokens:]
    assert kept[-1] == newest and kept[:-1] == recorded[len(recorded) - len(kept) : -1]
    assert cache.num_tokens <= max_tokens
    reference = StaticAutomaton.build(kept)
    stream = stream + newest[:5]
    assert answers(cache.snapshot(), stream) == answers(reference, stream)


def test_a_snapshot_does_not_change_when_later_responses_are_recorded() -> None:
    cache, responses = filled_cache(30, max_tokens=3000, segment_tokens=600)
    before = cache.snapshot()
    stream = np.concatenate([responses[-1][:10], responses[0][:10], responses[5][:6]]).tolist()
    expected = answers(before, stream)
    for response in random_responses(200, seed=3):  # merges and evicts every segment of `before`
        cache.record(response)
    assert cache.snapshot() is not before
    assert answers(before, stream) == expected
    assert ResponseCache(10).snapshot() is None


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "error", "message"),
    [
        ([1, -1], ValueError, "got -1"),
        ([1, 2**31], ValueError, "got 2147483648"),
        ([[1, 2]], ValueError, "1-D"),
        ([1.0, 2.0], TypeError, "integers"),
        ("12", TypeError, "string"),
        ([2**70], TypeError, "integers"),
    ],
)
def test_bad_tokens_are_refused_with_a_clear_error(tokens, error, message) -> None:
    cache = ResponseCache(100)
    with pytest.raises(error, match=message):
        cache.record(tokens)
    assert cache.num_tokens == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 10**12}, "at most"), ({"max_tokens": True}, "max_tokens"),
     ({"segment_tokens": 0}, "segment_tokens"), ({"segment_tokens": 2.5}, "segment_tokens")],
)
def test_bad_settings_are_refused(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        ResponseCache(**options)


def test_check_tokenizer_names_both_tokenizers() -> None:
    cache = ResponseCache(100, tokenizer_fingerprint="tok-a")
    cache.check_tokenizer("tok-a")
    with pytest.raises(TokenizerMismatchError, match="tok-a.*tok-b"):
        cache.check_tokenizer("tok-b")


# ---- persistence -------------------------------------------------------------------------------


def test_a_saved_cache_reloads_with_the_same_responses_and_drafts(tmp_path) -> None:
    path = tmp_path / "responses.cache"
    cache, responses = filled_cache(60, max_tokens=5000, segment_tokens=1000)
    cache.save(path)
    reloaded = ResponseCache(5000, path)
    assert reloaded.tokenizer_fingerprint == FINGERPRINT
    assert kept_lists(reloaded) == kept_lists(cache)
    stream = np.concatenate([responses[-1][:12], responses[-20][:9], responses[-7]]).tolist()
    assert answers(reloaded.snapshot(), stream) == answers(cache.snapshot(), stream)
    smaller = ResponseCache(1000, path)  # a smaller budget keeps the newest responses that fit
    assert kept_lists(smaller) == kept_lists(cache)[-len(kept_lists(smaller)) :]
    assert 1000 - 120 < smaller.num_tokens <= 1000


def test_a_with_block_saves_on_success_only(tmp_path) -> None:
    path = tmp_path / "responses.cache"
    with ResponseCache(1000, path, tokenizer_fingerprint=FINGERPRINT) as cache:
        cache.record([1, 2, 3])
    saved = path.read_bytes()
    with pytest.raises(RuntimeError), ResponseCache(1000, path, tokenizer_fingerprint=FINGERPRINT) as cache:
        cache.record([4, 5, 6])
        raise RuntimeError("the run failed")
    assert path.read_bytes() == saved
    assert kept_lists(ResponseCache(1000, path)) == [[1, 2, 3]]
    with pytest.raises(ValueError, match="no path"):
        ResponseCache(10).save()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResponseCache(10, tmp_path / "missing" / "cache")


def test_the_golden_version_1_file_loads_and_drafts_as_when_it_was_written() -> None:
    sys.path.insert(0, str(DATA))
    try:
        import make_golden_response_cache as golden
    finally:
        sys.path.remove(str(DATA))
    cache = ResponseCache(golden.MAX_TOKENS, GOLDEN_V1, tokenizer_fingerprint=golden.FINGERPRINT)
    assert kept_lists(cache) == [response for response in golden.RESPONSES if response]
    assert [(a["draft"], a["counts"]) for a in golden.answers(cache)] == [
        ([7, 8, 5, 6, 9], [4, 3, 1, 1, 1]), ([8, 5, 6, 9], [3, 1, 1, 1]), ([5, 6, 9], [1, 1, 1]),
        ([14], [1]), ([6, 7, 8, 13, 2147483647, 14], [1, 1, 1, 1, 1, 1]), ([], []),
    ]
    assert GOLDEN_V1.read_bytes()[:12] == MAGIC + struct.pack("<I", 1)


def refused(path: Path, error: type[Exception] = FormatError, **options) -> str:
    """The one-line message with which opening ``path`` is refused; the file must be left as it was."""
    before = path.read_bytes()
    with pytest.raises(error) as caught:
        ResponseCache(1000, path, **options)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left either
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def saved_file(tmp_path: Path) -> Path:
    path = tmp_path / "responses.cache"
    cache, _ = filled_cache(10)
    cache.save(path)
    return path


def test_bit_flips_anywhere_are_refused_and_the_file_left_unchanged(tmp_path) -> None:
    path = saved_file(tmp_path)
    data = path.read_bytes()
    for position in [0, 7, 8, 12, 16, 24, 32, 40, 45, 60, len(data) // 2, len(data) - 9, len(data) - 1]:
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        path.write_bytes(bytes(flipped))
        refused(path)


def test_truncated_files_are_refused(tmp_path) -> None:
    path = saved_file(tmp_path)
    data = path.read_bytes()
    for length in [0, 5, 8, 39, 40, 100, len(data) - 8, len(data) - 1]:
        path.write_bytes(data[:length])
        assert any(word in refused(path) for word in ("truncated", "not a sam-decoding"))
    path.write_bytes(data + b"\0")
    assert "padded" in refused(path)


def forge(path: Path, *, version: int = FORMAT_VERSION, lengths: list[int], tokens: list[int],
          fingerprint: str = FINGERPRINT, claimed_tokens: int | None = None) -> None:
    """A response cache file with any fields, its checksum correct."""
    encoded = fingerprint.encode()
    header = struct.pack("<8sIIQQQ", MAGIC, version, len(encoded), 1000, len(lengths),
                         len(tokens) if claimed_tokens is None else claimed_tokens)
    body = header + encoded + np.array(lengths, "<u4").tobytes() + np.array(tokens, "<u4").tobytes()
    path.write_bytes(body + hashlib.blake2b(body, digest_size=8).digest())


def test_forged_newer_inconsistent_and_foreign_files_are_refused(tmp_path) -> None:
    path = tmp_path / "responses.cache"
    forge(path, lengths=[2, 1], tokens=[1, 2, 3])
    assert kept_lists(ResponseCache(1000, path)) == [[1, 2], [3]]  # the forger writes valid files
    forge(path, version=2, lengths=[2, 1], tokens=[1, 2, 3])
    assert "newer than this sam-decoding reads" in refused(path)
    forge(path, version=0, lengths=[3], tokens=[1, 2, 3])
    assert "unknown" in refused(path)
    forge(path, lengths=[2, 0, 1], tokens=[1, 2, 3])
    assert "empty response" in refused(path)
    forge(path, lengths=[2, 2], tokens=[1, 2, 3])
    assert "sum to 4" in refused(path)
    forge(path, lengths=[1, 1, 1, 1], tokens=[1, 2, 3])
    assert "impossible" in refused(path)
    forge(path, lengths=[3], tokens=[1, 2**31, 3])
    assert "above 2^31-1" in refused(path)
    forge(path, lengths=[3], tokens=[1, 2, 3], claimed_tokens=2**60)
    assert "truncated" in refused(path)
    StaticAutomaton.build([[1, 2, 3]]).save(path)
    assert "not a sam-decoding response cache" in refused(path)
    forge(path, lengths=[3], tokens=[1, 2, 3], fingerprint="other-tokenizer")
    message = refused(path, TokenizerMismatchError, tokenizer_fingerprint=FINGERPRINT)
    assert "other-tokenizer" in message and FINGERPRINT in message


# ---- threads -----------------------------------------------------------------------------------


def test_threads_record_snapshot_and_draft_concurrently() -> None:
    cache = ResponseCache(10**6, tokenizer_fingerprint=FINGERPRINT, segment_tokens=2000)
    per_thread = [random_responses(40, seed=100 + index) for index in range(8)]
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def serve(responses: list[np.ndarray]) -> None:
        try:
            start.wait()
            for response in responses:
                cache.record(response)
                cursor = cache.snapshot().cursor()  # this thread's response is in it: draft it
                cursor.feed(response[:8])
                assert cursor.draft(len(response)).tolist() == response[8:].tolist()
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=serve, args=(responses,)) for responses in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    recorded = sorted(tuple(r.tolist()) for responses in per_thread for r in responses)
    assert sorted(map(tuple, kept_lists(cache))) == recorded
    assert cache.num_tokens == sum(map(len, recorded)) == cache.snapshot().num_tokens
    assert cache.num_responses == 320


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
       st.integers(0, 3), st.integers(0, 5), st.integers(0, 12), st.integers(0, 2))
def test_files_forged_in_several_fields_at_once_load_or_are_refused_cleanly(tmp_path_factory, flips, fingerprint_bytes,
                                                                           responses, tokens, version) -> None:
    # The header's sizes and bytes anywhere changed together, and the checksum made to match:
    # opening must either load a consistent cache or raise FormatError, never anything else.
    path = tmp_path_factory.mktemp("forged") / "responses.cache"
    cache = ResponseCache(1000, tokenizer_fingerprint="fp")
    for response in ([1, 2, 3], [4, 5], [6, 7, 8, 9]):
        cache.record(response)
    cache.save(path)
    data = bytearray(path.read_bytes()[:-8])
    data[8:40] = struct.pack("<IIQQQ", version, fingerprint_bytes, 1000, responses, tokens)
    size = 40 + fingerprint_bytes + 4 * responses + 4 * tokens  # the body cut or padded to the sizes claimed
    data = data[:size] + bytearray(4 * b"\1\0\0\0" * 20)[: max(0, size - len(data))]
    for position, value in flips:
        if 40 <= position < len(data):
            data[position] = value
    path.write_bytes(bytes(data) + hashlib.blake2b(bytes(data), digest_size=8).digest())
    try:
        loaded = ResponseCache(1000, path)
    except FormatError as error:
        assert "\n" not in str(error)
        return
    kept = kept_lists(loaded)
    assert loaded.num_tokens == sum(map(len, kept)) == tokens and loaded.num_responses == len(kept) == responses
    assert all(kept) and loaded.tokenizer_fingerprint == bytes(data[40 : 40 + fingerprint_bytes]).decode()


def test_torch_tensors_and_numpy_arrays_are_recorded_as_copies() -> None:
    import torch

    cache = ResponseCache(100)
    array = np.array([3, 4, 5], dtype=np.uint32)
    cache.record(array)
    array[0] = 99  # the caller's buffer changing later does not change the cache
    assert kept_lists(cache) == [[3, 4, 5]]
    cache.record(torch.tensor([6, 7], dtype=torch.int32))
    assert kept_lists(cache) == [[3, 4, 5], [6, 7]]


def test_generate_calls_in_threads_share_one_cache_and_stay_lossless(tiny_models, assert_greedy_equal, one_torch_thread) -> None:
    import torch

    from sam_decoding import SamDrafter, generate

    model = tiny_models[("llama", "sdpa")]
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(2, 96, (1, 6), generator=generator) for _ in range(4)]
    references = [model.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0) for prompt in prompts]
    cache = ResponseCache(10_000)
    outputs: dict[tuple[int, int], Any] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def serve(thread: int) -> None:
        try:
            drafter = SamDrafter(None, response_cache=cache)  # one drafter per thread, one cache for all
            start.wait()
            for repeat in range(2):  # the second call's prompt is another thread's first
                index = (thread + repeat) % len(prompts)
                outputs[thread, repeat] = generate(model, prompts[index], drafter=drafter, max_new_tokens=24, policy="all")
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=serve, args=(thread,)) for thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for (thread, repeat), result in outputs.items():
        index = (thread + repeat) % len(prompts)
        assert_greedy_equal(model, result.sequences, references[index], f"thread {thread} call {repeat}")
    assert cache.num_responses == 8 and cache.snapshot().num_documents == 8
    # Second calls answer what another thread answered first: they draft from its recorded answer.
    assert sum(outputs[thread, 1].stats.accepted_by_source.get("responses", 0) for thread in range(4)) > 0
