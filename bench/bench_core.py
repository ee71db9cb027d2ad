"""Benchmark of the native core: build, size, load, feed and draft costs, and draft quality.

Two corpora:
  (a) real text: Python standard-library sources (``**/*.py`` under the stdlib path, files in a
      fixed shuffled order) tokenized with the default tokenizer, ~10M tokens, one document per
      file; the token array is cached under bench/out/;
  (b) synthetic: a 100M-token Zipf stream (vocabulary 49152, exponent 1.1) cut into documents
      of 1000 tokens.
Every build runs alone in a fresh subprocess so its peak RSS is its own; a suffix array of the
same tokens (pydivsufsort) is built the same way for comparison. Prints a Markdown table and
writes it, with the raw figures as JSON, to bench/out/.

    python bench/bench_core.py            # full size (the 100M build needs ~10 GiB; run alone)
    python bench/bench_core.py --quick    # small corpora, for a smoke test
    python bench/bench_core.py --sharded --zipf-tokens 20000000 --shard-tokens 5000000 --jobs 2
        # one file vs shards built 1 and 2 at a time from tokens streamed off disk; peak RSS per
        # shard token; writes bench/results/core/sharded_build.{json,md}
    python bench/bench_core.py --constructions --rounds 3
        # the stdlib tokens built by the suffix-array and the online construction and as a plain
        # suffix array (pydivsufsort); writes bench/results/core/constructions.{json,md}
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
ZIPF_VOCAB = 49152
ZIPF_EXPONENT = 1.1
ZIPF_DOCUMENT = 1000

TARGETS = {
    "build_tokens_per_s": ">= 5M tokens/s",
    "bytes_per_token": "<= 32 bytes",
    "load_ms": "<= 50 ms (100M-token file)",
    "feed_ns": "<= 100 ns/token",
    "draft40_ns": "<= 1 µs",
}


# ---- corpora ----------------------------------------------------------------------------------


def stdlib_files() -> list[str]:
    """The standard library's .py files (site-packages excluded), in a fixed shuffled order."""
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(
        path for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
        if "site-packages" not in path and "dist-packages" not in path
    )
    random.Random(1234).shuffle(files)
    return files


def stdlib_tokens(limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32, exclusive end offset of each file), tokenizing files until ``limit``
    tokens; cached in bench/out/ keyed by the limit, the stdlib path and the tokenizer."""
    from sam_decoding.models import load_tokenizer, tokenizer_fingerprint

    tokenizer = load_tokenizer()
    key = {"limit": limit, "stdlib": sysconfig.get_paths()["stdlib"],
           "tokenizer": tokenizer_fingerprint(tokenizer)}
    stem = OUT / f"stdlib_tokens_{limit}"
    if stem.with_suffix(".json").is_file() and json.loads(stem.with_suffix(".json").read_text()) == key:
        return np.load(stem.with_suffix(".tokens.npy")), np.load(stem.with_suffix(".ends.npy"))
    started = time.perf_counter()
    pieces: list[np.ndarray] = []
    total = 0
    files = stdlib_files()
    batch = 64
    for start in range(0, len(files), batch):
        texts = []
        for path in files[start : start + batch]:
            try:
                texts.append(Path(path).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, OSError):
                continue
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for ids in encoded:
            if ids:
                pieces.append(np.asarray(ids, dtype=np.int32))
                total += len(ids)
        if total >= limit:
            break
    tokens = np.concatenate(pieces)[:limit]
    ends = np.minimum(np.cumsum([piece.size for piece in pieces]), limit)
    ends = ends[np.concatenate([[True], ends[1:] > ends[:-1]])]
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(stem.with_suffix(".tokens.npy"), tokens)
    np.save(stem.with_suffix(".ends.npy"), ends)
    stem.with_suffix(".json").write_text(json.dumps(key))
    print(f"tokenized {len(pieces)} stdlib files: {tokens.size:,} tokens in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return tokens, ends


def zipf_tokens(count: int, seed: int) -> np.ndarray:
    """``count`` i.i.d. Zipf(1.1) tokens over a 49152-token vocabulary, generated in chunks."""
    ranks = np.arange(1, ZIPF_VOCAB + 1, dtype=np.float64)
    cdf = np.cumsum(ranks**-ZIPF_EXPONENT)
    cdf /= cdf[-1]
    rng = np.random.default_rng(seed)
    tokens = np.empty(count, dtype=np.int32)
    chunk = 10_000_000
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        tokens[start : start + size] = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(tokens, ZIPF_VOCAB - 1, out=tokens)


def documents_of(tokens: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    starts = np.concatenate([[0], ends[:-1]])
    return [tokens[start:end] for start, end in zip(starts.tolist(), ends.tolist())]


# ---- builds, each in a fresh process ----------------------------------------------------------

def run_child(spec: dict, program: str = "build") -> dict:
    """Runs ``bench_core_child`` (``program``: ``build`` or ``sharded``) on ``spec`` in a fresh
    process, so that its peak RSS is its own; returns what it measured."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    completed = subprocess.run(
        [sys.executable, "-m", "bench_core_child", program, json.dumps(spec)],
        capture_output=True, text=True, check=False, cwd=OUT, env=environment,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{program} child failed ({completed.returncode}): {completed.stderr[-3000:]}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# ---- query timings ----------------------------------------------------------------------------


def median_ns(calls, repeat: int = 1) -> float:
    timings = []
    for call in calls:
        started = time.perf_counter_ns()
        for _ in range(repeat):
            call()
        timings.append((time.perf_counter_ns() - started) / repeat)
    return float(statistics.median(timings))


def time_queries(path: Path, query: np.ndarray, samples: int) -> dict:
    from sam_decoding import StaticAutomaton

    loads = []
    for _ in range(9):
        started = time.perf_counter()
        automaton = StaticAutomaton.load(path)
        loads.append(time.perf_counter() - started)
        del automaton
    automaton = StaticAutomaton.load(path)

    cursor = automaton.cursor()
    cursor.feed(query[:1000])  # touch the pages once
    cursor = automaton.cursor()
    started = time.perf_counter_ns()
    cursor.feed(query)
    feed_one_call = (time.perf_counter_ns() - started) / query.size

    stepwise = query[: min(query.size, 300_000)].tolist()
    cursor = automaton.cursor()
    lengths = []
    started = time.perf_counter_ns()
    for token in stepwise:
        lengths.append(cursor.feed(token))
    feed_each = (time.perf_counter_ns() - started) / len(stepwise)

    # Cursors at evenly spread positions of the query stream, for the draft timings.
    cursors = []
    cursor = automaton.cursor()
    every = max(1, len(stepwise) // samples)
    for position, token in enumerate(stepwise):
        cursor.feed(token)
        if position % every == every - 1:
            cursors.append(cursor.copy())
    draft40 = median_ns([lambda c=c: c.draft(40) for c in cursors], repeat=5)
    tree64 = median_ns([lambda c=c: c.draft_tree(64) for c in cursors], repeat=3)
    drafted = [len(c.draft(40)) for c in cursors]
    return {
        "load_ms": statistics.median(loads) * 1e3,
        "feed_one_call_ns": feed_one_call,
        "feed_each_ns": feed_each,
        "draft40_ns": draft40,
        "tree64_ns": tree64,
        "mean_match_length": float(np.mean(lengths)),
        "mean_draft40_tokens": float(np.mean(drafted)),
        "query_tokens": int(query.size),
    }


# ---- draft quality ----------------------------------------------------------------------------


def accepted_chain(draft: list[int], truth: list[int]) -> int:
    accepted = 0
    for drafted, actual in zip(draft, truth):
        if drafted != actual:
            break
        accepted += 1
    return accepted


def accepted_tree(tree, truth: list[int]) -> int:
    """Depth of the deepest node whose root path equals the start of ``truth``."""
    depth_of: dict[int, int] = {-1: 0}
    best = 0
    for index, (token, parent) in enumerate(zip(tree.tokens.tolist(), tree.parents.tolist())):
        if parent in depth_of and depth_of[parent] < len(truth) and truth[depth_of[parent]] == token:
            depth_of[index] = depth_of[parent] + 1
            best = max(best, depth_of[index])
    return best


def draft_quality(tokens: np.ndarray, ends: np.ndarray, max_tokens: int, min_match: int = 5) -> dict:
    """Build on 90% of the files, walk the other 10%; where the match is >= ``min_match``
    tokens, compare the accepted length of draft(16) and of the best path of draft_tree(16)."""
    from sam_decoding import StaticAutomaton

    documents = documents_of(tokens, ends)
    held_out = documents[::10]
    train = [document for index, document in enumerate(documents) if index % 10]
    automaton = StaticAutomaton.build(train)
    chain_total = tree_total = positions = walked = 0
    for document in held_out:
        values = document.tolist()
        cursor = automaton.cursor()
        for position, token in enumerate(values[:-1]):
            if cursor.feed(token) >= min_match:
                truth = values[position + 1 : position + 17]
                chain_total += accepted_chain(cursor.draft(16).tolist(), truth)
                tree_total += accepted_tree(cursor.draft_tree(16), truth)
                positions += 1
        walked += len(values)
        if walked >= max_tokens:
            break
    return {
        "train_tokens": int(sum(document.size for document in train)),
        "held_out_tokens_walked": walked,
        "positions": positions,
        "chain_mean_accepted": chain_total / max(positions, 1),
        "tree_mean_accepted": tree_total / max(positions, 1),
    }


# ---- the constructions on real text: suffix array vs online vs a plain suffix array ----------------


def constructions_benchmark(args: argparse.Namespace) -> None:
    """Real text (the stdlib, ~9.1M tokens, one document per file) built by the suffix-array
    construction, by the online one, and as a plain suffix array (pydivsufsort), each in a fresh
    process, ``--rounds`` times in turn; writes bench/results/core/constructions.{json,md}."""
    tokens, ends = stdlib_tokens(args.stdlib_tokens or 10_000_000)
    tokens_path, ends_path = OUT / "stdlib_all.tokens.npy", OUT / "stdlib_all.ends.npy"
    np.save(tokens_path, tokens)
    np.save(ends_path, ends)
    spec = {"corpus": "stdlib", "tokens_path": str(tokens_path), "ends_path": str(ends_path)}
    kinds = {"suffix_array_construction": {**spec, "kind": "automaton", "construction": "suffix_array"},
             "online_construction": {**spec, "kind": "automaton", "construction": "online"},
             "pydivsufsort": {**spec, "kind": "suffix_array"}}
    runs: dict = {name: [] for name in kinds}
    load_before = os.getloadavg()
    for round_index in range(args.rounds):
        for name, child in kinds.items():
            print(f"round {round_index + 1}: {name} ...", file=sys.stderr)
            runs[name].append(run_child(child))
    results = {"tokens": int(tokens.size), "documents": int(ends.size), "rounds": args.rounds,
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "command": " ".join(["python bench/bench_core.py"] + sys.argv[1:]), "runs": runs}
    table = constructions_report(results)
    print(table)
    directory = Path(__file__).resolve().parent / "results" / "core"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "constructions.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "constructions.md").write_text(table + "\n")


def constructions_report(results: dict) -> str:
    lines = ["| build | tokens | build s (median) | tokens/s | peak RSS growth / token (bytes) | "
             "output bytes / token |", "|---|---:|---:|---:|---:|---:|"]
    for name, runs in results["runs"].items():
        seconds = statistics.median(run["build_s"] for run in runs)
        growth = max(run["peak_rss_build"] - run["rss_before_build"] for run in runs)
        lines.append(f"| {name} | {results['tokens']:,} | {seconds:.2f} | {results['tokens'] / seconds:,.0f} | "
                     f"{growth / results['tokens']:.1f} | {runs[0]['nbytes'] / results['tokens']:.1f} |")
    lines += ["",
              f"Real text: the Python {platform.python_version()} standard library's .py files, "
              f"{results['documents']:,} documents, tokenized with the default tokenizer. Each build in a fresh "
              f"process, {results['rounds']} rounds in turn; peak RSS growth = VmHWM (reset just before the "
              "build) minus VmRSS before it, the largest over the rounds; it includes the build's copy of "
              "the tokens. Output: the automaton image (= file), or the suffix array.",
              f"Load average before / after: {results['load_average_before']} / {results['load_average_after']} "
              f"({results['cpus']} CPUs, shared). Command: `{results['command']}`"]
    return "\n".join(lines)


# ---- sharded builds: bounded memory, parallel shards ---------------------------------------------

def write_synthetic_tokens(path: Path, size: int, real_share: float, chunk: int = 10_000_000) -> None:
    """``size`` tokens to a .npy file, chunk by chunk (never all in memory): per chunk, Zipf
    tokens followed by a ``real_share`` of real text (the stdlib tokens, taken in order and
    starting over when used up, so real text repeats once the corpus holds more than ~9M of it)."""
    real = stdlib_tokens(10_000_000)[0] if real_share else np.empty(0, dtype=np.int32)
    output = np.lib.format.open_memmap(path.with_suffix(".partial.npy"), mode="w+", dtype=np.int32,
                                       shape=(size,))
    real_next = 0
    for index, start in enumerate(range(0, size, chunk)):
        length = min(chunk, size - start)
        real_length = int(round(length * real_share))
        output[start : start + length - real_length] = zipf_tokens(length - real_length, seed=1 + index)
        for offset in range(start + length - real_length, start + length, real.size or 1):
            piece = min(real.size - real_next, start + length - offset)
            output[offset : offset + piece] = real[real_next : real_next + piece]
            real_next = (real_next + piece) % real.size
    output.flush()
    del output
    path.with_suffix(".partial.npy").rename(path)


def stream_documents(tokens_path: str, document: int, chunk: int = 1 << 20):
    """Documents of ``document`` tokens read from a .npy file in chunks of ``chunk`` tokens
    (plain reads into fresh arrays: the file is never mapped or held whole in memory)."""
    with open(tokens_path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
        remaining = int(shape[0])
        step = max(document, chunk - chunk % document)
        while remaining:
            block = np.fromfile(handle, dtype=dtype, count=min(step, remaining))
            remaining -= block.size
            for start in range(0, block.size, document):
                yield block[start : start + document]


def sharded_benchmark(args: argparse.Namespace) -> None:
    """Zipf tokens on disk, built (a) as one file, (b) as shards with 1 and ``--jobs`` jobs,
    (c) as a suffix array; query costs on the sharded corpus. Writes bench/results/core/."""
    import shutil

    from sam_decoding import ShardedAutomaton

    size = args.zipf_tokens or 20_000_000
    tokens_path = OUT / (f"zipf_{size}.tokens.npy" if not args.real_share else
                         f"zipf_{size}_real{args.real_share:g}.tokens.npy")
    if not tokens_path.is_file():
        write_synthetic_tokens(tokens_path, size, args.real_share)
    load = os.getloadavg()
    runs: dict = {"tokens": size, "shard_tokens": args.shard_tokens, "load_average_before": load}
    if not args.skip_single:
        print(f"one file over {size:,} tokens ...", file=sys.stderr)
        runs["single"] = run_child({"kind": "single", "tokens_path": str(tokens_path)}, "sharded")
    for jobs in [args.jobs] if args.only_jobs else sorted({1, args.jobs}):
        out = OUT / f"zipf_shards_{jobs}"
        shutil.rmtree(out, ignore_errors=True)
        print(f"shards of {args.shard_tokens:,} tokens, {jobs} job(s) ...", file=sys.stderr)
        runs[f"sharded_jobs{jobs}"] = run_child({"kind": "sharded", "tokens_path": str(tokens_path), "out": str(out),
                                                 "shard_tokens": args.shard_tokens, "jobs": jobs}, "sharded")
    print("one shard's build memory ...", file=sys.stderr)
    runs["shard_memory"] = run_child({"kind": "shard_memory", "tokens_path": str(tokens_path),
                                      "shard_tokens": args.shard_tokens}, "sharded")
    print("suffix array ...", file=sys.stderr)
    runs["suffix_array"] = run_child({"kind": "suffix_array", "tokens_path": str(tokens_path),
                                      "limit": args.suffix_array_tokens}, "sharded")
    corpus_dir = OUT / f"zipf_shards_{args.jobs}"
    loads = []
    for _ in range(9):
        started = time.perf_counter()
        ShardedAutomaton.load(corpus_dir)
        loads.append(time.perf_counter() - started)
    corpus = ShardedAutomaton.load(corpus_dir)
    query = zipf_tokens(200_000, seed=2)
    cursor = corpus.cursor()
    started = time.perf_counter_ns()
    cursor.feed(query)
    feed_ns = (time.perf_counter_ns() - started) / query.size
    cursors, cursor = [], corpus.cursor()
    for position, token in enumerate(query[:20_000].tolist()):
        cursor.feed(token)
        if position % 10 == 9:
            cursors.append(cursor.copy())
    runs["queries"] = {
        "load_ms": statistics.median(loads) * 1e3,
        "feed_ns_per_token": feed_ns,
        "draft40_ns": median_ns([lambda c=c: c.draft(40) for c in cursors], repeat=5),
        "tree64_ns": median_ns([lambda c=c: c.draft_tree(64) for c in cursors], repeat=3),
        "shards": corpus.num_shards,
    }
    runs["load_average_after"] = os.getloadavg()
    command = " ".join(["python bench/bench_core.py"] + sys.argv[1:])
    runs["command"] = command
    table = sharded_report(runs)
    print(table)
    results = Path(__file__).resolve().parent / "results" / "core"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.result_name}.json").write_text(json.dumps(runs, indent=2) + "\n")
    (results / f"{args.result_name}.md").write_text(table + "\n")


def sharded_report(runs: dict) -> str:
    lines = ["| build | tokens | shards | wall s | tokens/s | peak RSS, one process (GiB) | "
             "peak RSS / shard token (bytes) | (peak RSS - interpreter) / shard token (bytes) | file bytes / token |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in [key for key in runs if key in ("single", "suffix_array") or key.startswith("sharded_")]:
        run = runs[name]
        peak = max(run["peak_rss_self"], run["peak_rss_children"])
        per_shard = runs["shard_tokens"] if name.startswith("sharded_") else run["tokens"]
        lines.append(
            f"| {name} | {run['tokens']:,} | {run.get('shards', '-')} | {run['build_s']:.1f} | "
            f"{run['tokens'] / run['build_s']:,.0f} | {peak / 2**30:.2f} | {peak / per_shard:.0f} | "
            f"{(peak - run['rss_before']) / per_shard:.0f} | {run['nbytes'] / run['tokens']:.1f} |"
        )
    queries = runs["queries"]
    memory = runs["shard_memory"]
    lines += [
        "",
        f"Build memory of one shard ({memory['tokens']:,} tokens, token file memory-mapped as a worker reads it; "
        f"peak-RSS mark reset just before the build): peak RSS {memory['peak_rss_build'] / 2**30:.2f} GiB = "
        f"**{memory['peak_rss_build'] / memory['tokens']:.0f} bytes/token** including the process; growth over the "
        f"RSS before the build {(memory['peak_rss_build'] - memory['rss_before']) / memory['tokens']:.0f} bytes/token "
        f"({memory['tokens'] / memory['build_s']:,.0f} tokens/s).",
        f"Queries on the {queries['shards']}-shard corpus: load {queries['load_ms']:.2f} ms (median of 9), "
        f"feed {queries['feed_ns_per_token']:.0f} ns/token (one call, 200k Zipf tokens), "
        f"draft(40) {queries['draft40_ns']:,.0f} ns, draft_tree(64) {queries['tree64_ns']:,.0f} ns (medians, via Python).",
        "Peak RSS is the largest of the building process and its worker processes (ru_maxrss); the "
        "interpreter baseline (Python, NumPy, sam_decoding imported) is the building process's RSS before "
        "the build. Parallel jobs hold one shard build each: total memory is about jobs times the per-shard peak.",
        f"Load average before / after: {runs['load_average_before']} / {runs['load_average_after']} "
        f"({os.cpu_count()} CPUs, shared). Command: `{runs['command']}`",
    ]
    return "\n".join(lines)


# ---- report -----------------------------------------------------------------------------------


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "**missed**"


def report(results: dict, command: str) -> str:
    names = [name for name in ("stdlib", "zipf") if name in results]
    titles = {"stdlib": f"stdlib sources ({results.get('stdlib', {}).get('build', {}).get('tokens', 0) / 1e6:.1f}M tokens)",
              "zipf": f"Zipf synthetic ({results.get('zipf', {}).get('build', {}).get('tokens', 0) / 1e6:.0f}M tokens)"}
    header = "| Metric | " + " | ".join(titles[name] for name in names) + " | Target |"
    lines = [header, "|---|" + "---|" * len(names) + "---|"]

    def row(label: str, cells: list[str], target: str = "") -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    def cell(name, getter, fmt, target=None, higher=False):
        value = getter(results[name])
        text = fmt.format(value)
        if target is not None:
            text += f" ({verdict(value, target, higher)})"
        return text

    row("SAM build throughput (tokens/s)",
        [cell(n, lambda r: r["build"]["tokens"] / r["build"]["build_s"], "{:,.0f}", 5e6, True) for n in names],
        TARGETS["build_tokens_per_s"])
    row("SAM build time (s)", [cell(n, lambda r: r["build"]["build_s"], "{:.2f}") for n in names])
    row("SAM peak RSS during build (GiB)",
        [cell(n, lambda r: r["build"]["peak_rss"] / 2**30, "{:.2f}") for n in names])
    row("SAM build peak RSS minus RSS before the build (GiB)",
        [cell(n, lambda r: (r["build"]["peak_rss"] - r["build"]["rss_before"]) / 2**30, "{:.2f}")
         for n in names])
    row("SAM file size (bytes / corpus token)",
        [cell(n, lambda r: r["build"]["nbytes"] / r["build"]["tokens"], "{:.1f}", 32) for n in names],
        TARGETS["bytes_per_token"])
    row("SAM states / edges per token",
        [cell(n, lambda r: (r["build"]["states"] / r["build"]["tokens"],
                            r["build"]["edges"] / r["build"]["tokens"]), "{0[0]:.2f} / {0[1]:.2f}")
         for n in names])
    row("load, median of 9 (ms, page cache warm)",
        [cell(n, lambda r: r["queries"]["load_ms"], "{:.3f}", 50 if n == "zipf" else None) for n in names],
        TARGETS["load_ms"])
    row("feed, one call (ns/token; ~ the C++ cost)",
        [cell(n, lambda r: r["queries"]["feed_one_call_ns"], "{:.0f}", 100) for n in names],
        TARGETS["feed_ns"])
    row("feed, token by token from Python (ns/token)",
        [cell(n, lambda r: r["queries"]["feed_each_ns"], "{:.0f}", 100) for n in names],
        TARGETS["feed_ns"])
    row("draft(40) per call, median (ns, via Python)",
        [cell(n, lambda r: r["queries"]["draft40_ns"], "{:.0f}", 1000) for n in names],
        TARGETS["draft40_ns"])
    row("draft_tree(64) per call, median (ns, via Python)",
        [cell(n, lambda r: r["queries"]["tree64_ns"], "{:,.0f}") for n in names])
    row("mean match length / mean draft(40) length (tokens)",
        [cell(n, lambda r: (r["queries"]["mean_match_length"], r["queries"]["mean_draft40_tokens"]),
              "{0[0]:.1f} / {0[1]:.1f}") for n in names])
    row("suffix array (pydivsufsort) build (tokens/s)",
        [cell(n, lambda r: r["suffix_array"]["tokens"] / r["suffix_array"]["build_s"], "{:,.0f}") for n in names])
    row("suffix array size (bytes / token, SA only)",
        [cell(n, lambda r: r["suffix_array"]["nbytes"] / r["suffix_array"]["tokens"], "{:.1f}") for n in names])
    row("suffix array peak RSS / minus RSS before (GiB)",
        [cell(n, lambda r: (r["suffix_array"]["peak_rss"] / 2**30,
                            (r["suffix_array"]["peak_rss"] - r["suffix_array"]["rss_before"]) / 2**30),
              "{0[0]:.2f} / {0[1]:.2f}") for n in names])
    text = "\n".join(lines)
    quality = results.get("quality")
    if quality:
        text += (
            "\n\nDraft quality, stdlib sources (train: 90% of files, "
            f"{quality['train_tokens']:,} tokens; walked {quality['held_out_tokens_walked']:,} "
            f"held-out tokens; {quality['positions']:,} positions with match length >= 5):\n\n"
            "| Drafter (16 tokens / 16 nodes) | Mean accepted tokens |\n|---|---|\n"
            f"| first-occurrence chain, draft(16) | {quality['chain_mean_accepted']:.3f} |\n"
            f"| best path of frequency tree, draft_tree(16) | {quality['tree_mean_accepted']:.3f} |"
        )
    text += (f"\n\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}. Command: `{command}`")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpora (a smoke test)")
    parser.add_argument("--stdlib-tokens", type=int, help="real-text corpus size (default 10M)")
    parser.add_argument("--zipf-tokens", type=int, help="synthetic corpus size (default 100M)")
    parser.add_argument("--skip-zipf", action="store_true", help="only the real-text corpus")
    parser.add_argument("--samples", type=int, default=2000, help="cursor positions timed for drafts")
    parser.add_argument("--sharded", action="store_true",
                        help="instead: sharded builds of a Zipf corpus streamed from disk (default 20M tokens)")
    parser.add_argument("--shard-tokens", type=int, default=5_000_000, help="with --sharded: tokens per shard")
    parser.add_argument("--jobs", type=int, default=2, help="with --sharded: parallel shard builds")
    parser.add_argument("--skip-single", action="store_true", help="with --sharded: no one-file build")
    parser.add_argument("--only-jobs", action="store_true", help="with --sharded: no 1-job run besides --jobs")
    parser.add_argument("--result-name", default="sharded_build", help="with --sharded: bench/results/core/NAME.{json,md}")
    parser.add_argument("--real-share", type=float, default=0.0,
                        help="with --sharded: fraction of each 10M-token chunk that is real text (stdlib tokens)")
    parser.add_argument("--suffix-array-tokens", type=int, default=None,
                        help="with --sharded: the pydivsufsort baseline over the first N tokens only (default all)")
    parser.add_argument("--constructions", action="store_true",
                        help="instead: suffix-array vs online construction vs pydivsufsort on the stdlib tokens")
    parser.add_argument("--rounds", type=int, default=3, help="with --constructions: builds of each kind")
    args = parser.parse_args()
    if args.constructions:
        OUT.mkdir(parents=True, exist_ok=True)
        constructions_benchmark(args)
        return
    if args.sharded:
        OUT.mkdir(parents=True, exist_ok=True)
        sharded_benchmark(args)
        return
    stdlib_size = args.stdlib_tokens or (300_000 if args.quick else 10_000_000)
    zipf_size = args.zipf_tokens or (2_000_000 if args.quick else 100_000_000)
    quality_walk = 30_000 if args.quick else 400_000
    query_size = 100_000 if args.quick else 1_000_000
    OUT.mkdir(parents=True, exist_ok=True)

    results: dict = {}
    tokens, ends = stdlib_tokens(stdlib_size + query_size)
    # The stdlib may hold fewer tokens than asked for (~9M for CPython 3.11): then the last
    # ~10% of the files are the query stream and the rest the corpus.
    corpus_limit = min(stdlib_size, int(0.9 * tokens.size))
    cut = int(np.searchsorted(ends, corpus_limit, side="right"))
    corpus_ends = ends[:cut]
    corpus_size = int(corpus_ends[-1])
    tokens_path, ends_path = OUT / "stdlib_corpus.tokens.npy", OUT / "stdlib_corpus.ends.npy"
    np.save(tokens_path, tokens[:corpus_size])
    np.save(ends_path, corpus_ends)
    query = tokens[corpus_size:]  # the files after the corpus: real text the corpus never saw
    sam_path = OUT / "stdlib.sam"
    print("building the stdlib automaton ...", file=sys.stderr)
    spec = {"corpus": "stdlib", "tokens_path": str(tokens_path), "ends_path": str(ends_path)}
    results["stdlib"] = {"build": run_child({**spec, "kind": "automaton", "save_path": str(sam_path)})}
    results["stdlib"]["suffix_array"] = run_child({**spec, "kind": "suffix_array"})
    results["stdlib"]["queries"] = time_queries(sam_path, query, args.samples)
    sam_path.unlink()

    if not args.skip_zipf:
        sam_path = OUT / "zipf.sam"
        print(f"building the Zipf automaton ({zipf_size:,} tokens) ...", file=sys.stderr)
        spec = {"corpus": "zipf", "tokens": zipf_size}
        results["zipf"] = {"build": run_child({**spec, "kind": "automaton", "save_path": str(sam_path)})}
        results["zipf"]["suffix_array"] = run_child({**spec, "kind": "suffix_array"})
        results["zipf"]["queries"] = time_queries(sam_path, zipf_tokens(query_size, seed=2), args.samples)
        sam_path.unlink()

    print("measuring draft quality ...", file=sys.stderr)
    results["quality"] = draft_quality(tokens[:corpus_size], corpus_ends, quality_walk)

    command = "python bench/bench_core.py" + (" --quick" if args.quick else "")
    table = report(results, command)
    print(table)
    name = "bench_core_quick" if args.quick else "bench_core"
    (OUT / f"{name}.md").write_text(table + "\n")
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
