"""Sampling on the llama.cpp path: the target distribution of one position, and the speculative rule that keeps it.

The target distribution is the one llama-cpp-python's ``Llama.sample``/``create_completion`` draws
from with the same ``top_k``, ``top_p``, ``min_p`` and ``temperature`` (its other settings at their
neutral values: no repetition penalties, ``typical_p=1``, no mirostat, grammar or logit bias).
llama-cpp-python builds llama.cpp's sampler chain top-k, typical, top-p, min-p, temperature, dist;
the filters therefore run on the raw logits and the temperature only reshapes what they keep:

1. top-k: the ``top_k`` largest logits (``top_k=0``: all tokens);
2. top-p: of those, in decreasing order, the shortest prefix whose probability under
   ``softmax(logits)`` renormalised over the top-k set reaches ``top_p`` (``top_p=1``: all);
3. min-p: of those, the tokens with ``logit >= max logit + log(min_p)``, i.e. at least ``min_p``
   times the most likely token's probability at temperature 1 (``min_p=0``: all);
4. ``softmax(logits / temperature)`` over the tokens kept, zero elsewhere.

Ties at a cut-off are broken by token id (llama.cpp's partial sort leaves them unspecified). The
sums are float64 here; llama.cpp's are float32, and over a whole vocabulary (``top_k=0``) its softmax
loses the tail's mass, so its top-p cut can fall a token or two earlier (about 1e-4 of probability,
measured on the default model; with a top-k set of tens of tokens the two agree to 1e-5). The draw itself uses a NumPy
generator, not llama.cpp's: the distribution is the same, the individual draws are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling settings, named and defaulted as in llama-cpp-python (except ``temperature``: 0, greedy).

    Attributes:
        temperature: Divides the logits of the tokens kept; 0 means greedy (argmax), no randomness.
        top_k: Keep the ``top_k`` most likely tokens; 0 keeps all.
        top_p: Keep the shortest most-likely prefix holding at least this probability; in (0, 1].
        min_p: Keep tokens at least ``min_p`` times as likely as the most likely one; in [0, 1).
        seed: Seeds the NumPy generator of one call (``None``: fresh entropy each call).
    """

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: int | None = None

    def __post_init__(self) -> None:
        def number(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not number(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = no top-k), got {self.top_k!r}")
        if not number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if not number(self.min_p) or not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must lie in [0, 1), got {self.min_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be None or an int >= 0, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """Whether these settings mean greedy decoding (temperature 0)."""
        return self.temperature == 0

    def generator(self) -> np.random.Generator:
        """A fresh NumPy generator for one generation call, seeded from :attr:`seed`."""
        return np.random.default_rng(self.seed)

    def distribution(self, logits: np.ndarray) -> np.ndarray:
        """The target distribution of one position (see the module docstring): float64 ``[n_vocab]``, summing to 1.

        Args:
            logits: The position's logits, float ``[n_vocab]`` (not modified).
        """
        if self.greedy:
            raise ValueError("temperature 0 is greedy: there is no distribution to sample")
        z = np.asarray(logits, dtype=np.float64)
        n = len(z)
        if self.top_k and self.top_k < n:
            top = np.argpartition(-z, self.top_k - 1)[: self.top_k]
            # argpartition breaks ties at the k-th logit arbitrarily: take the lowest ids among them.
            boundary = z[top].min()
            above = np.flatnonzero(z > boundary)
            tied = np.flatnonzero(z == boundary)[: self.top_k - len(above)]
            candidates = np.concatenate([above, tied])
        else:
            candidates = np.arange(n)
        zc = z[candidates]
        peak = zc.max()
        weights = np.exp(zc - peak)  # softmax over the top-k set at temperature 1, unnormalised
        total = weights.sum()
        # min-p and top-p each keep a prefix of the decreasing order: their intersection is the shorter one.
        kept = np.flatnonzero(zc >= peak + math.log(self.min_p)) if self.min_p > 0 else np.arange(len(zc))
        if self.top_p < 1:
            kept = self._top_p_prefix(kept, zc, candidates, weights / total)
        scaled = np.exp((zc[kept] - peak) / self.temperature)
        p = np.zeros(n, dtype=np.float64)
        p[candidates[kept]] = scaled / scaled.sum()
        return p

    def _top_p_prefix(self, kept: np.ndarray, zc: np.ndarray, candidates: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """The shortest prefix of ``kept`` in decreasing order (ties by token id) holding ``top_p`` of ``probabilities``.

        Sorts only the largest few hundred first and widens while they hold too little: over a whole
        vocabulary the nucleus is usually far smaller than the vocabulary."""
        size = 256 if len(kept) > 1024 else len(kept)
        while True:
            part = kept
            if size < len(kept):
                floor = zc[kept[np.argpartition(-zc[kept], size - 1)[size - 1]]]
                part = kept[zc[kept] >= floor]  # every token tied at the floor, so ties still go by id
            order = part[np.lexsort((candidates[part], -zc[part]))]
            reached = np.flatnonzero(np.cumsum(probabilities[order]) >= self.top_p)
            if len(reached):
                return order[: int(reached[0]) + 1]
            if len(part) == len(kept):
                return order
            size *= 4


def _draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """One index drawn with probability proportional to ``weights`` (non-negative, positive sum)."""
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, len(weights) - 1)


def verify_position(p: np.ndarray, draft_token: int | None, rng: np.random.Generator) -> tuple[int, bool]:
    """One position of speculative sampling against a deterministic draft: the emitted token and whether it is the draft's.

    The draft proposed ``draft_token`` with probability 1, so the standard rule reads: accept it with
    probability ``p[draft_token]``; otherwise draw from ``p`` with ``draft_token`` removed and
    renormalised (``(p - onehot)+``). ``draft_token=None`` (past the draft's end): draw from ``p``.
    Either way the emitted token is distributed exactly as ``p``.

    Args:
        p: The target distribution of the position, float ``[n_vocab]`` summing to 1.
        draft_token: The draft's token at this position, or ``None``.
        rng: The call's generator.

    Returns:
        ``(token, accepted)``; after a rejection (``accepted`` false) the rest of the draft is void.
    """
    if draft_token is None:
        return _draw(p, rng), False
    if rng.random() < p[draft_token]:
        return int(draft_token), True
    residual = p.copy()
    residual[draft_token] = 0.0
    if not residual.sum() > 0:  # p is a point mass on the draft token up to rounding: it is the only choice
        return int(draft_token), True
    return _draw(residual, rng), False
