"""What the automata answer: draft trees, chains and scored drafts, and the scored search's settings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sam_decoding.automaton.tokens import check_count
from sam_decoding.tree_shape import depths_and_ranks, path_products


@dataclass(frozen=True)
class DraftTree:
    """Frequency-ranked continuations of the current match, as a tree of ``len(self)`` nodes.

    Node ``i`` is token ``tokens[i]`` (int32) following node ``parents[i]`` (int32; ``-1``:
    following the matched context); ``parents[i] < i``. ``counts[i]`` (int64) is the number of
    corpus occurrences of the matched context followed by the path to node ``i``.
    ``probabilities[i]`` (float64) is ``counts[i]`` over the same count of its parent (of the
    context for ``parents[i] == -1``): the corpus frequency of the node's token after its
    parent's path, an estimate of the chance that a model accepts node ``i`` given that it
    accepted its parent. :meth:`path_probabilities` gives the chance of the whole path.
    """

    tokens: np.ndarray
    parents: np.ndarray
    probabilities: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def depths(self) -> np.ndarray:
        """Depth of each node (1 for children of the context)."""
        return depths_and_ranks(self.parents)[0].astype(np.int32)

    def path_probabilities(self) -> np.ndarray:
        """float64 ``[len(self)]``: the product of ``probabilities`` from the context down to each
        node, i.e. node ``i``'s path count over the context's count."""
        return path_products(self.probabilities, self.parents)


class DraftChain(NamedTuple):
    """A chain draft with its corpus counts; unpacks as ``tokens, counts, state_counts``.

    ``tokens`` (int32 ``[k]``) continue the matched context. ``counts[i]`` (int64) is the number
    of corpus occurrences of the context followed by ``tokens[:i + 1]``, and ``state_counts[i]``
    that of the context followed by ``tokens[:i]`` (the context alone for ``i == 0``).
    """

    tokens: np.ndarray
    counts: np.ndarray
    state_counts: np.ndarray

    @property
    def probabilities(self) -> np.ndarray:
        """float64 ``[k]``: ``counts / state_counts``, the corpus frequency of each token after
        the tokens before it (an estimate of its acceptance given the previous ones). A path that
        occurs once is followed along its text with probability 1.0 at each step."""
        return self.counts / np.maximum(self.state_counts, 1).astype(np.float64)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class ScoredDraft:
    """Continuations of the context scored across every matched suffix length, best first.

    The estimate of node ``i`` blends, by Witten-Bell interpolation, what followed each of the
    context's matched suffixes (the longest, then each shorter one whose occurrences differ) and the
    path to the node: per suffix, ``n`` occurrences continued by some token, ``c`` of them by this
    one, ``u`` distinct tokens, and ``p = (c + u * p_shorter) / (n + u)`` from the shortest suffix up.
    A continuation seen once is worth 1/2, one seen ``n`` times out of ``n``, ``n / (n + 1)``. With
    ``trusted_length`` > 0, a context (matched suffix plus the path above the node) of ``L`` tokens
    longer than that weighs ``u`` by ``trusted_length / L``: a long match seen once is rarely chance.

    Attributes:
        tokens: int32 ``[k]``; ``parents``: int32 ``[k]`` (``-1``: follows the context; ``parents[i] < i``).
        probabilities: float64 ``[k]``: estimated P(node accepted | parent accepted).
        path_probabilities: float64 ``[k]``: their product from the context; never increases along the array.
        match_length: Longest matched suffix blended, in tokens (0: nothing matched).
        num_orders: How many matched suffix lengths were blended at the root.
        expected_tokens: Sum of ``path_probabilities``: the expected number of accepted tokens.
        transitions_scanned: Automaton transitions the search read.
    """

    tokens: np.ndarray
    parents: np.ndarray
    probabilities: np.ndarray
    path_probabilities: np.ndarray
    match_length: int
    num_orders: int
    expected_tokens: float
    transitions_scanned: int

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def is_chain(self) -> bool:
        """Whether every node continues the one before it."""
        return bool(np.array_equal(self.parents, np.arange(-1, len(self) - 1, dtype=np.int32)))


@dataclass(frozen=True)
class ScoredDraftOptions:
    """Settings of a scored draft search (:meth:`StaticCursor.scored_draft`), checked once here.

    A drafter builds one when it is configured and passes it on every step; the search then runs
    without checking them again. The defaults are :class:`~sam_decoding.SamDrafter`'s.

    Attributes:
        min_probability: Nodes whose estimated path probability is below this are left out, so a
            draft ends where confidence ends (in ``[0, 1]``; default 0.1).
        chain: Keep one child per node (a chain) instead of a tree.
        max_orders: How many matched suffix lengths, longest first, are blended into each node's
            estimate (>= 1; default 1).
        enough_occurrences: No suffix shorter than one that occurred this many times is blended
            (counts summed over shards; default 64).
        trusted_length: Matched contexts longer than this, in tokens, discount the chance that what
            followed them was a coincidence (>= 0; 0 turns that off; default 2).
    """

    min_probability: float = 0.1
    chain: bool = False
    max_orders: int = 1
    enough_occurrences: int = 64
    trusted_length: float = 2.0

    def __post_init__(self) -> None:
        probability = float(self.min_probability)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"min_probability must be in [0, 1], got {self.min_probability}")
        orders = check_count("max_orders", self.max_orders)
        if orders < 1:
            raise ValueError("max_orders must be >= 1")
        trusted = float(self.trusted_length)
        if math.isnan(trusted) or trusted < 0.0:
            raise ValueError(f"trusted_length must be >= 0, got {self.trusted_length}")
        set_field = object.__setattr__  # normalized once, so the search takes them as they are
        set_field(self, "min_probability", probability)
        set_field(self, "chain", bool(self.chain))
        set_field(self, "max_orders", orders)
        set_field(self, "enough_occurrences", check_count("enough_occurrences", self.enough_occurrences))
        set_field(self, "trusted_length", trusted)

