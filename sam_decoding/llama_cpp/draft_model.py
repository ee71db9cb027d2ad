"""``SamDraftModel``: sam-decoding's drafter behind llama-cpp-python's ``Llama(draft_model=...)`` interface.

llama-cpp-python calls a draft model with the whole token sequence so far and verifies every token
it returns. This adapter keeps a :class:`~sam_decoding.SamDrafter` in step with that sequence (feeding
only what was appended since the last call, starting afresh when the sequence is not a continuation)
and returns the drafter's chain. There is no cost-aware sizing on this path (llama-cpp-python's loop
verifies whatever it is given), so ``max_tokens`` caps the draft; :func:`sam_decoding.llama_cpp.generate`
is the faster way in (see docs/llama-cpp.md for both measured).

Create the ``Llama`` with ``logits_all=True`` as well: with a draft model llama-cpp-python keeps the
logits of every token, but sizes its buffer for them by that argument, and without it a prompt plus
output longer than ``n_batch`` tokens overflows the buffer (``ValueError`` in ``Llama.eval``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sam_decoding.drafters.base import Drafter


def _draft_model_base() -> type:
    try:
        from llama_cpp.llama_speculative import LlamaDraftModel
    except ImportError:
        return object
    return LlamaDraftModel


class SamDraftModel(_draft_model_base()):  # type: ignore[misc]
    """A ``llama_cpp.llama_speculative.LlamaDraftModel`` that drafts with a sam-decoding drafter.

    Args:
        drafter: The drafter (default: a chain :class:`~sam_decoding.SamDrafter` over the text so far).
        max_tokens: Most draft tokens returned per call.
    """

    def __init__(self, drafter: Drafter | None = None, *, max_tokens: int = 10) -> None:
        if drafter is None:
            from sam_decoding.drafters.sam import SamDrafter

            drafter = SamDrafter(use_tree=False)
        if not isinstance(drafter, Drafter):
            raise TypeError(f"drafter must be a sam_decoding Drafter, got {type(drafter).__name__}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        self.drafter = drafter
        self.max_tokens = max_tokens
        self._seen = np.zeros(0, dtype=np.int64)

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
        seen = self._seen
        continues = len(seen) > 0 and len(ids) >= len(seen) and np.array_equal(ids[: len(seen)], seen)
        if not continues:
            if len(seen):
                self.drafter.finish()
            self.drafter.begin(ids)
        elif len(ids) > len(seen):
            self.drafter.accept(ids[len(seen) :], None)
        self._seen = ids.copy()
        draft = self.drafter.propose(self.max_tokens)
        if draft.parents is not None:
            # A tree: its first-child path (llama-cpp-python verifies chains).
            keep = [0]
            for index in range(1, len(draft)):
                if draft.parents[index] == keep[-1]:
                    keep.append(index)
            return draft.tokens[np.asarray(keep)][: self.max_tokens].astype(np.intc)
        return draft.tokens[: self.max_tokens].astype(np.intc)
