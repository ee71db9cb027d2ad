"""sam-decoding as a vLLM speculative proposer: ``method="custom_class"``.

Use::

    LLM(model=...,
        speculative_config={"method": "custom_class", "model": "sam_decoding.vllm.SamProposer",
                            "num_speculative_tokens": 8},
        additional_config={"sam_decoding": {"corpus": "corpus.sam"}})

This is the only module of the package that knows about vLLM, and it imports nothing from it: vLLM
builds :class:`SamProposer` from its config object and calls :meth:`SamProposer.propose` once per
step for the whole batch. The adapter only translates. Each request gets an engine-neutral
:class:`~sam_decoding.SamDrafter` (the static corpus is mapped once per worker and shared by every
request's drafter), and the step's draft lengths come from the same acceptance model and
cost-optimal selection as the transformers loop's :class:`~sam_decoding.CostAwarePolicy`, applied
to the batch: a step that feeds ``q`` tokens costs ``t(q)`` seconds, learned from the time between
calls, and the batch verifies the draft tokens, over all requests, that maximize expected tokens per
second. With little confidence a request gets a shorter chain, and when verification is
compute-bound (a large batch on a CPU) often none.

vLLM passes rows of a persistent batch, not request ids, and rows move when requests leave. A
request's state is found again by its text: the state at a row continues when the row's history
still holds what the state has read (a sample of prompt positions and the last tokens it read);
otherwise the unclaimed states are searched, and a row nobody claims starts a new state. States
missing from a call are parked for a few calls (a request the scheduler skipped for a step comes
back) and then released.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from sam_decoding.drafters import Draft, Drafter, PromptLookupDrafter, SamDrafter
from sam_decoding.policy import AcceptanceModel, CostProfile, NodeEstimates, best_subtree
from sam_decoding.policy.cost_aware import CALL_CORRECTION_STRENGTH

#: Key of ``additional_config`` that holds this proposer's settings.
CONFIG_KEY = "sam_decoding"
#: Calls a request may be missing from the batch before its state is released.
PARK_CALLS = 4
#: A response cache with a file is saved after this many finished requests.
SAVE_EVERY = 64
#: Prompt positions sampled to recognize a request's history, and tokens compared at its end.
PROBE_POSITIONS = 8
TAIL_TOKENS = 8
#: Step intervals longer than this many times the profile's estimate are not learned (the engine
#: was idle between calls, not computing).
_IDLE_FACTOR = 20.0
#: Step timings are handed to the cost profile this many at a time: each observation invalidates
#: the profile's interpolated curve, which costs more to rebuild than a step's drafting.
OBSERVATION_BATCH = 16
_FALLBACKS = ("prompt_lookup", "none")
_ESTIMATE_FIELDS = ("probabilities", "path_probabilities", "priors", "coarse_cells", "cells", "depths")
_POLICIES = ("cost", "all")


class SamConfigError(ValueError):
    """The ``sam_decoding`` settings in vLLM's ``additional_config`` are invalid."""


@dataclass(frozen=True)
class SamSettings:
    """The proposer's settings, from ``additional_config={"sam_decoding": {...}}``.

    Attributes:
        corpus: Static corpus automaton file or sharded directory (``None``: draft from each
            request's own text only).
        fallback: ``"none"``, or ``"prompt_lookup"``: n-gram lookup in the request's text when no
            automaton matches well (tens of microseconds per request and step on a CPU, where the
            automata take a few: off by default so a 32-row step drafts in about a millisecond).
        policy: ``"cost"``: per request and step, propose the draft tokens that pay for their
            verification (expected tokens per second); ``"all"``: propose every request's best
            draft up to ``num_speculative_tokens``.
        cost_profile: Optional JSON cost profile (``sam-decoding profile``) to start from; without one
            the verify-step cost is learned from the first steps.
        response_cache: ``None``, or ``{"max_tokens": N, "path": FILE}`` (both optional): a
            :class:`~sam_decoding.ResponseCache` of this worker's finished responses, drafted from by
            later requests; with ``path`` it is loaded at start and saved as responses arrive.
    """

    corpus: str | None = None
    fallback: str = "none"
    policy: str = "cost"
    cost_profile: str | None = None
    response_cache: Mapping[str, Any] | None = None

    @classmethod
    def from_additional_config(cls, additional_config: Mapping[str, Any] | None) -> SamSettings:
        """Parse and check the settings; raises :class:`SamConfigError` with a one-line message."""
        raw = (additional_config or {}).get(CONFIG_KEY, {})
        where = f"additional_config[{CONFIG_KEY!r}]"
        if not isinstance(raw, Mapping):
            raise SamConfigError(f"{where} must be a JSON object, got {type(raw).__name__}")
        known = [item.name for item in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise SamConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(known)})")
        settings = cls(**raw)
        settings._check(where)
        return settings

    def _check(self, where: str) -> None:
        for name in ("corpus", "cost_profile"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise SamConfigError(f"{where}: {name} must be a path string, got {value!r}")
            if value is not None and not os.path.exists(value):
                raise SamConfigError(f"{where}: {name} {value!r} does not exist")
        if self.response_cache is not None:
            self._check_response_cache(where)
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


class _RequestState:
    """One request's drafter and what the proposer needs to recognize its row and learn from it."""

    __slots__ = (
        "drafter", "length", "probe_positions", "probe_tokens", "tail", "pending", "pending_call",
        "absent_calls", "call_accepted", "call_predicted",
    )

    def __init__(self, drafter: Drafter, history: np.ndarray, prompt_length: int) -> None:
        self.drafter = drafter
        self.length = 0
        # Positions spread over the prompt: chat prompts share their template's first tokens, so
        # the prompt's own text, not its start, tells requests apart.
        self.probe_positions = np.linspace(0, prompt_length - 1, num=min(PROBE_POSITIONS, prompt_length)).astype(np.int64)
        self.probe_tokens = history[self.probe_positions].tobytes()
        self.tail = b""
        self.pending: tuple[int, NodeEstimates] | None = None  # draft tokens proposed, their estimates
        self.pending_call = -1
        self.absent_calls = 0
        self.call_accepted = 0.0
        self.call_predicted = 0.0

    def continues(self, history: np.ndarray, length: int) -> bool:
        """Whether a row whose first ``length`` tokens are ``history`` is this request's text."""
        # Byte comparisons: a few hundred nanoseconds where np.array_equal takes microseconds.
        if length < self.length or history[self.probe_positions].tobytes() != self.probe_tokens:
            return False
        return history[max(self.length - TAIL_TOKENS, 0) : self.length].tobytes() == self.tail

    def read(self, tokens: np.ndarray, length: int, history: np.ndarray) -> None:
        """Append ``tokens`` (the row's text from ``self.length`` to ``length``) to the drafter."""
        self.drafter.accept(tokens.astype(np.int64, copy=False), None)
        self.length = length
        self.tail = history[max(length - TAIL_TOKENS, 0) : length].tobytes()

    @property
    def call_correction(self) -> float:
        """This request's accepted-over-predicted ratio, shrunk to 1 while it has seen little."""
        k = CALL_CORRECTION_STRENGTH
        return (self.call_accepted + k) / (self.call_predicted + k)


@dataclass(frozen=True)
class _Candidate:
    """A request's draft chain for this step: tokens, calibrated estimates, and the path probabilities selection uses."""

    tokens: np.ndarray
    estimates: NodeEstimates
    paths: np.ndarray


@dataclass
class _Step:
    """What one call proposed, kept until the next call measures how long the step took."""

    fed_tokens: int
    mean_length: int
    ended_at: float
    clean: bool  # no prefill in the batch: the interval is a decode step's cost


@dataclass
class BatchProposer:
    """Drafts for a batch of rows; :class:`SamProposer` is this with vLLM's config and signature.

    Args:
        settings: The parsed settings.
        num_speculative_tokens: Most draft tokens per request and step (vLLM's ``k``).
        tokenizer_fingerprint: The model tokenizer's fingerprint; the corpus must match it.
        max_model_len: Longest sequence the engine holds, in tokens (drafts never run past it).
    """

    settings: SamSettings
    num_speculative_tokens: int
    tokenizer_fingerprint: str | None = None
    max_model_len: int | None = None
    acceptance: AcceptanceModel = field(default_factory=AcceptanceModel)
    profile: CostProfile = field(init=False)
    static: Any = field(init=False, default=None)
    responses: Any = field(init=False, default=None)
    responses_recorded: int = field(init=False, default=0)
    _rows: dict[int, _RequestState] = field(init=False, default_factory=dict)
    _parked: list[_RequestState] = field(init=False, default_factory=list)
    requests_begun: int = field(init=False, default=0)
    _calls: int = field(init=False, default=0)
    _last_step: _Step | None = field(init=False, default=None)
    _timings: list[tuple[int, int, float]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        from sam_decoding.shards import load_corpus

        if self.num_speculative_tokens < 1:
            raise SamConfigError(f"num_speculative_tokens must be >= 1, got {self.num_speculative_tokens}")
        if self.settings.corpus is not None:
            self.static = load_corpus(self.settings.corpus)
            if self.tokenizer_fingerprint is not None:
                self.static.check_tokenizer(self.tokenizer_fingerprint)
        if self.settings.response_cache is not None:
            from sam_decoding.response_cache import ResponseCache

            options = dict(self.settings.response_cache)
            self.responses = ResponseCache(
                options.get("max_tokens", 1_000_000), options.get("path"), tokenizer_fingerprint=self.tokenizer_fingerprint or ""
            )
        if self.settings.cost_profile is not None:
            self.profile = CostProfile.load(self.settings.cost_profile, frozen=False)
        else:
            self.profile = CostProfile("vllm-steps")

    # --- the request table ----------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        """Request states held (in the batch and parked)."""
        return len(self._rows) + len(self._parked)

    def _new_drafter(self) -> Drafter:
        fallback = PromptLookupDrafter() if self.settings.fallback == "prompt_lookup" else None
        return SamDrafter(self.static, fallback=fallback, responses=self.responses, use_tree=False)

    def _begin(self, history: np.ndarray, length: int, sampled: int) -> _RequestState:
        # The prompt is the row's text before this step's sampled tokens, so the drafter reads the
        # response from its first token (what a response cache records).
        prompt_length = max(length - sampled, 1)
        self.requests_begun += 1
        drafter = self._new_drafter()
        drafter.begin(history[:prompt_length].astype(np.int64))
        state = _RequestState(drafter, history, prompt_length)
        state.read(history[prompt_length:length], length, history)
        return state

    def _claim(self, sampled_token_ids: Sequence[Sequence[int]], lengths: np.ndarray, token_ids: np.ndarray) -> tuple[list[_RequestState | None], bool]:
        """The state of every row that sampled tokens this step (``None`` for the others), and whether any was new."""
        rows = len(sampled_token_ids)
        states: list[_RequestState | None] = [None] * rows
        unclaimed = [state for row, state in self._rows.items() if row >= rows] + self._parked
        unmatched = []
        for row in range(rows):
            state = self._rows.get(row)
            if not sampled_token_ids[row]:
                if state is not None and row < rows:
                    unclaimed.append(state)  # a row in chunked prefill, or one that sampled nothing
                continue
            if state is not None and state.continues(token_ids[row], int(lengths[row])):
                states[row] = state
            else:
                unmatched.append(row)
                if state is not None:
                    unclaimed.append(state)
        created = False
        for row in unmatched:
            length = int(lengths[row])
            found = next((s for s in unclaimed if s.continues(token_ids[row], length)), None)
            if found is not None:
                unclaimed.remove(found)
            else:
                found, created = self._begin(token_ids[row], length, len(sampled_token_ids[row])), True
            states[row] = found
        self._rows = {row: state for row, state in enumerate(states) if state is not None}
        self._park(unclaimed)
        return states, created

    def _park(self, unclaimed: list[_RequestState]) -> None:
        kept = []
        for state in unclaimed:
            state.absent_calls += 1
            if state.absent_calls <= PARK_CALLS:
                kept.append(state)
            else:
                # vLLM does not tell a proposer why a request left; one gone for several calls has
                # ended (finished or aborted), and its text so far is the model's own output.
                self._finish(state)
        self._parked = kept

    def _finish(self, state: _RequestState) -> None:
        state.drafter.finish()  # a response cache records the response here
        if self.responses is not None:
            self.responses_recorded += 1
            if self.responses.path is not None and self.responses_recorded % SAVE_EVERY == 0:
                self.responses.save()

    def release_all(self) -> None:
        """Drop every request state (calling each drafter's ``finish``)."""
        for state in [*self._rows.values(), *self._parked]:
            self._finish(state)
        self._rows, self._parked = {}, []
        if self.responses is not None and self.responses.path is not None:
            self.responses.save()

    # --- one call ---------------------------------------------------------------------------------
    def propose(
        self, sampled_token_ids: Sequence[Sequence[int]], num_tokens_no_spec: np.ndarray, token_ids_cpu: np.ndarray
    ) -> list[list[int]]:
        """Draft tokens for every row: ``sampled_token_ids[row]`` were appended this step (empty for a
        row that is still prefilling), the row's text is ``token_ids_cpu[row, :num_tokens_no_spec[row]]``."""
        started = time.perf_counter()
        self._calls += 1
        states, created = self._claim(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)
        prefilling = any(not tokens for tokens in sampled_token_ids)
        if self._last_step is not None and self._last_step.clean and not (created or prefilling):
            self._observe_step(started)
        outcomes: list[tuple[NodeEstimates, int, int]] = []
        for row, state in enumerate(states):
            if state is not None:
                self._catch_up(state, token_ids_cpu[row], int(num_tokens_no_spec[row]), len(sampled_token_ids[row]), outcomes)
        self._learn(outcomes)
        candidates = [None if state is None else self._best_candidate(state) for state in states]
        decode_rows = sum(state is not None for state in states)
        mean_length = int(np.mean([s.length for s in states if s is not None])) if decode_rows else 0
        counts = self._draft_lengths(candidates, decode_rows, mean_length)
        if self.max_model_len is not None:
            room = np.array([self.max_model_len - s.length if s is not None else 0 for s in states], dtype=np.int64)
            counts = np.clip(np.minimum(counts, room), 0, None)
        drafts = [self._hand_out(state, candidate, int(count)) for state, candidate, count in zip(states, candidates, counts)]
        self._last_step = _Step(decode_rows + int(counts.sum()), mean_length, time.perf_counter(), not prefilling)
        return drafts

    def _hand_out(self, state: _RequestState | None, candidate: _Candidate | None, count: int) -> list[int]:
        """The first ``count`` tokens of a row's candidate, remembered to learn from the next call."""
        if state is None:
            return []
        if candidate is None or count == 0:
            state.pending = None
            return []
        state.pending = (count, candidate.estimates)
        state.pending_call = self._calls
        return candidate.tokens[:count].tolist()

    def _catch_up(self, state: _RequestState, history: np.ndarray, length: int, sampled: int, outcomes: list) -> None:
        """Note how much of the last draft was accepted (in ``outcomes``), then read the row's new tokens."""
        if state.pending is not None and state.pending_call == self._calls - 1:
            count, estimates = state.pending
            accepted = min(sampled - 1, count)
            # Nodes up to the first rejected one were judged (their parents were accepted).
            judged = min(accepted + 1, count)
            outcomes.append((estimates, judged, accepted))
            state.call_accepted += accepted
            state.call_predicted += float(estimates.path_probabilities[:count].sum())
        state.pending = None
        if length > state.length:
            state.read(history[state.length : length], length, history)
        state.absent_calls = 0

    def _learn(self, outcomes: list[tuple[NodeEstimates, int, int]]) -> None:
        """Teach the acceptance model every row's outcome in one call (it is vectorized over nodes)."""
        if not outcomes:
            return
        parts = [estimates.subset(slice(0, judged)) for estimates, judged, _ in outcomes]
        merged = NodeEstimates(*(np.concatenate([getattr(part, name) for part in parts]) for name in _ESTIMATE_FIELDS))
        accepted = np.concatenate([np.arange(judged) < accepted for _, judged, accepted in outcomes])
        self.acceptance.learn(merged, np.ones(len(accepted), dtype=bool), accepted)

    def _best_candidate(self, state: _RequestState) -> _Candidate | None:
        """The request's draft chain and its calibrated acceptance estimates (``None``: nothing to draft).

        The drafter's own choice among its sources (``propose``) is estimated, not every candidate:
        the estimate is most of the per-row cost, and a 32-row batch must be drafted in about a millisecond.
        """
        draft = state.drafter.propose(self.num_speculative_tokens)
        if not len(draft):
            return None
        draft = _chain_of(draft, self.num_speculative_tokens)
        estimates = self.acceptance.estimate(draft)
        # Selection sees the estimates scaled by this request's record; learning, the calibrated ones.
        paths = np.minimum(estimates.path_probabilities * state.call_correction, 1.0)
        return _Candidate(draft.tokens, estimates, paths)

    def _draft_lengths(
        self, candidates: list[_Candidate | None], decode_rows: int, mean_length: int
    ) -> np.ndarray:
        """How many tokens of each row's candidate to propose: the batch's expected tokens per second,
        maximized, over ``decode_rows`` rows that feed one token each without drafts."""
        counts = np.zeros(len(candidates), dtype=np.int64)
        present = [(row, c) for row, c in enumerate(candidates) if c is not None]
        if not present:
            return counts
        if self.settings.policy == "all" or not self.profile.is_calibrated:
            # Until a step has been timed every draft is proposed whole: those steps measure what drafting costs.
            for row, candidate in present:
                counts[row] = len(candidate.tokens)
            return counts
        paths = np.concatenate([candidate.paths for _, candidate in present])
        owners = np.concatenate([np.full(len(candidate.tokens), row) for row, candidate in present])
        base = max(decode_rows, 1)
        costs = self.profile.curve(mean_length, base + len(paths))[base - 1 :]
        # best_subtree weighs one emitted token per step; the batch emits one per row, so the
        # probabilities are scaled to that unit (the argmax is unchanged). Chains never gain
        # probability with depth, so the kept nodes of each row are a prefix of its chain.
        choice = best_subtree(paths / base, costs, 0.0)
        np.add.at(counts, owners[choice.keep], 1)
        return counts

    def _observe_step(self, now: float) -> None:
        step = self._last_step
        assert step is not None
        seconds = now - step.ended_at
        if self.profile.is_calibrated:
            expected = self.profile.seconds(max(step.fed_tokens, 1), step.mean_length)
            if seconds > _IDLE_FACTOR * expected:
                return  # the engine was idle between the calls, not computing
        self._timings.append((max(step.fed_tokens, 1), step.mean_length, seconds))
        # The first timing goes in at once: until then every draft is proposed whole.
        if len(self._timings) >= OBSERVATION_BATCH or not self.profile.is_calibrated:
            for q, length, spent in self._timings:
                self.profile.observe(q, length, spent)
            self._timings.clear()


def _chain_of(draft: Draft, limit: int) -> Draft:
    """``draft`` as a chain of at most ``limit`` tokens (a tree keeps its first root-to-leaf path)."""
    if draft.parents is not None:
        path = [0]
        for node in range(1, len(draft)):
            if int(draft.parents[node]) == path[-1]:
                path.append(node)
        index = np.asarray(path[:limit])
        probabilities = None if draft.probabilities is None else draft.probabilities[index]
        return Draft.chain(draft.tokens[index], draft.source, probabilities, draft.match_length)
    if len(draft) <= limit:
        return draft
    probabilities = None if draft.probabilities is None else draft.probabilities[:limit]
    return Draft.chain(draft.tokens[:limit], draft.source, probabilities, draft.match_length)


class SamProposer:
    """vLLM's ``custom_class`` proposer: ``speculative_config={"method": "custom_class",
    "model": "sam_decoding.vllm.SamProposer", "num_speculative_tokens": K}``, settings in
    ``additional_config={"sam_decoding": {...}}`` (see :class:`SamSettings`)."""

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        settings = SamSettings.from_additional_config(getattr(vllm_config, "additional_config", None))
        k = int(vllm_config.speculative_config.num_speculative_tokens)
        fingerprint = None
        if settings.corpus is not None or settings.response_cache is not None:
            fingerprint = _model_tokenizer_fingerprint(vllm_config)
        max_model_len = getattr(vllm_config.model_config, "max_model_len", None)
        self.batch = BatchProposer(settings, k, fingerprint, max_model_len)

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


def _model_tokenizer_fingerprint(vllm_config: Any) -> str:
    from transformers import AutoTokenizer

    from sam_decoding.models import tokenizer_fingerprint

    model_config = vllm_config.model_config
    name = getattr(model_config, "tokenizer", None) or model_config.model
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=bool(getattr(model_config, "trust_remote_code", False)))
    return tokenizer_fingerprint(tokenizer)
