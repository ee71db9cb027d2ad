"""The response cache's file: every cached response, oldest first, behind a checked header.

File format (version 1, little-endian): the magic ``b"SAMRESP\\0"``, uint32 format version, uint32
tokenizer-fingerprint length ``F``, uint64 ``max_tokens`` at saving, uint64 number of responses
``R``, uint64 number of tokens ``T``, the fingerprint (``F`` bytes, UTF-8), ``R`` uint32 response
lengths (oldest first), ``T`` uint32 tokens, then an 8-byte BLAKE2b digest of every byte before it.
A file is untrusted input when read: sizes are checked against the file before anything is
allocated, and every field before it is used.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sam_decoding.automaton import MAX_TOKEN_ID, FormatError

MAGIC = b"SAMRESP\0"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQQ")  # magic, version, fingerprint length, max_tokens, responses, tokens
_DIGEST_BYTES = 8
#: A tokenizer fingerprint longer than this (bytes) marks a file as damaged, not as a real tokenizer.
MAX_FINGERPRINT_BYTES = 1 << 16


def write_response_cache(file: BinaryIO, fingerprint: str, max_tokens: int, lengths: Sequence[np.ndarray],
                         tokens: Sequence[np.ndarray]) -> None:
    """Write a response cache to the open binary ``file``: response ``lengths`` and their
    ``tokens`` (uint32), in pieces laid back to back, oldest first."""
    encoded = fingerprint.encode("utf-8")
    responses = sum(part.shape[0] for part in lengths)
    total = sum(part.shape[0] for part in tokens)
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    parts = [_HEADER.pack(MAGIC, FORMAT_VERSION, len(encoded), max_tokens, responses, total), encoded]
    parts += [part.astype("<u4").tobytes() for part in lengths]
    parts += [part.astype("<u4").tobytes() for part in tokens]
    for part in parts:
        digest.update(part)
        file.write(part)
    file.write(digest.digest())


def read_response_cache(path: str | os.PathLike[str]) -> tuple[str, np.ndarray, np.ndarray]:
    """The tokenizer fingerprint, response lengths (int64) and tokens (uint32) of a response cache
    file, every field checked (the file is untrusted). Raises ``FormatError`` in one line."""
    path = Path(path)

    def bad(why: str) -> FormatError:
        return FormatError(f"{path}: {why}; the file was left as it is")

    with open(path, "rb") as file:
        header = file.read(_HEADER.size)
        if len(header) < len(MAGIC) or header[: len(MAGIC)] != MAGIC:
            raise bad("not a sam-decoding response cache (wrong magic bytes)")
        if len(header) < _HEADER.size:
            raise bad(f"truncated ({len(header)} bytes, shorter than the {_HEADER.size}-byte header)")
        _, version, fingerprint_bytes, _, responses, tokens = _HEADER.unpack(header)
        if version > FORMAT_VERSION:
            raise bad(f"response cache format version {version}, newer than this sam-decoding reads "
                      f"({FORMAT_VERSION}); upgrade sam-decoding")
        if version != FORMAT_VERSION:
            raise bad(f"unknown response cache format version {version}")
        if fingerprint_bytes > MAX_FINGERPRINT_BYTES or responses > tokens:
            raise bad("corrupted header (impossible sizes)")
        # Sizes are checked against the file before anything is allocated for them.
        expected = _HEADER.size + fingerprint_bytes + 4 * responses + 4 * tokens + _DIGEST_BYTES
        size = os.fstat(file.fileno()).st_size
        if size != expected:
            raise bad(f"truncated or padded ({size} bytes, the header says {expected})")
        data = header + file.read()
    if len(data) != expected:
        raise bad(f"changed while being read ({len(data)} bytes, the header says {expected})")
    body = memoryview(data)[: expected - _DIGEST_BYTES]
    if hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest() != data[-_DIGEST_BYTES:]:
        raise bad("corrupted (checksum mismatch)")
    return _parse_body(data, fingerprint_bytes, responses, tokens, bad)


def _parse_body(data: bytes, fingerprint_bytes: int, responses: int, tokens: int, bad: Any) -> tuple[str, np.ndarray, np.ndarray]:
    offset = _HEADER.size
    try:
        fingerprint = data[offset : offset + fingerprint_bytes].decode("utf-8")
    except UnicodeDecodeError:
        raise bad("corrupted (tokenizer fingerprint is not UTF-8)") from None
    offset += fingerprint_bytes
    lengths = np.frombuffer(data, dtype="<u4", count=responses, offset=offset).astype(np.int64)
    offset += 4 * responses
    values = np.frombuffer(data, dtype="<u4", count=tokens, offset=offset).astype(np.uint32)
    if responses and int(lengths.min()) == 0:
        raise bad("corrupted (an empty response)")
    if int(lengths.sum()) != tokens:
        raise bad(f"corrupted (response lengths sum to {int(lengths.sum())}, not {tokens} tokens)")
    if tokens and int(values.max()) > MAX_TOKEN_ID:
        raise bad(f"corrupted (token id {int(values.max())} above 2^31-1)")
    return fingerprint, lengths, values


__all__ = ["FORMAT_VERSION", "MAGIC", "MAX_FINGERPRINT_BYTES", "read_response_cache", "write_response_cache"]
