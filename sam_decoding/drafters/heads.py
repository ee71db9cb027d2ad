"""Drafting from trained Medusa heads: a tree of the heads' top candidates, sized by their probabilities.

After each verification pass the loop hands over the target's last hidden state at the position
whose logits chose the step's final token (the new last context token). Head ``k`` predicts the
token ``k`` positions after that one, so depth ``k`` of the draft is drawn from head ``k``'s top
candidates. Heads do not see the draft's earlier tokens (Medusa-1), so every node at depth ``k``
has the same candidate list; the tree keeps the nodes with the highest product of head
probabilities along their path (best first), as Medusa's sparse trees do, but per step.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from sam_decoding.drafters.base import Draft, Drafter, Verified

if TYPE_CHECKING:
    from sam_decoding.heads.model import MedusaHeads

#: Candidates per depth of the default tree (head 1's top 3, head 2's top 2, ...).
DEFAULT_WIDTHS = (3, 2, 2, 2)
#: Node budget of the default tree, in draft tokens.
DEFAULT_MAX_NODES = 16
SOURCE = "heads"


class HeadsDrafter(Drafter):
    """Drafts from :class:`~sam_decoding.heads.MedusaHeads` on the target's hidden state, no extra forward pass.

    Each node's :attr:`Draft.probabilities` entry is its head's softmax probability of the node's
    token, the estimate that the target accepts it once its parent is accepted.

    Args:
        heads: Heads trained for the target model (see :meth:`MedusaHeads.load`).
        use_tree: Draft a tree (needs a model that takes a custom attention mask); ``False``: a chain
            of each head's top token.
        widths: Candidates taken from each head, by depth; the tree is at most ``len(widths)`` deep.
        max_nodes: Node budget of a tree, in tokens.
        min_probability: Leave out nodes whose path probability (product of head probabilities)
            is below this.
    """

    wants_hidden_states = True

    def __init__(
        self,
        heads: MedusaHeads,
        *,
        use_tree: bool = True,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        max_nodes: int = DEFAULT_MAX_NODES,
        min_probability: float = 0.0,
    ) -> None:
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError("widths must be a non-empty sequence of positive candidate counts")
        if max_nodes < 1:
            raise ValueError("max_nodes must be positive")
        if not 0.0 <= min_probability <= 1.0:
            raise ValueError("min_probability must lie in [0, 1]")
        self.heads = heads
        self.use_tree = use_tree
        self.widths = widths[: heads.num_heads]
        self.max_nodes = max_nodes
        self.min_probability = min_probability
        self.proposes_trees = use_tree
        self._hidden: torch.Tensor | None = None

    def begin(self, prompt_ids: np.ndarray) -> None:
        # The prompt's prefill returns no hidden state to the drafter, so the first step drafts nothing.
        self._hidden = None

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        if verified is None or verified.hidden_states is None:
            self._hidden = None
            return
        # A copy of one row, so the step's whole [q, hidden] output is not kept alive.
        self._hidden = verified.hidden_states[verified.path[-1]].detach().clone()

    def propose(self, max_tokens: int) -> Draft:
        if self._hidden is None:
            return Draft.empty(SOURCE)
        depth = min(max_tokens, len(self.widths) if self.use_tree else self.heads.num_heads)
        if depth < 1:
            return Draft.empty(SOURCE)
        width = max(self.widths[:depth]) if self.use_tree else 1
        tokens, probabilities = self.heads.top_candidates(self._hidden, width)
        tokens, probabilities = tokens[:depth].cpu().numpy(), probabilities[:depth].cpu().numpy()
        if not self.use_tree:
            return self._chain(tokens[:, 0], probabilities[:, 0])
        return best_first_tree(tokens, probabilities, self.widths[:depth], self.max_nodes, self.min_probability)

    def _chain(self, tokens: np.ndarray, probabilities: np.ndarray) -> Draft:
        draft = Draft.chain(tokens, SOURCE, probabilities)
        if self.min_probability <= 0:
            return draft
        return draft.subset(np.arange(int(np.count_nonzero(draft.path_probabilities >= self.min_probability))))


def best_first_tree(
    tokens: np.ndarray,
    probabilities: np.ndarray,
    widths: Sequence[int],
    max_nodes: int,
    min_probability: float = 0.0,
) -> Draft:
    """The tree of at most ``max_nodes`` nodes with the highest path probabilities.

    Args:
        tokens: int64 ``[depth, >= max(widths)]``: candidate tokens of each depth, likeliest first.
        probabilities: float ``[depth, >= max(widths)]``: their probabilities (given the parent).
        widths: Candidates used at each depth (``len(widths) <= depth`` levels).
        max_nodes: Node budget, in tokens.
        min_probability: Nodes whose path probability is below this are left out.

    Nodes come out best first, so a parent always precedes its children (``parents[i] < i``).
    """
    # Heap entries: (-path probability, tie-break, parent node, depth index, rank).
    heap = [(-float(probabilities[0, rank]), rank, -1, 0, rank) for rank in range(widths[0])]
    heapq.heapify(heap)
    counter = len(heap)
    node_tokens: list[int] = []
    node_parents: list[int] = []
    node_probabilities: list[float] = []
    while heap and len(node_tokens) < max_nodes:
        negative_path, _, parent, level, rank = heapq.heappop(heap)
        if -negative_path < min_probability:
            break
        index = len(node_tokens)
        node_tokens.append(int(tokens[level, rank]))
        node_parents.append(parent)
        node_probabilities.append(float(probabilities[level, rank]))
        if level + 1 < len(widths):
            for child_rank in range(widths[level + 1]):
                score = negative_path * float(probabilities[level + 1, child_rank])
                heapq.heappush(heap, (score, counter, index, level + 1, child_rank))
                counter += 1
    if not node_tokens:
        return Draft.empty(SOURCE)
    return Draft(
        np.asarray(node_tokens, dtype=np.int64),
        np.asarray(node_parents, dtype=np.int32),
        SOURCE,
        np.asarray(node_probabilities, dtype=np.float64),
    )
