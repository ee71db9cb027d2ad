"""Write the reference cost profiles the benchmark can run under (``sam-decoding bench --cost-profile``).

* ``cpu-2core-smollm2.json``: SmolLM2-135M-Instruct, fp32, 2 torch threads, on one of this
  project's 2-core machines while it was quiet, cache of 400 tokens: the t(q)/t(1) curve measured
  in issue 7 (t(1) = 65 ms), with cost growing 0.02% per cached token (an assumption).
* ``gpu-like.json``: a GPU verifying a 7B model: flat up to 64 tokens (20 ms), then linear.

Not written here: ``cpu-2core-smollm2-measured.json`` is a profile measured, not modelled, on a quiet
2-core machine on 2026-11-26 with ``sam-decoding profile --reset --threads 2 --budget 30 --out FILE``
(t(1) = 55 ms; 2-3 tokens cost 1.0-1.07x one token there, 4 tokens 1.4x, 8 tokens 1.7x, 64 tokens 3.5x).

Run: python bench/profiles/make_profiles.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam_decoding.policy import CostProfile
from sam_decoding.policy.cost_profile import DEFAULT_GROWTH_PER_TOKEN

ISSUE_7_Q = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
ISSUE_7_RATIO = [1.00, 1.56, 1.87, 1.37, 1.36, 1.35, 1.48, 1.54, 1.78, 2.00, 2.50, 3.04]
ISSUE_7_T1 = 0.065
ISSUE_7_CACHE = 400


def quiet_cpu(q: int, cache_length: int) -> float:
    ratio = float(np.interp(q, ISSUE_7_Q, ISSUE_7_RATIO)) if q <= 64 else ISSUE_7_RATIO[-1] * q / 64
    growth = (1 + DEFAULT_GROWTH_PER_TOKEN * cache_length) / (1 + DEFAULT_GROWTH_PER_TOKEN * ISSUE_7_CACHE)
    return ISSUE_7_T1 * ratio * growth


def gpu_like(q: int, cache_length: int) -> float:
    return 0.020 * max(1.0, q / 64) * (1 + 1e-5 * cache_length)


if __name__ == "__main__":
    here = Path(__file__).parent
    CostProfile.synthetic(quiet_cpu, key="cpu-2core-smollm2 (issue 7 curve)").save(here / "cpu-2core-smollm2.json")
    CostProfile.synthetic(gpu_like, key="gpu-like (flat to 64 tokens)").save(here / "gpu-like.json")
    print("wrote", here / "cpu-2core-smollm2.json", "and", here / "gpu-like.json")
