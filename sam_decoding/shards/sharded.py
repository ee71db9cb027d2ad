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

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sam_decoding.automaton import (
    FormatError,
    PathLike,
    StaticAutomaton,
    StaticCursor,
    TokenizerMismatchError,
    TokenSequence,
)
from sam_decoding.shards.manifest import ENTRY_FIELDS, MANIFEST_NAME, read_manifest, shard_facts
from sam_decoding.shards.writer import ShardWriter


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
            found = shard_facts(shard)
            expected = tuple(entry[key] for key in ENTRY_FIELDS)
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
        tokenizer_fingerprint: str | None = None,
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
        return StaticCursor.over_shards(self._shards)

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
