"""Response cache costs: insert time per token, memory per token, snapshot and cursor-feed cost.

For each cache size the cache is first filled to its budget, then a further stream of responses is
recorded at steady state (every record may evict): each record's time divided by its tokens is one
sample of the insert time per token. Streams: "spec-bench" (the Spec-Bench questions' text,
tokenized with the default model's tokenizer, cut into responses of 64-384 tokens and reshuffled
as often as needed) and "zipf" (Zipf(1.2)-distributed ids over 49,152 tokens). Reading costs are
measured on the final cache against one automaton over the same responses (what a fully merged
cache would cost). Run from the repository root:

    python bench/response_cache_bench.py --out bench/results/response_cache
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sam_decoding import ResponseCache, StaticAutomaton, response_cache

SIZES = (10_000, 100_000, 1_000_000)
VOCAB = 49_152


def spec_bench_tokens() -> np.ndarray:
    """Every turn of every Spec-Bench question, tokenized and laid back to back."""
    from sam_decoding.models import load_tokenizer

    tokenizer = load_tokenizer()
    path = Path(__file__).resolve().parents[1] / "sam_decoding" / "data" / "spec_bench" / "question.jsonl"
    texts = [turn for line in path.read_text(encoding="utf-8").splitlines() for turn in json.loads(line)["turns"]]
    return np.concatenate([np.asarray(tokenizer(text)["input_ids"], dtype=np.int64) for text in texts])


def responses_from(tokens: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless responses of 64-384 tokens cut from ``tokens`` at random places."""
    while True:
        length = int(rng.integers(64, 385))
        start = int(rng.integers(0, tokens.shape[0] - length))
        yield tokens[start : start + length]


def zipf_responses(rng: np.random.Generator) -> Iterator[np.ndarray]:
    while True:
        yield (rng.zipf(1.2, int(rng.integers(64, 385))) % VOCAB).astype(np.int64)


def quartiles(values: list[float]) -> dict[str, float]:
    q1, median, q3, p99 = np.percentile(values, [25, 50, 75, 99])
    return {"q1": q1, "median": median, "q3": q3, "p99": p99, "max": max(values), "mean": float(np.mean(values))}


def measure_inserts(size: int, stream: Iterator[np.ndarray], records: int) -> tuple[ResponseCache, dict]:
    """Fill a cache of ``size`` tokens, then time ``records`` steady-state records."""
    cache = ResponseCache(size, tokenizer_fingerprint="bench")
    fill_started, filled = time.perf_counter(), 0
    while cache.num_tokens + 400 < size:
        response = next(stream)
        cache.record(response)
        filled += response.shape[0]
    fill_seconds = time.perf_counter() - fill_started
    per_token, per_record, segments = [], [], []
    for _ in range(records):
        response = next(stream)
        started = time.perf_counter_ns()
        cache.record(response)
        elapsed = time.perf_counter_ns() - started
        per_token.append(elapsed / response.shape[0])
        per_record.append(elapsed / 1e3)
        segments.append(cache.num_segments)
    return cache, {
        "fill_tokens": filled,
        "fill_ns_per_token": fill_seconds * 1e9 / filled,
        "insert_ns_per_token": quartiles(per_token),
        "insert_us_per_record": quartiles(per_record),
        "records_timed": records,
        "segments_mean": float(np.mean(segments)),
        "segments_max": max(segments),
    }


def measure_reading(cache: ResponseCache, prompt: np.ndarray, repeats: int) -> dict:
    """Snapshot, feeding a prompt and drafting, on the cache and on one automaton over its responses."""
    started = time.perf_counter_ns()
    for _ in range(repeats):
        snapshot = cache.snapshot()
    snapshot_ns = (time.perf_counter_ns() - started) / repeats
    merged = StaticAutomaton.build(cache.responses())
    result = {"snapshot_ns": snapshot_ns, "segments": cache.num_segments}
    for name, automaton in (("cache", snapshot), ("one_automaton", merged)):
        feeds, trees = [], []
        for _ in range(repeats):
            started = time.perf_counter_ns()
            cursor = automaton.cursor()
            cursor.feed(prompt)
            feeds.append((time.perf_counter_ns() - started) / prompt.shape[0])
            started = time.perf_counter_ns()
            cursor.draft_tree(64, max_depth=16)
            trees.append((time.perf_counter_ns() - started) / 1e3)
        result[name] = {"feed_ns_per_token": float(np.median(feeds)), "draft_tree_64_us": float(np.median(trees))}
    return result


def measure_run(stream_name: str, size: int, corpus: np.ndarray, records: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    stream = responses_from(corpus, rng) if stream_name == "spec-bench" else zipf_responses(rng)
    cache, inserts = measure_inserts(size, stream, records)
    prompt = np.concatenate([next(stream) for _ in range(2)])[:256]
    run = {"stream": stream_name, "max_tokens": size, "merge_ratio": response_cache.MERGE_RATIO,
           "segment_tokens": cache.segment_tokens, "num_tokens": cache.num_tokens,
           "num_responses": cache.num_responses, "bytes_per_token": cache.nbytes / cache.num_tokens,
           **inserts, "reading": measure_reading(cache, prompt, repeats=20)}
    print(json.dumps({k: run[k] for k in ("stream", "max_tokens", "merge_ratio", "num_tokens", "bytes_per_token")}),
          f"insert median {run['insert_ns_per_token']['median']:.0f} ns/token", file=sys.stderr)
    return run


def run(sizes: tuple[int, ...], records: int, seed: int) -> dict:
    corpus = spec_bench_tokens()
    results = {"spec_bench_tokens": int(corpus.shape[0]), "runs": []}
    for stream_name in ("spec-bench", "zipf"):
        for size in sizes:
            results["runs"].append(measure_run(stream_name, size, corpus, records, seed))
    # The merge rule's trade-off, side by side: a binary counter (ratio 1) against the default.
    default_ratio = response_cache.MERGE_RATIO
    try:
        response_cache.MERGE_RATIO = 1
        results["runs"].append(measure_run("spec-bench", max(sizes), corpus, records, seed))
    finally:
        response_cache.MERGE_RATIO = default_ratio
    return results


def markdown(results: dict, command: str) -> str:
    lines = [
        "# Response cache: insert, memory and reading costs",
        "",
        f"Command: `{command}`  ",
        f"Machine: {results['machine']}; {results['date']}. Timings share the machine with other jobs: "
        "compare ratios within this run.",
        "",
        "Insert time per token: steady state (cache full, each record may evict), each record's time "
        "over its tokens; quartiles over the timed records; the mean is the amortized cost (merges into "
        "large segments and eviction rebuilds are the rare slow records of the p99). Fill: the mean while "
        "the cache first fills. Reading: a 256-token prompt fed to a new "
        "cursor, then one 64-node draft tree, on the cache's snapshot vs one automaton over the same responses.",
        "",
        "| stream | max tokens | merge ratio | segments: mean (max) | insert ns/token: median (q1-q3) | mean | p99 | µs/record median | fill ns/token "
        "| bytes/token | feed ns/token: cache / one automaton | tree µs: cache / one |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in results["runs"]:
        insert, reading = run["insert_ns_per_token"], run["reading"]
        lines.append(
            f"| {run['stream']} | {run['max_tokens']:,} | {run['merge_ratio']} | {run['segments_mean']:.1f} ({run['segments_max']}) | {insert['median']:.0f} "
            f"({insert['q1']:.0f}-{insert['q3']:.0f}) | {insert['mean']:.0f} | {insert['p99']:.0f} | {run['insert_us_per_record']['median']:.0f} "
            f"| {run['fill_ns_per_token']:.0f} | {run['bytes_per_token']:.1f} "
            f"| {reading['cache']['feed_ns_per_token']:.0f} / {reading['one_automaton']['feed_ns_per_token']:.0f} "
            f"| {reading['cache']['draft_tree_64_us']:.1f} / {reading['one_automaton']['draft_tree_64_us']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/response_cache"))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="cache budgets, tokens, comma-separated")
    parser.add_argument("--records", type=int, default=1000, help="steady-state records timed per size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    command = "python bench/response_cache_bench.py " + " ".join(sys.argv[1:])
    results = run(tuple(int(size) for size in args.sizes.split(",")), args.records, args.seed)
    results.update({"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                               f"load average {os.getloadavg()[0]:.1f}"})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(markdown(results, command), encoding="utf-8")
    print(markdown(results, command))


if __name__ == "__main__":
    main()
