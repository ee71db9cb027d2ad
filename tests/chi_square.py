"""The chi-square check the sampling tests share: observed outcomes against exact probabilities."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

import numpy as np
from scipy.stats import chisquare


def chi_square_pvalue(observed: Counter, expected: dict[Hashable, float]) -> float:
    """p-value of ``observed`` counts under ``expected`` probabilities, pooling outcomes expected < 5 times;
    0 if an impossible outcome was observed."""
    if set(observed) - set(expected):
        return 0.0
    total = sum(observed.values())
    big = [o for o, p in expected.items() if p * total >= 5]
    small = [o for o in expected if o not in big]
    obs = [observed.get(o, 0) for o in big]
    exp = [expected[o] * total for o in big]
    if small:
        obs.append(sum(observed.get(o, 0) for o in small))
        exp.append(sum(expected[o] for o in small) * total)
    exp_array = np.array(exp) * (total / sum(exp))
    return float(chisquare(obs, exp_array).pvalue)
