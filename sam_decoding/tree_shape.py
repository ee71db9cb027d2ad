"""The arithmetic of a draft tree given as a parent array, in one place.

A tree of ``k`` nodes is an int array ``parents`` with ``-1 <= parents[i] < i``: ``-1`` marks a
child of the root (the context's last token), and every parent precedes its children, so one pass
in index order sees each parent before its children. Drafts (:class:`~sam_decoding.Draft`) and the
automaton's result types (:class:`~sam_decoding.DraftTree`) use these; nothing else walks parents.
"""

from __future__ import annotations

import numpy as np


def depths_and_ranks(parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth of every node (1 for children of the root) and its rank among earlier siblings
    (0 for a first child), both int64 ``[k]`` and read-only."""
    k = len(parents)
    depth = np.empty(k, dtype=np.int64)
    rank = np.empty(k, dtype=np.int64)
    children_seen: dict[int, int] = {}
    for node, parent in enumerate(parents.tolist()):
        depth[node] = 1 if parent < 0 else depth[parent] + 1
        rank[node] = children_seen.get(parent, 0)
        children_seen[parent] = rank[node] + 1
    depth.setflags(write=False)
    rank.setflags(write=False)
    return depth, rank


def path_products(values: np.ndarray, parents: np.ndarray | None) -> np.ndarray:
    """float64 ``[k]``: the product of ``values`` from the root down to each node, the node's own
    included (``parents=None``: a chain, where node ``i`` follows node ``i - 1``)."""
    values = np.asarray(values, dtype=np.float64)
    if parents is None:
        return np.cumprod(values)
    products = np.empty_like(values)
    for node, parent in enumerate(parents.tolist()):
        products[node] = values[node] * (products[parent] if parent >= 0 else 1.0)
    return products


def is_single_path(parents: np.ndarray | None) -> bool:
    """Whether the tree has no branch: a chain (``None``), or each node the child of the one before."""
    return parents is None or bool(np.array_equal(parents, np.arange(-1, len(parents) - 1)))


def renumbered_parents(parents: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """int32 parents of the sub-tree made of the nodes ``keep`` (ascending, closed under parents),
    numbered ``0..len(keep)-1`` in the same order."""
    remap = np.full(len(parents), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    kept = parents[keep]
    return np.where(kept < 0, -1, remap[np.maximum(kept, 0)]).astype(np.int32)


def first_path(parents: np.ndarray, length: int) -> np.ndarray:
    """Indices of the tree's first root-to-leaf path (each node's first child in index order), at
    most ``length`` nodes, root end first."""
    path: list[int] = []
    for node, parent in enumerate(parents.tolist()):
        if len(path) >= length:
            break
        if parent == (path[-1] if path else -1):
            path.append(node)
    return np.asarray(path, dtype=np.int64)
