"""The manifest of a sharded corpus: ``manifest.json``, listing the shard files with their sizes
and tokenizer fingerprints. It is untrusted input when read: every field is checked."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sam_decoding.atomic_file import replacing_atomically
from sam_decoding.automaton import FormatError, StaticAutomaton

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "sam-decoding-shards"
MANIFEST_VERSION = 1
#: A manifest larger than this (bytes) is refused unread: it lists file names and a few numbers.
MAX_MANIFEST_BYTES = 64 << 20
_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.sam$")
#: The fields of one shard's entry, in the order a loaded shard is compared against them.
ENTRY_FIELDS = ("tokens", "documents", "bytes", "tokenizer_fingerprint")


def shard_name(index: int) -> str:
    """File name of the ``index``-th shard a writer creates."""
    return f"shard-{index:05d}.sam"


def shard_entry(automaton: StaticAutomaton, file: str) -> dict[str, Any]:
    """The manifest entry of ``automaton`` saved as ``file`` (a name inside the manifest's directory)."""
    return {"file": file, **dict(zip(ENTRY_FIELDS, shard_facts(automaton)))}


def shard_facts(automaton: StaticAutomaton) -> tuple[Any, ...]:
    """What a manifest records of a shard, in :data:`ENTRY_FIELDS` order."""
    return (automaton.num_tokens, automaton.num_documents, automaton.nbytes, automaton.tokenizer_fingerprint)


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
        entries.append({key: entry[key] for key in ("file", *ENTRY_FIELDS)})
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
