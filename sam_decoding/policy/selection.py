"""Which draft nodes to verify: the subtree that maximizes expected emitted tokens per second.

A step that verifies the node set ``S`` (closed under parents) emits ``1 + sum(P_i for i in S)``
tokens on average, where ``P_i`` is the probability that node ``i`` is accepted (the product of
its ancestors' conditional acceptance probabilities and its own), and costs ``t(|S| + 1, L)``
seconds of verification plus a fixed overhead (drafting, acceptance walk, bookkeeping). Because
a child's ``P`` never exceeds its parent's, the best set of any size ``k`` is the ``k`` nodes with
the largest ``P`` (ties broken toward lower indices, so parents come first), and the best ``k`` is
found by one scan over ``k = 0 .. n``; ``k = 0`` is a plain decoding step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Selection:
    """The chosen nodes and what the policy expects of them.

    Attributes:
        keep: Indices of the kept nodes, ascending (a subset closed under parents).
        expected_accepted: Sum of the kept nodes' path probabilities (expected accepted draft tokens).
        expected_rate: Expected emitted tokens per second of the chosen step.
    """

    keep: np.ndarray
    expected_accepted: float
    expected_rate: float


def best_subtree(path_probabilities: np.ndarray, cost_seconds: np.ndarray, overhead_seconds: float) -> Selection:
    """Choose the nodes to verify.

    Args:
        path_probabilities: float64 ``[n]``: P(node accepted); must not increase from parent to child.
        cost_seconds: float64 ``[m]``: verification seconds for ``q = 1 .. m`` fed tokens (``m >= 1``);
            at most ``m - 1`` nodes are kept.
        overhead_seconds: Per-step seconds that do not depend on the number of nodes.
    """
    n = min(len(path_probabilities), len(cost_seconds) - 1)
    order = np.lexsort((np.arange(len(path_probabilities)), -path_probabilities))[:n]
    gains = 1.0 + np.concatenate(([0.0], np.cumsum(path_probabilities[order])))
    rates = gains / (cost_seconds[: n + 1] + overhead_seconds)
    best = int(np.argmax(rates))
    return Selection(np.sort(order[:best]), float(gains[best] - 1.0), float(rates[best]))
