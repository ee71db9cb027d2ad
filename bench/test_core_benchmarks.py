"""Micro-benchmarks of the native core (pytest-benchmark): build, load, feed, draft, draft_tree,
for one automaton file and for the same corpus in shards.

Not part of the test suite (``testpaths`` is ``tests/``); run explicitly, e.g.

    pytest bench/test_core_benchmarks.py --benchmark-json=bench/out/core_benchmarks.json
    SAM_BENCH_TOKENS=5000000 pytest bench/test_core_benchmarks.py   # a larger corpus

The corpus is synthetic: Zipf(1.1) tokens over a 49,152-token vocabulary (the default model's)
in documents of 1,000 tokens, with a quarter of the documents copying stretches of earlier ones
(repeats, as real text has). Default size 1M tokens, so the file runs in well under a minute.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sam_decoding import ShardedAutomaton, StaticAutomaton

VOCABULARY = 49_152
DOCUMENT = 1_000
TOKENS = int(os.environ.get("SAM_BENCH_TOKENS", "1000000"))
SHARDS = 4


def synthetic_documents(count: int, seed: int) -> list[np.ndarray]:
    """``count`` tokens in documents of 1,000: Zipf(1.1) ids, a quarter of the documents copying
    a stretch of an earlier one."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
    cdf = np.cumsum(ranks**-1.1)
    cdf /= cdf[-1]
    tokens = np.minimum(np.searchsorted(cdf, rng.random(count), side="right"), VOCABULARY - 1).astype(np.int32)
    documents = [tokens[start : start + DOCUMENT] for start in range(0, count, DOCUMENT)]
    for index in range(4, len(documents), 4):
        source = documents[int(rng.integers(0, index))]
        start = int(rng.integers(0, DOCUMENT // 2))
        documents[index] = np.concatenate([source[start : start + DOCUMENT // 2], documents[index][DOCUMENT // 2 :]])
    return documents


@pytest.fixture(scope="module")
def documents() -> list[np.ndarray]:
    return synthetic_documents(TOKENS, seed=1)


@pytest.fixture(scope="module")
def queries(documents) -> np.ndarray:
    """A stream the corpus partly contains: copied stretches between fresh tokens."""
    fresh = synthetic_documents(20 * DOCUMENT, seed=2)
    rng = np.random.default_rng(3)
    parts = []
    for index in range(20):
        source = documents[int(rng.integers(0, len(documents)))]
        parts += [source[100:400], fresh[index][:100]]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, documents) -> Path:
    path = tmp_path_factory.mktemp("core") / "corpus.sam"
    StaticAutomaton.build(documents).save(path)
    return path


@pytest.fixture(scope="module")
def shard_directory(tmp_path_factory, documents) -> Path:
    directory = tmp_path_factory.mktemp("core") / "shards"
    ShardedAutomaton.build(documents, directory, shard_tokens=-(-TOKENS // SHARDS))
    return directory


def cursors_along(corpus, queries: np.ndarray, count: int = 64) -> list:
    """Cursors at ``count`` evenly spread positions of the query stream."""
    cursor = corpus.cursor()
    every = max(1, queries.size // count)
    found = []
    for position, token in enumerate(queries.tolist()):
        cursor.feed(token)
        if position % every == every - 1:
            found.append(cursor.copy())
    return found


@pytest.mark.parametrize("construction", ["suffix_array", "online"])
def test_build(benchmark, documents, construction):
    benchmark.extra_info["tokens"] = TOKENS
    automaton = benchmark.pedantic(StaticAutomaton.build, args=(documents,),
                                   kwargs={"construction": construction}, rounds=3, iterations=1)
    benchmark.extra_info["bytes_per_token"] = automaton.nbytes / automaton.num_tokens


def test_build_sharded(benchmark, documents, tmp_path):
    counter = iter(range(1_000))

    def build() -> ShardedAutomaton:
        return ShardedAutomaton.build(documents, tmp_path / str(next(counter)),
                                      shard_tokens=-(-TOKENS // SHARDS))

    benchmark.extra_info["tokens"] = TOKENS
    benchmark.extra_info["shards"] = SHARDS
    benchmark.pedantic(build, rounds=3, iterations=1)


def test_load(benchmark, corpus_file):
    benchmark(StaticAutomaton.load, corpus_file)


def test_load_sharded(benchmark, shard_directory):
    benchmark(ShardedAutomaton.load, shard_directory)


@pytest.mark.parametrize("kind", ["file", "shards"])
def test_feed_per_call(benchmark, corpus_file, shard_directory, queries, kind):
    """One feed() call with the whole query stream (ns per token = mean / queries.size)."""
    corpus = StaticAutomaton.load(corpus_file) if kind == "file" else ShardedAutomaton.load(shard_directory)
    benchmark.extra_info["tokens_per_call"] = int(queries.size)

    def feed() -> int:
        return corpus.cursor().feed(queries)

    benchmark(feed)


@pytest.mark.parametrize("kind", ["file", "shards"])
def test_draft40(benchmark, corpus_file, shard_directory, queries, kind):
    corpus = StaticAutomaton.load(corpus_file) if kind == "file" else ShardedAutomaton.load(shard_directory)
    cursors = cursors_along(corpus, queries)

    def draft_all() -> int:
        return sum(len(cursor.draft(40)) for cursor in cursors)

    benchmark.extra_info["calls_per_round"] = len(cursors)
    benchmark(draft_all)


@pytest.mark.parametrize("kind", ["file", "shards"])
def test_draft_tree64(benchmark, corpus_file, shard_directory, queries, kind):
    corpus = StaticAutomaton.load(corpus_file) if kind == "file" else ShardedAutomaton.load(shard_directory)
    cursors = cursors_along(corpus, queries)

    def trees() -> int:
        return sum(len(cursor.draft_tree(64)) for cursor in cursors)

    benchmark.extra_info["calls_per_round"] = len(cursors)
    benchmark(trees)


def test_draft_with_counts40(benchmark, corpus_file, queries):
    cursors = cursors_along(StaticAutomaton.load(corpus_file), queries)
    benchmark.extra_info["calls_per_round"] = len(cursors)
    benchmark(lambda: sum(len(cursor.draft_with_counts(40)) for cursor in cursors))
