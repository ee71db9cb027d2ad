"""SuffixDecoding (Snowflake's ArcticInference) as a drafter in this package's loop, for side-by-side benchmarks.

SuffixDecoding keeps a suffix tree per request (prompt + text generated so far) and a global suffix
tree of cached responses; at each step it scores a draft for every match length in both trees and
proposes the highest-scoring one. Here the global tree starts with the corpus documents the ``sam``
methods draft from, so both see the same text. Its package, ``arctic-inference``, is an optional
dependency: an sdist with a C++ extension whose build must be pinned to the installed torch, so it is
not part of any extra; :func:`install_command` says how to install it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from sam_decoding.drafters.base import Draft, Drafter, Verified

#: The release the wrapper was written against (its ``SuffixDecodingCache`` API).
ARCTIC_INFERENCE_VERSION = "0.3.0"
#: SuffixDecoding's own defaults (vLLM's ``method="suffix"``): depth of its trees, in tokens; at most
#: ``factor * match length`` draft tokens; a path ends once its estimated probability drops below 0.1.
DEFAULT_MAX_TREE_DEPTH = 64
DEFAULT_MAX_SPEC_TOKENS = 16
DEFAULT_MAX_SPEC_FACTOR = 1.0
DEFAULT_MIN_TOKEN_PROB = 0.1
#: ``Draft.source`` of every draft it proposes.
SUFFIX_SOURCE = "suffix"


class SuffixDecodingUnavailable(ImportError):
    """``arctic-inference`` (SuffixDecoding) is not installed; the message says how to install it."""


def install_command() -> str:
    """The shell command that installs SuffixDecoding without replacing the installed torch."""
    import torch

    return (
        f"echo 'torch=={torch.__version__}' > torch-pin.txt && "
        f"PIP_CONSTRAINT=torch-pin.txt pip install arctic-inference=={ARCTIC_INFERENCE_VERSION}"
    )


def unavailable_message() -> str:
    """One line: SuffixDecoding is missing, and the command that installs it."""
    return f"SuffixDecoding (arctic-inference) is not installed; install it with: {install_command()}"


def _suffix_cache_class() -> Any:
    try:
        from arctic_inference.suffix_decoding import SuffixDecodingCache
    except ImportError:
        raise SuffixDecodingUnavailable(unavailable_message()) from None
    return SuffixDecodingCache


def is_available() -> bool:
    """Whether ``arctic_inference.suffix_decoding`` imports."""
    try:
        _suffix_cache_class()
    except SuffixDecodingUnavailable:
        return False
    return True


def _int32(tokens: Any) -> np.ndarray:
    """Tokens as the contiguous int32 array SuffixDecoding's zero-copy calls require."""
    return np.ascontiguousarray(np.asarray(tokens).reshape(-1), dtype=np.int32)


def conditional_probabilities(path_probabilities: Any, parents: Any) -> np.ndarray:
    """P(node accepted | parent accepted) from SuffixDecoding's per-node path probabilities.

    SuffixDecoding gives each node the product of child-count ratios from the match down to it;
    :attr:`Draft.probabilities` wants each node's own factor, so each is divided by its parent's.
    """
    path = np.asarray(path_probabilities, dtype=np.float64)
    parents = np.asarray(parents, dtype=np.int64)
    parent_path = np.where(parents >= 0, path[np.maximum(parents, 0)], 1.0)
    return np.clip(np.divide(path, parent_path, out=np.zeros_like(path), where=parent_path > 0), 0.0, 1.0)


class SuffixDecodingDrafter(Drafter):
    """SuffixDecoding's speculation as a :class:`~sam_decoding.Drafter`.

    Args:
        documents: Token lists put in the global tree before the first request, as cached responses
            (e.g. the documents a static corpus is built from).
        use_tree: Propose SuffixDecoding's tree (best-first by estimated probability) instead of its single path.
        max_spec_tokens: Most tokens per draft (nodes of a tree).
        max_spec_factor: At most ``max_spec_factor * match length`` tokens per draft.
        min_token_prob: A draft path ends where its estimated probability falls below this.
        learn: Keep each finished response in the global tree, for later requests (serving); ``False``:
            every request sees only ``documents`` (its response is evicted when it finishes).
        max_tree_depth: Depth of SuffixDecoding's trees, in tokens (also the longest match it looks for).
        max_cached_requests: Most responses (documents included) in the global tree, oldest evicted
            first; ``-1``: no limit.

    Raises:
        SuffixDecodingUnavailable: ``arctic-inference`` is not installed (the message names the command).
    """

    def __init__(
        self,
        documents: Iterable[Any] = (),
        *,
        use_tree: bool = False,
        max_spec_tokens: int = DEFAULT_MAX_SPEC_TOKENS,
        max_spec_factor: float = DEFAULT_MAX_SPEC_FACTOR,
        min_token_prob: float = DEFAULT_MIN_TOKEN_PROB,
        learn: bool = False,
        max_tree_depth: int = DEFAULT_MAX_TREE_DEPTH,
        max_cached_requests: int = -1,
    ) -> None:
        if max_spec_tokens < 1 or max_tree_depth < 1:
            raise ValueError("max_spec_tokens and max_tree_depth must be at least 1 token")
        if max_spec_factor <= 0 or not 0.0 <= min_token_prob <= 1.0:
            raise ValueError("max_spec_factor must be positive and min_token_prob in [0, 1]")
        cache_class = _suffix_cache_class()
        self.use_tree = use_tree
        self.proposes_trees = use_tree
        self.max_spec_tokens = max_spec_tokens
        self.max_spec_factor = max_spec_factor
        self.min_token_prob = min_token_prob
        self.learn = learn
        self._cache = cache_class(max_tree_depth=max_tree_depth, max_cached_requests=max_cached_requests)
        self._depth = max_tree_depth
        self.corpus_tokens = self._add_documents(documents)
        self._next_request = 0
        self._request: int | None = None
        self._context = np.zeros(0, dtype=np.int32)
        self._length = 0

    def _add_documents(self, documents: Iterable[Any]) -> int:
        """Put each document in the global tree as a finished request's response; returns the tokens added."""
        no_prompt = np.zeros(0, dtype=np.int32)
        tokens = 0
        # Negative ids keep documents apart from requests, which count up from 0.
        for index, document in enumerate(documents):
            response = _int32(document)
            request = -1 - index
            self._cache.start_request(request, no_prompt)
            self._cache.add_active_response(request, response)
            self._cache.stop_request(request)
            tokens += int(response.shape[0])
        return tokens

    @property
    def cached_responses(self) -> int:
        """Finished responses in the global tree, corpus documents included (not the request in progress)."""
        cached = self._cache.cached_requests
        return len(cached) - int(self._request is not None and self._request in cached)

    def begin(self, prompt_ids: np.ndarray) -> None:
        self._abandon()
        request = self._next_request
        self._next_request += 1
        prompt = _int32(prompt_ids)
        self._cache.start_request(request, prompt)
        self._request = request
        self._context = np.empty(max(2 * prompt.shape[0], 256), dtype=np.int32)
        self._context[: prompt.shape[0]] = prompt
        self._length = int(prompt.shape[0])

    def _abandon(self) -> None:
        """Drop a request that never finished (its run raised): its partial response is not learned."""
        if self._request is None:
            return
        self._cache.stop_request(self._request)
        if self._request in self._cache.cached_requests:
            self._cache.evict_cached_response(self._request)
        self._request = None

    def propose(self, max_tokens: int) -> Draft:
        if self._request is None:
            return Draft.empty(SUFFIX_SOURCE)
        # Only the last max_tree_depth tokens can match; SuffixDecoding would slice them off anyway.
        context = self._context[max(0, self._length - self._depth) : self._length]
        draft = self._cache.speculate(
            self._request,
            context,
            max_spec_tokens=self.max_spec_tokens,
            max_spec_factor=self.max_spec_factor,
            min_token_prob=self.min_token_prob,
            use_tree_spec=self.use_tree,
        )
        if not draft.token_ids:
            return Draft.empty(SUFFIX_SOURCE)
        tokens = np.asarray(draft.token_ids, dtype=np.int64)
        parents = np.asarray(draft.parents, dtype=np.int32)
        probabilities = conditional_probabilities(draft.probs, parents)
        if not self.use_tree:
            return Draft.chain(tokens, SUFFIX_SOURCE, probabilities, draft.match_len)
        return Draft(tokens, parents, SUFFIX_SOURCE, probabilities, draft.match_len)

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        if self._request is None:
            return
        tokens = _int32(tokens)
        # The response grows in the request's own tree and (while cached) in the global one.
        self._cache.add_active_response(self._request, tokens)
        end = self._length + tokens.shape[0]
        if end > self._context.shape[0]:
            grown = np.empty(2 * end, dtype=np.int32)
            grown[: self._length] = self._context[: self._length]
            self._context = grown
        self._context[self._length : end] = tokens
        self._length = end

    def finish(self) -> None:
        if self._request is None:
            return
        self._cache.stop_request(self._request)
        if not self.learn and self._request in self._cache.cached_requests:
            self._cache.evict_cached_response(self._request)
        self._request = None

    def __repr__(self) -> str:
        shape = "tree" if self.use_tree else "chain"
        return (
            f"SuffixDecodingDrafter({shape}, max_spec_tokens={self.max_spec_tokens}, factor={self.max_spec_factor}, "
            f"min_token_prob={self.min_token_prob}, learn={self.learn}, corpus_tokens={self.corpus_tokens})"
        )
