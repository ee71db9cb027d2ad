"""Sharded corpora: several automaton files used as one, against one automaton over all documents
and against the brute-force reference; the shard directory and manifest as untrusted files."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_file_format import run_isolated
from test_static_automaton import check_stream, corpus_and_stream

from sam_decoding import (
    FormatError,
    SamDrafter,
    ShardedAutomaton,
    ShardWriter,
    StaticAutomaton,
    TokenizerMismatchError,
    load_corpus,
)
from sam_decoding.shards import MANIFEST_NAME, add_shard

DATA = Path(__file__).parent / "data"
GOLDEN_SHARDS = DATA / "golden_shards_v1"  # over files of format version 1
GOLDEN_SHARDS_FORMAT2 = DATA / "golden_shards_v1_format2"


def split(documents: list[list[int]], cuts: list[int]) -> list[list[list[int]]]:
    """``documents`` in consecutive groups at the given cut points; groups without tokens dropped."""
    bounds = [0] + sorted({cut % (len(documents) + 1) for cut in cuts}) + [len(documents)]
    groups = [documents[start:stop] for start, stop in zip(bounds, bounds[1:])]
    return [group for group in groups if any(group)]


def answers(automaton, stream: list[int]) -> list:
    cursor = automaton.cursor()
    found = []
    for token in stream:
        cursor.feed(token)
        chain = cursor.draft_with_counts(12)
        tree = cursor.draft_tree(10, max_depth=5)
        found.append((cursor.match_length, cursor.draft(12).tolist(), chain.tokens.tolist(),
                      chain.counts.tolist(), chain.state_counts.tolist(), tree.tokens.tolist(),
                      tree.parents.tolist(), tree.counts.tolist(), tree.probabilities.tolist()))
    return found


# ---- one automaton over all documents = the shards together ------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus_and_stream(), st.lists(st.integers(0, 10), max_size=4))
def test_shards_answer_as_one_automaton_over_all_documents(case, cuts):
    documents, stream = case
    groups = split(documents, cuts)
    sharded = ShardedAutomaton([StaticAutomaton.build(group) for group in groups])
    whole = StaticAutomaton.build(documents)
    assert sharded.num_shards == len(groups)
    assert sharded.num_tokens == whole.num_tokens
    assert sharded.num_documents == whole.num_documents
    assert sharded.vocab_bound == whole.vocab_bound
    assert answers(sharded, stream) == answers(whole, stream)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus_and_stream(), st.lists(st.integers(0, 10), max_size=4))
def test_sharded_queries_match_brute_force(case, cuts):
    documents, stream = case
    sharded = ShardedAutomaton([StaticAutomaton.build(group) for group in split(documents, cuts)])
    check_stream(sharded, [document for document in documents if document], stream)


def test_counts_are_summed_over_shards_at_equal_match_length():
    # "1 2" is followed by 3 once in each of shards one and two, and by 4 twice in shard three:
    # 3 wins on the summed count (3 against 2), though no single shard has it more than once.
    shards = [StaticAutomaton.build([[1, 2, 3]]), StaticAutomaton.build([[1, 2, 3], [9]]),
              StaticAutomaton.build([[1, 2, 3, 1, 2, 4, 1, 2, 4]])]
    cursor = ShardedAutomaton(shards).cursor()
    cursor.feed([1, 2])
    assert cursor.match_length == 2
    assert cursor.draft(1).tolist() == [3]
    chain = cursor.draft_with_counts(1)
    assert chain.counts.tolist() == [3] and chain.state_counts.tolist() == [5]
    tree = cursor.draft_tree(2, max_depth=1)
    assert tree.tokens.tolist() == [3, 4]
    assert tree.probabilities.tolist() == pytest.approx([3 / 5, 2 / 5])


def test_longest_match_across_shards_wins():
    shards = [StaticAutomaton.build([[5, 1, 2, 3, 7]]), StaticAutomaton.build([[1, 2, 3, 8], [2, 3, 9]])]
    cursor = ShardedAutomaton(shards).cursor()
    cursor.feed([5, 1, 2, 3])
    assert cursor.match_length == 4
    assert cursor.draft(3).tolist() == [7]  # only shard one holds "5 1 2 3"


def test_mixed_tokenizers_are_refused():
    with pytest.raises(TokenizerMismatchError):
        ShardedAutomaton([StaticAutomaton.build([[1]], tokenizer_fingerprint="a"),
                          StaticAutomaton.build([[1]], tokenizer_fingerprint="b")])
    with pytest.raises(ValueError):
        ShardedAutomaton([])


# ---- on disk ------------------------------------------------------------------------------------


def random_documents(seed: int, count: int = 60) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 30, size=400)
    return [np.concatenate([base[start:start + 40], rng.integers(0, 30, size=int(rng.integers(0, 30)))])
            for start in rng.integers(0, 360, size=count)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_build_writes_bounded_shards_and_a_manifest(tmp_path, jobs):
    documents = random_documents(1)
    directory = tmp_path / "corpus"
    sharded = ShardedAutomaton.build(documents, directory, shard_tokens=500, jobs=jobs,
                                     tokenizer_fingerprint="fp", metadata={"source": "test"})
    whole = StaticAutomaton.build(documents, tokenizer_fingerprint="fp")
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    assert manifest["format"] == "sam-decoding-shards" and manifest["version"] == 1
    assert manifest["metadata"]["source"] == "test"
    assert len(manifest["shards"]) == sharded.num_shards > 1
    assert [entry["file"] for entry in manifest["shards"]] == [f"shard-{i:05d}.sam" for i in range(sharded.num_shards)]
    assert all(entry["tokens"] <= 500 for entry in manifest["shards"])
    assert sorted(p.name for p in directory.iterdir()) == sorted([MANIFEST_NAME] + [e["file"] for e in manifest["shards"]])
    assert sharded.num_tokens == whole.num_tokens and sharded.is_memory_mapped
    stream = np.concatenate([documents[3][10:], documents[7], documents[20][:15]]).tolist()
    expected = answers(whole, stream)
    for opened in (ShardedAutomaton.load(directory), ShardedAutomaton.load(directory / MANIFEST_NAME),
                   load_corpus(directory), ShardedAutomaton.load(directory, verify=True)):
        assert answers(opened, stream) == expected
        opened.check_tokenizer("fp")
    sharded.verify()


def test_a_single_document_larger_than_a_shard_gets_its_own(tmp_path):
    documents = [np.arange(10), np.arange(100) % 7, np.arange(5)]
    sharded = ShardedAutomaton.build(documents, tmp_path / "c", shard_tokens=20)
    assert [shard.num_tokens for shard in sharded.shards] == [10, 100, 5]


def test_appending_documents_adds_shards(tmp_path):
    documents = random_documents(2, 40)
    directory = tmp_path / "corpus"
    ShardedAutomaton.build(documents[:20], directory, shard_tokens=400)
    before = ShardedAutomaton.load(directory).num_shards
    with ShardWriter(directory, shard_tokens=400, append=True) as writer:
        for document in documents[20:30]:
            writer.add(document)
    add_shard(directory, StaticAutomaton.build(documents[30:35]))
    with ShardWriter(directory, shard_tokens=400, append=True) as writer:  # after add_shard's name
        for document in documents[35:]:
            writer.add(document)
    grown = ShardedAutomaton.load(directory)
    assert len({path.name for path in grown.paths}) == grown.num_shards
    assert grown.num_shards > before + 1
    whole = StaticAutomaton.build(documents)
    stream = np.concatenate([documents[25], documents[35][:20]]).tolist()
    assert answers(grown, stream) == answers(whole, stream)
    with pytest.raises(FileExistsError):
        ShardWriter(directory, shard_tokens=400)
    with pytest.raises(TokenizerMismatchError):
        add_shard(directory, StaticAutomaton.build([[1, 2]], tokenizer_fingerprint="other"))


def test_a_directory_without_manifest_opens_every_shard_file(tmp_path):
    for index, group in enumerate(([[1, 2, 3]], [[2, 3, 4]])):
        StaticAutomaton.build(group).save(tmp_path / f"part{index}.sam")
    corpus = load_corpus(tmp_path)
    assert isinstance(corpus, ShardedAutomaton) and corpus.num_shards == 2
    assert isinstance(load_corpus(tmp_path / "part0.sam"), StaticAutomaton)


def test_sam_drafter_takes_a_sharded_corpus(tmp_path):
    documents = random_documents(3, 20)
    directory = tmp_path / "corpus"
    sharded = ShardedAutomaton.build(documents, directory, shard_tokens=300)
    for static in (sharded, directory):
        drafter = SamDrafter(static, use_tree=True)
        drafter.begin(np.asarray(documents[4][:30], dtype=np.int64))
        draft = drafter.propose(8)
        assert draft.source in ("static", "dynamic") and len(draft) > 0


# ---- the golden sharded corpus --------------------------------------------------------------------


@pytest.mark.parametrize("verify", [False, True])
def test_golden_sharded_corpus_answers_as_the_golden_file(verify):
    from test_file_format import GOLDEN, GOLDEN_ANSWERS, assert_golden_answers

    corpus = ShardedAutomaton.load(GOLDEN_SHARDS, verify=verify)
    assert corpus.num_shards == 3 and corpus.is_memory_mapped
    assert corpus.tokenizer_fingerprint == "golden-tokenizer-v1"
    assert corpus.metadata == {"purpose": "manifest-version-1 golden sharded corpus", "shard_tokens": 10}
    single = StaticAutomaton.load(GOLDEN)
    assert (corpus.num_tokens, corpus.num_documents) == (single.num_tokens, single.num_documents)
    assert_golden_answers(corpus, GOLDEN_ANSWERS)


@pytest.mark.parametrize("verify", [False, True])
def test_golden_sharded_corpus_of_format_2_answers_as_the_golden_file(verify):
    from test_file_format import GOLDEN_ANSWERS, assert_golden_answers

    corpus = ShardedAutomaton.load(GOLDEN_SHARDS_FORMAT2, verify=verify)
    assert (corpus.num_shards, corpus.format_version) == (3, 2)
    # The middle shard holds id 2^31-1, so it alone stores 32-bit tokens.
    assert [shard.vocab_bound for shard in corpus.shards] == [6, 2**31, 8]
    assert_golden_answers(corpus, GOLDEN_ANSWERS)


def test_golden_sharded_corpus_is_what_the_writer_writes_today(tmp_path):
    import sys

    sys.path.insert(0, str(DATA))
    try:
        import make_golden_shards
    finally:
        sys.path.remove(str(DATA))
    make_golden_shards.build(tmp_path / "today")
    written = sorted(path.name for path in (tmp_path / "today").iterdir())
    assert written == sorted(path.name for path in GOLDEN_SHARDS_FORMAT2.iterdir())
    for name in written:
        assert (tmp_path / "today" / name).read_bytes() == (GOLDEN_SHARDS_FORMAT2 / name).read_bytes(), name


# ---- bad manifests and shard sets ----------------------------------------------------------------


@pytest.fixture
def shard_directory(tmp_path) -> Path:
    directory = tmp_path / "corpus"
    ShardedAutomaton.build(random_documents(4, 30), directory, shard_tokens=400, tokenizer_fingerprint="fp")
    return directory


def rewrite(directory: Path, change) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    change(manifest)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["shards"][0].update(file="../outside.sam"),
        lambda m: m["shards"][0].update(file="/etc/passwd"),
        lambda m: m["shards"][0].update(file="sub/shard.sam"),
        lambda m: m["shards"][0].update(file=".hidden.sam"),
        lambda m: m["shards"][1].update(file=m["shards"][0]["file"]),
        lambda m: m["shards"][0].update(file=7),
        lambda m: m["shards"][0].update(tokens=m["shards"][0]["tokens"] + 1),
        lambda m: m["shards"][0].update(tokens=-1),
        lambda m: m["shards"][0].update(tokens=True),
        lambda m: m["shards"][0].update(bytes=2**70),
        lambda m: m["shards"][0].update(documents="3"),
        lambda m: m["shards"][0].update(tokenizer_fingerprint="other"),
        lambda m: m.update(tokenizer_fingerprint="other"),
        lambda m: m.update(shards=[]),
        lambda m: m.update(shards={"a": 1}),
        lambda m: m.update(format="something-else"),
        lambda m: m.update(version=0),
        lambda m: m.update(version="1"),
        lambda m: m.update(metadata=[1]),
        lambda m: [m["shards"][0].update(file="shard-00001.sam"), m["shards"][1].update(file="shard-00000.sam")],
    ],
)
def test_forged_manifests_are_refused(shard_directory, change):
    manifest = json.loads((shard_directory / MANIFEST_NAME).read_text())
    assert manifest["shards"][0]["tokens"] != manifest["shards"][1]["tokens"]  # swaps are visible
    rewrite(shard_directory, change)
    with pytest.raises(FormatError):
        ShardedAutomaton.load(shard_directory)


def test_newer_manifest_version_names_the_version(shard_directory):
    rewrite(shard_directory, lambda m: m.update(version=2))
    with pytest.raises(FormatError, match="version 2.*upgrade"):
        ShardedAutomaton.load(shard_directory)


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[]", b"null", json.dumps({"format": 1}).encode()])
def test_unreadable_manifests_are_refused(shard_directory, content):
    (shard_directory / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(FormatError):
        ShardedAutomaton.load(shard_directory)


def test_missing_or_corrupted_shards_are_refused(shard_directory):
    shard = shard_directory / "shard-00001.sam"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0x10
    shard.write_bytes(data)
    with pytest.raises(FormatError):
        ShardedAutomaton.load(shard_directory, verify=True)
    shard.unlink()
    with pytest.raises(FileNotFoundError):
        ShardedAutomaton.load(shard_directory)
    with pytest.raises(FileNotFoundError):
        ShardedAutomaton.load(shard_directory / "nothing")


def test_shard_writer_checks_its_arguments(tmp_path):
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            ShardWriter(tmp_path / "a", shard_tokens=bad)
    with pytest.raises(ValueError):
        ShardWriter(tmp_path / "a", shard_tokens=10, jobs=0)
    with pytest.raises(ValueError):
        with ShardWriter(tmp_path / "b", shard_tokens=10) as writer:
            writer.add([1, -2])
    assert not any((tmp_path / "b").glob("*.npy")) and not any((tmp_path / "b").glob(".*"))
    with pytest.raises(ValueError, match="no tokens"):
        with ShardWriter(tmp_path / "c", shard_tokens=10) as writer:
            writer.add([])


CORRUPTED_SHARD_QUERIES = textwrap.dedent(
    """
    import random, shutil, sys
    from pathlib import Path
    import numpy as np
    from sam_decoding import FormatError, ShardedAutomaton

    source, seed, cases = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    target = source.parent / "corrupted"
    outcomes = {"worked": 0, "refused": 0}
    for case in range(cases):
        print("case", case, flush=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        shards = sorted(target.glob("*.sam"))
        for _ in range(rng.randint(1, 6)):
            path = rng.choice(shards)
            data = bytearray(path.read_bytes())
            offset = rng.randrange(512, len(data) - 4)
            value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0, 1, rng.getrandbits(32), rng.randrange(0, 300)])
            data[offset:offset + 4] = value.to_bytes(4, "little")
            path.write_bytes(data)
        try:
            corpus = ShardedAutomaton.load(target)
            for _ in range(10):
                cursor = corpus.cursor()
                cursor.feed(np.array([rng.randrange(0, 30) for _ in range(rng.randint(1, 60))]))
                cursor.draft(rng.randint(0, 50))
                cursor.draft_with_counts(rng.randint(0, 50))
                cursor.draft_tree(rng.randint(0, 40), max_depth=rng.randint(1, 10))
            outcomes["worked"] += 1
        except FormatError:
            outcomes["refused"] += 1
    print(outcomes, flush=True)
    """
)


def test_corrupted_shards_never_crash_unverified_queries(shard_directory):
    """Sharded matching and drafting read several (possibly corrupted) files at once: a bad index
    must raise FormatError, never crash or hang. In a child process, as for single files."""
    try:
        result = run_isolated(CORRUPTED_SHARD_QUERIES, str(shard_directory), "11", "150", timeout=120)
    except subprocess.TimeoutExpired as timeout:
        last = (timeout.stdout or b"").decode().strip().splitlines()[-1:]
        pytest.fail(f"queries on corrupted shards hung at {last}")
    assert result.returncode == 0, (
        f"crashed with {result.returncode} after {result.stdout.strip().splitlines()[-1:]}: {result.stderr[-2000:]}"
    )
    assert "refused" in result.stdout


def test_native_handles_and_sharded_cursors_come_from_the_gateway() -> None:
    from sam_decoding.automaton import StaticCursor, native_automata

    shards = [StaticAutomaton.build([[1, 2, 3, 4]]), StaticAutomaton.build([[1, 2, 5]])]
    corpus = ShardedAutomaton(shards)
    assert len(native_automata(corpus)) == 2 and len(native_automata(shards[0])) == 1
    with pytest.raises(TypeError):
        native_automata("corpus.sam")
    cursor = StaticCursor.over_shards(shards)
    cursor.feed([1, 2])
    assert cursor.match_length == 2 and cursor.draft_with_counts(1).state_counts.tolist() == [2]
    built = StaticAutomaton.from_checked_tokens(np.array([1, 2, 3, 7, 8], dtype=np.uint32), np.array([3, 5]))
    assert (built.num_tokens, built.num_documents) == (5, 2)
