"""The typed face of the native core, and its only gateway: the one module that imports ``_core``.

:class:`StaticAutomaton` (a corpus, built offline, memory-mapped from a file), :class:`StaticCursor`
(a position in one, or in several shards at once) and :class:`DynamicAutomaton` (the live sequence)
hold the native handles. Both kinds answer, in amortized O(1) per token, "what is the longest
suffix of the text so far that occurs in the indexed text, and which tokens followed it there?" --
the retrieval step of SAM-Decoding's drafter. Other modules build and step automata through these
classes (:meth:`StaticAutomaton.from_checked_tokens`, :meth:`StaticCursor.over_shards`), never
through ``_core``; a native batch component reaches the handles with :func:`native_automata`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sam_decoding import _core
from sam_decoding.atomic_file import replacing_atomically
from sam_decoding.automaton.results import DraftChain, DraftTree, ScoredDraft, ScoredDraftOptions
from sam_decoding.automaton.tokens import (
    MAX_TOKEN_ID,
    PathLike,
    TokenSequence,
    as_token_array,
    check_count,
    check_token,
    checked_token_array,
)

#: The compiled extension itself, for a native component built beside this one (e.g. a batch
#: drafter) that must construct its own ``_core`` objects; everything else goes through the classes.
_native_core = _core

__version__: str = _core.__version__
FORMAT_VERSION: int = _core.FORMAT_VERSION
if _core.MAX_TOKEN != MAX_TOKEN_ID:  # the Python range check must be the core's
    raise ImportError(f"sam_decoding._core takes token ids up to {_core.MAX_TOKEN}, the package checks {MAX_TOKEN_ID}")
#: Most tokens plus document separators one automaton (one shard) is built over: below it every
#: state id and transition offset fits 32 bits. Larger corpora are split into shards.
MAX_BUILD_TEXT_LENGTH: int = _core.MAX_BUILD_TEXT_LENGTH

FormatError = _core.FormatError
FormatError.__doc__ = "An automaton file is truncated, corrupted, foreign or of a newer format version."
FormatError.__module__ = "sam_decoding"


class TokenizerMismatchError(ValueError):
    """A corpus automaton was built with a different tokenizer than the model's."""


def _scored(search: Any, max_nodes: int, options: ScoredDraftOptions | None, max_depth: int | None,
            settings: dict[str, Any]) -> ScoredDraft:
    """One scored search: ``options`` as given (checked when they were made), or made from ``settings``.

    This is a drafter's per-step path: with options and plain non-negative ints it checks nothing
    more than their types before the native call."""
    if options is None:
        options = ScoredDraftOptions(**settings)
    elif settings or type(options) is not ScoredDraftOptions and not isinstance(options, ScoredDraftOptions):
        raise TypeError("pass a ScoredDraftOptions or keyword settings, not both")
    if type(max_nodes) is not int or max_nodes < 0:
        max_nodes = check_count("max_nodes", max_nodes)
    if max_depth is None:
        max_depth = max_nodes
    elif type(max_depth) is not int or max_depth < 0:
        max_depth = check_count("max_depth", max_depth)
    return ScoredDraft(*search(max_nodes, max_depth, options.min_probability, options.chain, options.max_orders,
                               options.enough_occurrences, options.trusted_length))


class StaticCursor:
    """Tracks the longest suffix of a token stream that occurs inside one corpus document.

    Cheap to create and copy (a few words); not thread-safe: use one cursor per request.
    """

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    def feed(self, tokens: TokenSequence | int) -> int:
        """Append tokens to the stream (amortized O(1) each); returns the new match length in tokens."""
        if isinstance(tokens, (int, np.integer)) and not isinstance(tokens, bool):
            return self._native.feed_one(check_token(tokens))
        return self._native.feed(as_token_array(tokens))

    @property
    def match_length(self) -> int:
        """Length, in tokens, of the longest suffix of the stream found inside one document."""
        return self._native.match_length

    def draft(self, n: int) -> np.ndarray:
        """Up to ``n`` tokens (int32) that followed an occurrence of the matched suffix.

        While the suffix occurs more than once, each step takes the most frequent next token
        (the smaller id on a tie), however many distinct continuations there are; while it
        occurs once, the text after that occurrence. A draft never crosses a document end. When every occurrence of the match ends a
        document, a shorter suffix with a continuation is used; empty only if none has one.
        """
        return self._native.draft(check_count("n", n))

    def draft_with_counts(self, n: int) -> DraftChain:
        """The chain :meth:`draft` returns, with the corpus counts behind each step (see
        :class:`DraftChain`; its ``probabilities`` are per-token acceptance estimates)."""
        return DraftChain(*self._native.draft_with_counts(check_count("n", n)))

    def draft_tree(self, max_nodes: int, *, max_depth: int | None = None) -> DraftTree:
        """The ``max_nodes`` most frequent continuation paths of the match, best first.

        At most ``max_depth`` deep (default: ``max_nodes``). A call reads at most 32,768
        transitions: a node whose continuations would exceed that budget stays a leaf, which
        bounds the call to a few milliseconds even at states with thousands of continuations.
        """
        max_nodes = check_count("max_nodes", max_nodes)
        depth = max_nodes if max_depth is None else check_count("max_depth", max_depth)
        tokens, parents, probabilities, counts = self._native.draft_tree(max_nodes, depth)
        return DraftTree(tokens, parents, probabilities, counts)

    def scored_draft(self, max_nodes: int, options: ScoredDraftOptions | None = None, *,
                     max_depth: int | None = None, **settings: Any) -> ScoredDraft:
        """The ``max_nodes`` most probable continuation nodes, blending every matched suffix length.

        ``options`` (a :class:`ScoredDraftOptions`, checked when made: a drafter makes one and
        passes it every step), or its fields as keyword ``settings`` (the rest at their defaults).
        Matched suffixes are taken longest first, skipping those nothing continues, up to
        ``max_orders``, and none shorter once one has occurred ``enough_occurrences`` times (counts
        summed over shards). Nodes whose path probability is below ``min_probability`` are left out,
        so the draft ends where confidence ends; ``chain=True`` keeps one child per node. At most
        ``max_depth`` deep (default: ``max_nodes``); reads at most 32,768 transitions. Releases the GIL.
        See :class:`ScoredDraft` for the estimate.
        """
        return _scored(self._native.scored_draft, max_nodes, options, max_depth, settings)

    @classmethod
    def over_shards(cls, shards: Sequence[StaticAutomaton]) -> StaticCursor:
        """A cursor with an empty stream over several automata used as one: the longest match
        across them, and at equal length their continuation counts summed."""
        return cls(_core.ShardedCursor([shard._native for shard in shards]))

    def copy(self) -> StaticCursor:
        """An independent cursor at the same position."""
        return StaticCursor(self._native.copy())

    def reset(self) -> None:
        """Forget the stream (match length 0)."""
        self._native.reset()


class StaticAutomaton:
    """A suffix automaton over a corpus of documents, frozen into flat arrays.

    Build it once with :meth:`build`, :meth:`save` it, and :meth:`load` it (a read-only memory
    map: milliseconds, no copy into the heap) wherever drafts are needed.
    """

    __slots__ = ("_native", "_metadata")

    def __init__(self, native: Any) -> None:
        self._native = native
        self._metadata: dict[str, Any] | None = None

    @classmethod
    def build(
        cls,
        documents: Iterable[TokenSequence],
        *,
        tokenizer_fingerprint: str | None = None,
        metadata: dict[str, Any] | None = None,
        construction: str = "suffix_array",
    ) -> StaticAutomaton:
        """Build from an iterable of 1-D token sequences (NumPy int arrays or lists of ints).

        A match never spans two documents; empty documents are skipped. ``metadata`` is any
        JSON-serializable dict stored in the file (e.g. the build parameters). Releases the GIL
        while building. Raises ``ValueError`` if there are no tokens at all, or, before building
        anything, if tokens plus one separator per document exceed ``MAX_BUILD_TEXT_LENGTH``.

        ``construction`` picks the algorithm; both give the same automaton, byte for byte:
        ``"suffix_array"`` (default: a suffix array and LCP array of the reversed text, about
        36 bytes of memory per token at peak) or ``"online"`` (the token-by-token builder then a
        freeze, about 100 bytes per token and several times slower; kept as the reference).
        """
        if isinstance(documents, np.ndarray) and documents.ndim == 1:
            raise TypeError("documents must be an iterable of token sequences; wrap one array in a list")
        arrays = [as_token_array(document) for document in documents]
        ends = np.cumsum([array.shape[0] for array in arrays], dtype=np.int64)
        if len(arrays) == 0 or ends[-1] == 0:
            raise ValueError("the corpus has no tokens (no documents, or all are empty)")
        text_length = int(ends[-1]) + sum(1 for array in arrays if array.shape[0])
        if text_length > MAX_BUILD_TEXT_LENGTH:
            raise ValueError(
                f"corpus too large for one automaton: {text_length:,} tokens and document separators, "
                f"at most {MAX_BUILD_TEXT_LENGTH:,}; split it into shards (sam_decoding.ShardedAutomaton)"
            )
        tokens = np.empty(int(ends[-1]), dtype=np.uint32)
        for array, end in zip(arrays, ends.tolist()):
            tokens[end - array.shape[0] : end] = checked_token_array(array)
        return cls.from_checked_tokens(tokens, ends, tokenizer_fingerprint=tokenizer_fingerprint or "",
                                       metadata=metadata, construction=str(construction))

    @classmethod
    def from_checked_tokens(
        cls,
        tokens: np.ndarray,
        ends: np.ndarray,
        *,
        tokenizer_fingerprint: str | None = None,
        metadata: dict[str, Any] | None = None,
        construction: str = "suffix_array",
    ) -> StaticAutomaton:
        """Build over documents laid back to back: ``tokens`` (uint32, already range-checked, e.g.
        by :func:`~sam_decoding.automaton.tokens.checked_token_array`; may be a memory map) and
        ``ends`` (int64 cumulative end offsets, one per document). The native build checks the
        sizes again; releases the GIL."""
        metadata_json = json.dumps(metadata or {}, sort_keys=True)
        return cls(_core.StaticAutomaton.build(tokens, ends, tokenizer_fingerprint or "", metadata_json, construction))

    @classmethod
    def load(cls, path: PathLike, *, verify: bool = False) -> StaticAutomaton:
        """Memory-map an automaton file read-only.

        Checks the header, format version, sizes and section table (milliseconds, whatever the
        size). ``verify=True`` also checksums every byte (reads the whole file); without it a
        corrupted payload is still caught, as a ``FormatError``, when a query reaches it.
        Raises ``FormatError`` (a ``ValueError``) for truncated, corrupted, foreign or
        newer-version files and ``FileNotFoundError`` for missing ones.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no automaton file at {path}")
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory, not an automaton file")
        return cls(_core.StaticAutomaton.load(str(path), bool(verify)))

    def save(self, path: PathLike) -> None:
        """Write the automaton to ``path`` atomically (a temporary file, then a rename), so a
        failed save never leaves a half-written or corrupted file behind."""
        with replacing_atomically(path) as temporary:
            self._native.save(temporary)

    def verify(self) -> None:
        """Checksum every byte and check the arrays' invariants; raises ``FormatError``."""
        self._native.verify()

    def cursor(self) -> StaticCursor:
        """A new cursor with an empty stream."""
        return StaticCursor(self._native.cursor())

    def check_tokenizer(self, fingerprint: str) -> None:
        """Raise ``TokenizerMismatchError`` unless the corpus was built with this tokenizer."""
        if self.tokenizer_fingerprint != fingerprint:
            raise TokenizerMismatchError(
                "corpus automaton was built with tokenizer "
                f"{self.tokenizer_fingerprint or '(none recorded)'!r}, but the model's tokenizer is "
                f"{fingerprint!r}; rebuild the corpus with the model's tokenizer"
            )

    @property
    def num_tokens(self) -> int:
        """Corpus tokens indexed (document separators excluded)."""
        return self._native.num_tokens

    @property
    def num_documents(self) -> int:
        """Non-empty documents in the corpus."""
        return self._native.num_documents

    @property
    def num_states(self) -> int:
        """States of the automaton (at most about twice the tokens)."""
        return self._native.num_states

    @property
    def num_edges(self) -> int:
        """Transitions stored explicitly (the backbone along the text is implicit)."""
        return self._native.num_edges

    @property
    def vocab_bound(self) -> int:
        """One more than the largest token id in the corpus."""
        return self._native.vocab_bound

    @property
    def nbytes(self) -> int:
        """Bytes held: the file size, mapped or in memory."""
        return self._native.nbytes

    @property
    def is_memory_mapped(self) -> bool:
        """True if loaded from a file, False if built in this process."""
        return self._native.is_memory_mapped

    @property
    def format_version(self) -> int:
        """Version of the file format this automaton uses: the loaded file's, or ``FORMAT_VERSION``
        for a new build (version 2 stores token ids in 16 bits when all are below 65535)."""
        return int(self._native.format_version)

    @property
    def tokenizer_fingerprint(self) -> str:
        """Identifier of the tokenizer the corpus was tokenized with ("" if not recorded)."""
        return self._native.tokenizer_fingerprint.decode("utf-8", "replace")

    @property
    def metadata(self) -> dict[str, Any]:
        """The JSON metadata stored at build time (build parameters)."""
        if self._metadata is None:
            raw = self._native.metadata.decode("utf-8", "replace")
            try:
                self._metadata = json.loads(raw) if raw else {}
            except json.JSONDecodeError as error:
                raise FormatError(f"corrupted automaton file: unreadable metadata ({error})") from None
        return self._metadata

    def __repr__(self) -> str:
        return (
            f"StaticAutomaton(num_tokens={self.num_tokens}, num_documents={self.num_documents}, "
            f"num_states={self.num_states}, nbytes={self.nbytes})"
        )


class DynamicAutomaton:
    """A suffix automaton over one growing token sequence (prompt + generated text).

    Safe to use from several threads at once: a lock in the native object serializes the calls,
    so a :meth:`draft` never sees arrays that a concurrent :meth:`extend` is growing. Long
    extends (4096 tokens or more) run without the GIL; a call from another thread then waits
    for them to finish.
    """

    __slots__ = ("_native",)

    def __init__(self) -> None:
        self._native = _core.DynamicAutomaton()

    def extend(self, tokens: TokenSequence | int) -> None:
        """Append tokens (amortized O(1) each)."""
        if isinstance(tokens, (int, np.integer)) and not isinstance(tokens, bool):
            self._native.extend_one(check_token(tokens))
        else:
            self._native.extend(as_token_array(tokens))

    @property
    def match_length(self) -> int:
        """Length, in tokens, of the longest suffix of the text that also ends at an earlier position."""
        return self._native.match_length

    def draft(self, n: int) -> np.ndarray:
        """Up to ``n`` tokens (int32) that followed the first earlier occurrence of that suffix."""
        return self._native.draft(check_count("n", n))

    def scored_draft(self, max_nodes: int, options: ScoredDraftOptions | None = None, *,
                     max_depth: int | None = None, **settings: Any) -> ScoredDraft:
        """As :meth:`StaticCursor.scored_draft`, over every suffix of the text that also ended earlier
        (the text's last position, which nothing follows yet, is not an occurrence that continues)."""
        return _scored(self._native.scored_draft, max_nodes, options, max_depth, settings)

    def occurrences(self, tokens: TokenSequence) -> int:
        """How many times ``tokens`` occurs in the text (end positions; the text's length for no tokens)."""
        return int(self._native.occurrences(as_token_array(tokens)))

    def reset(self) -> None:
        """Clear the text (keeps allocated memory for the next request)."""
        self._native.reset()

    @property
    def num_tokens(self) -> int:
        """Tokens appended so far."""
        return self._native.num_tokens

    @property
    def num_states(self) -> int:
        """States of the automaton."""
        return self._native.num_states

    @property
    def nbytes(self) -> int:
        """Heap bytes held."""
        return self._native.nbytes

    @property
    def tokenizer_fingerprint(self) -> str:
        """Always "": the dynamic automaton indexes whatever it is fed."""
        return ""

    def __repr__(self) -> str:
        return f"DynamicAutomaton(num_tokens={self.num_tokens}, num_states={self.num_states})"



def native_automata(corpus: Any) -> list[Any]:
    """The native ``_core.StaticAutomaton`` handles behind a corpus: one for a
    :class:`StaticAutomaton`, one per shard for a sharded corpus or response-cache snapshot (any
    object with a ``shards`` attribute). For native components that take the handles directly."""
    shards = getattr(corpus, "shards", None)
    automata = shards if shards is not None else (corpus,)
    for automaton in automata:
        if not isinstance(automaton, StaticAutomaton):
            raise TypeError(f"expected a StaticAutomaton or a sharded corpus, got {type(automaton).__name__}")
    return [automaton._native for automaton in automata]
