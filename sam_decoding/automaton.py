"""Suffix automata: the static one over a corpus (built offline, memory-mapped from a file) and
the dynamic one over the live sequence.

Both answer, in amortized O(1) per token, "what is the longest suffix of the text so far that
occurs in the indexed text, and which tokens followed it there?" -- the retrieval step of
SAM-Decoding's drafter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np

from sam_decoding import _core
from sam_decoding.atomic_file import replacing_atomically

FORMAT_VERSION: int = _core.FORMAT_VERSION
MAX_TOKEN_ID: int = _core.MAX_TOKEN
#: Most tokens plus document separators one automaton (one shard) is built over: below it every
#: state id and transition offset fits 32 bits. Larger corpora are split into shards.
MAX_BUILD_TEXT_LENGTH: int = _core.MAX_BUILD_TEXT_LENGTH

FormatError = _core.FormatError
FormatError.__doc__ = "An automaton file is truncated, corrupted, foreign or of a newer format version."
FormatError.__module__ = "sam_decoding"

TokenSequence = Union[Sequence[int], np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]


class TokenizerMismatchError(ValueError):
    """A corpus automaton was built with a different tokenizer than the model's."""


def as_token_array(tokens: TokenSequence | int) -> np.ndarray:
    """``tokens`` as a 1-D integer NumPy array (no copy for int32/uint32/int64 arrays).

    Raises ``TypeError`` for non-integer input and ``ValueError`` for other shapes; the native
    layer checks that every id lies in ``[0, 2**31 - 1]``.
    """
    if isinstance(tokens, np.ndarray):
        array = tokens
    else:
        if isinstance(tokens, (str, bytes)):
            raise TypeError("token ids must be integers, got a string")
        if hasattr(tokens, "detach") and hasattr(tokens, "cpu"):  # a torch tensor
            array = tokens.detach().cpu().numpy()
        else:
            array = np.asarray(tokens)
            if array.size == 0:
                array = np.zeros(0, dtype=np.int64)
    if array.dtype == np.bool_ or array.dtype.kind not in "iu":
        if array.dtype.kind == "O":
            raise TypeError("token ids must be integers; got values too large or of mixed types")
        raise TypeError(f"token ids must be integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"token ids must be a 1-D sequence, got shape {array.shape}")
    return array


@dataclass(frozen=True)
class DraftTree:
    """Frequency-ranked continuations of the current match, as a tree of ``len(self)`` nodes.

    Node ``i`` is token ``tokens[i]`` (int32) following node ``parents[i]`` (int32; ``-1``:
    following the matched context); ``parents[i] < i``. ``counts[i]`` (int64) is the number of
    corpus occurrences of the matched context followed by the path to node ``i``.
    ``probabilities[i]`` (float64) is ``counts[i]`` over the same count of its parent (of the
    context for ``parents[i] == -1``): the corpus frequency of the node's token after its
    parent's path, an estimate of the chance that a model accepts node ``i`` given that it
    accepted its parent. :meth:`path_probabilities` gives the chance of the whole path.
    """

    tokens: np.ndarray
    parents: np.ndarray
    probabilities: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def depths(self) -> np.ndarray:
        """Depth of each node (1 for children of the context)."""
        depth = np.zeros(len(self), dtype=np.int32)
        for index, parent in enumerate(self.parents.tolist()):
            depth[index] = 1 if parent < 0 else depth[parent] + 1
        return depth

    def path_probabilities(self) -> np.ndarray:
        """float64 ``[len(self)]``: the product of ``probabilities`` from the context down to each
        node, i.e. node ``i``'s path count over the context's count."""
        path = np.empty(len(self), dtype=np.float64)
        for index, parent in enumerate(self.parents.tolist()):
            path[index] = self.probabilities[index] * (path[parent] if parent >= 0 else 1.0)
        return path


class DraftChain(NamedTuple):
    """A chain draft with its corpus counts; unpacks as ``tokens, counts, state_counts``.

    ``tokens`` (int32 ``[k]``) continue the matched context. ``counts[i]`` (int64) is the number
    of corpus occurrences of the context followed by ``tokens[:i + 1]``, and ``state_counts[i]``
    that of the context followed by ``tokens[:i]`` (the context alone for ``i == 0``).
    """

    tokens: np.ndarray
    counts: np.ndarray
    state_counts: np.ndarray

    @property
    def probabilities(self) -> np.ndarray:
        """float64 ``[k]``: ``counts / state_counts``, the corpus frequency of each token after
        the tokens before it (an estimate of its acceptance given the previous ones). A path that
        occurs once is followed along its text with probability 1.0 at each step."""
        return self.counts / np.maximum(self.state_counts, 1).astype(np.float64)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class ScoredDraft:
    """Continuations of the context scored across every matched suffix length, best first.

    The estimate of node ``i`` blends, by Witten-Bell interpolation, what followed each of the
    context's matched suffixes (the longest, then each shorter one whose occurrences differ) and the
    path to the node: per suffix, ``n`` occurrences continued by some token, ``c`` of them by this
    one, ``u`` distinct tokens, and ``p = (c + u * p_shorter) / (n + u)`` from the shortest suffix up.
    A continuation seen once is worth 1/2, one seen ``n`` times out of ``n``, ``n / (n + 1)``. With
    ``trusted_length`` > 0, a context (matched suffix plus the path above the node) of ``L`` tokens
    longer than that weighs ``u`` by ``trusted_length / L``: a long match seen once is rarely chance.

    Attributes:
        tokens: int32 ``[k]``; ``parents``: int32 ``[k]`` (``-1``: follows the context; ``parents[i] < i``).
        probabilities: float64 ``[k]``: estimated P(node accepted | parent accepted).
        path_probabilities: float64 ``[k]``: their product from the context; never increases along the array.
        match_length: Longest matched suffix blended, in tokens (0: nothing matched).
        num_orders: How many matched suffix lengths were blended at the root.
        expected_tokens: Sum of ``path_probabilities``: the expected number of accepted tokens.
        transitions_scanned: Automaton transitions the search read.
    """

    tokens: np.ndarray
    parents: np.ndarray
    probabilities: np.ndarray
    path_probabilities: np.ndarray
    match_length: int
    num_orders: int
    expected_tokens: float
    transitions_scanned: int

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def is_chain(self) -> bool:
        """Whether every node continues the one before it."""
        return bool(np.array_equal(self.parents, np.arange(-1, len(self) - 1, dtype=np.int32)))


#: Defaults of scored drafts (see :meth:`StaticCursor.scored_draft`).
SCORED_MAX_ORDERS = 8
SCORED_ENOUGH_OCCURRENCES = 64
SCORED_TRUSTED_LENGTH = 0.0


def _scored(native_call: Any, max_nodes: int, max_depth: int | None, min_probability: float, chain: bool,
            max_orders: int, enough_occurrences: int, trusted_length: float) -> ScoredDraft:
    max_nodes = _check_count("max_nodes", max_nodes)
    depth = max_nodes if max_depth is None else _check_count("max_depth", max_depth)
    probability = float(min_probability)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"min_probability must be in [0, 1], got {min_probability}")
    orders = _check_count("max_orders", max_orders)
    if orders < 1:
        raise ValueError("max_orders must be >= 1")
    trusted = float(trusted_length)
    if not trusted >= 0.0:
        raise ValueError(f"trusted_length must be >= 0, got {trusted_length}")
    fields = native_call(max_nodes, depth, probability, bool(chain), orders,
                         _check_count("enough_occurrences", enough_occurrences), trusted)
    return ScoredDraft(*fields)


def _check_token(token: int) -> int:
    token = int(token)
    if not 0 <= token <= MAX_TOKEN_ID:
        raise ValueError(f"token ids must be in [0, 2^31-1], got {token}")
    return token


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


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
            return self._native.feed_one(_check_token(tokens))
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
        return self._native.draft(_check_count("n", n))

    def draft_with_counts(self, n: int) -> DraftChain:
        """The chain :meth:`draft` returns, with the corpus counts behind each step (see
        :class:`DraftChain`; its ``probabilities`` are per-token acceptance estimates)."""
        return DraftChain(*self._native.draft_with_counts(_check_count("n", n)))

    def draft_tree(self, max_nodes: int, *, max_depth: int | None = None) -> DraftTree:
        """The ``max_nodes`` most frequent continuation paths of the match, best first.

        At most ``max_depth`` deep (default: ``max_nodes``). A call reads at most 32,768
        transitions: a node whose continuations would exceed that budget stays a leaf, which
        bounds the call to a few milliseconds even at states with thousands of continuations.
        """
        max_nodes = _check_count("max_nodes", max_nodes)
        depth = max_nodes if max_depth is None else _check_count("max_depth", max_depth)
        tokens, parents, probabilities, counts = self._native.draft_tree(max_nodes, depth)
        return DraftTree(tokens, parents, probabilities, counts)

    def scored_draft(
        self,
        max_nodes: int,
        *,
        max_depth: int | None = None,
        min_probability: float = 0.0,
        chain: bool = False,
        max_orders: int = SCORED_MAX_ORDERS,
        enough_occurrences: int = SCORED_ENOUGH_OCCURRENCES,
        trusted_length: float = SCORED_TRUSTED_LENGTH,
    ) -> ScoredDraft:
        """The ``max_nodes`` most probable continuation nodes, blending every matched suffix length.

        Matched suffixes are taken longest first, skipping those nothing continues, up to
        ``max_orders``, and none shorter once one has occurred ``enough_occurrences`` times (counts
        summed over shards). Nodes whose path probability is below ``min_probability`` are left out,
        so the draft ends where confidence ends; ``chain=True`` keeps one child per node. At most
        ``max_depth`` deep (default: ``max_nodes``); reads at most 32,768 transitions. Releases the GIL.
        See :class:`ScoredDraft` for the estimate.
        """
        return _scored(self._native.scored_draft, max_nodes, max_depth, min_probability, chain, max_orders,
                       enough_occurrences, trusted_length)

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
        tokenizer_fingerprint: str = "",
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
        tokens = _concatenate_as_uint32(arrays)
        metadata_json = json.dumps(metadata or {}, sort_keys=True)
        native = _core.StaticAutomaton.build(tokens, ends, str(tokenizer_fingerprint), metadata_json,
                                              str(construction))
        return cls(native)

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
            self._native.extend_one(_check_token(tokens))
        else:
            self._native.extend(as_token_array(tokens))

    @property
    def match_length(self) -> int:
        """Length, in tokens, of the longest suffix of the text that also ends at an earlier position."""
        return self._native.match_length

    def draft(self, n: int) -> np.ndarray:
        """Up to ``n`` tokens (int32) that followed the first earlier occurrence of that suffix."""
        return self._native.draft(_check_count("n", n))

    def scored_draft(
        self,
        max_nodes: int,
        *,
        max_depth: int | None = None,
        min_probability: float = 0.0,
        chain: bool = False,
        max_orders: int = SCORED_MAX_ORDERS,
        enough_occurrences: int = SCORED_ENOUGH_OCCURRENCES,
        trusted_length: float = SCORED_TRUSTED_LENGTH,
    ) -> ScoredDraft:
        """As :meth:`StaticCursor.scored_draft`, over every suffix of the text that also ended earlier
        (the text's last position, which nothing follows yet, is not an occurrence that continues)."""
        return _scored(self._native.scored_draft, max_nodes, max_depth, min_probability, chain, max_orders,
                       enough_occurrences, trusted_length)

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


def _concatenate_as_uint32(arrays: list[np.ndarray]) -> np.ndarray:
    """All documents back to back, range-checked, as one uint32 array for the native build."""
    total = sum(array.shape[0] for array in arrays)
    tokens = np.empty(total, dtype=np.uint32)
    offset = 0
    for array in arrays:
        if array.shape[0] == 0:
            continue
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > MAX_TOKEN_ID:
            bad = low if low < 0 else high
            raise ValueError(f"token ids must be in [0, 2^31-1], got {bad}")
        tokens[offset : offset + array.shape[0]] = array
        offset += array.shape[0]
    return tokens
