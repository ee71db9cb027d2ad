"""Writes golden_vN.sam, the committed example of automaton file format version N (the current one).

A golden file must never be regenerated once committed: tests/test_file_format.py loads each to
prove that files written by earlier releases still load and answer the same. A new format version
gets a new golden file next to the others. Run from the repository root:

    python tests/data/make_golden.py            # writes tests/data/golden_v2.sam
    python tests/data/make_golden.py --answers  # prints the answers the test pins
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sam_decoding import FORMAT_VERSION, StaticAutomaton

# Small alphabet, repeated stretches, an empty document (skipped) and the largest token id,
# so the file holds clones, explicit edges and every section non-empty.
DOCUMENTS = [
    [1, 2, 3, 1, 2, 4, 1, 2, 3, 5],
    [],
    [2, 3, 1, 2, 3, 6, 2147483647, 2, 3],
    [7, 1, 2, 3, 1],
]
FINGERPRINT = "golden-tokenizer-v1"
QUERIES = [[1, 2], [1, 2, 3], [9, 2, 3], [2147483647, 2], [7, 1, 2, 3, 1], [4], [8]]
# Version 2 stores token ids in 16 bits when all are below 65535 (0xFFFF marks a separator): its
# golden file has the largest such id where version 1's has the largest id of all.
LARGEST_ID = {1: 2147483647, 2: 65534}


def with_largest_id(sequences: list[list[int]], version: int) -> list[list[int]]:
    return [[LARGEST_ID[version] if token == LARGEST_ID[1] else token for token in tokens]
            for tokens in sequences]


def metadata(version: int) -> dict:
    return {"purpose": f"format-version-{version} golden file", "documents": 4}


def build(version: int = FORMAT_VERSION) -> StaticAutomaton:
    return StaticAutomaton.build(with_largest_id(DOCUMENTS, version), tokenizer_fingerprint=FINGERPRINT,
                                 metadata=metadata(version))


def answers(automaton: StaticAutomaton, version: int = FORMAT_VERSION) -> list[dict]:
    results = []
    for query in with_largest_id(QUERIES, version):
        cursor = automaton.cursor()
        cursor.feed(query)
        tree = cursor.draft_tree(6)
        results.append({
            "query": query,
            "match_length": cursor.match_length,
            "draft": cursor.draft(8).tolist(),
            "tree_tokens": tree.tokens.tolist(),
            "tree_parents": tree.parents.tolist(),
            "tree_counts": tree.counts.tolist(),
        })
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", action="store_true", help="print the answers instead")
    args = parser.parse_args()
    automaton = build()
    if args.answers:
        for answer in answers(automaton):
            print(json.dumps(answer) + ",")
        return
    target = Path(__file__).with_name(f"golden_v{FORMAT_VERSION}.sam")
    if target.exists():
        raise SystemExit(f"{target} exists; golden files are never regenerated")
    automaton.save(target)
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
