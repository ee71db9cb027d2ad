"""SAM-Decoding's drafter: retrieval from a corpus automaton and from the request's own text.

Each step compares how long a suffix of the context matches in the static (corpus) automaton,
``m_s``, and in the dynamic automaton over prompt + generated text, ``m_d``. The static match is
discounted by ``l_bias`` because the request's own text predicts its continuation better than a
corpus match of the same length. The larger of ``m_s - l_bias`` and ``m_d`` wins if it reaches
``l_threshold``; otherwise the fallback drafter (e.g. Token Recycling) drafts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from sam_decoding.drafters.base import Draft, Drafter, Verified

if TYPE_CHECKING:
    from sam_decoding.automaton import StaticAutomaton

# Defaults from a greedy sweep with SmolLM2-135M-Instruct on Spec-Bench prompts (3 categories,
# 48 new tokens, Token Recycling fallback): MAT 1.40 at l_threshold 2, 1.44 at 3 and at 5, so the
# lowest threshold that is as good as the paper's is used. l_bias keeps the paper's 5: the sweep
# had no corpus. Draft sizes are generous (the paper's 40-token depth limit, a 64-node static
# tree) because the cost-aware policy, not the drafter, decides how much of a draft is verified.
DEFAULT_L_BIAS = 5
DEFAULT_L_THRESHOLD = 3
DEFAULT_MAX_DRAFT = 40
DEFAULT_TREE_NODES = 64
DEFAULT_MIN_MATCH = 1
#: Pseudo-count of "something else follows" added to a state's count when its continuation counts
#: become acceptance estimates (count / (state count + 1)): 1 of 1 is 0.5, 20 of 20 is 0.95.
COUNT_SMOOTHING = 1.0


def _match_confidence(match_length: int) -> float:
    """How far a corpus continuation after a match of ``match_length`` tokens predicts the model:
    a short match says little about the request (``m / (m + 2)``: 1 -> 0.33, 8 -> 0.8)."""
    return match_length / (match_length + 2.0)


class SamDrafter(Drafter):
    """Drafts from suffix automata, falling back to another drafter when neither matches well.

    Args:
        static: A corpus :class:`~sam_decoding.StaticAutomaton`, a path to one, or ``None`` (dynamic only).
        fallback: Drafter used when both matches are shorter than ``l_threshold``; ``None``: draft nothing.
        l_bias: Discount, in tokens, applied to the static match length before comparing it with the dynamic one.
        l_threshold: Minimum (discounted) match length, in tokens, for a retrieval draft.
        max_draft: Longest retrieval draft, in tokens (depth of a static tree).
        use_tree: Draft a frequency-ranked tree from the static automaton instead of a single chain.
        tree_nodes: Node budget of a static tree draft, in tokens.
        min_match: Shortest match, in tokens, for which a retrieval draft is offered to a verification
            policy (:meth:`propose_candidates`); ``l_bias`` and ``l_threshold`` apply without a policy.
        tokenizer_fingerprint: If given, checked against the static automaton's (raises
            :class:`~sam_decoding.TokenizerMismatchError` on a mismatch).
    """

    def __init__(
        self,
        static: StaticAutomaton | str | os.PathLike[str] | None = None,
        *,
        fallback: Drafter | None = None,
        l_bias: int = DEFAULT_L_BIAS,
        l_threshold: int = DEFAULT_L_THRESHOLD,
        max_draft: int = DEFAULT_MAX_DRAFT,
        use_tree: bool = True,
        tree_nodes: int = DEFAULT_TREE_NODES,
        min_match: int = DEFAULT_MIN_MATCH,
        tokenizer_fingerprint: str | None = None,
    ) -> None:
        from sam_decoding.automaton import DynamicAutomaton, StaticAutomaton
        from sam_decoding.shards import ShardedAutomaton, load_corpus

        if l_threshold < 1:
            raise ValueError("l_threshold must be >= 1 token")
        if max_draft < 1 or tree_nodes < 1 or min_match < 1:
            raise ValueError("max_draft, tree_nodes and min_match must be positive")
        if static is not None and not isinstance(static, (StaticAutomaton, ShardedAutomaton)):
            static = load_corpus(static)
        if static is not None and tokenizer_fingerprint is not None:
            static.check_tokenizer(tokenizer_fingerprint)
        self.static = static
        self.fallback = fallback
        self.l_bias = l_bias
        self.l_threshold = l_threshold
        self.max_draft = max_draft
        self.use_tree = use_tree
        self.tree_nodes = tree_nodes
        self.min_match = min_match
        self._cursor = static.cursor() if static is not None else None
        self._dynamic = DynamicAutomaton()
        self.wants_logits = bool(fallback is not None and fallback.wants_logits)
        self.wants_hidden_states = bool(fallback is not None and fallback.wants_hidden_states)
        self.proposes_trees = bool((static is not None and use_tree) or (fallback is not None and fallback.proposes_trees))

    def begin(self, prompt_ids: np.ndarray) -> None:
        self._dynamic.reset()
        self._dynamic.extend(prompt_ids)
        if self._cursor is not None:
            self._cursor.reset()
            self._cursor.feed(prompt_ids)
        if self.fallback is not None:
            self.fallback.begin(prompt_ids)

    def _static_draft(self, limit: int) -> Draft:
        assert self._cursor is not None
        match = self._cursor.match_length
        # Continuation counts give each node's acceptance estimate: child count over state count,
        # smoothed (a continuation seen once in the corpus is weak evidence of what the model says).
        if self.use_tree:
            tree = self._cursor.draft_tree(self.tree_nodes, max_depth=limit)
            state_counts = tree.counts / np.maximum(tree.probabilities, 1e-12)
            probabilities = tree.counts / (state_counts + COUNT_SMOOTHING) * _match_confidence(match)
            return Draft(tree.tokens.astype(np.int64), tree.parents.astype(np.int32), "static", probabilities, match)
        chain = self._cursor.draft_with_counts(limit)
        probabilities = chain.counts / (chain.state_counts + COUNT_SMOOTHING) * _match_confidence(match)
        return Draft.chain(chain.tokens, "static", probabilities, match)

    def _dynamic_draft(self, limit: int) -> Draft:
        return Draft.chain(self._dynamic.draft(limit), "dynamic", match_length=self._dynamic.match_length)

    def propose(self, max_tokens: int) -> Draft:
        limit = min(self.max_draft, max_tokens)
        dynamic_score = self._dynamic.match_length
        static_score = self._cursor.match_length - self.l_bias if self._cursor is not None else -1
        # Ties go to the dynamic automaton: the request's own text is the better predictor.
        order = (self._dynamic_draft, self._static_draft)
        scores = (dynamic_score, static_score)
        if static_score > dynamic_score:
            order, scores = order[::-1], scores[::-1]
        for make, score in zip(order, scores):
            if score < self.l_threshold:
                break
            draft = make(limit)
            if len(draft):
                return draft
        if self.fallback is not None:
            return self.fallback.propose(max_tokens)
        return Draft.empty("none")

    def propose_candidates(self, max_tokens: int) -> list[Draft]:
        """Every source's draft, for the policy to weigh by calibrated acceptance and cost.

        Under a policy the blend is learned instead of thresholded: retrieval drafts are offered
        from a match of ``min_match`` tokens (the policy knows, per source and match length, how
        often they are accepted) next to the fallback's own, and the step verifies the best.
        """
        limit = min(self.max_draft, max_tokens)
        candidates = []
        if self._dynamic.match_length >= self.min_match:
            candidates.append(self._dynamic_draft(limit))
        if self._cursor is not None and self._cursor.match_length >= self.min_match:
            candidates.append(self._static_draft(limit))
        if self.fallback is not None:
            candidates.extend(self.fallback.propose_candidates(max_tokens))
        return [draft for draft in candidates if len(draft)] or [Draft.empty("none")]

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self._dynamic.extend(tokens)
        if self._cursor is not None:
            self._cursor.feed(tokens)
        if self.fallback is not None:
            self.fallback.accept(tokens, verified)

    def finish(self) -> None:
        if self.fallback is not None:
            self.fallback.finish()
