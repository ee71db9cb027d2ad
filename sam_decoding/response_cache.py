"""A bounded, thread-safe store of finished responses that drafts for later requests.

In serving, the responses already given are the richest corpus there is: questions recur, and so
do the phrasings, code and formats of their answers. :class:`ResponseCache` keeps the newest
responses within a token budget and offers them, at any moment, as an immutable corpus automaton
(:meth:`ResponseCache.snapshot`) that a drafter reads exactly as it reads an offline corpus.

How it stays cheap as it grows (a log-structured merge of static automata):

- The responses live in *segments*, oldest first, each a
  :class:`~sam_decoding.StaticAutomaton` over its responses. A snapshot is the segments' automata
  used as one (:class:`~sam_decoding.ShardedAutomaton`, or the single automaton itself): no copy,
  no build, so a response is draftable by the very next request.
- :meth:`~ResponseCache.record` builds one automaton: the new response together with the newest
  segments it absorbs, a segment being absorbed while it is at most twice what is being built and
  the result stays within ``segment_tokens``. A token is thus rebuilt only when its segment grows
  by half: at most ``1 + log1.5(segment_tokens / response length)`` times, whatever the cache size
  beyond ``segment_tokens``. Of two neighbouring segments, the older is more than twice the newer
  or the two hold more than ``segment_tokens`` together: so there are at most
  ``2 * max_tokens / segment_tokens`` large segments (8 by default) and one per doubling below
  them, and a cursor over a snapshot costs one step per segment per token. (Absorbing only segments no larger than the build, a binary
  counter, left 12.8 segments on average, 21 at most, against 9.0 and 12, for a 1M-token cache of
  Spec-Bench text, and fed a cursor 1.7x slower for about the same insert time:
  ``bench/results/response_cache``.)
- Eviction, oldest response first, happens when a record takes the cache over ``max_tokens``: whole
  responses are dropped from the oldest segment (whole segments while the excess covers them; the
  oldest remaining one is rebuilt without its dropped responses) until the cache is
  ``eviction_slack`` tokens (``segment_tokens // 8``) below the budget. The slack makes each rebuild
  pay for itself: it costs at most ``segment_tokens`` tokens and evicts at least
  ``segment_tokens // 8``, so eviction too is amortized O(1) per recorded token. After every record
  ``max_tokens - eviction_slack - (longest dropped response) < num_tokens <= max_tokens`` once
  eviction has begun.
- A response longer than ``max_tokens`` keeps its last ``max_tokens`` tokens (and evicts all
  others): its end is what the next request's beginning is likeliest to follow. Empty responses
  are ignored.

Builds release the GIL and happen under the writer lock only: :meth:`snapshot`, the sizes and
:meth:`save` read one immutable state object and never wait for a build.

Persistence (optional): a cache opened with ``path`` loads that file if it exists, so a restarted
process starts warm, and :meth:`save` replaces it atomically. Saving happens on :meth:`save`, on
:meth:`close`, and on leaving a ``with`` block without an exception -- never per record (a save is
O(size)) and never after a failure, so a failed run does not overwrite the file. A file that
cannot be read (truncated, corrupted, foreign, of a newer format version, of another tokenizer)
is refused with a one-line error and left untouched.

The file format is :mod:`sam_decoding.response_cache_file`'s.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Union

import numpy as np

from sam_decoding.atomic_file import replacing_atomically
from sam_decoding.automaton import (
    MAX_BUILD_TEXT_LENGTH,
    StaticAutomaton,
    TokenizerMismatchError,
    TokenSequence,
    checked_token_array,
)
from sam_decoding.response_cache_file import FORMAT_VERSION, MAGIC, read_response_cache, write_response_cache
from sam_decoding.shards import ShardedAutomaton

#: The largest budget: a response of ``max_tokens`` tokens must fit one automaton build, and a
#: segment of ``segment_tokens`` tokens with a separator per response likewise.
MAX_TOKENS_LIMIT = MAX_BUILD_TEXT_LENGTH // 2
#: A record absorbs the newest segment while it is at most this many times what is being built:
#: 1 would be a binary counter; 2 rebuilds a token up to log1.5 instead of log2 times as segments
#: grow, and keeps about a third fewer segments for every cursor to step through.
MERGE_RATIO = 2
#: Default segments hold at least this many tokens, so that a small cache is one or a few automata.
MIN_DEFAULT_SEGMENT_TOKENS = 4096

Snapshot = Union[StaticAutomaton, ShardedAutomaton]


@dataclass(frozen=True)
class _Segment:
    """Responses back to back (``tokens``, uint32; ``ends``: cumulative end offsets) and the
    automaton over them, one document per response."""

    tokens: np.ndarray
    ends: np.ndarray
    automaton: StaticAutomaton

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def nbytes(self) -> int:
        return self.automaton.nbytes + self.tokens.nbytes + self.ends.nbytes


@dataclass(frozen=True)
class _State:
    """Everything a reader needs, replaced as a whole after each change (readers take no lock)."""

    segments: tuple[_Segment, ...] = ()
    snapshot: Snapshot | None = None
    num_tokens: int = 0
    num_responses: int = 0
    nbytes: int = 0
    version: int = 0


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class ResponseCache:
    """The newest finished responses within ``max_tokens`` tokens, as a corpus for drafting.

    Args:
        max_tokens: Token budget (response tokens; separators and index excluded). The oldest
            responses are evicted beyond it (see the module docstring for the exact rule).
        path: Optional file: loaded now if it exists (its responses beyond ``max_tokens`` are
            evicted oldest first), written by :meth:`save`, :meth:`close` and a clean ``with`` exit.
        tokenizer_fingerprint: The tokenizer the token ids come from. A file saved under another
            one raises :class:`~sam_decoding.TokenizerMismatchError`; ``""`` adopts the file's.
        segment_tokens: Largest segment a merge builds, in tokens (default ``max_tokens // 4``,
            at least ``min(max_tokens, 4096)``). Larger: fewer segments to feed per drafted
            token; smaller: cheaper eviction rebuilds. Two neighbouring segments that stopped
            merging hold more than ``segment_tokens`` together, so there are at most
            ``2 * max_tokens / segment_tokens`` (default: 8) of them.

    Raises ``FormatError`` for an unreadable file and ``FileNotFoundError`` if ``path``'s
    directory does not exist. Thread-safe: any number of threads may record, snapshot and save.
    """

    def __init__(
        self,
        max_tokens: int = 1_000_000,
        path: str | os.PathLike[str] | None = None,
        *,
        tokenizer_fingerprint: str | None = None,
        segment_tokens: int | None = None,
    ) -> None:
        max_tokens = _check_positive_int("max_tokens", max_tokens)
        if max_tokens > MAX_TOKENS_LIMIT:
            raise ValueError(f"max_tokens must be at most {MAX_TOKENS_LIMIT:,}, got {max_tokens:,}")
        if segment_tokens is None:
            segment_tokens = max(min(max_tokens, MIN_DEFAULT_SEGMENT_TOKENS), max_tokens // 4)
        segment_tokens = min(_check_positive_int("segment_tokens", segment_tokens), max_tokens)
        if tokenizer_fingerprint is None:
            tokenizer_fingerprint = ""  # unknown: the file records no tokenizer
        if not isinstance(tokenizer_fingerprint, str):
            raise TypeError(f"tokenizer_fingerprint must be a str or None, got {type(tokenizer_fingerprint).__name__}")
        self._max_tokens = max_tokens
        self._segment_tokens = segment_tokens
        self._eviction_slack = segment_tokens // 8
        self._fingerprint = tokenizer_fingerprint
        self._path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._state = _State()
        self._saved_version = 0
        if self._path is not None:
            self._check_path(self._path)
            if self._path.exists():
                self._load(self._path)

    # ---- recording ------------------------------------------------------------------------

    def record(self, tokens: TokenSequence) -> None:
        """Add one finished response (1-D integer token ids: list, NumPy array or torch tensor).

        Visible to every :meth:`snapshot` taken after this returns. Empty responses are ignored;
        raises ``TypeError`` for non-integer ids and ``ValueError`` for another shape or an id
        outside ``[0, 2^31-1]``. Amortized O(log(segment_tokens / length)) token builds per token.
        """
        # Possibly the caller's buffer, which the cache never keeps: a record builds from a new concatenation.
        response = checked_token_array(tokens)
        if response.shape[0] == 0:
            return
        response = response[-self._max_tokens :]
        with self._lock:
            segments = self._evict(self._state.segments, incoming=response.shape[0])
            self._publish(self._absorb(segments, response))

    def _absorb(self, segments: tuple[_Segment, ...], response: np.ndarray) -> tuple[_Segment, ...]:
        """``segments`` with ``response`` built into a new newest segment together with the newest
        segments at most ``MERGE_RATIO`` times the growing build (see the module docstring)."""
        size, keep = response.shape[0], len(segments)
        while keep > 0:
            candidate = segments[keep - 1].num_tokens
            if candidate > MERGE_RATIO * size or size + candidate > self._segment_tokens:
                break
            size += candidate
            keep -= 1
        merged = segments[keep:]
        tokens = np.concatenate([segment.tokens for segment in merged] + [response])
        ends = np.concatenate(_shifted_ends(merged) + [np.array([tokens.shape[0]], dtype=np.int64)])
        return segments[:keep] + (self._build(tokens, ends),)

    def _evict(self, segments: tuple[_Segment, ...], incoming: int) -> tuple[_Segment, ...]:
        """``segments`` without their oldest responses, if ``incoming`` more tokens would exceed
        the budget: enough that the cache ends ``eviction_slack`` tokens below it."""
        total = sum(segment.num_tokens for segment in segments)
        if total + incoming <= self._max_tokens:
            return segments
        excess = total + incoming - (self._max_tokens - self._eviction_slack)
        kept = list(segments)
        while kept and excess >= kept[0].num_tokens:
            excess -= kept.pop(0).num_tokens
        if kept and excess > 0:
            rest = self._without_oldest(kept.pop(0), excess)
            kept[:0] = [rest] if rest is not None else []
        return tuple(kept)

    def _without_oldest(self, segment: _Segment, tokens: int) -> _Segment | None:
        """``segment`` rebuilt without its oldest responses covering at least ``tokens`` tokens
        (``None`` if that leaves none)."""
        dropped = int(np.searchsorted(segment.ends, tokens, side="left")) + 1
        if dropped >= segment.ends.shape[0]:
            return None
        start = int(segment.ends[dropped - 1])
        return self._build(segment.tokens[start:].copy(), segment.ends[dropped:] - start)

    def _build(self, tokens: np.ndarray, ends: np.ndarray) -> _Segment:
        # The tokens are already checked, contiguous uint32.
        automaton = StaticAutomaton.from_checked_tokens(tokens, ends, tokenizer_fingerprint=self._fingerprint)
        return _Segment(tokens, ends, automaton)

    def _publish(self, segments: tuple[_Segment, ...]) -> None:
        """Replace the state (under the writer lock) with one over ``segments``."""
        automata = [segment.automaton for segment in segments]
        snapshot: Snapshot | None = None
        if len(automata) == 1:
            snapshot = automata[0]
        elif automata:
            snapshot = ShardedAutomaton(automata)
        self._state = _State(
            segments=segments,
            snapshot=snapshot,
            num_tokens=sum(segment.num_tokens for segment in segments),
            num_responses=sum(segment.ends.shape[0] for segment in segments),
            nbytes=sum(segment.nbytes for segment in segments),
            version=self._state.version + 1,
        )

    # ---- reading --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        """Every response recorded so far (within the budget) as one immutable corpus automaton:
        a :class:`~sam_decoding.StaticAutomaton` or :class:`~sam_decoding.ShardedAutomaton` whose
        cursors draft as a corpus of these responses would; ``None`` while the cache is empty.
        O(1): later records build new segments and never change a snapshot already taken."""
        return self._state.snapshot

    def responses(self) -> list[np.ndarray]:
        """The cached responses, oldest first (uint32 arrays; copies)."""
        found = []
        for segment in self._state.segments:
            starts = np.concatenate([[0], segment.ends[:-1]])
            found.extend(segment.tokens[start:end].copy() for start, end in zip(starts, segment.ends))
        return found

    def check_tokenizer(self, fingerprint: str) -> None:
        """Raise ``TokenizerMismatchError`` unless the cache's token ids come from this tokenizer."""
        if self._fingerprint != fingerprint:
            raise TokenizerMismatchError(
                "response cache holds token ids of tokenizer "
                f"{self._fingerprint or '(none recorded)'!r}, but the model's tokenizer is {fingerprint!r}; "
                "use a cache file of this tokenizer or a new one"
            )

    @property
    def num_tokens(self) -> int:
        """Tokens of the cached responses."""
        return self._state.num_tokens

    @property
    def num_responses(self) -> int:
        """Responses cached."""
        return self._state.num_responses

    @property
    def num_segments(self) -> int:
        """Automata a snapshot consists of (a cursor over it steps each of them per token)."""
        return len(self._state.segments)

    @property
    def nbytes(self) -> int:
        """Bytes held: the segments' automata plus the responses' tokens and offsets."""
        return self._state.nbytes

    @property
    def max_tokens(self) -> int:
        """The token budget."""
        return self._max_tokens

    @property
    def segment_tokens(self) -> int:
        """Largest segment a merge builds, in tokens."""
        return self._segment_tokens

    @property
    def eviction_slack(self) -> int:
        """Tokens below ``max_tokens`` that an eviction frees beyond what the new response needs."""
        return self._eviction_slack

    @property
    def tokenizer_fingerprint(self) -> str:
        """Identifier of the tokenizer the token ids come from (``""`` if not recorded)."""
        return self._fingerprint

    @property
    def path(self) -> Path | None:
        """The cache file, if any."""
        return self._path

    def __repr__(self) -> str:
        return (
            f"ResponseCache(num_responses={self.num_responses}, num_tokens={self.num_tokens}, "
            f"max_tokens={self._max_tokens}, num_segments={self.num_segments}, nbytes={self.nbytes})"
        )

    # ---- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write every cached response to ``path`` (default: the cache's own path) atomically:
        a temporary file renamed over the target only once fully written. O(size)."""
        target = Path(path) if path is not None else self._path
        if target is None:
            raise ValueError("this response cache has no path; pass save(path)")
        self._check_path(target)
        state = self._state
        with replacing_atomically(target) as temporary:
            with open(temporary, "wb") as file:
                lengths = [np.diff(segment.ends, prepend=0) for segment in state.segments]
                write_response_cache(file, self._fingerprint, self._max_tokens, lengths,
                                     [segment.tokens for segment in state.segments])
        if target == self._path:
            self._saved_version = max(self._saved_version, state.version)

    def close(self) -> None:
        """Save to the cache's path if it has one and anything changed since it was loaded or saved."""
        if self._path is not None and self._state.version != self._saved_version:
            self.save()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:  # a failed run leaves the file as it was
            self.close()

    @staticmethod
    def _check_path(path: Path) -> None:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory, not a response cache file")
        directory = path.parent if str(path.parent) else Path(".")
        if not directory.is_dir():
            raise FileNotFoundError(f"directory {directory} does not exist")

    def _load(self, path: Path) -> None:
        fingerprint, lengths, tokens = read_response_cache(path)
        if self._fingerprint and fingerprint != self._fingerprint:
            raise TokenizerMismatchError(
                f"{path}: response cache of tokenizer {fingerprint or '(none recorded)'!r}, "
                f"but the model's tokenizer is {self._fingerprint!r}; use another cache file"
            )
        self._fingerprint = fingerprint
        with self._lock:
            self._publish(tuple(self._build(*chunk) for chunk in self._newest_in_segments(lengths, tokens)))
            self._saved_version = self._state.version

    def _newest_in_segments(self, lengths: np.ndarray, tokens: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The newest responses within the budget, packed in order into (tokens, ends) chunks of
        at most ``segment_tokens`` tokens (a longer response alone): one build per segment."""
        newest_first = np.cumsum(lengths[::-1])
        kept = max(1, int(np.searchsorted(newest_first, self._max_tokens, side="right"))) if len(lengths) else 0
        lengths = lengths[len(lengths) - kept :]
        tokens = tokens[tokens.shape[0] - int(lengths.sum()) :]
        if kept and lengths[0] > self._max_tokens:  # a single response over the budget: its end
            tokens, lengths = tokens[-self._max_tokens :], np.array([self._max_tokens], dtype=np.int64)
        ends = np.cumsum(lengths, dtype=np.int64)
        starts = ends - lengths
        chunks, first = [], 0
        for index in range(1, len(lengths) + 1):
            if index == len(lengths) or ends[index] - starts[first] > self._segment_tokens:
                start, stop = int(starts[first]), int(ends[index - 1])
                chunks.append((tokens[start:stop].copy(), ends[first:index] - start))
                first = index
        return chunks


def _shifted_ends(segments: tuple[_Segment, ...]) -> list[np.ndarray]:
    """The segments' response ends as offsets into their tokens laid back to back."""
    shifted, offset = [], 0
    for segment in segments:
        shifted.append(segment.ends + offset)
        offset += segment.num_tokens
    return shifted


__all__ = ["FORMAT_VERSION", "MAGIC", "ResponseCache", "read_response_cache"]
