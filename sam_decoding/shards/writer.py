"""Writing a sharded corpus: documents into bounded-size shards built by a pool of worker
processes, and growing a corpus by one shard."""

from __future__ import annotations

import json
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from sam_decoding.automaton import (
    MAX_BUILD_TEXT_LENGTH,
    PathLike,
    StaticAutomaton,
    TokenizerMismatchError,
    TokenSequence,
    checked_token_array,
)
from sam_decoding.shards.manifest import MANIFEST_NAME, read_manifest, shard_entry, shard_name, write_manifest


def _build_shard(tokens_path: str, ends_path: str, shard_path: str, fingerprint: str,
                 metadata_json: str) -> dict[str, Any]:
    """Build one shard from token/ends files (memory-mapped, then deleted) and save it.

    Runs in a worker process; returns the shard's manifest entry."""
    try:
        tokens = np.load(tokens_path, mmap_mode="r")
        ends = np.load(ends_path)
        automaton = StaticAutomaton.from_checked_tokens(tokens, ends, tokenizer_fingerprint=fingerprint,
                                                        metadata=json.loads(metadata_json))
        del tokens
    finally:
        Path(tokens_path).unlink(missing_ok=True)
        Path(ends_path).unlink(missing_ok=True)
    automaton.save(shard_path)
    return shard_entry(automaton, Path(shard_path).name)


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
        tokenizer_fingerprint: str | None = None,
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
        self.fingerprint = str(tokenizer_fingerprint or "")
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
        array = checked_token_array(document)
        if array.shape[0] == 0:
            return
        if self._buffered and self._buffered + array.shape[0] > self.shard_tokens:
            self._flush()
        self._buffer.append(array)
        self._buffered += array.shape[0]

    def _flush(self) -> None:
        if not self._buffered:
            return
        index = self._next_index
        taken = {entry["file"] for entry in self._entries}
        while shard_name(index) in taken or (self.directory / shard_name(index)).exists():
            index += 1  # a corpus grown with add_shard may have used this name already
        self._next_index = index + 1
        shard_path = self.directory / shard_name(index)
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
    while (directory / shard_name(index)).exists():
        index += 1
    path = directory / shard_name(index)
    automaton.save(path)
    entries.append(shard_entry(automaton, path.name))
    write_manifest(directory, entries, fingerprint, metadata)
    return path
