"""Writes golden_v1.sam, the committed example of automaton file format version 1.

The file must never be regenerated once committed: tests/test_file_format.py loads it to prove
that files written by earlier releases still load and answer the same. A new format version
gets a new golden file (golden_v2.sam ...) next to this one. Run from the repository root:

    python tests/data/make_golden.py            # writes tests/data/golden_v1.sam
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
METADATA = {"purpose": "format-version-1 golden file", "documents": 4}
QUERIES = [[1, 2], [1, 2, 3], [9, 2, 3], [2147483647, 2], [7, 1, 2, 3, 1], [4], [8]]


def build() -> StaticAutomaton:
    return StaticAutomaton.build(DOCUMENTS, tokenizer_fingerprint=FINGERPRINT, metadata=METADATA)


def answers(automaton: StaticAutomaton) -> list[dict]:
    results = []
    for query in QUERIES:
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
