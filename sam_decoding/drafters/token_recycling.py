"""Token Recycling: a model-free drafter that reuses the target's own top-k predictions.

Every verification pass computes the target's next-token logits at every fed position, most of
which are thrown away. This drafter keeps, for each token id, the top-k tokens the target
predicted after it the last time it was verified (a ``vocab x k`` table), and drafts by expanding
a fixed tree template from the context's last token through that table. The table is updated
every step and kept across requests, so it keeps improving over a session.

Next to each entry the table keeps the probability the target gave it then; a drafted node
carries that as its acceptance estimate, so a verification policy can tell a confident
continuation (after ``(`` in code) from a guess (after ``the``) and verify only the former.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch

from sam_decoding.drafters.base import Draft, Drafter, Verified
from sam_decoding.tree_shape import depths_and_ranks

# Prior weight of the rank-r entry of a table row being the right next token; only the ordering
# of products of these matters, so they shape the template (more width near the root, long
# spine along rank 0) rather than claim exact probabilities.
_RANK_PRIOR = (0.55, 0.18, 0.08, 0.05, 0.04, 0.03, 0.02, 0.015, 0.01, 0.01)


#: Width of the blocks :func:`largest_entries` first ranks by their maxima.
_BLOCK = 128


def largest_entries(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row of ``logits`` ``[q, vocab]``, largest first: ``(values, indices)``.

    Equal to ``torch.topk(logits, k)`` up to the order of equal values, at about half its cost on a
    large vocabulary (it runs every step, on every fed position). Each row is cut into blocks and
    only the ``k`` blocks with the largest maxima are searched: a block holding one of the ``k``
    largest entries has a maximum at least that large, and at most ``k - 1`` other blocks can.
    """
    rows, vocab = logits.shape
    blocks = -(-vocab // _BLOCK)
    if blocks < 4 * k:
        top = torch.topk(logits, k, dim=-1)
        return top.values, top.indices
    padding = blocks * _BLOCK - vocab
    padded = torch.nn.functional.pad(logits, (0, padding), value=-math.inf) if padding else logits
    blocked = padded.reshape(rows, blocks, _BLOCK)
    best_blocks = torch.topk(blocked.amax(dim=-1), k, dim=-1).indices
    candidates = torch.gather(blocked, 1, best_blocks.unsqueeze(-1).expand(rows, k, _BLOCK))
    values, positions = torch.topk(candidates.reshape(rows, k * _BLOCK), k, dim=-1)
    indices = torch.gather(best_blocks, 1, positions // _BLOCK) * _BLOCK + positions % _BLOCK
    return values, indices


class TreeTemplate:
    """A fixed draft-tree shape: node ``i`` is the ``ranks[i]``-th table entry of its parent's token.

    Nodes are ordered by depth (breadth-first), so a level can be expanded with one vectorized lookup.
    """

    def __init__(self, parents: np.ndarray, ranks: np.ndarray) -> None:
        self.parents = np.asarray(parents, dtype=np.int32)
        self.ranks = np.asarray(ranks, dtype=np.int32)
        if np.any(self.parents >= np.arange(len(self.parents))):
            raise ValueError("template parents must precede their children")
        depth = depths_and_ranks(self.parents)[0].astype(np.int32)
        if np.any(np.diff(depth) < 0):
            raise ValueError("template nodes must be ordered by depth")
        self.depth = depth
        # Level boundaries: nodes of depth d are levels[d - 1]:levels[d].
        self.level_starts = np.searchsorted(depth, np.arange(1, int(depth.max(initial=0)) + 2))

    @classmethod
    def best_first(cls, max_nodes: int = 64, *, top_k: int = 8, max_depth: int = 8) -> TreeTemplate:
        """The ``max_nodes`` nodes with the highest product of rank priors along their path."""
        if max_nodes < 1 or top_k < 1 or max_depth < 1:
            raise ValueError("max_nodes, top_k and max_depth must be positive")
        priors = [_RANK_PRIOR[r] if r < len(_RANK_PRIOR) else _RANK_PRIOR[-1] for r in range(top_k)]
        # Heap entries: (-score, tie-break, parent index in `picked`, rank, depth).
        heap = [(-priors[r], r, -1, r, 1) for r in range(top_k)]
        heapq.heapify(heap)
        picked: list[tuple[int, int, int]] = []
        counter = top_k
        while heap and len(picked) < max_nodes:
            neg_score, _, parent, rank, depth = heapq.heappop(heap)
            picked.append((parent, rank, depth))
            index = len(picked) - 1
            if depth < max_depth:
                for r in range(top_k):
                    heapq.heappush(heap, (neg_score * priors[r], counter, index, r, depth + 1))
                    counter += 1
        order = sorted(range(len(picked)), key=lambda i: (picked[i][2], i))
        new_index = {old: new for new, old in enumerate(order)}
        parents = [-1 if picked[i][0] < 0 else new_index[picked[i][0]] for i in order]
        ranks = [picked[i][1] for i in order]
        return cls(np.array(parents), np.array(ranks))

    def __len__(self) -> int:
        return int(self.parents.shape[0])


class TokenRecyclingDrafter(Drafter):
    """Drafts trees from a ``vocab x top_k`` table of the target's recent top-k predictions.

    Args:
        top_k: Entries kept per token (the widest branching the template can use).
        template: Tree shape to expand; default: a best-first template of ``max_nodes`` nodes.
        max_nodes: Size of the default template, in draft tokens (verified per step).
        max_depth: Depth of the default template, in tokens.
    """

    wants_logits = True
    proposes_trees = True

    def __init__(
        self,
        *,
        top_k: int = 8,
        template: TreeTemplate | None = None,
        max_nodes: int = 64,
        max_depth: int = 8,
    ) -> None:
        self.top_k = top_k
        self.template = template or TreeTemplate.best_first(max_nodes, top_k=top_k, max_depth=max_depth)
        if int(self.template.ranks.max(initial=0)) >= top_k:
            raise ValueError("template uses a rank >= top_k")
        # Allocated on the first verified step, when the vocabulary size is known.
        self.table: np.ndarray | None = None
        self.table_probabilities: np.ndarray | None = None  # float64, the target's softmax per entry
        self._last_token = -1
        # Reused per-step buffer: slot 0 is the root (context's last token), slot i + 1 is node i.
        self._node_tokens = np.empty(len(self.template) + 1, dtype=np.int64)

    def begin(self, prompt_ids: np.ndarray) -> None:
        self._last_token = int(prompt_ids[-1])

    def propose(self, max_tokens: int) -> Draft:
        table = self.table
        root = self._last_token
        if table is None or root < 0 or root >= table.shape[0] or table[root, 0] < 0:
            return Draft.empty("token_recycling")
        template = self.template
        depth_limit = min(max_tokens, len(template.level_starts) - 1)
        node_count = int(template.level_starts[depth_limit])
        tokens = self._node_tokens
        tokens[0] = root
        parents = template.parents[:node_count]
        ranks = template.ranks[:node_count]
        for level in range(depth_limit):
            start, stop = template.level_starts[level], template.level_starts[level + 1]
            parent_tokens = tokens[parents[start:stop] + 1]
            # -1 marks an unknown or invalid parent; its subtree is dropped below.
            found = table[np.maximum(parent_tokens, 0), ranks[start:stop]]
            tokens[start + 1 : stop + 1] = np.where(parent_tokens < 0, -1, found)
        draft_tokens = tokens[1 : node_count + 1]
        parent_tokens = tokens[parents + 1]
        probabilities = self.table_probabilities[np.maximum(parent_tokens, 0), ranks]
        if np.all(draft_tokens >= 0):
            return Draft(draft_tokens.copy(), parents.copy(), "token_recycling", probabilities)
        # Rows filled only partially (never after a full update) or unknown tokens: compact.
        draft = Draft(draft_tokens.copy(), parents, "token_recycling", probabilities)
        return draft.subset(np.flatnonzero(draft_tokens >= 0))

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self._last_token = int(tokens[-1])
        if verified is None:
            return
        logits = verified.logits
        if self.table is None:
            self.table = np.full((logits.shape[-1], self.top_k), -1, dtype=np.int64)
            self.table_probabilities = np.zeros((logits.shape[-1], self.top_k), dtype=np.float64)
        values, indices = largest_entries(logits, self.top_k)
        probabilities = torch.exp(values.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True))
        rows = verified.tokens.numpy()
        self.table[rows] = indices.cpu().numpy()
        self.table_probabilities[rows] = probabilities.cpu().numpy()
