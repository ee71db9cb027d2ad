"""Classic speculative decoding: a small causal LM sharing the target's tokenizer drafts a greedy chain."""

from __future__ import annotations

import numpy as np
import torch

from sam_decoding.drafters.base import Draft, Drafter, Verified
from sam_decoding.kv_cache import cache_arguments, rollback_cache, truncate_cache


class ModelDrafter(Drafter):
    """Drafts ``num_tokens`` tokens greedily with a small Hugging Face causal LM.

    The draft model keeps its own KV cache over the context plus its last draft; after
    verification the cache is cut back to the longest prefix that is still part of the context,
    so each step feeds the draft model only the tokens it has not seen.

    Args:
        model: A causal LM whose token ids mean the same as the target's (same tokenizer).
        num_tokens: Draft length, in tokens. Each costs one forward pass of ``model``.
    """

    def __init__(self, model: torch.nn.Module, *, num_tokens: int = 5) -> None:
        if num_tokens < 1:
            raise ValueError("num_tokens must be positive")
        self.model = model
        self.num_tokens = num_tokens
        self._device = next(model.parameters()).device
        self._context: list[int] = []
        self._cached: list[int] = []  # the tokens whose keys/values are in self._cache, in order
        self._cache = rollback_cache(model.config)

    def begin(self, prompt_ids: np.ndarray) -> None:
        self._context = [int(t) for t in prompt_ids]
        self._cached = []
        self._cache = rollback_cache(self.model.config)

    @torch.no_grad()
    def _next_token(self, new_tokens: list[int]) -> int:
        start = len(self._cached)
        ids = torch.tensor([new_tokens], dtype=torch.long, device=self._device)
        positions = torch.arange(start, start + len(new_tokens), device=self._device).unsqueeze(0)
        out = self.model(
            input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1, **cache_arguments(self.model, self._cache)
        )
        self._cached.extend(new_tokens)
        return int(out.logits[0, -1].argmax())

    def _roll_back(self) -> None:
        """Drop cached tokens that are not a prefix of the context (a rejected draft), and the context's last token."""
        context, cached = self._context, self._cached
        keep = 0
        limit = min(len(cached), len(context) - 1)
        while keep < limit and cached[keep] == context[keep]:
            keep += 1
        if keep < len(cached):
            truncate_cache(self._cache, keep)
            del cached[keep:]

    def propose(self, max_tokens: int) -> Draft:
        self._roll_back()
        count = min(self.num_tokens, max_tokens)
        # Re-feeding at least the context's last token yields the logits the first draft token comes from.
        token = self._next_token(self._context[len(self._cached) :])
        draft = [token]
        while len(draft) < count:
            token = self._next_token([token])
            draft.append(token)
        return Draft.chain(draft, "model")

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self._context.extend(int(t) for t in tokens)
