"""SAM-Decoding's drafter: retrieval from suffix automata, scored across every match length.

Up to three automata match the context: the request's own text (the dynamic automaton), a corpus
(static, memory-mapped) and, optionally, a :class:`~sam_decoding.ResponseCache` of the responses this
process served before. Each proposes the draft with the most expected accepted tokens that it can
back with its counts: every matched suffix length is blended into each node's estimate, and nodes
whose path probability falls below ``min_probability`` are not drafted, so a draft is as deep as the
evidence for it (see :class:`~sam_decoding.ScoredDraft`). The source with the most expected accepted
tokens drafts the step; under the cost-aware policy every source's draft is a candidate instead.
A fallback drafter (e.g. Token Recycling) drafts when that is worth more or nothing matched.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from sam_decoding.automaton import ScoredDraftOptions
from sam_decoding.drafters.base import Draft, Drafter, Verified

if TYPE_CHECKING:
    from sam_decoding.automaton import StaticAutomaton
    from sam_decoding.response_cache import ResponseCache
    from sam_decoding.shards import ShardedAutomaton

# Draft sizes are generous (the paper's 40-token depth limit, a 64-node tree) because the floor on
# path probability and the cost-aware policy, not a size cap, decide how much is verified.
DEFAULT_MAX_DRAFT = 40
DEFAULT_TREE_NODES = 64
_SCORED_DEFAULTS = ScoredDraftOptions()
#: Nodes whose estimated chance of acceptance (along their whole path) is below this are not drafted.
DEFAULT_MIN_PROBABILITY = _SCORED_DEFAULTS.min_probability
#: Contexts longer than this many tokens trust their counts more (see :class:`~sam_decoding.ScoredDraft`).
DEFAULT_TRUSTED_LENGTH = _SCORED_DEFAULTS.trusted_length
#: How many matched suffix lengths, longest first, are blended into each estimate.
DEFAULT_MAX_ORDERS = _SCORED_DEFAULTS.max_orders


class SamDrafter(Drafter):
    """Drafts from suffix automata, falling back to another drafter when that is expected to do better.

    Args:
        corpus: A corpus :class:`~sam_decoding.StaticAutomaton` or :class:`~sam_decoding.ShardedAutomaton`,
            a path to one, or ``None`` (the request's own text only). ``static=`` is its old name.
        fallback: Drafter used when the automata propose nothing, or (when its drafts carry acceptance
            estimates, as Token Recycling's do) when its draft is expected to be accepted further.
        response_cache: A :class:`~sam_decoding.ResponseCache` shared across requests: every response
            this drafter finishes is recorded in it, and each request drafts from what it held when the
            request began. ``responses=`` is its old name.
        max_draft: Deepest draft, in tokens.
        use_tree: Draft trees (several continuations per node) instead of single chains.
        tree_nodes: Node budget of one source's tree, in tokens.
        min_probability: Floor on a node's estimated path probability (see :class:`~sam_decoding.ScoredDraft`).
        trusted_length: Matched contexts longer than this, in tokens, discount the chance that what followed
            them was a coincidence (see :class:`~sam_decoding.ScoredDraft`); 0 turns that off.
        max_orders: How many matched suffix lengths, longest first, are blended into each node's estimate.
        tokenizer_fingerprint: If given, checked against the corpus's and the cache's (raises
            :class:`~sam_decoding.TokenizerMismatchError` on a mismatch).
    """

    def __init__(
        self,
        corpus: StaticAutomaton | ShardedAutomaton | str | os.PathLike[str] | None = None,
        *,
        fallback: Drafter | None = None,
        response_cache: ResponseCache | None = None,
        max_draft: int = DEFAULT_MAX_DRAFT,
        use_tree: bool = True,
        tree_nodes: int = DEFAULT_TREE_NODES,
        min_probability: float = DEFAULT_MIN_PROBABILITY,
        trusted_length: float = DEFAULT_TRUSTED_LENGTH,
        max_orders: int = DEFAULT_MAX_ORDERS,
        tokenizer_fingerprint: str | None = None,
        **renamed: Any,
    ) -> None:
        from sam_decoding.automaton import DynamicAutomaton, StaticAutomaton
        from sam_decoding.shards import ShardedAutomaton, load_corpus

        corpus, response_cache = _renamed_arguments(renamed, corpus, response_cache)
        static, responses = corpus, response_cache
        if max_draft < 1 or tree_nodes < 1 or max_orders < 1:
            raise ValueError("max_draft, tree_nodes and max_orders must be positive")
        # Checked once here; every step passes them to the search as they are.
        self.scored_options = ScoredDraftOptions(min_probability=min_probability, chain=not use_tree,
                                                 max_orders=max_orders, trusted_length=trusted_length)
        if fallback is not None and not isinstance(fallback, Drafter):
            raise TypeError(f"fallback must be a sam_decoding Drafter, got {type(fallback).__name__}")
        if static is not None and not isinstance(static, (StaticAutomaton, ShardedAutomaton)):
            static = load_corpus(static)
        self.corpus = static
        self.response_cache = responses
        if static is not None and tokenizer_fingerprint is not None:
            static.check_tokenizer(tokenizer_fingerprint)
        if responses is not None:
            for fingerprint in (tokenizer_fingerprint, static.tokenizer_fingerprint if static is not None else ""):
                if fingerprint:
                    responses.check_tokenizer(fingerprint)
        self.fallback = fallback
        self.max_draft = max_draft
        self.use_tree = use_tree
        self.tree_nodes = tree_nodes
        self.min_probability = self.scored_options.min_probability
        self.trusted_length = self.scored_options.trusted_length
        self.max_orders = self.scored_options.max_orders
        self._cursor = static.cursor() if static is not None else None
        self._responses_cursor: Any = None
        self._response: list[np.ndarray] = []
        self._dynamic = DynamicAutomaton()
        self.wants_logits = bool(fallback is not None and fallback.wants_logits)
        self.wants_hidden_states = bool(fallback is not None and fallback.wants_hidden_states)
        self.proposes_trees = bool(use_tree or (fallback is not None and fallback.proposes_trees))

    @property
    def static(self) -> StaticAutomaton | ShardedAutomaton | None:
        """The old name of :attr:`corpus`."""
        return self.corpus

    @property
    def responses(self) -> ResponseCache | None:
        """The old name of :attr:`response_cache`."""
        return self.response_cache

    def begin(self, prompt_ids: np.ndarray) -> None:
        self._dynamic.reset()
        self._dynamic.extend(prompt_ids)
        self._response = []
        if self._cursor is not None:
            self._cursor.reset()
            self._cursor.feed(prompt_ids)
        # The responses cached when the request begins; later ones serve later requests.
        snapshot = self.response_cache.snapshot() if self.response_cache is not None else None
        self._responses_cursor = snapshot.cursor() if snapshot is not None else None
        if self._responses_cursor is not None:
            self._responses_cursor.feed(prompt_ids)
        if self.fallback is not None:
            self.fallback.begin(prompt_ids)

    def _retrieval_drafts(self, max_tokens: int) -> list[Draft]:
        """Each automaton's scored draft that has at least one node, best expected first."""
        depth = min(self.max_draft, max_tokens)
        options = self.scored_options
        chain = options.chain
        nodes = depth if chain else self.tree_nodes
        scored: list[tuple[float, Draft]] = []
        for source, automaton in (("dynamic", self._dynamic), ("static", self._cursor),
                                  ("responses", self._responses_cursor)):
            if automaton is None:
                continue
            found = automaton.scored_draft(nodes, options, max_depth=depth)
            if len(found):
                draft = Draft(found.tokens.astype(np.int64), None if chain else found.parents, source,
                              found.probabilities, found.match_length)
                scored.append((found.expected_tokens, draft))
        scored.sort(key=lambda item: -item[0])
        return [draft for _, draft in scored]

    def propose(self, max_tokens: int) -> Draft:
        retrieved = self._retrieval_drafts(max_tokens)
        if self.fallback is None:
            return retrieved[0] if retrieved else Draft.empty("none")
        fallback = self.fallback.propose(max_tokens)
        if not retrieved:
            return fallback
        # A fallback without estimates cannot be weighed: it drafts only where retrieval has nothing.
        if fallback.probabilities is not None and fallback.expected_tokens > retrieved[0].expected_tokens:
            return fallback
        return retrieved[0]

    def propose_candidates(self, max_tokens: int) -> list[Draft]:
        """Every source's draft, for the policy to weigh by calibrated acceptance and cost."""
        candidates = self._retrieval_drafts(max_tokens)
        if self.fallback is not None:
            candidates.extend(self.fallback.propose_candidates(max_tokens))
        return [draft for draft in candidates if len(draft)] or [Draft.empty("none")]

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self._dynamic.extend(tokens)
        self._response.append(np.asarray(tokens, dtype=np.int64))
        if self._cursor is not None:
            self._cursor.feed(tokens)
        if self._responses_cursor is not None:
            self._responses_cursor.feed(tokens)
        if self.fallback is not None:
            self.fallback.accept(tokens, verified)

    def finish(self) -> None:
        if self.response_cache is not None and self._response:
            self.response_cache.record(np.concatenate(self._response))
        self._response = []
        if self.fallback is not None:
            self.fallback.finish()


#: Keyword arguments renamed so that each idea has one name everywhere; the old ones still work for
#: one release, with a DeprecationWarning.
_RENAMED = {"static": "corpus", "responses": "response_cache"}


def _renamed_arguments(renamed: dict[str, Any], corpus: Any, response_cache: Any) -> tuple[Any, Any]:
    """``(corpus, response_cache)`` after taking the old keyword names from ``renamed``."""
    values = {"corpus": corpus, "response_cache": response_cache}
    for old, value in renamed.items():
        new = _RENAMED.get(old)
        if new is None:
            raise TypeError(f"SamDrafter() got an unexpected keyword argument {old!r}")
        if values[new] is not None:
            raise TypeError(f"SamDrafter() got both {new}= and its old name {old}=")
        warnings.warn(f"SamDrafter({old}=...) is renamed {new}=...; the old name will be removed in the next release",
                      DeprecationWarning, stacklevel=3)
        values[new] = value
    return values["corpus"], values["response_cache"]
