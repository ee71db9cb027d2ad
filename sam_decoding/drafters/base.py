"""The drafter protocol: what the generate loop asks of anything that proposes tokens.

A drafter sees one request at a time. The loop calls :meth:`Drafter.begin` with the prompt,
then alternates :meth:`Drafter.propose` (before each verification forward pass) and
:meth:`Drafter.accept` (after it, with the tokens that were appended to the context), and calls
:meth:`Drafter.finish` once the request has ended normally (a drafter that learns across
requests records the response there; a run that raised never reaches it).
Drafts never influence *which* tokens are emitted, only how many are verified per forward
pass, so a drafter can be arbitrarily wrong without breaking losslessness.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from sam_decoding import tree_shape

_EMPTY_TOKENS = np.zeros(0, dtype=np.int64)

#: Depths and ranks of recent tree shapes, by their parent arrays: template drafters (Token
#: Recycling, heads) propose the same shape every step. Cleared when full; the arrays are read-only.
_SHAPES: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
_MAX_SHAPES = 256


@dataclass(frozen=True)
class Draft:
    """Proposed continuation of the context: a chain or a tree of tokens.

    A draft owns its geometry: :attr:`depths`, :attr:`ranks` and :attr:`path_probabilities` are
    computed once per draft (and once per tree shape), and :meth:`subset`, :meth:`limit_depth` and
    :meth:`first_path` cut it; callers use these rather than walking ``parents`` themselves.

    Attributes:
        tokens: int64 array ``[k]`` of proposed token ids.
        parents: ``None`` for a chain (token ``i`` follows token ``i - 1``, token 0 follows the
            context's last token); otherwise an int32 array ``[k]`` where ``parents[i]`` is the
            index of node ``i``'s parent, ``-1`` for children of the context's last token, and
            ``parents[i] < i`` (topological order). Siblings should carry distinct tokens;
            a duplicate sibling is never reached.
        source: Which mechanism produced the draft (``"static"``, ``"dynamic"``,
            ``"token_recycling"``, ...); the generate loop counts drafts and accepted tokens per source.
        probabilities: ``None`` or a float64 array ``[k]``: the drafter's estimate that the target
            accepts node ``i`` given that its parent was accepted (in ``[0, 1]``). The cost-aware
            policy uses it to decide which nodes are worth verifying; ``None`` lets the policy use
            its own per-source prior by depth.
        match_length: How long a suffix of the context the drafter matched to find the draft (suffix
            automata, n-gram lookup), in tokens; 0 where that does not apply. The policy calibrates
            acceptance per match length.
    """

    tokens: np.ndarray
    parents: np.ndarray | None = None
    source: str = "none"
    probabilities: np.ndarray | None = None
    match_length: int = 0

    @classmethod
    def empty(cls, source: str = "none") -> Draft:
        """A draft of no tokens: the step verifies only the context's last token (plain decoding)."""
        return cls(_EMPTY_TOKENS, None, source)

    @classmethod
    def chain(
        cls, tokens: np.ndarray | list[int], source: str, probabilities: np.ndarray | None = None, match_length: int = 0
    ) -> Draft:
        """A chain draft from any 1-D integer sequence (and optional per-node acceptance estimates)."""
        probs = None if probabilities is None else np.asarray(probabilities, dtype=np.float64).reshape(-1)
        return cls(np.asarray(tokens, dtype=np.int64).reshape(-1), None, source, probs, match_length)

    @property
    def is_chain(self) -> bool:
        """Whether the draft is a single path (no branching)."""
        return self.parents is None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    # ---- geometry (computed once, cached on the draft) -------------------------------------

    @property
    def is_path(self) -> bool:
        """Whether the draft is a single path from the root: a chain, an empty draft, or a tree without branches."""
        return tree_shape.is_single_path(self.parents)

    @cached_property
    def _shape(self) -> tuple[np.ndarray, np.ndarray]:
        k = len(self)
        if self.parents is None:
            depth, rank = np.arange(1, k + 1, dtype=np.int64), np.zeros(k, dtype=np.int64)
            depth.setflags(write=False)
            rank.setflags(write=False)
            return depth, rank
        key = self.parents.astype(np.int32, copy=False).tobytes()
        shape = _SHAPES.get(key)
        if shape is None:
            if len(_SHAPES) >= _MAX_SHAPES:
                _SHAPES.clear()
            shape = _SHAPES[key] = tree_shape.depths_and_ranks(self.parents)
        return shape

    @property
    def depths(self) -> np.ndarray:
        """int64 ``[k]`` (read-only): each node's depth in tokens (1 for children of the context's last token)."""
        return self._shape[0]

    @property
    def ranks(self) -> np.ndarray:
        """int64 ``[k]`` (read-only): each node's rank among its earlier siblings (0: a first child)."""
        return self._shape[1]

    def path_products(self, values: np.ndarray) -> np.ndarray:
        """float64 ``[k]``: the product of per-node ``values`` (e.g. acceptance estimates) from the root down to each node."""
        return tree_shape.path_products(values, self.parents)

    @cached_property
    def path_probabilities(self) -> np.ndarray | None:
        """float64 ``[k]``: the product of :attr:`probabilities` along each node's path (``None`` without estimates)."""
        return None if self.probabilities is None else self.path_products(self.probabilities)

    @property
    def expected_tokens(self) -> float:
        """Expected accepted tokens by the draft's own estimates: the sum of its path probabilities (0 without estimates)."""
        path = self.path_probabilities
        return 0.0 if path is None or len(path) == 0 else float(path.sum())

    def subset(self, keep: np.ndarray) -> Draft:
        """The draft made of the nodes ``keep`` (ascending indices, closed under parents), renumbered."""
        probabilities = None if self.probabilities is None else self.probabilities[keep]
        if self.parents is None:
            return replace(self, tokens=self.tokens[: len(keep)], probabilities=probabilities)
        parents = tree_shape.renumbered_parents(self.parents, keep)
        return replace(self, tokens=self.tokens[keep], parents=parents, probabilities=probabilities)

    def limit_depth(self, max_depth: int) -> Draft:
        """The draft without its nodes deeper than ``max_depth`` tokens (a chain is simply cut)."""
        if len(self) == 0:
            return self
        if self.parents is None:
            return self if len(self) <= max_depth else self.subset(np.arange(max_depth))
        depth = self.depths
        if int(depth.max()) <= max_depth:
            return self
        return self.subset(np.flatnonzero(depth <= max_depth))

    def first_path(self, max_tokens: int) -> Draft:
        """The draft's first root-to-leaf path (each node's first child), as a chain of at most ``max_tokens`` tokens."""
        if self.parents is None:
            return self if len(self) <= max_tokens else self.subset(np.arange(max_tokens))
        index = tree_shape.first_path(self.parents, max_tokens)
        probabilities = None if self.probabilities is None else self.probabilities[index]
        return Draft(self.tokens[index], None, self.source, probabilities, self.match_length)


@dataclass(frozen=True)
class Verified:
    """What the target model computed in one verification pass, for drafters that learn from it.

    Attributes:
        tokens: int64 tensor ``[q]``: the context's last token followed by every draft node, in the
            order they were fed (so ``logits[i]`` is the target's next-token prediction after ``tokens[i]``
            along ``tokens[i]``'s path).
        logits: float tensor ``[q, vocab]``: the target's raw (unprocessed) logits at those positions.
        path: Input indices (into ``tokens``) of the accepted path, root first (``path[0] == 0``); the
            last one's logits chose the step's final emitted token.
        hidden_states: ``None``, or (for drafters with :attr:`Drafter.wants_hidden_states`) float tensor
            ``[q, hidden]``: the target's last hidden state (the input of its output projection) at those positions.
    """

    tokens: torch.Tensor
    logits: torch.Tensor
    path: tuple[int, ...] = (0,)
    hidden_states: torch.Tensor | None = None


class Drafter(ABC):
    """Base class of all drafters; subclass it to plug your own drafting into :func:`sam_decoding.generate`.

    Class attributes a subclass may override:
        wants_logits: ``True`` if :meth:`accept` needs the target's logits (a :class:`Verified`);
            otherwise the loop passes ``None`` and skips building it.
        wants_hidden_states: ``True`` if :meth:`accept` needs ``Verified.hidden_states`` (implies a
            :class:`Verified` is passed); the loop then asks the model for its hidden states.
        proposes_trees: ``True`` if :meth:`propose` may return a tree (``parents`` not ``None``). The loop
            then checks before the first step that the model can take a custom 4-D attention mask.
    """

    wants_logits: bool = False
    wants_hidden_states: bool = False
    proposes_trees: bool = False

    @abstractmethod
    def begin(self, prompt_ids: np.ndarray) -> None:
        """Start a new request whose context is ``prompt_ids`` (int64 ``[n]``, ``n >= 1``)."""

    @abstractmethod
    def propose(self, max_tokens: int) -> Draft:
        """Propose a continuation of the current context.

        ``max_tokens`` (>= 1) bounds the useful draft *depth*: the loop can accept at most that many
        draft tokens this step, and drops deeper nodes. A tree's node count is the drafter's own choice.
        """

    def propose_candidates(self, max_tokens: int) -> list[Draft]:
        """Alternative drafts for a verification policy to choose among (default: ``[propose(max_tokens)]``).

        A drafter with several sources (e.g. :class:`~sam_decoding.SamDrafter`: dynamic automaton,
        static corpus, fallback) returns one draft per source; the cost-aware policy verifies the
        one with the highest expected tokens per second. Without a policy the loop calls
        :meth:`propose` instead. Must not change the drafter's state.
        """
        return [self.propose(max_tokens)]

    @abstractmethod
    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        """Append ``tokens`` (int64 ``[m]``, ``m >= 1``: the accepted draft tokens and the bonus token) to the context.

        ``verified`` is the target's output of this step if :attr:`wants_logits` is set, else ``None``.
        """

    def finish(self) -> None:
        """The request has ended normally: its whole text was passed to :meth:`accept` (default: nothing).

        Called once per :meth:`begin`, after the last :meth:`accept`, and only when the generate loop
        completed; a drafter that learns across requests (a response cache) records the response here.
        """
