"""One drafting step for a whole serving batch in one native call.

An engine that keeps a persistent batch (one row per running request in a token table) calls
:meth:`BatchDrafter.step` once per engine step with the table, each row's text length and how many
tokens each row gained. The drafter holds every request's state natively (the automaton of its
own text, a cursor on the corpus, a cursor on the response-cache snapshot it began with), works out
which request each row continues, and writes every row's draft chain into buffers it owns. The
outputs are numpy views of those buffers: no per-row Python work, one GIL release per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Union

import numpy as np

from sam_decoding.automaton import ScoredDraftOptions, StaticAutomaton
from sam_decoding.automaton.automata import _native_core, native_automata

if TYPE_CHECKING:
    from sam_decoding.shards import ShardedAutomaton

    Corpus = Union[StaticAutomaton, ShardedAutomaton]

#: Values of :attr:`BatchDrafter.sources`.
SOURCE_NONE = 0
SOURCE_TEXT = 1
SOURCE_CORPUS = 2
SOURCE_RESPONSE_CACHE = 3
SOURCE_NAMES = ("none", "text", "corpus", "response_cache")

#: Longest text, in tokens, when the caller sets no limit.
UNLIMITED_MODEL_LEN = 2**31 - 1


class FinishedRequest(NamedTuple):
    """A request the drafter stopped holding."""

    #: The tokens it read after its prompt (its response), int32.
    tokens: np.ndarray
    #: True when it was missing from the batch for ``park_steps`` steps (finished or aborted: the
    #: drafter cannot tell), False when :meth:`BatchDrafter.release_all` finished it.
    parked_out: bool


def _native_automata(automaton: Corpus | None) -> list:
    """The native automata of a corpus or a response-cache snapshot (its shards, in order)."""
    return [] if automaton is None else native_automata(automaton)


class BatchDrafter:
    """Drafts a chain for every row of a persistent batch in one native call per step.

    Rows are matched to requests natively: a row continues the request it held last step when the
    row's text before this step's tokens (``length - sampled`` tokens) is exactly what that request
    read (a few probe tokens are compared); otherwise any held request with that exact text (rows move
    when requests leave); otherwise a new request begins, its prompt being those ``length - sampled``
    tokens. A request missing from a step is parked; after ``park_steps`` missing steps it is finished
    and its response queued for :meth:`take_finished`.

    Each source (the request's own text, the corpus, the response cache) proposes its scored chain
    (per-node estimates blended as in :class:`~sam_decoding.ScoredDraft`); the one with the most
    expected accepted tokens drafts the row, as :class:`~sam_decoding.SamDrafter` does with
    ``use_tree=False``.

    Args:
        corpus: A :class:`~sam_decoding.StaticAutomaton` or :class:`~sam_decoding.ShardedAutomaton`, or
            ``None`` (drafts from each request's own text and the response cache only).
        max_draft: Deepest draft (K), in tokens: the outputs have K columns.
        min_probability: Floor on a node's estimated path probability.
        trusted_length: Matched contexts longer than this, in tokens, trust their counts more; 0 turns it off.
        max_orders: Matched suffix lengths blended into each estimate.
        max_model_len: No draft runs past this text length, in tokens.
        park_steps: Steps a request may be missing from the batch before it is finished.

    Thread-safety: :meth:`step`, :meth:`set_response_segments`, :meth:`take_finished` and
    :meth:`release_all` may be called from several threads; the output views belong to the thread
    that called :meth:`step` and are valid until the next step.
    """

    def __init__(
        self,
        corpus: Corpus | None = None,
        *,
        max_draft: int = 8,
        min_probability: float = 0.1,
        trusted_length: float = 2.0,
        max_orders: int = 1,
        max_model_len: int = UNLIMITED_MODEL_LEN,
        park_steps: int = 4,
    ) -> None:
        for name, value in (("max_draft", max_draft), ("max_orders", max_orders), ("max_model_len", max_model_len)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(park_steps, bool) or not isinstance(park_steps, (int, np.integer)) or not 0 <= park_steps < 2**32:
            raise ValueError(f"park_steps must be a non-negative integer, got {park_steps!r}")
        if not 0.0 <= min_probability <= 1.0:
            raise ValueError(f"min_probability must be in [0, 1], got {min_probability}")
        if not trusted_length >= 0.0:
            raise ValueError(f"trusted_length must be >= 0, got {trusted_length}")
        self.corpus = corpus
        self._native = _native_core.BatchDrafter(
            _native_automata(corpus), int(max_draft), float(min_probability), float(trusted_length),
            int(max_orders), ScoredDraftOptions().enough_occurrences, int(max_model_len), int(park_steps),
        )
        self._generation = -1
        self._views: dict[str, np.ndarray] = {}
        self._rows = 0

    def _refresh_views(self) -> None:
        generation = self._native.buffer_generation
        if generation != self._generation:
            views = self._native.buffers()
            for name, view in views.items():
                if name != "given":
                    view.setflags(write=False)
            self._views = views
            self._generation = generation

    def step(self, token_ids: np.ndarray, lengths: np.ndarray, sampled: np.ndarray, draft: bool = True) -> None:
        """Reads this step's tokens and drafts every decoding row; the output views then hold the rows.

        Args:
            token_ids: The batch's token table, rows x width, C-contiguous int32 or int64 (read in place).
                Row r's text is its first ``lengths[r]`` entries.
            lengths: Text length of each row, in tokens (1-D int32 or int64, <= width).
            sampled: Tokens each row gained this step (1-D int32 or int64, <= its length). 0: the row did
                not decode this step (e.g. a chunk of prefill): it gets no draft and its request is kept.
            draft: ``False``: read only (every request is caught up and the previous outcome is
                reported; the draft outputs stay empty); :meth:`draft_rows` may draft them later.

        Raises:
            TypeError: a wrong dtype. ValueError: a wrong shape, a length or count out of range, or a
            token id outside [0, 2^31-1] among the tokens read (nothing changes then).
        """
        self._native.step(token_ids, lengths, sampled, bool(draft))
        self._rows = int(np.shape(token_ids)[0])
        self._refresh_views()

    def set_source_corrections(self, text: float, corpus: float, responses: float) -> None:
        """How far off each source's own estimates are (observed over predicted acceptance; 1: not at
        all): a row drafts from the source with the most expected accepted tokens once its estimates
        are corrected (the acceptance model's per-source level), so a source that overrates itself
        stops winning rows from one that does not.

        Raises:
            ValueError: a correction that is not a positive finite number.
        """
        self._native.set_source_corrections(float(text), float(corpus), float(responses))

    def draft_rows(self) -> None:
        """Drafts every decoding row of the last :meth:`step` (one read with ``draft=False``: a batch
        decides whether it drafts after learning the last step's outcome, and skips the drafting
        work when it does not)."""
        self._native.draft_rows()

    def _view(self, name: str) -> np.ndarray:
        return self._views[name][: self._rows]

    @property
    def rows(self) -> int:
        """Rows of the last step."""
        return self._rows

    @property
    def max_draft(self) -> int:
        """Draft slots per row (K), in tokens."""
        return int(self._native.max_draft)

    @property
    def tokens(self) -> np.ndarray:
        """Draft tokens, [rows, K] int32; row r's first ``draft_lengths[r]`` are its chain, the rest 0."""
        return self._view("tokens")

    @property
    def probabilities(self) -> np.ndarray:
        """Each draft node's estimated chance of acceptance given its parent's, [rows, K] float64."""
        return self._view("probabilities")

    @property
    def path_probabilities(self) -> np.ndarray:
        """Each draft node's estimated chance that it and every node before it are accepted, [rows, K] float64."""
        return self._view("path_probabilities")

    @property
    def draft_lengths(self) -> np.ndarray:
        """Draft length of each row, in tokens, [rows] int32 (0: no draft)."""
        return self._view("draft_lengths")

    @property
    def sources(self) -> np.ndarray:
        """Where each row's draft came from, [rows] uint8: 0 none, 1 the request's text, 2 corpus, 3 response cache."""
        return self._view("sources")

    @property
    def match_lengths(self) -> np.ndarray:
        """Longest matched suffix behind each row's draft, in tokens, [rows] int32."""
        return self._view("match_lengths")

    @property
    def new_requests(self) -> np.ndarray:
        """1 where the row began a new request this step, [rows] uint8."""
        return self._view("new_requests")

    @property
    def previous_given(self) -> np.ndarray:
        """Draft tokens handed to the row's request at its previous decoding step (as written to :attr:`given`), [rows] int32."""
        return self._view("previous_given")

    @property
    def previous_accepted(self) -> np.ndarray:
        """Of those, how many were accepted: ``min(sampled - 1, previous_given)``, [rows] int32."""
        return self._view("previous_accepted")

    @property
    def previous_probabilities(self) -> np.ndarray:
        """Per-node probabilities of the request's previous draft, [rows, K] float64 (0 past its length)."""
        return self._view("previous_probabilities")

    @property
    def previous_sources(self) -> np.ndarray:
        """Source of the request's previous draft, [rows] uint8 (as :attr:`sources`)."""
        return self._view("previous_sources")

    @property
    def given(self) -> np.ndarray:
        """Writable, [rows] int32: after a step, write how many draft tokens each row was actually handed.

        Read at the next step (for :attr:`previous_given` / :attr:`previous_accepted`), then cleared to 0.
        """
        return self._view("given")

    def set_response_segments(self, snapshot: Corpus | None) -> None:
        """Requests beginning from now on draft from this response-cache snapshot
        (:meth:`~sam_decoding.ResponseCache.snapshot`); requests already held keep theirs."""
        self._native.set_response_segments(_native_automata(snapshot))

    def take_finished(self) -> list[FinishedRequest]:
        """Responses of the requests finished since the last call, oldest first (empty responses are dropped)."""
        return [FinishedRequest(tokens, bool(parked_out)) for tokens, parked_out in self._native.take_finished()]

    def release_all(self) -> None:
        """Finishes every held request (their responses are queued with ``parked_out=False``)."""
        self._native.release_all()

    @property
    def num_live(self) -> int:
        """Requests that were in the last step."""
        return int(self._native.num_live)

    @property
    def num_parked(self) -> int:
        """Requests missing from the last step but still held."""
        return int(self._native.num_parked)

    @property
    def requests_begun(self) -> int:
        """Requests begun since construction."""
        return int(self._native.requests_begun)
