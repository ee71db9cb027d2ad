"""A corpus split into shards: several automaton files, split on document boundaries, used as one.

:mod:`~sam_decoding.shards.sharded` reads them as one automaton (:class:`ShardedAutomaton`,
:func:`load_corpus`), :mod:`~sam_decoding.shards.manifest` owns the ``manifest.json`` format and
:mod:`~sam_decoding.shards.writer` builds shards with a pool of workers (:class:`ShardWriter`,
:func:`add_shard`). Everything is importable from here, as before the split.
"""

from sam_decoding.shards.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    MAX_MANIFEST_BYTES,
    read_manifest,
    write_manifest,
)
from sam_decoding.shards.sharded import ShardedAutomaton, load_corpus
from sam_decoding.shards.writer import ShardWriter, add_shard

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "MAX_MANIFEST_BYTES",
    "ShardWriter",
    "ShardedAutomaton",
    "add_shard",
    "load_corpus",
    "read_manifest",
    "write_manifest",
]
