"""The automaton file: round trips, the committed golden files of format versions 1 and 2, and
files that are truncated, corrupted, foreign, of a newer version or half-written.

The header layout and checksum are re-implemented here from src/cpp/static_automaton.cpp and
src/cpp/checksum.cpp so the tests can forge files the loader must refuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sam_decoding
from sam_decoding import FORMAT_VERSION, FormatError, StaticAutomaton

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden_v1.sam"
GOLDEN_V2 = DATA / "golden_v2.sam"

# ---- the layout (version 1, plus the token width that version 2 adds after the section table) --

HEADER_BYTES = 512
HEADER_FIELDS = struct.Struct("<8sIIIIQQQQQQQIIQQ")  # up to the section table
SECTION = struct.Struct("<QQ")
NUM_SECTIONS = 11
V1_HEADER_STRUCT_BYTES = HEADER_FIELDS.size + NUM_SECTIONS * SECTION.size  # 280
TOKEN_BYTES_OFFSET = V1_HEADER_STRUCT_BYTES  # version 2: uint32 token_bytes, uint32 reserved (0)
HEADER_STRUCT_BYTES = TOKEN_BYTES_OFFSET + 8  # sizeof(Header): 288
VERSION_OFFSET = 8
HEADER_CHECKSUM_OFFSET = 96
SECTION_NAMES = ["fingerprint", "metadata", "text", "link", "count", "count_overflow", "clone_length",
                 "clone_end", "edge_offset", "edge_token", "edge_target"]
FIELD_NAMES = ["magic", "format_version", "endian_tag", "header_bytes", "num_sections",
               "file_bytes", "num_tokens", "num_documents", "text_length", "num_states",
               "num_clones", "num_edges", "vocab_bound", "num_count_overflows", "payload_checksum",
               "header_checksum"]

MASK = (1 << 64) - 1
PRIME1, PRIME2, PRIME3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (64 - bits))) & MASK


def _mix(lane: int, word: int) -> int:
    return (_rotl((lane + word * PRIME2) & MASK, 31) * PRIME1) & MASK


def checksum64(data: bytes, seed: int = 0) -> int:
    """sam::checksum64, bit for bit."""
    size = len(data)
    lanes = [(seed + PRIME1 + PRIME2) & MASK, (seed + PRIME2) & MASK, seed, (seed - PRIME1) & MASK]
    offset = 0
    while offset + 32 <= size:
        words = struct.unpack_from("<4Q", data, offset)
        lanes = [_mix(lane, word) for lane, word in zip(lanes, words)]
        offset += 32
    value = (_rotl(lanes[0], 1) + _rotl(lanes[1], 7) + _rotl(lanes[2], 12) + _rotl(lanes[3], 18)) & MASK
    value ^= (size * PRIME3) & MASK
    while offset + 8 <= size:
        (word,) = struct.unpack_from("<Q", data, offset)
        value = (_rotl(value ^ _mix(0, word), 27) * PRIME1 + PRIME3) & MASK
        offset += 8
    while offset < size:
        value = (_rotl(value ^ ((data[offset] * PRIME3) & MASK), 11) * PRIME1) & MASK
        offset += 1
    value ^= value >> 33
    value = (value * PRIME2) & MASK
    value ^= value >> 29
    value = (value * PRIME3) & MASK
    value ^= value >> 32
    return value


def parse_header(data: bytes) -> tuple[dict, list[tuple[int, int]]]:
    fields = dict(zip(FIELD_NAMES, HEADER_FIELDS.unpack_from(data, 0)))
    sections = [SECTION.unpack_from(data, HEADER_FIELDS.size + SECTION.size * index)
                for index in range(NUM_SECTIONS)]
    return fields, sections


def set_header_fields(data: bytearray, **changes: int) -> None:
    """Overwrite the named header fields of ``data`` in place (the checksum is left as it was)."""
    fields, _ = parse_header(bytes(data))
    fields.update(changes)
    HEADER_FIELDS.pack_into(data, 0, *[fields[name] for name in FIELD_NAMES])


def reseal_header(data: bytearray) -> None:
    """Recompute the header checksum, as a writer of a (forged) valid header would."""
    struct.pack_into("<Q", data, HEADER_CHECKSUM_OFFSET, 0)
    value = checksum64(bytes(data[:HEADER_BYTES]), 0x5A4D)  # the padding after the fields too
    struct.pack_into("<Q", data, HEADER_CHECKSUM_OFFSET, value)


def reseal_payload(data: bytearray) -> None:
    struct.pack_into("<Q", data, 88, checksum64(bytes(data[HEADER_BYTES:])))
    reseal_header(data)


# ---- helpers ----------------------------------------------------------------------------------


def answers(automaton: StaticAutomaton, queries) -> list:
    results = []
    for query in queries:
        cursor = automaton.cursor()
        lengths = [cursor.feed(int(token)) for token in query]
        tree = cursor.draft_tree(10)
        results.append((lengths, cursor.draft(12).tolist(), tree.tokens.tolist(),
                        tree.parents.tolist(), tree.counts.tolist(),
                        tree.probabilities.tolist()))
    return results


def properties(automaton: StaticAutomaton) -> tuple:
    return (automaton.num_tokens, automaton.num_documents, automaton.num_states,
            automaton.num_edges, automaton.vocab_bound, automaton.nbytes,
            automaton.tokenizer_fingerprint, automaton.metadata, automaton.format_version)


def small_file(tmp_path: Path) -> tuple[Path, bytes]:
    rng = np.random.default_rng(21)
    documents = [rng.integers(0, 4, size=size) for size in (40, 0, 25, 60)]
    documents.append(np.array([2**31 - 1, 3, 2**31 - 1]))
    path = tmp_path / "small.sam"
    StaticAutomaton.build(documents, tokenizer_fingerprint="fp", metadata={"k": "v"}).save(path)
    return path, path.read_bytes()


def refused(path: Path) -> bool:
    """True if the file is refused by load, by load(verify=True), or by verify()."""
    try:
        automaton = StaticAutomaton.load(path)
    except FormatError:
        pass
    else:
        try:
            automaton.verify()
        except FormatError:
            pass
        else:
            return False
    try:
        StaticAutomaton.load(path, verify=True)
    except FormatError:
        return True
    return False


# ---- round trip -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3), max_size=40), min_size=1, max_size=4).filter(any),
    st.lists(st.lists(st.integers(0, 3), max_size=30), min_size=1, max_size=8),
    st.text(max_size=20),
)
def test_save_load_round_trip(tmp_path_factory, documents, queries, fingerprint):
    path = tmp_path_factory.mktemp("round") / "corpus.sam"
    built = StaticAutomaton.build(documents, tokenizer_fingerprint=fingerprint,
                                  metadata={"documents": len(documents)})
    built.save(path)
    assert path.stat().st_size == built.nbytes
    for loaded in (StaticAutomaton.load(path), StaticAutomaton.load(path, verify=True)):
        assert loaded.is_memory_mapped
        assert not built.is_memory_mapped
        assert properties(loaded) == properties(built)
        assert loaded.tokenizer_fingerprint == fingerprint
        assert answers(loaded, queries) == answers(built, queries)
        loaded.verify()


def test_round_trip_of_a_larger_corpus(tmp_path):
    rng = np.random.default_rng(4)
    base = rng.integers(0, 50, size=2000)
    documents = [np.concatenate([base[start:start + 300], rng.integers(0, 50, size=100)])
                 for start in range(0, 1700, 170)]
    built = StaticAutomaton.build(documents)
    path = tmp_path / "larger.sam"
    built.save(path)
    loaded = StaticAutomaton.load(path, verify=True)
    queries = [base[start:start + 80] for start in range(0, 1900, 97)]
    queries += [rng.integers(0, 50, size=80) for _ in range(10)]
    assert answers(loaded, queries) == answers(built, queries)
    assert properties(loaded) == properties(built)


def test_a_saved_loaded_automaton_saves_again_identically(tmp_path):
    path, data = small_file(tmp_path)
    StaticAutomaton.load(path).save(tmp_path / "again.sam")
    assert (tmp_path / "again.sam").read_bytes() == data


def test_overwriting_the_mapped_file_keeps_the_mapping_valid(tmp_path):
    path, _ = small_file(tmp_path)
    loaded = StaticAutomaton.load(path)
    before = answers(loaded, [[1, 2, 3], [0, 0]])
    StaticAutomaton.build([[9, 9, 9]]).save(path)  # replaced by rename, the old inode lives on
    assert answers(loaded, [[1, 2, 3], [0, 0]]) == before
    assert StaticAutomaton.load(path).num_tokens == 3


def test_paths_may_be_str_or_pathlike(tmp_path):
    automaton = StaticAutomaton.build([[1, 2]])
    automaton.save(str(tmp_path / "a.sam"))
    assert StaticAutomaton.load(str(tmp_path / "a.sam")).num_tokens == 2


def test_python_checksum_matches_the_native_one(tmp_path):
    _, data = small_file(tmp_path)
    fields, _ = parse_header(data)
    assert checksum64(data[HEADER_BYTES:]) == fields["payload_checksum"]
    resealed = bytearray(data)
    reseal_header(resealed)
    assert bytes(resealed) == data


# ---- the golden file of format version 1 ------------------------------------------------------

GOLDEN_SHA256 = "e1fc984ea96ca2b317cefbaa96b5f9eb9075f2b16a4ea6a32b77fa6715ed30e7"
GOLDEN_ANSWERS = [
    {"query": [1, 2], "match_length": 2, "draft": [3, 1, 2, 4, 1, 2, 3, 5], "tree_tokens": [3, 1, 2, 4, 1, 2], "tree_parents": [-1, 0, 1, -1, 3, 4], "tree_counts": [4, 2, 1, 1, 1, 1]},
    {"query": [1, 2, 3], "match_length": 3, "draft": [1, 2, 4, 1, 2, 3, 5], "tree_tokens": [1, 2, 4, 1, 2, 3], "tree_parents": [-1, 0, 1, 2, 3, 4], "tree_counts": [2, 1, 1, 1, 1, 1]},
    {"query": [9, 2, 3], "match_length": 2, "draft": [1, 2, 3, 6, 2147483647, 2, 3], "tree_tokens": [1, 2, 3, 4, 1, 2], "tree_parents": [-1, 0, 1, 1, 3, 4], "tree_counts": [3, 2, 1, 1, 1, 1]},
    {"query": [2147483647, 2], "match_length": 2, "draft": [3], "tree_tokens": [3], "tree_parents": [-1], "tree_counts": [1]},
    {"query": [7, 1, 2, 3, 1], "match_length": 5, "draft": [2, 4, 1, 2, 3, 5], "tree_tokens": [2, 4, 1, 2, 3, 5], "tree_parents": [-1, 0, 1, 2, 3, 4], "tree_counts": [1, 1, 1, 1, 1, 1]},
    {"query": [4], "match_length": 1, "draft": [1, 2, 3, 5], "tree_tokens": [1, 2, 3, 5], "tree_parents": [-1, 0, 1, 2], "tree_counts": [1, 1, 1, 1]},
    {"query": [8], "match_length": 0, "draft": [], "tree_tokens": [], "tree_parents": [], "tree_counts": []},
]  # fmt: skip


def test_golden_file_is_the_committed_one():
    assert hashlib.sha256(GOLDEN.read_bytes()).hexdigest() == GOLDEN_SHA256


def test_golden_file_header():
    data = GOLDEN.read_bytes()
    fields, sections = parse_header(data)
    assert fields["magic"] == b"SAMDECA\x1a"
    assert fields["format_version"] == 1
    assert fields["endian_tag"] == 0x01020304
    assert fields["header_bytes"] == HEADER_BYTES
    assert fields["num_sections"] == NUM_SECTIONS
    assert fields["file_bytes"] == len(data) == 1664
    assert (fields["num_tokens"], fields["num_documents"], fields["text_length"]) == (24, 3, 27)
    assert (fields["num_states"], fields["num_clones"], fields["num_edges"]) == (33, 5, 21)
    assert fields["vocab_bound"] == 2**31
    assert fields["header_checksum"] == checksum64(
        data[:HEADER_CHECKSUM_OFFSET] + bytes(8) + data[HEADER_CHECKSUM_OFFSET + 8:HEADER_BYTES],
        0x5A4D)
    assert fields["payload_checksum"] == checksum64(data[HEADER_BYTES:])
    assert data[V1_HEADER_STRUCT_BYTES:HEADER_BYTES] == bytes(HEADER_BYTES - V1_HEADER_STRUCT_BYTES)
    assert all(offset % 64 == 0 and offset >= HEADER_BYTES for offset, _ in sections)
    offset, size = sections[SECTION_NAMES.index("text")]
    text = np.frombuffer(data, dtype="<u4", count=size // 4, offset=offset)
    separator = 2**32 - 1
    assert text.tolist() == [1, 2, 3, 1, 2, 4, 1, 2, 3, 5, separator,
                             2, 3, 1, 2, 3, 6, 2**31 - 1, 2, 3, separator,
                             7, 1, 2, 3, 1, separator]


@pytest.mark.parametrize("verify", [False, True])
def test_golden_file_loads_and_answers(verify):
    automaton = StaticAutomaton.load(GOLDEN, verify=verify)
    automaton.verify()
    assert automaton.format_version == 1
    assert automaton.is_memory_mapped
    assert automaton.tokenizer_fingerprint == "golden-tokenizer-v1"
    assert automaton.metadata == {"documents": 4, "purpose": "format-version-1 golden file"}
    assert (automaton.num_tokens, automaton.num_documents, automaton.num_states) == (24, 3, 33)
    assert (automaton.num_edges, automaton.vocab_bound, automaton.nbytes) == (21, 2**31, 1664)
    automaton.check_tokenizer("golden-tokenizer-v1")
    assert_golden_answers(automaton, GOLDEN_ANSWERS)


def import_make_golden():
    sys.path.insert(0, str(DATA))
    try:
        import make_golden
    finally:
        sys.path.remove(str(DATA))
    return make_golden


def test_golden_v1_answers_as_a_build_today():
    """Files of format version 1 answer exactly as today's build of the same documents."""
    make_golden = import_make_golden()
    assert make_golden.answers(StaticAutomaton.load(GOLDEN), version=1) == GOLDEN_ANSWERS
    assert make_golden.answers(make_golden.build(version=1), version=1) == GOLDEN_ANSWERS


# ---- the golden file of format version 2 (16-bit tokens) ---------------------------------------

GOLDEN_V2_SHA256 = "5da9435e1990325a6ef2d39bcd3d54daf9fa25c7e77c2adef4b0ac3f23456bfc"
LARGEST_NARROW_ID = 65534


def assert_golden_answers(automaton, answers: list[dict]) -> None:
    """``automaton`` (one file or a sharded corpus) matches, drafts and drafts trees as ``answers`` record."""
    for expected in answers:
        cursor = automaton.cursor()
        cursor.feed(expected["query"])
        tree = cursor.draft_tree(6)
        assert cursor.match_length == expected["match_length"]
        assert cursor.draft(8).tolist() == expected["draft"]
        assert (tree.tokens.tolist(), tree.parents.tolist(), tree.counts.tolist()) == (
            expected["tree_tokens"], expected["tree_parents"], expected["tree_counts"])


def as_v2_answers(answers: list[dict]) -> list[dict]:
    """GOLDEN_ANSWERS with the largest id of version 1's corpus replaced by version 2's."""
    swap = lambda tokens: [LARGEST_NARROW_ID if token == 2**31 - 1 else token for token in tokens]  # noqa: E731
    return [{key: swap(value) if key in ("query", "draft", "tree_tokens") else value
             for key, value in answer.items()} for answer in answers]


def test_golden_v2_file_is_the_committed_one():
    assert hashlib.sha256(GOLDEN_V2.read_bytes()).hexdigest() == GOLDEN_V2_SHA256


def test_golden_v2_header_and_16_bit_sections():
    data = GOLDEN_V2.read_bytes()
    fields, sections = parse_header(data)
    assert (fields["format_version"], fields["file_bytes"], len(data)) == (2, 1536, 1536)
    assert (fields["num_tokens"], fields["num_documents"], fields["text_length"]) == (24, 3, 27)
    assert (fields["num_states"], fields["num_clones"], fields["num_edges"]) == (33, 5, 21)
    assert fields["vocab_bound"] == LARGEST_NARROW_ID + 1
    assert struct.unpack_from("<II", data, TOKEN_BYTES_OFFSET) == (2, 0)
    assert data[HEADER_STRUCT_BYTES:HEADER_BYTES] == bytes(HEADER_BYTES - HEADER_STRUCT_BYTES)
    offset, size = sections[SECTION_NAMES.index("text")]
    assert size == 2 * 27
    text = np.frombuffer(data, dtype="<u2", count=size // 2, offset=offset)
    separator = 0xFFFF
    assert text.tolist() == [1, 2, 3, 1, 2, 4, 1, 2, 3, 5, separator,
                             2, 3, 1, 2, 3, 6, LARGEST_NARROW_ID, 2, 3, separator,
                             7, 1, 2, 3, 1, separator]
    assert sections[SECTION_NAMES.index("edge_token")][1] == 2 * 21


@pytest.mark.parametrize("verify", [False, True])
def test_golden_v2_file_loads_and_answers(verify):
    automaton = StaticAutomaton.load(GOLDEN_V2, verify=verify)
    automaton.verify()
    assert automaton.format_version == FORMAT_VERSION == 2
    assert automaton.metadata == {"documents": 4, "purpose": "format-version-2 golden file"}
    assert (automaton.num_states, automaton.num_edges, automaton.nbytes) == (33, 21, 1536)
    assert_golden_answers(automaton, as_v2_answers(GOLDEN_ANSWERS))


def test_golden_v2_file_is_what_the_builder_writes_today(tmp_path):
    """Same corpus, same bytes: a change to the v2 layout needs a new format version."""
    make_golden = import_make_golden()
    make_golden.build().save(tmp_path / "today.sam")
    assert (tmp_path / "today.sam").read_bytes() == GOLDEN_V2.read_bytes()
    assert make_golden.answers(StaticAutomaton.load(GOLDEN_V2)) == as_v2_answers(GOLDEN_ANSWERS)


@pytest.mark.parametrize(("largest", "token_bytes"), [(0, 2), (65534, 2), (65535, 4), (2**31 - 1, 4)])
def test_token_width_follows_the_largest_id(tmp_path, largest, token_bytes):
    documents = [[1, largest, 2, largest, 1], [largest, 2]]
    path = tmp_path / "width.sam"
    StaticAutomaton.build(documents).save(path)
    assert struct.unpack_from("<I", path.read_bytes(), TOKEN_BYTES_OFFSET)[0] == token_bytes
    automaton = StaticAutomaton.load(path, verify=True)
    automaton.verify()
    cursor = automaton.cursor()
    cursor.feed([largest, 2])
    assert cursor.match_length == 2
    assert cursor.draft(3).tolist() == [largest, 1]


def narrow_file(tmp_path: Path) -> tuple[Path, bytes]:
    """A version 2 file with 16-bit tokens: small_file's corpus without its largest id."""
    rng = np.random.default_rng(21)
    documents = [rng.integers(0, 4, size=size) for size in (40, 0, 25, 60)]
    documents.append(np.array([65534, 3, 65534]))
    path = tmp_path / "narrow.sam"
    StaticAutomaton.build(documents, tokenizer_fingerprint="fp", metadata={"k": "v"}).save(path)
    return path, path.read_bytes()


@pytest.mark.parametrize(
    ("version", "token_bytes", "reserved", "vocab_bound"),
    [(1, 2, 0, None), (1, 4, 0, None), (2, 0, 0, None), (2, 1, 0, None), (2, 3, 0, None),
     (2, 8, 0, None), (2, 2, 1, None), (2, 2, 0, 65536), (2, 2, 0, 2**31)],
)
def test_forged_token_width_is_refused(tmp_path, version, token_bytes, reserved, vocab_bound):
    path, data = narrow_file(tmp_path)
    forged = bytearray(data)
    struct.pack_into("<I", forged, VERSION_OFFSET, version)
    struct.pack_into("<II", forged, TOKEN_BYTES_OFFSET, token_bytes, reserved)
    if vocab_bound is not None:
        set_header_fields(forged, vocab_bound=vocab_bound)
    reseal_header(forged)
    path.write_bytes(forged)
    with pytest.raises(FormatError):
        StaticAutomaton.load(path)


def test_narrow_file_round_trip_answers_as_the_build(tmp_path):
    path, data = narrow_file(tmp_path)
    assert struct.unpack_from("<I", data, TOKEN_BYTES_OFFSET)[0] == 2
    built = StaticAutomaton.load(path, verify=True)
    rng = np.random.default_rng(3)
    queries = [rng.integers(0, 5, size=12).tolist() + [65534, 3] for _ in range(20)]
    rebuilt_path, _ = small_file(tmp_path)  # the same shapes with 32-bit tokens
    assert built.nbytes < StaticAutomaton.load(rebuilt_path).nbytes
    assert answers(built, queries) == answers(StaticAutomaton.load(path), queries)


# ---- refused files ----------------------------------------------------------------------------


@pytest.mark.parametrize("make_file", [small_file, narrow_file], ids=["32-bit", "16-bit"])
def test_truncation_at_every_section_boundary_and_elsewhere(tmp_path, make_file):
    path, data = make_file(tmp_path)
    _, sections = parse_header(data)
    cuts = {0, 1, 7, 8, 9, 12, 63, 64, 100, 103, 104, 279, 280, 300, 511, 512, 513, len(data) - 1}
    for offset, size in sections:
        cuts |= {offset - 1, offset, offset + 1, offset + size - 1, offset + size, offset + size + 1}
    cuts |= set(range(0, len(data), 37))
    cuts = sorted(cut for cut in cuts if 0 <= cut < len(data))
    bad = tmp_path / "cut.sam"
    for cut in cuts:
        bad.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            StaticAutomaton.load(bad)
        with pytest.raises(FormatError):
            StaticAutomaton.load(bad, verify=True)


@pytest.mark.parametrize("make_file", [small_file, narrow_file], ids=["32-bit", "16-bit"])
def test_flipped_header_field_bytes_are_refused(tmp_path, make_file):
    path, data = make_file(tmp_path)
    bad = tmp_path / "flipped.sam"
    for offset in range(HEADER_STRUCT_BYTES):
        for mask in (0x01, 0x80):
            corrupted = bytearray(data)
            corrupted[offset] ^= mask
            bad.write_bytes(corrupted)
            with pytest.raises(FormatError):
                StaticAutomaton.load(bad)


def test_flipped_header_padding_bytes_are_refused(tmp_path):
    """Bytes between the header fields and the payload belong to the file too."""
    path, data = small_file(tmp_path)
    bad = tmp_path / "flipped.sam"
    missed = []
    for offset in range(HEADER_STRUCT_BYTES, HEADER_BYTES):
        corrupted = bytearray(data)
        corrupted[offset] ^= 0x20
        bad.write_bytes(corrupted)
        if not refused(bad):
            missed.append(offset)
    assert missed == [], f"header padding flips not detected at offsets {missed[0]}..{missed[-1]}"


@pytest.mark.parametrize("make_file", [small_file, narrow_file], ids=["32-bit", "16-bit"])
def test_flipped_payload_bytes_are_refused_by_verification(tmp_path, make_file):
    path, data = make_file(tmp_path)
    _, sections = parse_header(data)
    offsets = set(range(HEADER_BYTES, len(data), 7))
    for offset, size in sections:
        offsets |= {offset, offset + size - 1} if size else set()
    bad = tmp_path / "flipped.sam"
    for offset in sorted(offsets):
        corrupted = bytearray(data)
        corrupted[offset] ^= 0x04
        bad.write_bytes(corrupted)
        with pytest.raises(FormatError):
            StaticAutomaton.load(bad, verify=True)
        try:
            automaton = StaticAutomaton.load(bad)  # cheap checks only: may pass
        except FormatError:
            continue
        with pytest.raises(FormatError):
            automaton.verify()


@pytest.mark.parametrize(
    "magic", [b"SAMDECA\x00", b"samdeca\x1a", b"\x00" * 8, b"PK\x03\x04\x00\x00\x00\x00"]
)
def test_wrong_magic_is_refused(tmp_path, magic):
    path, data = small_file(tmp_path)
    path.write_bytes(magic + data[8:])
    with pytest.raises(FormatError, match="magic"):
        StaticAutomaton.load(path)


@pytest.mark.parametrize("version", [3, 255, 2**32 - 1])
def test_newer_version_is_refused_with_an_upgrade_hint(tmp_path, version):
    path, data = small_file(tmp_path)
    forged = bytearray(data)
    struct.pack_into("<I", forged, VERSION_OFFSET, version)
    reseal_header(forged)
    path.write_bytes(forged)
    with pytest.raises(FormatError, match=f"version {version}.*upgrade"):
        StaticAutomaton.load(path)


@pytest.mark.parametrize("version", [0, 1, 3])
def test_other_version_with_a_stale_checksum_is_refused(tmp_path, version):
    path, data = small_file(tmp_path)
    forged = bytearray(data)
    struct.pack_into("<I", forged, VERSION_OFFSET, version)
    path.write_bytes(forged)
    with pytest.raises(FormatError):
        StaticAutomaton.load(path)


def test_version_zero_with_a_valid_checksum_is_refused(tmp_path):
    path, data = small_file(tmp_path)
    forged = bytearray(data)
    struct.pack_into("<I", forged, VERSION_OFFSET, 0)
    reseal_header(forged)
    path.write_bytes(forged)
    with pytest.raises(FormatError):
        StaticAutomaton.load(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_states", 1), ("num_states", 2**40), ("text_length", 0), ("num_edges", 2**33),
     ("file_bytes", 0), ("num_sections", 10), ("num_sections", 12), ("header_bytes", 256), ("endian_tag", 0x04030201),
     ("num_tokens", 0), ("num_clones", 10**9)],
)
def test_forged_headers_with_valid_checksums_are_refused(tmp_path, field, value):
    path, data = small_file(tmp_path)
    forged = bytearray(data)
    set_header_fields(forged, **{field: value})
    reseal_header(forged)
    path.write_bytes(forged)
    with pytest.raises(FormatError):
        StaticAutomaton.load(path)


def test_forged_section_table_is_refused(tmp_path):
    path, data = small_file(tmp_path)
    _, sections = parse_header(data)
    for index, (offset, size) in enumerate(sections):
        # The string sections may have any size, so only a size past the end is wrong for them.
        grown = size + 4 if index >= 2 else len(data) - offset + 1
        for new_offset, new_size in ((offset + 1, size), (offset, grown), (len(data), size),
                                     (2**63, size), (0, size), (offset, 2**64 - 1)):
            if (new_offset, new_size) == (offset, size) or (size == 0 and new_offset == len(data)):
                continue
            forged = bytearray(data)
            SECTION.pack_into(forged, HEADER_FIELDS.size + SECTION.size * index, new_offset, new_size)
            reseal_header(forged)
            path.write_bytes(forged)
            with pytest.raises(FormatError):
                StaticAutomaton.load(path)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 64, b"trailing garbage"])
def test_trailing_bytes_are_refused(tmp_path, extra):
    path, data = small_file(tmp_path)
    path.write_bytes(data + extra)
    with pytest.raises(FormatError, match="trailing"):
        StaticAutomaton.load(path)


@pytest.mark.parametrize(
    "content", [b"", b"S", b"SAMDECA\x1a", b"SAMDECA\x1a" + bytes(600), os.urandom(4096),
                json.dumps({"not": "an automaton"}).encode()],
    ids=["empty", "one-byte", "magic-only", "magic-and-zeros", "random", "json"],
)
def test_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / "foreign.sam"
    path.write_bytes(content)
    with pytest.raises(FormatError):
        StaticAutomaton.load(path)


def test_format_error_is_a_value_error_exported_by_the_package():
    assert issubclass(FormatError, ValueError)
    assert sam_decoding.FormatError is FormatError


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        StaticAutomaton.load(tmp_path / "missing.sam")
    with pytest.raises(IsADirectoryError):
        StaticAutomaton.load(tmp_path)


def test_payload_corruption_with_a_forged_checksum_is_caught_by_verify(tmp_path):
    """A suffix link that points at a longer state passes the checksum but not the invariants."""
    path, data = small_file(tmp_path)
    _, sections = parse_header(data)
    link_offset, _ = sections[SECTION_NAMES.index("link")]
    forged = bytearray(data)
    struct.pack_into("<I", forged, link_offset + 4 * 5, 7)  # link(5) = 7: longer than state 5
    reseal_payload(forged)
    path.write_bytes(forged)
    automaton = StaticAutomaton.load(path, verify=True)  # the checksum is right
    with pytest.raises(FormatError):
        automaton.verify()


# ---- corrupted payloads, unverified: answers may be wrong, but nothing may crash or hang -------

CORRUPTED_QUERIES = textwrap.dedent(
    """
    import random, sys
    import numpy as np
    from sam_decoding import FormatError, StaticAutomaton

    path, seed, cases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = open(path, "rb").read()
    rng = random.Random(seed)
    target = path + ".bad"
    outcomes = {"worked": 0, "refused": 0}
    for case in range(cases):
        print("case", case, flush=True)
        corrupted = bytearray(data)
        kind = case % 3
        for _ in range(rng.randint(1, 8)):
            offset = rng.randrange(512, len(data) - 4)
            if kind == 0:
                corrupted[offset] ^= 1 << rng.randrange(8)
            elif kind == 1:
                corrupted[offset:offset + 4] = rng.choice(
                    [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0, 1, rng.getrandbits(32)]
                ).to_bytes(4, "little")
            else:
                corrupted[offset:offset + 4] = rng.randrange(0, 200).to_bytes(4, "little")
        open(target, "wb").write(corrupted)
        try:
            automaton = StaticAutomaton.load(target, verify=False)
            for _ in range(20):
                cursor = automaton.cursor()
                cursor.feed(np.array([rng.randrange(0, 6) for _ in range(rng.randint(1, 40))]))
                cursor.draft(rng.randint(0, 50))
                cursor.draft_tree(rng.randint(0, 40), max_depth=rng.randint(1, 10))
                cursor.feed(rng.randrange(0, 6))
                cursor.draft_tree(16)
            outcomes["worked"] += 1
        except FormatError:
            outcomes["refused"] += 1
    print(outcomes, flush=True)
    """
)


def run_isolated(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    # Run outside the checkout: `python -c` puts the working directory first on sys.path, where
    # the source tree's sam_decoding (without the compiled _core) would shadow the installed one.
    with tempfile.TemporaryDirectory() as elsewhere:
        return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=elsewhere)


def large_count_file(tmp_path: Path) -> Path:
    """A corpus with occurrence counts past 16 bits, so the large-count section is not empty."""
    path = tmp_path / "large_counts.sam"
    documents = [np.zeros(70_000, dtype=np.int32), np.array([0, 1, 2, 0, 1, 3, 4, 5])]
    StaticAutomaton.build(documents).save(path)
    return path


def test_counts_beyond_16_bits_round_trip(tmp_path):
    path = large_count_file(tmp_path)
    fields, _ = parse_header(path.read_bytes())
    assert fields["num_count_overflows"] > 0
    for automaton in (StaticAutomaton.load(path, verify=True), StaticAutomaton.build(
            [np.zeros(70_000, dtype=np.int32), np.array([0, 1, 2, 0, 1, 3, 4, 5])])):
        automaton.verify() if automaton.is_memory_mapped else None
        cursor = automaton.cursor()
        cursor.feed([7, 0])
        tree = cursor.draft_tree(3, max_depth=1)
        # "0" occurs 70002 times: followed by 0 69999 times and by 1 twice.
        assert tree.tokens.tolist() == [0, 1]
        assert tree.counts.tolist() == [69_999, 2]
        assert tree.probabilities[0] == pytest.approx(69_999 / 70_002)
        cursor.feed([0] * 65_535)
        tree = cursor.draft_tree(1)
        assert tree.counts.tolist() == [70_000 - 65_536]


@pytest.mark.parametrize("which", ["small", "small-16-bit", "large-counts"])
def test_corrupted_payload_never_crashes_unverified_queries(tmp_path, which):
    makers = {"small": lambda: small_file(tmp_path)[0], "small-16-bit": lambda: narrow_file(tmp_path)[0],
              "large-counts": lambda: large_count_file(tmp_path)}
    path = makers[which]()
    cases = "60" if which == "large-counts" else "400"
    try:
        result = run_isolated(CORRUPTED_QUERIES, str(path), "7", cases, timeout=30)
    except subprocess.TimeoutExpired as timeout:
        last = (timeout.stdout or b"").decode().strip().splitlines()[-1:]
        pytest.fail(f"queries on a corrupted file hung (an endless loop) at {last}")
    assert result.returncode == 0, (
        f"crashed with {result.returncode} after {result.stdout.strip().splitlines()[-1:]}: "
        f"{result.stderr[-2000:]}"
    )
    assert "refused" in result.stdout


SUFFIX_LINK_CYCLE = textwrap.dedent(
    """
    import struct, sys
    from sam_decoding import FormatError, StaticAutomaton

    path, link_offset, state = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = bytearray(open(path, "rb").read())
    struct.pack_into("<I", data, link_offset + 4 * state, state)  # link(state) = state
    open(path + ".bad", "wb").write(data)
    automaton = StaticAutomaton.load(path + ".bad")
    for stream in ([1, 2, 3], [0, 1, 2, 3, 0, 2**31 - 1, 9]):
        try:
            cursor = automaton.cursor()
            for token in stream:
                cursor.feed(token)
                cursor.draft(8)
                cursor.draft_tree(8)
        except FormatError:
            pass
    print("done")
    """
)


def test_a_suffix_link_cycle_is_refused_not_followed_forever(tmp_path):
    path = tmp_path / "cycle.sam"
    StaticAutomaton.build([[1, 2, 3, 1, 2, 4], [5, 1, 2]]).save(path)
    _, sections = parse_header(path.read_bytes())
    link_offset, _ = sections[SECTION_NAMES.index("link")]
    try:
        result = run_isolated(SUFFIX_LINK_CYCLE, str(path), str(link_offset), "3", timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("a corrupted suffix link (a cycle) made feed() loop forever")
    assert result.returncode == 0, result.stderr[-2000:]


# ---- several header fields forged together -----------------------------------------------------

# Forges the size fields of a valid file in ways that keep every relation the loader checks true
# modulo 2^64 (e.g. text_length + 2^62 makes text_length * 4 unchanged), reseals the header
# checksum, and loads. Only checked arithmetic and bounds on each field can refuse these. Runs in
# a child process: a forgery that loads and then reads out of bounds would crash the test runner.
HEADER_FUZZ = textwrap.dedent(
    """
    import struct, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st
    from test_file_format import (FIELD_NAMES, HEADER_FIELDS, SECTION, SECTION_NAMES,
                                  TOKEN_BYTES_OFFSET, parse_header, reseal_header)
    from sam_decoding import FormatError, StaticAutomaton

    path, examples = sys.argv[2], int(sys.argv[3])
    data = open(path, "rb").read()
    fields, sections = parse_header(data)
    (token_bytes,) = struct.unpack_from("<I", data, TOKEN_BYTES_OFFSET)
    MASK = (1 << 64) - 1
    SIZES = ["num_tokens", "num_documents", "text_length", "num_states", "num_clones", "num_edges",
             "num_count_overflows", "vocab_bound"]
    WIDTH32 = {"num_count_overflows", "vocab_bound"}
    # Fields whose value decides where the loader reads; a forgery of any of them must be refused.
    LAYOUT = ["text_length", "num_states", "num_clones", "num_edges", "num_count_overflows"]
    SECTION_OF = {"text": ("text_length", "token"), "link": ("num_states", 4), "count": ("num_states", 2),
                  "count_overflow": ("num_count_overflows", 8), "clone_length": ("num_clones", 4),
                  "clone_end": ("num_clones", 4), "edge_offset": ("num_states", 4),
                  "edge_token": ("num_edges", "token"), "edge_target": ("num_edges", 4)}
    change = st.one_of(
        st.integers(1, 3).map(lambda k: ("add", k << 62)),
        st.just(("add", 1 << 63)),
        st.integers(1, 3).map(lambda k: ("add", (-(k << 62)) & MASK)),
        st.integers(-3, 3).filter(bool).map(lambda d: ("add", d & MASK)),
        st.integers(1 << 32, MASK).map(lambda v: ("set", v)),
        st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**63, MASK]).map(lambda v: ("set", v)))

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(SIZES), change, min_size=1, max_size=5),
           st.booleans(), st.booleans(), st.integers(0, 200), st.sampled_from([None, None, 2, 4, 1, 0]))
    def forge(changes, keep_sums, keep_sections, query, forged_width):
        width = token_bytes if forged_width is None else forged_width
        forged_fields = dict(fields)
        for name, (how, value) in changes.items():
            mask = 0xFFFFFFFF if name in WIDTH32 else MASK
            forged_fields[name] = ((forged_fields[name] + value) if how == "add" else value) & mask
        if keep_sums:
            if "num_states" not in changes:
                forged_fields["num_states"] = (forged_fields["text_length"] + 1 + forged_fields["num_clones"]) & MASK
            if "num_tokens" not in changes:
                forged_fields["num_tokens"] = (forged_fields["text_length"] - forged_fields["num_documents"]) & MASK
        forged = bytearray(data)
        HEADER_FIELDS.pack_into(forged, 0, *[forged_fields[name] for name in FIELD_NAMES])
        if keep_sections:
            for index, name in enumerate(SECTION_NAMES):
                if name in SECTION_OF:
                    field, bytes_each = SECTION_OF[name]
                    bytes_each = width if bytes_each == "token" else bytes_each
                    extra = 1 if name == "edge_offset" else 0
                    offset, _ = sections[index]
                    SECTION.pack_into(forged, HEADER_FIELDS.size + SECTION.size * index, offset,
                                      ((forged_fields[field] + extra) * bytes_each) & MASK)
        struct.pack_into("<I", forged, TOKEN_BYTES_OFFSET, width)
        reseal_header(forged)
        target = path + ".forged"
        open(target, "wb").write(forged)
        print("forged", {k: forged_fields[k] for k in SIZES}, "token bytes", width, flush=True)
        try:
            automaton = StaticAutomaton.load(target)
        except FormatError:
            return
        changed = [name for name in LAYOUT if forged_fields[name] != fields[name]]
        changed += ["token_bytes"] if width != token_bytes else []
        assert not changed, f"a forged header was accepted: {changed}"
        # Harmless forgeries (e.g. num_tokens traded for num_documents) must still answer safely.
        cursor = automaton.cursor()
        cursor.feed(np.arange(query % 5, dtype=np.int32))
        cursor.draft(1000)
        cursor.draft_tree(64)

    forge()
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("make_file", [small_file, narrow_file], ids=["32-bit", "16-bit"])
def test_headers_with_several_fields_forged_consistently_are_refused(tmp_path, make_file):
    path, _ = make_file(tmp_path)
    try:
        result = run_isolated(HEADER_FUZZ, str(Path(__file__).parent), str(path), "400", timeout=120)
    except subprocess.TimeoutExpired as timeout:
        last = (timeout.stdout or b"").decode().strip().splitlines()[-1:]
        pytest.fail(f"loading a forged header hung at {last}")
    last = result.stdout.strip().splitlines()[-1:]
    assert result.returncode == 0, f"exit {result.returncode} after {last}: {result.stderr[-3000:]}"
    assert last == ["done"]


# ---- atomic saves -----------------------------------------------------------------------------


class FailingNative:
    """Wraps a native automaton; its save writes half a file and then fails, like a full disk."""

    def __init__(self, native) -> None:
        self._native = native

    def save(self, path: str) -> None:
        Path(path).write_bytes(b"SAMDECA\x1a half written")
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._native, name)


def test_failed_save_leaves_the_existing_file_untouched(tmp_path):
    path, data = small_file(tmp_path)
    automaton = StaticAutomaton.build([[1, 2, 3]])
    automaton._native = FailingNative(automaton._native)
    with pytest.raises(OSError, match="No space"):
        automaton.save(path)
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.sam"], "a temporary file was left"


def test_save_into_a_missing_directory_fails_cleanly(tmp_path):
    automaton = StaticAutomaton.build([[1, 2, 3]])
    with pytest.raises(FileNotFoundError):
        automaton.save(tmp_path / "missing" / "a.sam")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises((FileNotFoundError, NotADirectoryError)):
        automaton.save(tmp_path / "file" / "a.sam")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_save_into_a_read_only_directory_fails_cleanly(tmp_path):
    path, data = small_file(tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            StaticAutomaton.build([[1]]).save(path)
    finally:
        tmp_path.chmod(0o755)
    assert path.read_bytes() == data


def test_save_replaces_an_existing_file(tmp_path):
    path, _ = small_file(tmp_path)
    StaticAutomaton.build([[4, 5, 6]]).save(path)
    assert StaticAutomaton.load(path, verify=True).num_tokens == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.sam"]


def test_save_onto_a_directory_fails_and_keeps_it(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "keep").write_bytes(b"k")
    with pytest.raises(OSError):
        StaticAutomaton.build([[1]]).save(tmp_path / "target")
    assert (tmp_path / "target" / "keep").read_bytes() == b"k"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]
