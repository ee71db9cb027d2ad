"""sam-decoding as a vLLM speculative proposer: ``method="custom_class"``.

Use::

    LLM(model=...,
        speculative_config={"method": "custom_class", "model": "sam_decoding.vllm.SamProposer",
                            "num_speculative_tokens": 8},
        additional_config={"sam_decoding": {"corpus": "corpus.sam"}})

This is the only module of the package that knows about vLLM, and it imports nothing from it: vLLM
builds :class:`SamProposer` from its config object and calls :meth:`SamProposer.propose` once per
step for the whole batch. The adapter only translates:

- one native call reads every row (:class:`~sam_decoding.batch_drafter.BatchDrafter`: it owns every
  request's automata, finds each row's request again although vLLM moves rows, and learns how much of
  the last draft each row accepted), and, when the step drafts at all, a second one drafts a chain
  per row into preallocated arrays;
- :class:`~sam_decoding.policy.BatchBudget` decides how many of those draft tokens the step verifies,
  from a step-cost curve measured between calls and the shared acceptance model;
- one conversion builds vLLM's list of lists;
- finished responses go to a :class:`~sam_decoding.response_recorder.ResponseRecorder` thread, which
  records them in the response cache and hands the new snapshot back to the drafter.

``propose`` never raises: vLLM turns a proposer's exception into a dead engine, so an error is
logged once and the step drafts nothing.

vLLM (0.32) gives a ``custom_class`` proposer the batch's rows only: no request ids, no finish
reasons, no sampling parameters. So a response is recorded in the response cache only when it
visibly ended: its last token is one of the model's end-of-sequence tokens (from its tokenizer and
``generation_config.json``). An aborted request is not recorded, and neither is one stopped by
``max_tokens``, a stop string or ``max_model_len`` (the proposer cannot tell those from an abort).
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from sam_decoding.policy import AcceptanceModel, BatchBudget
from sam_decoding.policy.batch_budget import Outcome

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

#: The batch drafter's source names as the acceptance model knows them (shared with the transformers loop).
_CALIBRATION_SOURCES = {"text": "dynamic", "corpus": "static", "response_cache": "responses"}

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


class BatchProposer:
    """Drafts for a batch of rows; :class:`SamProposer` is this with vLLM's config and signature.

    Args:
        settings: The parsed settings.
        num_speculative_tokens: Most draft tokens per request and step (vLLM's ``k``).
        tokenizer_fingerprint: The model tokenizer's fingerprint; the corpus and the response cache must match it.
        max_model_len: Longest sequence the engine holds, in tokens (no draft runs past it).
        end_token_ids: The model's end-of-sequence token ids: a response ending with one is recorded
            in the response cache when its request leaves the batch.
        acceptance: The acceptance model (pass one to share it with other policies).
    """

    def __init__(
        self,
        settings: SamSettings,
        num_speculative_tokens: int,
        tokenizer_fingerprint: str | None = None,
        max_model_len: int | None = None,
        end_token_ids: Sequence[int] = (),
        acceptance: AcceptanceModel | None = None,
    ) -> None:
        from sam_decoding.batch_drafter import SOURCE_NAMES, BatchDrafter
        from sam_decoding.shards import load_corpus

        if num_speculative_tokens < 1:
            raise SamConfigError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        self.settings = settings
        self.k = num_speculative_tokens
        self.end_token_ids = np.unique(np.asarray(list(end_token_ids), dtype=np.int64))
        static = None
        if settings.corpus is not None:
            static = load_corpus(settings.corpus)
            if tokenizer_fingerprint is not None:
                static.check_tokenizer(tokenizer_fingerprint)
        limits = {} if max_model_len is None else {"max_model_len": int(max_model_len)}
        self.drafter = BatchDrafter(static, max_draft=self.k, **limits)
        self.responses = None
        self.recorder = None
        if settings.response_cache is not None:
            from sam_decoding.response_cache import ResponseCache
            from sam_decoding.response_recorder import ResponseRecorder

            options = dict(settings.response_cache)
            self.responses = ResponseCache(
                options.get("max_tokens", 1_000_000), options.get("path"), tokenizer_fingerprint=tokenizer_fingerprint or ""
            )
            self.drafter.set_response_segments(self.responses.snapshot())
            self.recorder = ResponseRecorder(self.responses, self.drafter.set_response_segments)
            # At exit, requests still held (finished in the last steps, or parked) are released and
            # recorded before the recorder saves (exit hooks run last registered first).
            reference = weakref.ref(self)
            self._atexit = lambda: (lambda proposer: proposer.close() if proposer is not None else None)(reference())
            atexit.register(self._atexit)
        sources = [_CALIBRATION_SOURCES.get(name, name) for name in SOURCE_NAMES]
        self._correction_codes = [SOURCE_NAMES.index(name) for name in ("text", "corpus", "response_cache")]
        self.budget = BatchBudget(self.k, sources, acceptance or AcceptanceModel(), verify_all=settings.policy == "all")
        self.failures = 0
        self.responses_skipped = 0
        self._closed = False

    @property
    def num_states(self) -> int:
        """Requests the drafter holds (in the batch and parked)."""
        return self.drafter.num_live + self.drafter.num_parked

    @property
    def requests_begun(self) -> int:
        """Requests the drafter has begun."""
        return self.drafter.requests_begun

    def propose(
        self, sampled_token_ids: Sequence[Sequence[int]], num_tokens_no_spec: np.ndarray, token_ids_cpu: np.ndarray
    ) -> list[list[int]]:
        """Draft tokens for every row: ``sampled_token_ids[row]`` were appended this step (empty for a
        row that is still prefilling), the row's text is ``token_ids_cpu[row, :num_tokens_no_spec[row]]``.

        Never raises: an error is logged (the first one with its traceback) and the step drafts nothing.
        """
        try:
            return self._propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)
        except Exception:  # noqa: BLE001 - an exception here would stop vLLM's engine
            self.failures += 1
            if self.failures == 1:
                _log.exception("sam-decoding's proposer failed; this step drafts nothing (later failures are counted, not logged)")
            return [[] for _ in range(len(sampled_token_ids))]

    def _propose(
        self, sampled_token_ids: Sequence[Sequence[int]], num_tokens_no_spec: np.ndarray, token_ids_cpu: np.ndarray
    ) -> list[list[int]]:
        now = time.perf_counter()
        rows = len(sampled_token_ids)
        sampled = np.fromiter(map(len, sampled_token_ids), dtype=np.int32, count=rows)
        drafter = self.drafter
        # Read only: the rows are drafted below if this step drafts at all (most steps of a large
        # batch on a CPU do not, and then the step costs only the catching up).
        drafter.step(token_ids_cpu[:rows], num_tokens_no_spec[:rows], sampled, draft=False)
        decoding = sampled > 0
        continuing = decoding & (drafter.new_requests == 0)
        decode_rows = int(np.count_nonzero(decoding))
        # The step since the last call is learned only as a pure decode step (no prefill, no new request).
        clean = rows > 0 and decode_rows == rows and bool(continuing.all())
        emitted = float(sampled[continuing].mean()) if continuing.any() else 1.0
        outcome = Outcome(drafter.previous_given, drafter.previous_accepted, drafter.previous_sources, drafter.previous_probabilities, drafter.match_lengths)
        self.budget.learn(now, clean, emitted, outcome)
        if self.recorder is not None:
            self._record_finished()
        else:
            self.drafter.take_finished()  # nothing records them: drop them, or the queue grows with every request
        if not self.budget.begin(now, decode_rows):
            return [[] for _ in range(rows)]
        corrections = self.budget.source_corrections()
        drafter.set_source_corrections(*(corrections[code] for code in self._correction_codes))
        drafter.draft_rows()
        counts = self.budget.allot(drafter.sources, drafter.probabilities, drafter.draft_lengths, drafter.match_lengths)
        drafter.given[:] = counts
        return _as_lists(drafter.tokens, counts)

    def _record_finished(self) -> None:
        """Submit the responses of requests that left the batch and visibly ended (see the module docstring)."""
        for finished in self.drafter.take_finished():
            tokens = finished.tokens
            if len(tokens) and np.isin(tokens[-1], self.end_token_ids):
                self.recorder.submit(tokens)
            else:
                self.responses_skipped += 1

    def close(self) -> None:
        """Release every request (recording those that ended), then record what is queued and save the
        response cache (if it has a file). Idempotent; also run at interpreter exit by the recorder."""
        if self._closed:
            return
        self._closed = True
        if self.recorder is not None:
            atexit.unregister(self._atexit)
            self.drafter.release_all()
            self._record_finished()
            self.recorder.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass


def _as_lists(tokens: np.ndarray, counts: np.ndarray) -> list[list[int]]:
    """vLLM's draft format: row ``r`` gets ``tokens[r, :counts[r]]`` as a list of ints."""
    drafts: list[list[int]] = [[] for _ in range(len(counts))]
    for row in np.flatnonzero(counts).tolist():
        drafts[row] = tokens[row, : counts[row]].tolist()
    return drafts


class SamProposer:
    """vLLM's ``custom_class`` proposer: ``speculative_config={"method": "custom_class",
    "model": "sam_decoding.vllm.SamProposer", "num_speculative_tokens": K}``, settings in
    ``additional_config={"sam_decoding": {...}}`` (see :class:`SamSettings`)."""

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        settings = SamSettings.from_additional_config(getattr(vllm_config, "additional_config", None))
        k = int(vllm_config.speculative_config.num_speculative_tokens)
        fingerprint, end_tokens = None, ()
        if settings.corpus is not None or settings.response_cache is not None:
            fingerprint, end_tokens = _model_tokenizer_facts(vllm_config)
        max_model_len = getattr(vllm_config.model_config, "max_model_len", None)
        self.batch = BatchProposer(settings, k, fingerprint, max_model_len, end_tokens)

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """vLLM hands every drafter the target model; retrieval drafting needs none."""

    def propose(
        self,
        sampled_token_ids: Sequence[Sequence[int]],
        num_tokens_no_spec: np.ndarray,
        token_ids_cpu: np.ndarray,
        slot_mappings: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> list[list[int]]:
        """Draft token chains for every row of the batch (see :meth:`BatchProposer.propose`)."""
        return self.batch.propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)

    def close(self) -> None:
        """Save what the response cache still holds unsaved (also done at interpreter exit)."""
        self.batch.close()


def _model_tokenizer_facts(vllm_config: Any) -> tuple[str, tuple[int, ...]]:
    """The model tokenizer's fingerprint and the model's end-of-sequence token ids."""
    from transformers import AutoTokenizer, GenerationConfig

    from sam_decoding.models import tokenizer_fingerprint

    model_config = vllm_config.model_config
    name = getattr(model_config, "tokenizer", None) or model_config.model
    trust = bool(getattr(model_config, "trust_remote_code", False))
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust)
    ends = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        generation = GenerationConfig.from_pretrained(model_config.model)
    except OSError:
        generation = None  # no generation_config.json: the tokenizer's end token only
    if generation is not None and generation.eos_token_id is not None:
        found = generation.eos_token_id
        ends.update(found if isinstance(found, list) else [found])
    return tokenizer_fingerprint(tokenizer), tuple(sorted(int(token) for token in ends))

