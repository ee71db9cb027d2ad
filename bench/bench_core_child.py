"""The measured programs of ``bench_core.py``, each run in a fresh process so its peak RSS is its own.

    PYTHONPATH=bench python -m bench_core_child build SPEC_JSON     # one build (automaton or suffix array)
    PYTHONPATH=bench python -m bench_core_child sharded SPEC_JSON   # sharded, single-file or one-shard builds

``SPEC_JSON`` is what ``bench_core.run_child`` passes; the program prints one line ``RESULT {json}``.
Run from outside the checkout (``bench_core`` runs it in ``bench/out``), so that an installed
sam-decoding is imported rather than a source tree without its compiled core.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import numpy as np

import bench_core


def _status(field: str) -> int:
    """A ``/proc/self/status`` figure (``VmRSS:``, ``VmHWM:``), in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # resets the peak-RSS mark (Linux)
        handle.write("5")


def _zipf_corpus(size: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = bench_core.zipf_tokens(size, seed=1)
    return tokens, _zipf_ends(tokens.size)


def _zipf_ends(size: int) -> np.ndarray:
    document = bench_core.ZIPF_DOCUMENT
    return np.arange(document, size + document, document).clip(max=size)


def build(spec: dict[str, Any]) -> dict[str, Any]:
    """One build of the stdlib or Zipf corpus: the automaton (``kind == "automaton"``) or a suffix array."""
    if spec["corpus"] == "zipf":
        tokens, ends = _zipf_corpus(spec["tokens"])
    else:
        tokens, ends = np.load(spec["tokens_path"]), np.load(spec["ends_path"])
    if spec["kind"] == "automaton":
        from sam_decoding import StaticAutomaton
    else:
        import pydivsufsort
    result: dict[str, Any] = {"tokens": int(tokens.size), "rss_before": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if spec["kind"] == "automaton":
        documents = bench_core.documents_of(tokens, ends)
        _reset_peak_rss()
        result["rss_before_build"] = _status("VmRSS:")
        started = time.perf_counter()
        automaton = StaticAutomaton.build(documents, construction=spec.get("construction", "suffix_array"))
        result["build_s"] = time.perf_counter() - started
        result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["peak_rss_build"] = _status("VmHWM:")
        if spec.get("save_path"):
            automaton.save(spec["save_path"])
        result.update(nbytes=automaton.nbytes, states=automaton.num_states, edges=automaton.num_edges,
                      format_version=automaton.format_version)
        return result
    _reset_peak_rss()
    result["rss_before_build"] = _status("VmRSS:")
    started = time.perf_counter()
    suffix_array = pydivsufsort.divsufsort(tokens)
    result["build_s"] = time.perf_counter() - started
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["peak_rss_build"] = _status("VmHWM:")
    result.update(nbytes=int(suffix_array.nbytes), dtype=str(suffix_array.dtype))
    return result


def sharded(spec: dict[str, Any]) -> dict[str, Any]:
    """Zipf tokens streamed off disk into shards, one file, one shard's build, or a suffix array."""
    import pydivsufsort

    from sam_decoding import ShardedAutomaton, ShardWriter, StaticAutomaton  # imported before the baseline

    result: dict[str, Any] = {"rss_before": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    started = time.perf_counter()
    documents = bench_core.stream_documents(spec["tokens_path"], bench_core.ZIPF_DOCUMENT) if "tokens_path" in spec else ()
    if spec["kind"] == "sharded":
        with ShardWriter(spec["out"], shard_tokens=spec["shard_tokens"], jobs=spec["jobs"]) as writer:
            for document in documents:
                writer.add(document)
        result["build_s"] = time.perf_counter() - started
        corpus = ShardedAutomaton.load(spec["out"])
        result.update(tokens=corpus.num_tokens, shards=corpus.num_shards, nbytes=corpus.nbytes,
                      states=corpus.num_states, edges=corpus.num_edges)
    elif spec["kind"] == "single":
        automaton = StaticAutomaton.build(list(documents))
        result["build_s"] = time.perf_counter() - started
        result.update(tokens=automaton.num_tokens, shards=1, nbytes=automaton.nbytes,
                      states=automaton.num_states, edges=automaton.num_edges)
    elif spec["kind"] == "shard_memory":
        # One shard built from its token file, as a ShardWriter worker does, with the peak-RSS
        # mark reset first, so the growth measured is the build's own.
        tokens = np.load(spec["tokens_path"], mmap_mode="r")[: spec["shard_tokens"]]
        ends = _zipf_ends(tokens.size)
        _reset_peak_rss()
        result["rss_before"] = _status("VmRSS:")
        started = time.perf_counter()
        automaton = StaticAutomaton.from_checked_tokens(tokens, ends)
        result["build_s"] = time.perf_counter() - started
        result["peak_rss_build"] = _status("VmHWM:")
        result.update(tokens=int(tokens.size), shards=1, nbytes=automaton.nbytes, states=automaton.num_states,
                      edges=automaton.num_edges)
    else:
        tokens = np.array(np.load(spec["tokens_path"], mmap_mode="r")[: spec.get("limit")])  # in memory, as a build's
        started = time.perf_counter()
        pydivsufsort.divsufsort(tokens)
        result["build_s"] = time.perf_counter() - started
        result.update(tokens=int(tokens.size), nbytes=int(tokens.size) * 8)
    result["peak_rss_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["peak_rss_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return result


def main() -> None:
    programs = {"build": build, "sharded": sharded}
    if len(sys.argv) != 3 or sys.argv[1] not in programs:
        raise SystemExit(f"usage: python -m bench_core_child {{{','.join(programs)}}} SPEC_JSON")
    print("RESULT " + json.dumps(programs[sys.argv[1]](json.loads(sys.argv[2]))))


if __name__ == "__main__":
    main()
