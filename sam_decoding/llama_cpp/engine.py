"""The edge where sam-decoding meets llama.cpp: one batch, one decode, logits rows, KV removal, and the cost curve.

:class:`LlamaTarget` holds a loaded ``llama_cpp.Llama``'s context and a batch of its own; nothing else
in the package touches llama.cpp's low-level API. The sequence lives in sequence 0 of the context's
memory: positions ``0 .. past - 1`` are cached, and a decode appends tokens at ``past``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sam_decoding.policy.cost_profile import (
    CALIBRATION_LENGTH,
    CALIBRATION_Q,
    CostProfile,
    _cpu_name,
)

#: Most tokens one verification pass feeds (the draft's depth is capped one below this).
MAX_PASS_TOKENS = 64


class LlamaTarget:
    """A ``llama_cpp.Llama`` seen as a verifier: decode tokens at positions, read logits rows, drop KV entries.

    Args:
        llm: A loaded ``llama_cpp.Llama`` (its context's sequence 0 is used and overwritten).
    """

    def __init__(self, llm: Any) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm
        self.ctx = llm.ctx
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx = int(llm.n_ctx())
        self.n_batch = int(llm.n_batch)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.capacity = max(self.n_batch, MAX_PASS_TOKENS)
        self.batch = llama_cpp.llama_batch_init(self.capacity, 0, 1)
        self._freed = False
        # The batch's arrays as NumPy views, written in place each pass (no per-token ctypes calls);
        # every token of every pass belongs to sequence 0, so those fields are set once here.
        capacity = self.capacity
        self._tokens = np.ctypeslib.as_array(self.batch.token, shape=(capacity,))
        self._positions = np.ctypeslib.as_array(self.batch.pos, shape=(capacity,))
        self._keep_logits = np.ctypeslib.as_array(self.batch.logits, shape=(capacity,))
        np.ctypeslib.as_array(self.batch.n_seq_id, shape=(capacity,))[:] = 1
        for index in range(capacity):
            self.batch.seq_id[index][0] = 0
        self._offsets = np.arange(capacity, dtype=np.int32)
        # A view of the context's logits buffer, rebuilt only when llama.cpp moves that buffer.
        self._logits_address = 0
        self._logits_rows = 0
        self._logits_view = np.zeros((0, self.n_vocab), dtype=np.float32)

    def close(self) -> None:
        """Free the batch (the ``Llama`` itself stays loaded)."""
        if not self._freed:
            self._freed = True
            self._lib.llama_batch_free(self.batch)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation (an end-of-generation token of the model's vocabulary)."""
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    def clear(self) -> None:
        """Empty sequence 0 of the context's memory (and tell the ``Llama`` object its cache is gone)."""
        self._lib.llama_memory_seq_rm(self.memory, 0, -1, -1)
        self.llm.n_tokens = 0

    def remove_from(self, position: int) -> None:
        """Drop the cached entries at positions ``position`` and later."""
        if not self._lib.llama_memory_seq_rm(self.memory, 0, position, -1):
            raise RuntimeError("this llama.cpp memory cannot remove a partial sequence (recurrent model?)")

    def decode(self, tokens: np.ndarray | list[int], start: int, logits_from: int) -> None:
        """Feed ``tokens`` at positions ``start ..``; keep logits for tokens ``logits_from ..`` (index into ``tokens``)."""
        count = len(tokens)
        if count > self.capacity:
            raise ValueError(f"a pass of {count} tokens exceeds the batch capacity {self.capacity}")
        if start + count > self.n_ctx:
            raise ValueError(f"the sequence would reach {start + count} tokens, beyond the context of {self.n_ctx}")
        self.batch.n_tokens = count
        self._tokens[:count] = tokens
        np.add(self._offsets[:count], start, out=self._positions[:count])
        keep = self._keep_logits
        keep[:logits_from] = 0
        keep[logits_from:count] = 1
        status = self._lib.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")

    def prefill(self, tokens: np.ndarray | list[int], start: int = 0) -> None:
        """Feed ``tokens`` in chunks of the context's batch size, keeping the logits of each chunk's
        last token (as llama-cpp-python's ``Llama.eval`` does, so the batches are plain decoding's
        own): afterwards ``rows(1)[0]`` holds the logits after the last token."""
        for offset in range(0, len(tokens), self.n_batch):
            chunk = tokens[offset : offset + self.n_batch]
            self.decode(chunk, start + offset, len(chunk) - 1)

    def logits(self, row: int) -> np.ndarray:
        """Logits of output row ``row`` (the ``row``-th token of the last batch that kept logits), float32 ``[n_vocab]``, no copy."""
        pointer = self._lib.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def rows(self, count: int) -> np.ndarray:
        """The first ``count`` output rows of the last batch that kept logits, float32 ``[count, n_vocab]``, no copy.

        llama.cpp stores output rows contiguously in batch order; the view is rebuilt only when the
        buffer moves or grows (a pass keeping more rows than any before), so a step costs one call."""
        pointer = self._lib.llama_get_logits(self.ctx)
        address = ctypes.cast(pointer, ctypes.c_void_p).value or 0
        if address != self._logits_address or count > self._logits_rows:
            self._logits_rows = count if address != self._logits_address else max(count, self._logits_rows)
            self._logits_address = address
            self._logits_view = np.ctypeslib.as_array(pointer, shape=(self._logits_rows, self.n_vocab))
        return self._logits_view[:count]

    def argmax_rows(self, first: int, count: int) -> list[int]:
        """Greedy choices at batch rows ``first .. first + count - 1``."""
        return self.rows(first + count)[first:].argmax(axis=1).tolist()


def profile_key(llm: Any) -> str:
    """A short hash naming the GGUF file (path, size, mtime), the thread counts, llama-cpp-python's version and the processor."""
    import llama_cpp

    path = Path(llm.model_path)
    try:
        stat = path.stat()
        file_id = [str(path.resolve()), stat.st_size, int(stat.st_mtime)]
    except OSError:
        file_id = [str(path)]
    parts = ["llama.cpp", *file_id, llm.n_threads, llm.n_threads_batch, llama_cpp.__version__, _cpu_name()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def calibrate_llama(target: LlamaTarget, profile: CostProfile, *, budget_seconds: float = 2.0) -> float:
    """Time passes of :data:`CALIBRATION_Q` tokens (at most :data:`MAX_PASS_TOKENS`) into ``profile``; return seconds spent.

    Random tokens over a cache of :data:`CALIBRATION_LENGTH` tokens; each size is timed at least
    once, then the sweep repeats while the budget lasts, and each size's fastest pass is recorded.
    Leaves the context's memory empty.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    length = min(CALIBRATION_LENGTH, target.n_ctx - MAX_PASS_TOKENS - 1)
    sizes = [q for q in CALIBRATION_Q if q <= MAX_PASS_TOKENS]
    target.clear()
    target.prefill(rng.integers(0, target.n_vocab, length))
    for q in (1, 4):  # untimed: first passes of a shape allocate
        target.decode(rng.integers(0, target.n_vocab, q), length, 0)
        target.remove_from(length)
    timings: dict[int, list[float]] = {q: [] for q in sizes}
    for sweep in range(5):
        for index, q in enumerate(sizes):
            if index >= 2 and time.perf_counter() - started > budget_seconds * 0.8:
                break
            tokens = rng.integers(0, target.n_vocab, q)
            tick = time.perf_counter()
            target.decode(tokens, length, 0)
            target.rows(q)
            timings[q].append(time.perf_counter() - tick)
            target.remove_from(length)
        if time.perf_counter() - started > budget_seconds * 0.6:
            break
    # Each size's fastest pass: a pass another process preempted is slower, never faster, so the
    # minimum is the machine's own cost (averaging would let a busy moment inflate one size's ratio).
    for q, seconds in timings.items():
        for _ in seconds:
            profile.observe(q, length, min(seconds), force=True)
    target.clear()
    spent = time.perf_counter() - started
    profile.calibration_seconds = spent
    return spent


def load_or_calibrate(target: LlamaTarget, budget_seconds: float = 2.0) -> tuple[CostProfile, float]:
    """The cached cost profile of this GGUF/threads/processor setting, or a fresh calibration (saved)."""
    from sam_decoding.models import cache_dir
    from sam_decoding.policy.cost_aware import PROFILE_CACHE_ENV

    key = profile_key(target.llm)
    path = None
    if os.environ.get(PROFILE_CACHE_ENV, "1") != "0":
        path = cache_dir() / "cost_profiles" / f"llama_cpp-{key}.json"
    if path is not None and path.is_file():
        try:
            return CostProfile.from_json(json.loads(path.read_text(encoding="utf-8")), path=path), 0.0
        except (ValueError, OSError, json.JSONDecodeError):
            pass  # an older or damaged file: measure again and overwrite it
    profile = CostProfile(key, path=path)
    spent = calibrate_llama(target, profile, budget_seconds=budget_seconds)
    profile.save_if_changed()
    return profile, spent


def cost_ratios(profile: CostProfile, cache_length: int = CALIBRATION_LENGTH, sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)) -> dict[int, float]:
    """``t(q) / t(1)`` from ``profile`` at ``cache_length`` (what one more verified token costs)."""
    curve = profile.curve(cache_length, max(sizes))
    return {q: float(curve[q - 1] / curve[0]) for q in sizes}

