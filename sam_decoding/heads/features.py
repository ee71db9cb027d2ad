"""The on-disk cache of hidden states the heads are trained on.

The target model runs once over the training text; every position's last hidden state (float16)
and the token the model chose after it are appended to two flat files, and each finished sequence
to an index. Training then reads rows through a memory map, so memory stays bounded by a batch,
not by the corpus. A run that stops part-way resumes after the last sequence it indexed.

Files in the cache directory:
    ``hidden.f16``: float16 ``[rows, hidden]``, row-major, no header.
    ``targets.i32``: int32 ``[rows]``: the token the model chose after each row's position.
    ``sequences.jsonl``: ``{"id", "start", "length"}`` per sequence (rows ``start .. start+length-1``).
    ``meta.json``: what produced the cache (model identity, tokenizer, settings); a cache made by
    another model or with other settings is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam_decoding.atomic_file import replacing_atomically

_HIDDEN = "hidden.f16"
_TARGETS = "targets.i32"
_SEQUENCES = "sequences.jsonl"
_META = "meta.json"


class FeatureCacheError(ValueError):
    """A feature cache is unreadable, inconsistent, or was made by another model or settings."""


@dataclass(frozen=True)
class SequenceSpan:
    """One sequence's rows in the cache: ``start .. start + length - 1``."""

    sequence_id: str
    start: int
    length: int


class FeatureStore:
    """A directory of cached hidden states and next-token targets (see the module docstring).

    Open with :meth:`open_for_writing` (creates or resumes) or :meth:`open` (read-only).
    """

    def __init__(self, directory: Path, hidden_size: int, spans: list[SequenceSpan], meta: dict[str, Any]) -> None:
        self.directory = directory
        self.hidden_size = hidden_size
        self.spans = spans
        self.meta = meta

    @classmethod
    def open_for_writing(cls, directory: str | os.PathLike[str], meta: dict[str, Any]) -> FeatureStore:
        """Create the cache, or resume one made with the same ``meta`` (which must hold ``hidden_size``)."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        meta_path = root / _META
        if meta_path.is_file():
            existing = _read_meta(meta_path)
            if existing != json.loads(json.dumps(meta)):
                changed = sorted(k for k in set(existing) | set(meta) if existing.get(k) != meta.get(k))
                raise FeatureCacheError(
                    f"{root}: holds features made with other settings ({', '.join(changed)}); "
                    "use another work directory or delete this one"
                )
        else:
            with replacing_atomically(meta_path) as temporary:
                Path(temporary).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        hidden_size = int(meta["hidden_size"])
        spans = _read_spans(root / _SEQUENCES)
        rows = spans[-1].start + spans[-1].length if spans else 0
        # Rows written after the last indexed sequence belong to an interrupted batch: drop them.
        for name, row_bytes in ((_HIDDEN, 2 * hidden_size), (_TARGETS, 4)):
            path = root / name
            path.touch()
            size = path.stat().st_size
            if size < rows * row_bytes:
                raise FeatureCacheError(f"{path}: {size} bytes, shorter than its index says ({rows} rows)")
            if size > rows * row_bytes:
                os.truncate(path, rows * row_bytes)
        _drop_partial_last_line(root / _SEQUENCES)
        return cls(root, hidden_size, spans, meta)

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> FeatureStore:
        """Open a finished cache for reading."""
        root = Path(directory)
        meta_path = root / _META
        if not meta_path.is_file():
            raise FeatureCacheError(f"{root}: not a feature cache (no {_META})")
        meta = _read_meta(meta_path)
        store = cls(root, int(meta["hidden_size"]), _read_spans(root / _SEQUENCES), meta)
        rows = store.rows
        for name, row_bytes in ((_HIDDEN, 2 * store.hidden_size), (_TARGETS, 4)):
            size = (root / name).stat().st_size if (root / name).is_file() else -1
            if size < rows * row_bytes:
                raise FeatureCacheError(f"{root / name}: truncated ({size} bytes for {rows} rows)")
        return store

    @property
    def rows(self) -> int:
        """Positions cached, over all sequences."""
        return self.spans[-1].start + self.spans[-1].length if self.spans else 0

    def sequence_ids(self) -> set[str]:
        """Ids of the sequences already cached."""
        return {span.sequence_id for span in self.spans}

    def append(self, sequence_id: str, hidden: np.ndarray, targets: np.ndarray) -> None:
        """Add one sequence: float16-convertible ``[length, hidden]`` states and their ``[length]`` next tokens."""
        hidden = np.ascontiguousarray(hidden, dtype=np.float16)
        targets = np.ascontiguousarray(targets, dtype=np.int32)
        if hidden.ndim != 2 or hidden.shape[1] != self.hidden_size or targets.shape != (hidden.shape[0],):
            raise ValueError(f"expected [length, {self.hidden_size}] states and [length] targets")
        start = self.rows
        with open(self.directory / _HIDDEN, "ab") as stream:
            stream.write(hidden.tobytes())
        with open(self.directory / _TARGETS, "ab") as stream:
            stream.write(targets.tobytes())
        # The index line goes last: a sequence counts only once all its rows are on disk.
        span = SequenceSpan(sequence_id, start, int(hidden.shape[0]))
        with open(self.directory / _SEQUENCES, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"id": sequence_id, "start": span.start, "length": span.length}) + "\n")
        self.spans.append(span)

    def hidden(self) -> np.memmap | np.ndarray:
        """float16 ``[rows, hidden]``, memory-mapped read-only."""
        if self.rows == 0:
            return np.zeros((0, self.hidden_size), dtype=np.float16)
        return np.memmap(self.directory / _HIDDEN, dtype=np.float16, mode="r", shape=(self.rows, self.hidden_size))

    def targets(self) -> np.ndarray:
        """int32 ``[rows]``: the token the model chose after each cached position."""
        if self.rows == 0:
            return np.zeros(0, dtype=np.int32)
        return np.fromfile(self.directory / _TARGETS, dtype=np.int32, count=self.rows)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FeatureCacheError(f"{path}: unreadable ({error})") from None
    hidden = meta.get("hidden_size") if isinstance(meta, dict) else None
    if isinstance(hidden, bool) or not isinstance(hidden, int) or not 0 < hidden <= 1 << 16:
        raise FeatureCacheError(f"{path}: no valid hidden_size")
    return meta


def _read_spans(path: Path) -> list[SequenceSpan]:
    spans: list[SequenceSpan] = []
    if not path.is_file():
        return spans
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.endswith("\n"):
                break  # an interrupted append; dropped by open_for_writing
            try:
                record = json.loads(line)
                span = SequenceSpan(str(record["id"]), int(record["start"]), int(record["length"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise FeatureCacheError(f"{path}:{number}: not an index line") from None
            expected = spans[-1].start + spans[-1].length if spans else 0
            if span.start != expected or span.length < 0:
                raise FeatureCacheError(f"{path}:{number}: rows {span.start}+{span.length} do not follow the previous sequence")
            spans.append(span)
    return spans


def _drop_partial_last_line(path: Path) -> None:
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)
