"""A corpus split into shards: several automaton files, split on document boundaries, used as one.

A match never spans two documents, so splitting a corpus between documents loses no match: the
longest match over the shards is the longest match in the whole corpus, and the occurrences of a
string in the corpus are the sum of its occurrences in the shards. A :class:`ShardedAutomaton`
answers exactly as one :class:`~sam_decoding.StaticAutomaton` over all the documents would
(same cursor API; counts and acceptance estimates summed over shards), while each shard is built
within a bounded amount of memory, in parallel, and a corpus grows by adding a shard.

On disk a sharded corpus is a directory of ``shard-NNNNN.sam`` files and a ``manifest.json``
listing them with their sizes and tokenizer fingerprints (a manifest may also be opened directly).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from sam_decoding import _core
from sam_decoding.atomic_file import replacing_atomically
from sam_decoding.automaton import (
    MAX_BUILD_TEXT_LENGTH,
    MAX_TOKEN_ID,
    FormatError,
    PathLike,
    StaticAutomaton,
    StaticCursor,
    TokenizerMismatchError,
    TokenSequence,
    as_token_array,
)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "sam-decoding-shards"
MANIFEST_VERSION = 1
#: A manifest larger than this (bytes) is refused unread: it lists file names and a few numbers.
MAX_MANIFEST_BYTES = 64 << 20
_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.sam$")


class ShardedAutomaton:
    """Static automata over disjoint sets of documents of one corpus, used as one automaton.

    ``cursor()`` returns a :class:`~sam_decoding.StaticCursor` whose ``feed``, ``match_length``,
    ``draft``, ``draft_with_counts`` and ``draft_tree`` answer as one automaton over every
    document of every shard: the longest match across shards, and at equal match length the
    continuation counts summed over the shards (for ranking and for the probabilities). Feeding
    costs one step per shard per token.
    """

    __slots__ = ("_shards", "_paths", "_metadata")

    def __init__(
        self,
        shards: Sequence[StaticAutomaton],
        *,
        paths: Sequence[Path] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        shards = tuple(shards)
        if not shards:
            raise ValueError("a sharded corpus needs at least one shard")
        for shard in shards:
            if not isinstance(shard, StaticAutomaton):
                raise TypeError(f"shards must be StaticAutomaton objects, got {type(shard).__name__}")
        fingerprints = {shard.tokenizer_fingerprint for shard in shards}
        if len(fingerprints) > 1:
            raise TokenizerMismatchError(
                f"shards were built with different tokenizers: {sorted(fingerprints)!r}"
            )
        self._shards = shards
        self._paths = tuple(paths) if paths is not None else None
        self._metadata = dict(metadata or {})

    @classmethod
    def load(cls, path: PathLike, *, verify: bool = False) -> ShardedAutomaton:
        """Open a directory of shards (its ``manifest.json``, or else every ``*.sam`` file in it, by
        name) or a manifest file; every shard is memory-mapped read-only.

        The manifest is untrusted input: shard names must be plain file names inside the
        manifest's directory, and each shard's token count, size and tokenizer fingerprint must
        be what the manifest says. ``verify=True`` also checksums every byte of every shard.
        Raises ``FormatError`` (a ``ValueError``) for a bad manifest or shard,
        ``FileNotFoundError`` for a missing one.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no sharded corpus at {path}")
        if path.is_dir():
            manifest = path / MANIFEST_NAME
            if not manifest.is_file():
                files = sorted(p for p in path.iterdir() if p.suffix == ".sam" and p.is_file())
                if not files:
                    raise FileNotFoundError(f"{path} holds neither {MANIFEST_NAME} nor *.sam shards")
                return cls([StaticAutomaton.load(file, verify=verify) for file in files], paths=files)
            path = manifest
        entries, fingerprint, metadata = read_manifest(path)
        shards, paths = [], []
        for entry in entries:
            file = path.parent / entry["file"]
            if not file.is_file():
                raise FileNotFoundError(f"shard {file} listed in {path} is missing")
            shard = StaticAutomaton.load(file, verify=verify)
            found = (shard.num_tokens, shard.num_documents, shard.nbytes, shard.tokenizer_fingerprint)
            expected = (entry["tokens"], entry["documents"], entry["bytes"], entry["tokenizer_fingerprint"])
            if found != expected:
                raise FormatError(
                    f"shard {file} does not match {path}: (tokens, documents, bytes, fingerprint) "
                    f"are {found!r}, the manifest says {expected!r}"
                )
            if shard.tokenizer_fingerprint != fingerprint:
                raise FormatError(f"shard {file} was built with another tokenizer than {path} names")
            shards.append(shard)
            paths.append(file)
        return cls(shards, paths=paths, metadata=metadata)

    @classmethod
    def build(
        cls,
        documents: Iterable[TokenSequence],
        directory: PathLike,
        *,
        shard_tokens: int,
        jobs: int = 1,
        tokenizer_fingerprint: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> ShardedAutomaton:
        """Build a sharded corpus from an iterable of 1-D token sequences into ``directory``.

        Documents are taken in order into shards of at most ``shard_tokens`` tokens (a longer
        document gets a shard of its own); only the shard being filled is held in memory, and
        up to ``jobs`` shards are built at once in worker processes. See :class:`ShardWriter`.
        """
        with ShardWriter(directory, shard_tokens=shard_tokens, jobs=jobs,
                         tokenizer_fingerprint=tokenizer_fingerprint, metadata=metadata) as writer:
            for document in documents:
                writer.add(document)
        return cls.load(directory)

    def cursor(self) -> StaticCursor:
        """A new cursor over all shards with an empty stream."""
        return StaticCursor(_core.ShardedCursor([shard._native for shard in self._shards]))

    def verify(self) -> None:
        """Checksum every byte of every shard; raises ``FormatError``."""
        for shard in self._shards:
            shard.verify()

    def check_tokenizer(self, fingerprint: str) -> None:
        """Raise ``TokenizerMismatchError`` unless the corpus was built with this tokenizer."""
        self._shards[0].check_tokenizer(fingerprint)

    @property
    def shards(self) -> tuple[StaticAutomaton, ...]:
        """The shards, in manifest order."""
        return self._shards

    @property
    def paths(self) -> tuple[Path, ...] | None:
        """The shard files, if loaded from disk."""
        return self._paths

    @property
    def num_shards(self) -> int:
        """Shards in the corpus."""
        return len(self._shards)

    @property
    def num_tokens(self) -> int:
        """Corpus tokens indexed, over all shards (document separators excluded)."""
        return sum(shard.num_tokens for shard in self._shards)

    @property
    def num_documents(self) -> int:
        """Non-empty documents, over all shards."""
        return sum(shard.num_documents for shard in self._shards)

    @property
    def num_states(self) -> int:
        """States, summed over the shards."""
        return sum(shard.num_states for shard in self._shards)

    @property
    def num_edges(self) -> int:
        """Explicitly stored transitions, summed over the shards."""
        return sum(shard.num_edges for shard in self._shards)

    @property
    def vocab_bound(self) -> int:
        """One more than the largest token id in any shard."""
        return max(shard.vocab_bound for shard in self._shards)

    @property
    def nbytes(self) -> int:
        """Bytes held, over all shards (their file sizes when mapped)."""
        return sum(shard.nbytes for shard in self._shards)

    @property
    def is_memory_mapped(self) -> bool:
        """True if every shard is memory-mapped from a file."""
        return all(shard.is_memory_mapped for shard in self._shards)

    @property
    def format_version(self) -> int:
        """The newest file format version among the shards (a corpus may mix versions 1 and 2)."""
        return max(shard.format_version for shard in self._shards)

    @property
    def tokenizer_fingerprint(self) -> str:
        """Identifier of the tokenizer every shard was built with ("" if not recorded)."""
        return self._shards[0].tokenizer_fingerprint

    @property
    def metadata(self) -> dict[str, Any]:
        """The manifest's metadata (build parameters of the set), or the first shard's."""
        return self._metadata if self._metadata else self._shards[0].metadata

    def __repr__(self) -> str:
        return (
            f"ShardedAutomaton(num_shards={self.num_shards}, num_tokens={self.num_tokens}, "
            f"num_documents={self.num_documents}, nbytes={self.nbytes})"
        )


def load_corpus(path: PathLike, *, verify: bool = False) -> StaticAutomaton | ShardedAutomaton:
    """A corpus from ``path``: a :class:`ShardedAutomaton` for a directory or a ``.json``
    manifest, a :class:`~sam_decoding.StaticAutomaton` for an automaton file."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".json":
        return ShardedAutomaton.load(path, verify=verify)
    return StaticAutomaton.load(path, verify=verify)


# ---- the manifest ---------------------------------------------------------------------------


def read_manifest(path: Path) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """The shard entries, tokenizer fingerprint and metadata of a manifest, checked field by
    field (it is untrusted input). Raises ``FormatError``."""

    def bad(why: str) -> FormatError:
        return FormatError(f"{path}: not a valid shard manifest: {why}")

    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise bad(f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad(f"unreadable JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise bad(f"'format' is not {MANIFEST_FORMAT!r}")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad("'version' is not an integer")
    if version > MANIFEST_VERSION:
        raise FormatError(
            f"{path}: shard manifest version {version}, newer than this sam-decoding reads "
            f"({MANIFEST_VERSION}); upgrade sam-decoding"
        )
    if version != MANIFEST_VERSION:
        raise bad(f"unknown version {version}")
    fingerprint = document.get("tokenizer_fingerprint")
    metadata = document.get("metadata", {})
    shards = document.get("shards")
    if not isinstance(fingerprint, str):
        raise bad("'tokenizer_fingerprint' is not a string")
    if not isinstance(metadata, dict):
        raise bad("'metadata' is not an object")
    if not isinstance(shards, list) or not shards:
        raise bad("'shards' is not a non-empty list")
    entries, names = [], set()
    for index, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise bad(f"shard {index} is not an object")
        name = entry.get("file")
        if not isinstance(name, str) or not _SHARD_NAME.match(name) or name in names:
            # A plain, unique file name: no directories, no '..', nothing outside the manifest's
            # directory.
            raise bad(f"shard {index} has a bad or repeated file name {name!r}")
        names.add(name)
        for key in ("tokens", "documents", "bytes"):
            value = entry.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                raise bad(f"shard {index} has a bad {key!r}")
        if entry.get("tokenizer_fingerprint") != fingerprint:
            raise bad(f"shard {index} names another tokenizer than the manifest")
        entries.append(
            {key: entry[key] for key in ("file", "tokens", "documents", "bytes", "tokenizer_fingerprint")}
        )
    return entries, fingerprint, metadata


def write_manifest(
    directory: Path, entries: Sequence[dict[str, Any]], fingerprint: str, metadata: dict[str, Any]
) -> Path:
    """Write ``directory/manifest.json`` atomically; returns its path."""
    path = directory / MANIFEST_NAME
    document = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tokenizer_fingerprint": fingerprint,
        "metadata": metadata,
        "shards": list(entries),
    }
    with replacing_atomically(path) as temporary:
        Path(temporary).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


# ---- building -------------------------------------------------------------------------------


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.sam"


def _build_shard(tokens_path: str, ends_path: str, shard_path: str, fingerprint: str,
                 metadata_json: str) -> dict[str, Any]:
    """Build one shard from token/ends files (memory-mapped, then deleted) and save it.

    Runs in a worker process; returns the shard's manifest entry."""
    try:
        tokens = np.load(tokens_path, mmap_mode="r")
        ends = np.load(ends_path)
        native = _core.StaticAutomaton.build(tokens, ends, fingerprint, metadata_json)
        del tokens
    finally:
        Path(tokens_path).unlink(missing_ok=True)
        Path(ends_path).unlink(missing_ok=True)
    automaton = StaticAutomaton(native)
    automaton.save(shard_path)
    return {
        "file": Path(shard_path).name,
        "tokens": automaton.num_tokens,
        "documents": automaton.num_documents,
        "bytes": automaton.nbytes,
        "tokenizer_fingerprint": automaton.tokenizer_fingerprint,
    }


class ShardWriter:
    """Writes documents into a directory of bounded-size shards and its manifest.

    ``add`` documents one at a time (1-D token sequences); each shard takes whole documents
    until the next would take it past ``shard_tokens`` tokens, so no match is lost at a shard
    boundary. A full shard's tokens are written to a temporary file and built by one of ``jobs``
    worker processes (in this process when ``jobs == 1``), so this process holds one shard's
    tokens at most and at most ``jobs`` shards are built at once. ``close`` (or leaving the
    ``with`` block) builds the last shard, waits for all and writes ``manifest.json``.

    With ``append=True`` the directory's existing manifest is kept and new shards are added after
    its shards: this is how a corpus grows. Worker processes are spawned, so a script that uses
    ``jobs > 1`` must do so under ``if __name__ == "__main__":`` (as with any ``multiprocessing``). Peak memory: about ``jobs`` times a shard build
    (see ``bench/results/core``) plus 4 bytes per token of the shard being filled.
    """

    def __init__(
        self,
        directory: PathLike,
        *,
        shard_tokens: int,
        jobs: int = 1,
        tokenizer_fingerprint: str = "",
        metadata: dict[str, Any] | None = None,
        append: bool = False,
    ) -> None:
        if isinstance(shard_tokens, bool) or not isinstance(shard_tokens, int) or shard_tokens < 1:
            raise ValueError(f"shard_tokens must be a positive int, got {shard_tokens!r}")
        if shard_tokens >= MAX_BUILD_TEXT_LENGTH // 2:
            raise ValueError(f"shard_tokens must be below {MAX_BUILD_TEXT_LENGTH // 2:,}")
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive int, got {jobs!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_tokens = shard_tokens
        self.jobs = jobs
        self.fingerprint = str(tokenizer_fingerprint)
        self.metadata = dict(metadata or {})
        self._entries: list[dict[str, Any]] = []
        if append and (self.directory / MANIFEST_NAME).is_file():
            self._entries, existing, old_metadata = read_manifest(self.directory / MANIFEST_NAME)
            if existing != self.fingerprint:
                raise TokenizerMismatchError(
                    f"{self.directory} was built with tokenizer {existing!r}, not {self.fingerprint!r}"
                )
            self.metadata = {**old_metadata, **self.metadata}
        elif any(self.directory.glob("shard-*.sam")) or (self.directory / MANIFEST_NAME).exists():
            raise FileExistsError(f"{self.directory} already holds a sharded corpus (use append=True)")
        self._next_index = len(self._entries)
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._pending: list[tuple[int, Future[dict[str, Any]]]] = []
        self._built: dict[int, dict[str, Any]] = {}
        self._pool: ProcessPoolExecutor | None = None
        if jobs > 1:
            # Spawned, not forked: the parent may hold tokenizer threads that a fork would copy
            # mid-operation.
            self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))
        self._closed = False

    def add(self, document: TokenSequence) -> None:
        """Append one document (a 1-D token sequence); empty ones are skipped."""
        array = as_token_array(document)
        if array.shape[0] == 0:
            return
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > MAX_TOKEN_ID:
            raise ValueError(f"token ids must be in [0, 2^31-1], got {low if low < 0 else high}")
        if self._buffered and self._buffered + array.shape[0] > self.shard_tokens:
            self._flush()
        self._buffer.append(array.astype(np.uint32, copy=False))
        self._buffered += array.shape[0]

    def _flush(self) -> None:
        if not self._buffered:
            return
        index = self._next_index
        taken = {entry["file"] for entry in self._entries}
        while _shard_name(index) in taken or (self.directory / _shard_name(index)).exists():
            index += 1  # a corpus grown with add_shard may have used this name already
        self._next_index = index + 1
        shard_path = self.directory / _shard_name(index)
        tokens_path = self.directory / f".{shard_path.stem}.tokens.npy"
        ends_path = self.directory / f".{shard_path.stem}.ends.npy"
        tokens = np.empty(self._buffered, dtype=np.uint32)
        ends = np.empty(len(self._buffer), dtype=np.int64)
        offset = 0
        for position, array in enumerate(self._buffer):
            tokens[offset : offset + array.shape[0]] = array
            offset += array.shape[0]
            ends[position] = offset
        self._buffer, self._buffered = [], 0
        np.save(tokens_path, tokens)
        np.save(ends_path, ends)
        del tokens
        shard_metadata = json.dumps({**self.metadata, "shard": index}, sort_keys=True)
        arguments = (str(tokens_path), str(ends_path), str(shard_path), self.fingerprint, shard_metadata)
        if self._pool is None:
            self._built[index] = _build_shard(*arguments)
            return
        while len(self._pending) >= self.jobs:  # bound the shards in flight (memory)
            done_index, future = self._pending.pop(0)
            self._built[done_index] = future.result()
        self._pending.append((index, self._pool.submit(_build_shard, *arguments)))

    def close(self) -> Path:
        """Build the last shard, wait for every build and write the manifest; returns its path."""
        if self._closed:
            return self.directory / MANIFEST_NAME
        self._closed = True
        try:
            self._flush()
            for index, future in self._pending:
                self._built[index] = future.result()
            self._pending = []
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        entries = self._entries + [self._built[index] for index in sorted(self._built)]
        if not entries:
            raise ValueError("the corpus has no tokens (no documents, or all are empty)")
        self.metadata["shard_tokens"] = self.shard_tokens
        return write_manifest(self.directory, entries, self.fingerprint, self.metadata)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if kind is None:
            self.close()
        else:
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            for stale in self.directory.glob(".shard-*.npy"):
                stale.unlink(missing_ok=True)


def add_shard(directory: PathLike, automaton: StaticAutomaton) -> Path:
    """Add ``automaton`` (built over new documents) to the sharded corpus in ``directory`` as
    its next shard, and rewrite the manifest atomically; returns the shard's path."""
    directory = Path(directory)
    entries, fingerprint, metadata = read_manifest(directory / MANIFEST_NAME)
    if automaton.tokenizer_fingerprint != fingerprint:
        raise TokenizerMismatchError(
            f"{directory} was built with tokenizer {fingerprint!r}, the new shard with "
            f"{automaton.tokenizer_fingerprint!r}"
        )
    index = len(entries)
    while (directory / _shard_name(index)).exists():
        index += 1
    path = directory / _shard_name(index)
    automaton.save(path)
    entries.append({
        "file": path.name,
        "tokens": automaton.num_tokens,
        "documents": automaton.num_documents,
        "bytes": automaton.nbytes,
        "tokenizer_fingerprint": automaton.tokenizer_fingerprint,
    })
    write_manifest(directory, entries, fingerprint, metadata)
    return path


__all__ = [
    "MANIFEST_NAME",
    "ShardWriter",
    "ShardedAutomaton",
    "add_shard",
    "load_corpus",
    "read_manifest",
    "write_manifest",
]
