"""sam-decoding as a vLLM speculative proposer: ``method="custom_class"``.

Use::

    LLM(model=...,
        speculative_config={"method": "custom_class", "model": "sam_decoding.vllm.SamProposer",
                            "num_speculative_tokens": 8},
        additional_config={"sam_decoding": {"corpus": "corpus.sam"}})

This is the only module of the package that knows about vLLM, and it imports nothing from it: vLLM
builds :class:`SamProposer` from its config object and calls :meth:`SamProposer.propose` once per
step for the whole batch. The adapter only translates:

- one native call drafts every row (:class:`~sam_decoding.batch_drafter.BatchDrafter`: it owns every
  request's automata, finds each row's request again although vLLM moves rows, learns how much of the
  last draft each row accepted, and drafts a chain per row into preallocated arrays);
- :class:`~sam_decoding.policy.BatchBudget` decides how many of those draft tokens the step verifies,
  from a step-cost curve measured between calls and the shared acceptance model;
- one conversion builds vLLM's list of lists;
- finished responses go to a :class:`~sam_decoding.response_recorder.ResponseRecorder` thread, which
  records them in the response cache and hands the new snapshot back to the drafter.

``propose`` never raises: vLLM turns a proposer's exception into a dead engine, so an error is
logged once and the step drafts nothing.

vLLM (0.32) gives a ``custom_class`` proposer the batch's rows only: no request ids, no finish
reasons, no sampling parameters. So a response is recorded in the response cache only when it
visibly ended: its last token is one of the model's end-of-sequence tokens, or it filled
``max_model_len``. An aborted request (or one stopped by ``max_tokens`` or a stop string) is not
recorded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from sam_decoding.policy import AcceptanceModel, BatchBudget

#: Key of ``additional_config`` that holds this proposer's settings.
CONFIG_KEY = "sam_decoding"
_FALLBACKS = ("none",)
_POLICIES = ("cost", "all")
#: Keys that earlier versions took and what to do instead (a one-line refusal, not a silent ignore).
_RETIRED = {
    "cost_profile": "the proposer measures the engine's step cost itself, over total tokens per step; remove the key",
}
_REFUSED_FALLBACKS = {
    "prompt-lookup": "it is a per-request Python drafter, which would put per-row work back on vLLM's critical path "
    "(the automata already draft from the request's own text); use \"none\"",
    "token-recycling": "it needs the target's logits, which vLLM does not give a proposer; use \"none\"",
}

_log = logging.getLogger(__name__)


class SamConfigError(ValueError):
    """The ``sam_decoding`` settings in vLLM's ``additional_config`` are invalid."""


@dataclass(frozen=True)
class SamSettings:
    """The proposer's settings, from ``additional_config={"sam_decoding": {...}}``.

    Attributes:
        corpus: Static corpus automaton file or sharded directory (``None``: draft from each
            request's own text and the response cache only).
        fallback: ``"none"`` (the only one: the automata already draft from the request's own text).
        policy: ``"cost"``: each step verifies the draft tokens that maximize the batch's expected
            tokens per second on the measured step cost (often none for a large batch on a CPU);
            ``"all"``: every row's whole chain, up to ``num_speculative_tokens``.
        response_cache: ``None``, or ``{"max_tokens": N, "path": FILE}`` (both optional; N defaults
            to 1,000,000 tokens): a :class:`~sam_decoding.ResponseCache` of this worker's finished
            responses, drafted from by later requests; with ``path`` it is loaded at start and saved
            in the background every 64 responses or 30 seconds and at shutdown.
    """

    corpus: str | None = None
    fallback: str = "none"
    policy: str = "cost"
    response_cache: Mapping[str, Any] | None = None

    @classmethod
    def from_additional_config(cls, additional_config: Mapping[str, Any] | None) -> SamSettings:
        """Parse and check the settings; raises :class:`SamConfigError` with a one-line message."""
        raw = (additional_config or {}).get(CONFIG_KEY, {})
        where = f"additional_config[{CONFIG_KEY!r}]"
        if not isinstance(raw, Mapping):
            raise SamConfigError(f"{where} must be a JSON object, got {type(raw).__name__}")
        for key, why in _RETIRED.items():
            if key in raw:
                raise SamConfigError(f"{where}: {key} is no longer used: {why}")
        known = [item.name for item in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise SamConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(known)})")
        settings = cls(**raw)
        settings._check(where)
        return settings

    def _check(self, where: str) -> None:
        if self.corpus is not None and (not isinstance(self.corpus, str) or not self.corpus):
            raise SamConfigError(f"{where}: corpus must be a path string, got {self.corpus!r}")
        if self.corpus is not None and not os.path.exists(self.corpus):
            raise SamConfigError(f"{where}: corpus {self.corpus!r} does not exist")
        if self.response_cache is not None:
            self._check_response_cache(where)
        if self.fallback in _REFUSED_FALLBACKS:
            raise SamConfigError(f"{where}: fallback {self.fallback!r} is not available in vLLM: {_REFUSED_FALLBACKS[self.fallback]}")
        if self.fallback not in _FALLBACKS:
            raise SamConfigError(f"{where}: fallback must be one of {', '.join(_FALLBACKS)}, got {self.fallback!r}")
        if self.policy not in _POLICIES:
            raise SamConfigError(f"{where}: policy must be one of {', '.join(_POLICIES)}, got {self.policy!r}")

    def _check_response_cache(self, where: str) -> None:
        cache = self.response_cache
        if not isinstance(cache, Mapping):
            raise SamConfigError(f"{where}: response_cache must be a JSON object, got {cache!r}")
        unknown = sorted(set(cache) - {"max_tokens", "path"})
        if unknown:
            raise SamConfigError(f"{where}: unknown key {unknown[0]!r} in response_cache (known keys: max_tokens, path)")
        max_tokens = cache.get("max_tokens", 1)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise SamConfigError(f"{where}: response_cache max_tokens must be a positive integer (tokens), got {max_tokens!r}")
        path = cache.get("path")
        if path is not None and (not isinstance(path, str) or not os.path.isdir(os.path.dirname(os.path.abspath(path)))):
            raise SamConfigError(f"{where}: response_cache path must be a file in an existing directory, got {path!r}")
