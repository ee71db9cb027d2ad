"""Prompt lookup decoding: draft what followed the latest earlier occurrence of the context's last n-gram."""

from __future__ import annotations

import numpy as np

from sam_decoding.drafters.base import Draft, Drafter, Verified


class PromptLookupDrafter(Drafter):
    """n-gram lookup over the prompt and the generated text (PLD).

    Tries n-grams from ``max_ngram`` down to ``min_ngram`` tokens; for the first that occurred
    before, drafts the ``num_tokens`` tokens that followed its most recent earlier occurrence.
    One lookup scans the context once per n (numpy), microseconds for contexts of thousands of tokens.
    """

    def __init__(self, *, max_ngram: int = 3, min_ngram: int = 1, num_tokens: int = 10) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("need 1 <= min_ngram <= max_ngram")
        if num_tokens < 1:
            raise ValueError("num_tokens must be positive")
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.num_tokens = num_tokens
        self._context = np.zeros(1024, dtype=np.int64)
        self._length = 0

    def begin(self, prompt_ids: np.ndarray) -> None:
        self._length = 0
        self._append(prompt_ids)

    def _append(self, tokens: np.ndarray) -> None:
        end = self._length + len(tokens)
        if end > len(self._context):
            grown = np.zeros(max(end, 2 * len(self._context)), dtype=np.int64)
            grown[: self._length] = self._context[: self._length]
            self._context = grown
        self._context[self._length : end] = tokens
        self._length = end

    def propose(self, max_tokens: int) -> Draft:
        context = self._context[: self._length]
        length = self._length
        limit = min(self.num_tokens, max_tokens)
        for n in range(min(self.max_ngram, length - 1), self.min_ngram - 1, -1):
            pattern = context[length - n :]
            # Candidate starts leave at least one token after the n-gram and end before the context's end.
            starts = np.flatnonzero(context[: length - n] == pattern[0])
            for offset in range(1, n):
                if len(starts) == 0:
                    break
                starts = starts[context[starts + offset] == pattern[offset]]
            if len(starts):
                follow = int(starts[-1]) + n
                return Draft.chain(context[follow : follow + limit].copy(), "prompt_lookup", match_length=n)
        return Draft.empty("prompt_lookup")

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self._append(tokens)
