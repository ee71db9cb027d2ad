"""How likely the target is to accept each draft node, learned online from what it did accept.

Every node gets ``p`` = P(target accepts node | target accepted its parent). The starting point is
the drafter's own estimate when it gives one (continuation counts of an automaton, a head's
softmax) or a per-source prior by depth and sibling rank. Each node also falls in a cell keyed by
its source, depth, the draft's match length, its rank among its siblings and the bin of that
prior; the cell's observed acceptance replaces the prior as evidence accumulates
(``p = (accepted + k * prior) / (judged + k)``), so a drafter that is overconfident, or a source
that never gives estimates, is corrected by measurement. A node is *judged* when its parent was
accepted (only then could the target accept it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam_decoding.drafters.base import Draft

#: Pseudo-observations given to the prior in each cell (how fast evidence overrides it).
PRIOR_STRENGTH = 4.0
#: Prior for sources that give no estimates: first child at depth 1, decaying with depth; later siblings.
FIRST_CHILD_PRIOR = 0.45
DEPTH_DECAY = 0.9
SIBLING_PRIOR = 0.08
_MAX_SOURCES = 16
_DEPTHS = 16
_MATCH_BUCKET_EDGES = np.array([1, 2, 3, 4, 6, 9, 16])  # buckets: 0, 1, 2, 3, 4-5, 6-8, 9-15, 16+
_MATCH_BUCKETS = len(_MATCH_BUCKET_EDGES) + 1
_RANKS = 4
_PRIOR_BINS = 11  # 10 bins of a given prior, plus "no prior given"
_CELLS = _MAX_SOURCES * _DEPTHS * _MATCH_BUCKETS * _RANKS * _PRIOR_BINS
#: Bins of predicted probability in the calibration report.
REPORT_BINS = 10


@dataclass(frozen=True)
class NodeEstimates:
    """Per-node acceptance estimates of one draft.

    Attributes:
        probabilities: float64 ``[k]``: P(accept node | parent accepted), calibrated.
        path_probabilities: float64 ``[k]``: P(node is accepted) = product of ``probabilities`` along its path.
        cells: int64 ``[k]``: each node's calibration cell.
    """

    probabilities: np.ndarray
    path_probabilities: np.ndarray
    cells: np.ndarray


def tree_shape(draft: Draft) -> tuple[np.ndarray, np.ndarray]:
    """Depth (1 for children of the context's last token) and rank among earlier siblings of every node."""
    k = len(draft)
    if draft.parents is None:
        return np.arange(1, k + 1, dtype=np.int64), np.zeros(k, dtype=np.int64)
    depth = np.empty(k, dtype=np.int64)
    rank = np.empty(k, dtype=np.int64)
    children_seen: dict[int, int] = {}
    for node, parent in enumerate(draft.parents.tolist()):
        depth[node] = 1 if parent < 0 else depth[parent] + 1
        rank[node] = children_seen.get(parent, 0)
        children_seen[parent] = rank[node] + 1
    return depth, rank


def path_products(probabilities: np.ndarray, parents: np.ndarray | None) -> np.ndarray:
    """Products of ``probabilities`` from the root down to each node."""
    if parents is None:
        return np.cumprod(probabilities)
    products = np.empty_like(probabilities)
    for node, parent in enumerate(parents.tolist()):
        products[node] = probabilities[node] * (products[parent] if parent >= 0 else 1.0)
    return products


class AcceptanceModel:
    """Calibrated per-node acceptance probabilities, learning from every verified step.

    Args:
        prior_strength: Pseudo-observations of the prior per cell.
    """

    def __init__(self, *, prior_strength: float = PRIOR_STRENGTH) -> None:
        self.prior_strength = prior_strength
        self.judged = np.zeros(_CELLS)
        self.accepted = np.zeros(_CELLS)
        self._sources: dict[str, int] = {}
        self.report_predicted = np.zeros(REPORT_BINS)
        self.report_judged = np.zeros(REPORT_BINS)
        self.report_accepted = np.zeros(REPORT_BINS)

    def _source_id(self, source: str) -> int:
        source_id = self._sources.get(source)
        if source_id is None:
            source_id = min(len(self._sources), _MAX_SOURCES - 1)
            self._sources[source] = source_id
        return source_id

    def estimate(self, draft: Draft) -> NodeEstimates:
        """Calibrated acceptance estimates for every node of ``draft``."""
        depth, rank = tree_shape(draft)
        if draft.probabilities is not None:
            prior = np.clip(draft.probabilities.astype(np.float64), 0.0, 1.0)
            prior_bin = np.minimum((prior * 10).astype(np.int64), 9)
        else:
            prior = np.where(rank == 0, FIRST_CHILD_PRIOR * DEPTH_DECAY ** (depth - 1), SIBLING_PRIOR / rank.clip(1))
            prior_bin = np.full(len(draft), 10, dtype=np.int64)
        match_bucket = int(np.searchsorted(_MATCH_BUCKET_EDGES, draft.match_length, side="right"))
        cells = (
            (self._source_id(draft.source) * _DEPTHS + np.minimum(depth, _DEPTHS) - 1) * _MATCH_BUCKETS + match_bucket
        ) * _RANKS + np.minimum(rank, _RANKS - 1)
        cells = cells * _PRIOR_BINS + prior_bin
        k = self.prior_strength
        probabilities = (self.accepted[cells] + k * prior) / (self.judged[cells] + k)
        return NodeEstimates(probabilities, path_products(probabilities, draft.parents), cells)

    def learn(self, estimates: NodeEstimates, judged: np.ndarray, accepted: np.ndarray) -> None:
        """Record the outcome of verified nodes: ``judged`` (parent accepted) and ``accepted`` (bool ``[k]`` each)."""
        cells = estimates.cells[judged]
        np.add.at(self.judged, cells, 1.0)
        np.add.at(self.accepted, cells, accepted[judged].astype(np.float64))
        predicted = estimates.probabilities[judged]
        bins = np.minimum((predicted * REPORT_BINS).astype(np.int64), REPORT_BINS - 1)
        np.add.at(self.report_predicted, bins, predicted)
        np.add.at(self.report_judged, bins, 1.0)
        np.add.at(self.report_accepted, bins, accepted[judged].astype(np.float64))

    def calibration(self) -> list[dict[str, float]]:
        """Predicted vs observed acceptance of judged nodes, by bin of predicted probability."""
        rows = []
        for index in range(REPORT_BINS):
            count = self.report_judged[index]
            if count:
                rows.append(
                    {
                        "bin": f"{index / REPORT_BINS:.1f}-{(index + 1) / REPORT_BINS:.1f}",
                        "nodes": int(count),
                        "predicted": float(self.report_predicted[index] / count),
                        "observed": float(self.report_accepted[index] / count),
                    }
                )
        return rows
