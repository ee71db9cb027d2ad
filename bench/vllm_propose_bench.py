"""Time vLLM's call into sam-decoding's proposer (``BatchProposer.propose``) per step, without an engine.

A fabricated persistent batch of ``rows`` requests decodes texts that repeat themselves (so the
automata draft), verified greedily against the texts; finished requests leave (rows condense, as
in vLLM) and new ones take their place. Three budgets are timed:

- ``all``: policy "all": every row's chain is proposed (the drafting path at its most expensive);
- ``cost``: policy "cost" after the step-cost curve has learned a compute-bound (steep) engine: the
  budget is usually 0, with the occasional probe or sweep step;
- ``zero``: a budget that never drafts (the rows are only read).

Usage: python bench/vllm_propose_bench.py [--rows 1 8 32 64 128] [--steps 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# The fake persistent batch is the one tests/test_vllm.py drives the proposer with.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_vllm_batch import FakeBatch  # noqa: E402

from sam_decoding.policy import BatchBudget
from sam_decoding.vllm import BatchProposer, SamSettings

K = 8
EOS = 2


def fill(batch: FakeBatch, rows: int, rng: np.random.Generator) -> int:
    """Start new requests until ``rows`` rows are busy: texts whose second half repeats the first
    (so the automata draft), ending with the end token. Returns how many started."""
    started = 0
    while len(batch.texts) < rows:
        half = rng.integers(10, 30_000, size=int(rng.integers(100, 300)))
        batch.add(np.concatenate([half, half, [EOS]]).astype(np.int32), prompt_length=int(rng.integers(20, 80)))
        started += 1
    return started


class NeverDrafting(BatchBudget):
    """A budget that is always 0: the proposer only reads the rows."""

    def begin(self, now: float, rows: int) -> bool:
        super().begin(now, rows)
        return False


def _steep(tokens: np.ndarray) -> np.ndarray:
    return 1e-3 * np.asarray(tokens, dtype=np.float64)


def run(rows: int, steps: int, mode: str) -> dict[str, float]:
    settings = SamSettings(policy="all" if mode == "all" else "cost")
    proposer = BatchProposer(settings, K, None, 4096, end_token_ids=(EOS,))
    if mode == "cost":
        # A compute-bound engine: every token costs as much as the step's rest.
        for tokens in (rows, 2 * rows, 4 * rows, rows * (K + 1)):
            for _ in range(8):
                proposer.budget.curve.observe(tokens, float(_steep(tokens)))
        proposer.budget._sweep.clear()
    elif mode == "zero":
        budget = proposer.budget
        proposer.budget = NeverDrafting(budget.max_depth, budget.sources, budget.acceptance)
    batch = FakeBatch(rows, width=2048)
    rng = np.random.default_rng(0)
    times = np.empty(steps)
    drafted = requests = 0
    for step in range(steps):
        requests += fill(batch, rows, rng)
        started = time.perf_counter()
        drafts = proposer.propose(batch.sampled, batch.lengths, batch.token_ids)
        times[step] = time.perf_counter() - started
        drafted += sum(map(len, drafts))
        batch.verify(drafts)
        batch.remove_finished()
    proposer.close()
    assert proposer.failures == 0
    return {
        "rows": rows,
        "mode": mode,
        "steps": steps,
        "median_ms": float(np.median(times) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "draft_tokens_per_step": drafted / steps,
        "requests": requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--modes", nargs="+", default=["all", "cost", "zero"], choices=["all", "cost", "zero"])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with open("/proc/loadavg") as file:
        load = file.read().split()[:3]
    print(f"load average {' '.join(load)}, cpus {os.cpu_count()}")
    print(f"{'rows':>5} {'budget':>6} {'median ms':>10} {'p99 ms':>8} {'draft tokens/step':>18}")
    results = []
    for rows in args.rows:
        for mode in args.modes:
            result = run(rows, args.steps, mode)
            results.append(result)
            print(f"{rows:>5} {mode:>6} {result['median_ms']:>10.3f} {result['p99_ms']:>8.3f} {result['draft_tokens_per_step']:>18.1f}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"load_average": load, "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
