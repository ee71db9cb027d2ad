"""Time of one BatchDrafter.step over a whole batch (median and p99 over 2,000 steps) at 1-128 rows.

Corpus: the Spec-Bench questions tokenized with the default model's tokenizer (cut into 256-token
documents); falls back to Zipf-distributed ids if the tokenizer cannot load. Each row is a request
whose prompt (128-384 tokens) is a slice of that text; every step it gains 1-4 tokens that mostly
continue the corpus (one in ten is random), so drafts are found and fed like in serving; after 256
new tokens a request leaves and a new one takes its row (its prompt is read inside the timed step).
Only `step` is timed, in wall-clock time and in the calling thread's CPU time (the step runs on
that thread; on a loaded machine wall-clock p99 is mostly time preempted). Run from the repository root:

    python bench/batch_drafter_bench.py [--steps 2000] [--rows 1 8 32 64 128] [--max-draft 8]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from sam_decoding import StaticAutomaton
from sam_decoding.batch_drafter import BatchDrafter

WIDTH = 4096


def corpus_tokens() -> np.ndarray:
    try:
        from sam_decoding.models import load_tokenizer

        tokenizer = load_tokenizer()
        path = Path(__file__).resolve().parents[1] / "sam_decoding" / "data" / "spec_bench" / "question.jsonl"
        texts = [turn for line in path.read_text(encoding="utf-8").splitlines() for turn in json.loads(line)["turns"]]
        return np.concatenate([np.asarray(tokenizer(text)["input_ids"], dtype=np.int64) for text in texts])
    except Exception as error:  # noqa: BLE001 - the bench still runs on synthetic ids
        print(f"tokenizer unavailable ({error}); Zipf ids instead")
        return (np.random.default_rng(0).zipf(1.2, 200_000) % 49_152).astype(np.int64)


def run(drafter_args: dict, stream: np.ndarray, corpus: StaticAutomaton, rows: int, steps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    drafter = BatchDrafter(corpus, **drafter_args)
    table = np.zeros((rows, WIDTH), dtype=np.int32)
    lengths = np.zeros(rows, dtype=np.int32)
    sampled = np.zeros(rows, dtype=np.int32)
    cursor = np.zeros(rows, dtype=np.int64)  # where each row's text continues in the stream
    born = np.zeros(rows, dtype=np.int32)

    def begin(row: int) -> None:
        prompt = int(rng.integers(128, 385))
        start = int(rng.integers(0, len(stream) - prompt - 1024))
        table[row, : prompt + 1] = stream[start : start + prompt + 1]
        lengths[row] = prompt + 1
        sampled[row] = 1
        cursor[row] = start + prompt + 1
        born[row] = prompt + 1

    for row in range(rows):
        begin(row)
    times = np.empty(steps)
    cpu_times = np.empty(steps)
    drafted = 0
    for step in range(steps):
        cpu_started = time.thread_time()
        started = time.perf_counter()
        drafter.step(table, lengths, sampled)
        times[step] = time.perf_counter() - started
        cpu_times[step] = time.thread_time() - cpu_started
        drafted += int(drafter.draft_lengths.sum())
        drafter.given[:] = drafter.draft_lengths
        for row in range(rows):
            if lengths[row] - born[row] >= 256:
                begin(row)
                continue
            gain = int(rng.integers(1, 5))
            tokens = stream[cursor[row] : cursor[row] + gain].copy()
            if rng.random() < 0.1:
                tokens[-1] = int(rng.integers(0, 49_152))
            table[row, lengths[row] : lengths[row] + gain] = tokens
            lengths[row] += gain
            cursor[row] += gain
            sampled[row] = gain
    return {
        "rows": rows,
        "median_ms": float(np.median(times) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        # CPU time of the calling thread: the step's own work, without time preempted on a busy machine.
        "cpu_median_ms": float(np.median(cpu_times) * 1e3),
        "cpu_p99_ms": float(np.percentile(cpu_times, 99) * 1e3),
        "mean_draft_tokens_per_row": drafted / (steps * rows),
        "requests_begun": drafter.requests_begun,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--max-draft", type=int, default=8)
    args = parser.parse_args()
    stream = corpus_tokens()
    documents = [stream[start : start + 256] for start in range(0, len(stream), 256)]
    corpus = StaticAutomaton.build(documents)
    print(f"corpus: {corpus.num_tokens:,} tokens; load {os.getloadavg()}")
    for rows in args.rows:
        result = run({"max_draft": args.max_draft}, stream, corpus, rows, args.steps, seed=rows)
        print(json.dumps(result) + f"  load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
