"""Writes golden_response_cache_v1.bin, the committed example of response cache file format version 1.

A golden file must never be regenerated once committed: tests/test_response_cache.py loads it to
prove that cache files written by earlier releases still load and draft the same. A new format
version gets a new golden file next to this one. Run from the repository root:

    python tests/data/make_golden_response_cache.py            # writes the file
    python tests/data/make_golden_response_cache.py --answers  # prints the answers the test pins
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sam_decoding import ResponseCache

# Responses in recording order: repeats (so counts exceed 1), one-token and largest-id responses,
# and an empty one (ignored, so not in the file).
RESPONSES = [
    [5, 6, 7, 8, 5, 6, 9],
    [],
    [5, 6, 7, 10, 11],
    [2147483647],
    [12, 5, 6, 7, 8, 13, 2147483647, 14],
    [5, 6, 7, 8, 15],
]
FINGERPRINT = "golden-tokenizer-v1"
MAX_TOKENS = 1000
QUERIES = [[5, 6], [5, 6, 7], [5, 6, 7, 8], [2147483647], [12, 5], [99]]
PATH = Path(__file__).parent / "golden_response_cache_v1.bin"


def build() -> ResponseCache:
    cache = ResponseCache(MAX_TOKENS, tokenizer_fingerprint=FINGERPRINT)
    for response in RESPONSES:
        cache.record(response)
    return cache


def answers(cache: ResponseCache) -> list[dict]:
    snapshot = cache.snapshot()
    results = []
    for query in QUERIES:
        cursor = snapshot.cursor()
        cursor.feed(query)
        chain = cursor.draft_with_counts(6)
        results.append({"query": query, "match_length": cursor.match_length,
                        "draft": chain.tokens.tolist(), "counts": chain.counts.tolist()})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", action="store_true", help="print the pinned answers instead")
    args = parser.parse_args()
    if args.answers:
        print(json.dumps(answers(ResponseCache(MAX_TOKENS, PATH)), indent=1))
        return
    if PATH.exists():
        raise SystemExit(f"{PATH} exists; golden files are never regenerated")
    build().save(PATH)
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
