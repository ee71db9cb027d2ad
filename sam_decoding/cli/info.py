"""``sam-decoding info``: describe a corpus automaton file and optionally verify its checksum."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sam_decoding.cli.loading import open_corpus

_EPILOG = """\
examples:
  sam-decoding info project.sam
  sam-decoding info project.sam --verify
  sam-decoding info project.sam --json
  sam-decoding info project-shards/            # a sharded corpus: directory or manifest.json"""


def register(commands: Any) -> None:
    """Add the ``info`` subcommand to ``commands``."""
    parser = commands.add_parser(
        "info",
        help="show what a corpus automaton file holds",
        description="Print the format version, sizes, tokenizer fingerprint and build parameters "
        "of a corpus automaton file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file", type=Path, metavar="CORPUS", help="corpus file, or directory/manifest of shards, written by 'build'"
    )
    parser.add_argument(
        "--verify", action="store_true", help="also check the full checksum (reads the whole file)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.set_defaults(handler=run)


def describe_corpus(path: Path, automaton: Any, verified: bool) -> dict[str, Any]:
    """The facts ``info`` prints about ``automaton`` loaded from ``path`` (sizes in bytes)."""
    from sam_decoding.shards import ShardedAutomaton

    sharded = isinstance(automaton, ShardedAutomaton)
    file_bytes = automaton.nbytes if sharded else path.stat().st_size
    facts: dict[str, Any] = {"file": str(path), "format_version": automaton.format_version}
    if sharded:
        facts["shards"] = automaton.num_shards
    facts.update({
        "tokens": automaton.num_tokens,
        "documents": automaton.num_documents,
        "states": automaton.num_states,
        "file_bytes": file_bytes,
        "bytes_per_token": round(file_bytes / max(automaton.num_tokens, 1), 2),
        "tokenizer_fingerprint": automaton.tokenizer_fingerprint,
        "checksum": "verified" if verified else "not checked (use --verify)",
        "build": dict(automaton.metadata),
    })
    return facts


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.file``. Returns the exit code."""
    automaton = open_corpus(args.file, verify=args.verify)
    facts = describe_corpus(args.file, automaton, args.verify)
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    build = facts.pop("build")
    width = max(map(len, facts)) + 1
    for key, value in facts.items():
        shown = f"{value:,}" if isinstance(value, int) else value
        print(f"{key.replace('_', ' '):<{width}} {shown}")
    if build:
        print("build parameters:")
        for key, value in build.items():
            print(f"  {key.replace('_', ' '):<{width - 2}} {json.dumps(value) if not isinstance(value, str) else value}")
    return 0
