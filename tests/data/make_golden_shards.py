"""Writes golden_shards_v1_format2/, the committed example of a sharded corpus of manifest version 1
over automaton files of format version 2 (golden_shards_v1/ holds format version 1 files):
make_golden.py's documents in three shards of one document each.

Never regenerated once committed: tests/test_shards.py loads each and checks it answers exactly
as golden_v1.sam (one automaton over the same documents) does. Run from the repository root:

    python tests/data/make_golden_shards.py     # writes tests/data/golden_shards_v1_format2/
"""

from __future__ import annotations

from pathlib import Path

from make_golden import DOCUMENTS, FINGERPRINT

from sam_decoding import FORMAT_VERSION, ShardedAutomaton
from sam_decoding.shards import MANIFEST_VERSION

METADATA = {"purpose": "manifest-version-1 golden sharded corpus"}
# Shards of at most the first document's size: one document each (the empty one skipped).
SHARD_TOKENS = len(DOCUMENTS[0])


def build(directory: Path) -> ShardedAutomaton:
    return ShardedAutomaton.build(DOCUMENTS, directory, shard_tokens=SHARD_TOKENS,
                                  tokenizer_fingerprint=FINGERPRINT, metadata=METADATA)


def main() -> None:
    target = Path(__file__).with_name(f"golden_shards_v{MANIFEST_VERSION}_format{FORMAT_VERSION}")
    if target.exists():
        raise SystemExit(f"{target} exists; golden files are never regenerated")
    corpus = build(target)
    print(f"wrote {target} ({corpus.num_shards} shards)")


if __name__ == "__main__":
    main()
