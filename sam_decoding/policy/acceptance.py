"""How likely the target is to accept each draft node, learned online from what it did accept.

Every node gets ``p`` = P(target accepts node | target accepted its parent). The starting point is
the drafter's own estimate when it gives one (continuation counts of an automaton, a head's
softmax), else a prior from the draft's match length, the node's depth and its rank among its
siblings. Two levels of cells then correct it by measurement, each shrunk toward the level above
with ``k`` pseudo-observations:

* a coarse cell per (source, depth bucket, match-length bucket) learns how far the drafter's estimates
  are off there: ``p_coarse = prior * (accepted + k) / (predicted + k)``;
* a fine cell that also keys the sibling rank and the bin of the prior learns the rate itself:
  ``p = (accepted + k * p_coarse) / (judged + k)``.

So a drafter that is overconfident, or a source that never gives estimates, is corrected quickly
(coarse cells fill fast) and precisely (fine cells, once they have data). A node is *judged* when
its parent was accepted (only then could the target accept it).

The coarse cells shrink toward a third, coarsest level, the source's overall correction
``c_source = (accepted + k) / (predicted + k)`` over all of its judged nodes:
``correction = (accepted + k * c_source) / (predicted + k)``. A source has 64 coarse cells, most of
which see few nodes; without this level each of them starts from the drafter's raw estimate, and the
policy, which picks the nodes it rates highest, keeps picking the cells still overrated (measured in a
vLLM engine: the corpus automaton's depth-1 estimates 0.31 against 0.15 accepted, calibrated 0.35
against 0.27 over all sources, after hundreds of steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam_decoding.drafters.base import Draft

#: Pseudo-observations given to the prior in each cell (how fast evidence overrides it).
PRIOR_STRENGTH = 3.0
#: Prior for sources that give no estimates: a first child without a match (e.g. Token Recycling)
#: at depth 1, decaying with depth; later siblings; and first children of a retrieval match of
#: ``m`` tokens, ``m / (m + MATCH_PRIOR_OFFSET)`` (longer matches predict better).
FIRST_CHILD_PRIOR = 0.35
DEPTH_DECAY = 0.9
SIBLING_PRIOR = 0.08
MATCH_PRIOR_OFFSET = 2.0
MATCH_DEPTH_DECAY = 0.97
#: No node's estimate exceeds this (the target can always say something else).
MOST_LIKELY_ACCEPTANCE = 0.995
_MAX_SOURCES = 16
_DEPTH_BUCKET_EDGES = np.array([2, 3, 4, 5, 7, 10, 16])  # buckets: 1, 2, 3, 4, 5-6, 7-9, 10-15, 16+
_DEPTHS = len(_DEPTH_BUCKET_EDGES) + 1
_MATCH_BUCKET_EDGES = np.array([1, 2, 3, 4, 6, 9, 16])  # buckets: 0, 1, 2, 3, 4-5, 6-8, 9-15, 16+
_MATCH_BUCKETS = len(_MATCH_BUCKET_EDGES) + 1
_RANKS = 4
_PRIOR_BINS = 11  # 10 bins of a given prior, plus "no prior given"
_COARSE_CELLS = _MAX_SOURCES * _DEPTHS * _MATCH_BUCKETS
_CELLS = _COARSE_CELLS * _RANKS * _PRIOR_BINS
#: Bins of predicted probability in the calibration report.
REPORT_BINS = 10


@dataclass(frozen=True)
class NodeEstimates:
    """Per-node acceptance estimates of one draft.

    Attributes:
        probabilities: float64 ``[k]``: P(accept node | parent accepted), calibrated.
        path_probabilities: float64 ``[k]``: P(node is accepted) = product of ``probabilities`` along its path.
        priors: float64 ``[k]``: the uncalibrated estimates (the drafter's own, or the default prior).
        coarse_cells, cells: int64 ``[k]``: each node's coarse and fine calibration cell.
        depths: int64 ``[k]``: each node's depth (1 for children of the context's last token).
    """

    probabilities: np.ndarray
    path_probabilities: np.ndarray
    priors: np.ndarray
    coarse_cells: np.ndarray
    cells: np.ndarray
    depths: np.ndarray

    def subset(self, keep: np.ndarray) -> NodeEstimates:
        """The estimates of the nodes ``keep`` only."""
        return NodeEstimates(
            self.probabilities[keep],
            self.path_probabilities[keep],
            self.priors[keep],
            self.coarse_cells[keep],
            self.cells[keep],
            self.depths[keep],
        )


def default_prior(depth: np.ndarray, rank: np.ndarray, match_length: int) -> np.ndarray:
    """Acceptance prior of nodes whose drafter gave no estimate (see the module constants)."""
    if match_length > 0:
        first = match_length / (match_length + MATCH_PRIOR_OFFSET) * MATCH_DEPTH_DECAY ** (depth - 1)
    else:
        first = FIRST_CHILD_PRIOR * DEPTH_DECAY ** (depth - 1)
    return np.where(rank == 0, first, SIBLING_PRIOR / rank.clip(1))


class AcceptanceModel:
    """Calibrated per-node acceptance probabilities, learning from every verified step.

    Args:
        prior_strength: Pseudo-observations of the prior per cell.
    """

    def __init__(self, *, prior_strength: float = PRIOR_STRENGTH) -> None:
        self.prior_strength = prior_strength
        self.judged = np.zeros(_CELLS)
        self.accepted = np.zeros(_CELLS)
        self.coarse_predicted = np.zeros(_COARSE_CELLS)
        self.coarse_accepted = np.zeros(_COARSE_CELLS)
        self.source_predicted = np.zeros(_MAX_SOURCES)
        self.source_accepted = np.zeros(_MAX_SOURCES)
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
        depth, rank = draft.depths, draft.ranks
        if draft.probabilities is not None:
            prior = np.clip(draft.probabilities.astype(np.float64), 0.0, MOST_LIKELY_ACCEPTANCE)
            prior_bin = np.minimum((prior * 10).astype(np.int64), 9)
        else:
            prior = default_prior(depth, rank, draft.match_length)
            prior_bin = np.full(len(draft), 10, dtype=np.int64)
        match_bucket = int(np.searchsorted(_MATCH_BUCKET_EDGES, draft.match_length, side="right"))
        depth_bucket = np.searchsorted(_DEPTH_BUCKET_EDGES, depth, side="right")
        coarse = (self._source_id(draft.source) * _DEPTHS + depth_bucket) * _MATCH_BUCKETS + match_bucket
        cells = (coarse * _RANKS + np.minimum(rank, _RANKS - 1)) * _PRIOR_BINS + prior_bin
        probabilities = self._calibrate(prior, coarse, cells)
        return NodeEstimates(probabilities, draft.path_products(probabilities), prior, coarse, cells, depth)

    def source_corrections(self, source_ids: np.ndarray) -> np.ndarray:
        """Each source's overall correction of its drafter's estimates (observed over predicted
        acceptance, shrunk to 1 while it has few judged nodes), for ids from :func:`chain_source_ids`."""
        k = self.prior_strength
        return (self.source_accepted[source_ids] + k) / (self.source_predicted[source_ids] + k)

    def _calibrate(self, prior: np.ndarray, coarse: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """P(accept | parent accepted) of nodes with drafter estimates ``prior`` in the given cells
        (the three levels of the module docstring; any shape)."""
        k = self.prior_strength
        source_correction = self.source_corrections(coarse // (_DEPTHS * _MATCH_BUCKETS))
        correction = (self.coarse_accepted[coarse] + k * source_correction) / (self.coarse_predicted[coarse] + k)
        coarse_probability = np.minimum(prior * correction, MOST_LIKELY_ACCEPTANCE)
        return (self.accepted[cells] + k * coarse_probability) / (self.judged[cells] + k)

    def learn(self, estimates: NodeEstimates, judged: np.ndarray, accepted: np.ndarray) -> None:
        """Record the outcome of verified nodes: ``judged`` (parent accepted) and ``accepted`` (bool ``[k]`` each)."""
        outcome = accepted[judged].astype(np.float64)
        np.add.at(self.judged, estimates.cells[judged], 1.0)
        np.add.at(self.accepted, estimates.cells[judged], outcome)
        np.add.at(self.coarse_predicted, estimates.coarse_cells[judged], estimates.priors[judged])
        np.add.at(self.coarse_accepted, estimates.coarse_cells[judged], outcome)
        sources = estimates.coarse_cells[judged] // (_DEPTHS * _MATCH_BUCKETS)
        np.add.at(self.source_predicted, sources, estimates.priors[judged])
        np.add.at(self.source_accepted, sources, outcome)
        predicted = estimates.probabilities[judged]
        bins = np.minimum((predicted * REPORT_BINS).astype(np.int64), REPORT_BINS - 1)
        np.add.at(self.report_predicted, bins, predicted)
        np.add.at(self.report_judged, bins, 1.0)
        np.add.at(self.report_accepted, bins, outcome)

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


# ---- chains of a whole batch at once (engine integrations) ----------------------------------


@dataclass(frozen=True)
class ChainEstimates:
    """Calibrated estimates of one chain per row, ``[rows, k]`` each (node ``j`` of a row at depth ``j + 1``).

    Attributes:
        probabilities: P(accept node | parent accepted), calibrated.
        path_probabilities: P(node accepted); 0 beyond each row's chain length.
        priors: The drafter's own estimates.
        coarse_cells, cells: Each node's calibration cells (the same cells :meth:`AcceptanceModel.estimate` uses).
    """

    probabilities: np.ndarray
    path_probabilities: np.ndarray
    priors: np.ndarray
    coarse_cells: np.ndarray
    cells: np.ndarray


def estimate_chains(
    model: AcceptanceModel, source_ids: np.ndarray, priors: np.ndarray, lengths: np.ndarray, match_lengths: np.ndarray
) -> ChainEstimates:
    """Calibrate every row's chain in O(1) NumPy calls.

    Args:
        model: The acceptance model (shared with the transformers loop's policy).
        source_ids: int ``[rows]``: each row's source, as returned by :func:`chain_source_ids`.
        priors: float ``[rows, k]``: the drafter's per-node estimates (P(node | parent)).
        lengths: int ``[rows]``: nodes drafted per row (nodes beyond get path probability 0).
        match_lengths: int ``[rows]``: the match length (tokens) each row's chain was drafted from.
    """
    rows, k = priors.shape
    prior = np.clip(priors.astype(np.float64, copy=False), 0.0, MOST_LIKELY_ACCEPTANCE)
    prior_bin = np.minimum((prior * 10).astype(np.int64), 9)
    depth_bucket = np.searchsorted(_DEPTH_BUCKET_EDGES, np.arange(1, k + 1), side="right")
    match_bucket = np.searchsorted(_MATCH_BUCKET_EDGES, match_lengths, side="right")
    coarse = (source_ids[:, None] * _DEPTHS + depth_bucket[None, :]) * _MATCH_BUCKETS + match_bucket[:, None]
    cells = coarse * (_RANKS * _PRIOR_BINS) + prior_bin  # rank 0: a chain has no siblings
    probabilities = model._calibrate(prior, coarse, cells)
    paths = np.cumprod(probabilities, axis=1)
    paths[np.arange(k)[None, :] >= lengths[:, None]] = 0.0
    return ChainEstimates(probabilities, paths, prior, coarse, cells)


def chain_source_ids(model: AcceptanceModel, sources: list[str]) -> np.ndarray:
    """The model's ids of ``sources`` (index = a drafter's source code), for :func:`estimate_chains`."""
    return np.array([model._source_id(source) for source in sources], dtype=np.int64)


def learn_chains(model: AcceptanceModel, estimates: ChainEstimates, given: np.ndarray, accepted: np.ndarray) -> None:
    """Teach ``model`` a step's outcome: row ``r`` was given its first ``given[r]`` nodes and the
    target accepted ``accepted[r]`` of them (one :meth:`AcceptanceModel.learn` call for all rows)."""
    depth_index = np.arange(estimates.cells.shape[1])[None, :]
    judged = depth_index < np.minimum(accepted + 1, given)[:, None]
    if not judged.any():
        return
    nodes = NodeEstimates(
        estimates.probabilities[judged],
        estimates.path_probabilities[judged],
        estimates.priors[judged],
        estimates.coarse_cells[judged],
        estimates.cells[judged],
        np.broadcast_to(depth_index + 1, judged.shape)[judged],
    )
    count = nodes.cells.shape[0]
    model.learn(nodes, np.ones(count, dtype=bool), (depth_index < accepted[:, None])[judged])
