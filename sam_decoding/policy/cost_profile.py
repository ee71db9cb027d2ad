"""What one verification pass costs on this hardware: ``t(q, L)`` seconds for ``q`` fed tokens over a cache of ``L``.

The profile is a table of running estimates (log seconds) over a grid of ``q`` values and cache-length
buckets. A short timed sweep fills it the first time a model is used, every real verification
step refines the cell it falls in, and the table is saved on disk under a key naming the model,
device, dtype, thread count, torch version and processor, so the next run starts calibrated.
Nothing assumes the curve is monotonic: on a CPU a pass of 2-3 tokens can cost more than one of
4-8 (different matrix kernels), and the table simply records what was measured.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sam_decoding.atomic_file import replacing_atomically

#: Grid of verified-token counts ``q`` the table holds (dense where CPU curves bend).
Q_GRID: tuple[int, ...] = (
    *range(1, 17), 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512,
)
#: Upper edges of the cache-length buckets, in tokens (the last bucket is open).
L_EDGES: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
#: ``q`` values timed by the calibration sweep, coarse points first (a sweep over budget stops
#: after them and interpolation fills the rest), and the cache length it runs at.
CALIBRATION_Q: tuple[int, ...] = (1, 4, 16, 64, 2, 8, 32, 3, 6, 12, 24, 48, 5, 10)
_ESSENTIAL_Q = 4
CALIBRATION_LENGTH = 200
#: Most passes over :data:`CALIBRATION_Q` (a GPU fits several in the budget; each cell averages them).
CALIBRATION_SWEEPS = 5
#: Share of the calibration budget spent on untimed passes before the sweep.
CALIBRATION_BURN_SHARE = 0.1
#: A second, longer cache length timed at a few ``q`` so growth with ``L`` is known from the start.
CALIBRATION_LONG_LENGTH = 1000
CALIBRATION_LONG_Q: tuple[int, ...] = (1, 8, 32)
#: Larger passes timed when the sweep has time left (on a GPU, where cost stays flat far beyond
#: 64 tokens, they are what lets the policy verify trees of hundreds of nodes).
CALIBRATION_LARGE_Q: tuple[int, ...] = (128, 256)
#: Relative cost growth per cached token assumed where no two lengths were ever measured.
DEFAULT_GROWTH_PER_TOKEN = 2e-4
#: Largest step an observation moves a cell's log-time (robust to a stray slow pass).
_MAX_LOG_STEP = 0.25
#: Share of a real pass's correction of its own cell that the rest of its row follows.
ROW_DRIFT_SHARE = 0.5
#: Cells stop averaging after this many observations and track drift instead.
_MAX_WEIGHT = 50.0
FILE_VERSION = 1

_Q = np.asarray(Q_GRID, dtype=np.float64)


def _q_index(q: int) -> int:
    """Grid index of the grid value nearest to ``q`` (in log space above the dense range)."""
    if q <= 16:
        return max(q, 1) - 1
    return int(np.argmin(np.abs(np.log(_Q) - math.log(q))))


def _l_bucket(length: int) -> int:
    return bisect.bisect_right(L_EDGES, length)


def _bucket_length(bucket: int) -> float:
    """A representative cache length of ``bucket`` (its midpoint), in tokens."""
    lower = 0 if bucket == 0 else L_EDGES[bucket - 1]
    upper = L_EDGES[bucket] if bucket < len(L_EDGES) else 2 * L_EDGES[-1]
    return (lower + upper) / 2


class CostProfile:
    """Running estimates of verification time ``t(q, L)``, in seconds.

    Args:
        key: Identity of the hardware/model setting this profile describes (used for the file name).
        path: Where the profile is saved (``None``: memory only).
        frozen: Ignore observations (for injected synthetic or GPU profiles).
    """

    def __init__(self, key: str = "memory", *, path: Path | None = None, frozen: bool = False) -> None:
        self.key = key
        self.path = path
        self.frozen = frozen
        self.log_time = np.full((len(L_EDGES) + 1, len(Q_GRID)), np.nan)
        self.weight = np.zeros_like(self.log_time)
        self.calibration_seconds = 0.0
        self._dirty = False
        self._curves: dict[int, np.ndarray] = {}

    # --- filling -------------------------------------------------------------------------------
    def observe(self, q: int, cache_length: int, seconds: float, *, force: bool = False) -> None:
        """Record one verification pass of ``q`` tokens over ``cache_length`` cached tokens that took ``seconds``."""
        if (self.frozen and not force) or not seconds > 0 or q < 1:
            return
        row, column = _l_bucket(cache_length), _q_index(q)
        value = math.log(seconds)
        weight = self.weight[row, column]
        if weight == 0:
            self.log_time[row, column] = value
        else:
            step = (value - self.log_time[row, column]) / (weight + 1)
            step = max(-_MAX_LOG_STEP, min(_MAX_LOG_STEP, step))
            self.log_time[row, column] += step
            if not force:
                self._drift_row(row, column, step)
        self.weight[row, column] = min(weight + 1, _MAX_WEIGHT)
        self._dirty = True
        self._curves.pop(row, None)

    def _drift_row(self, row: int, column: int, step: float) -> None:
        """Move the rest of the row by a share of a real pass's correction of its own cell.

        The policy only ever runs the sizes it believes cheapest, so without this the other cells
        keep the calibration's error forever: on a GPU whose sweep ran while its clock was still
        ramping up, the two sizes chosen first learned their true 19 ms and every other size stayed
        at 30 ms, so the policy verified those two sizes and nothing else. A real pass tells the
        row's level as well as its own cell; the shape between sizes stays the sweep's.
        """
        others = ~np.isnan(self.log_time[row])
        others[column] = False
        self.log_time[row, others] += ROW_DRIFT_SHARE * step

    @classmethod
    def synthetic(cls, seconds: Callable[[int, int], float], *, key: str = "synthetic") -> CostProfile:
        """A frozen profile from a function ``seconds(q, cache_length)`` (e.g. a GPU-like flat curve)."""
        profile = cls(key, frozen=True)
        for row in range(len(L_EDGES) + 1):
            for q in Q_GRID:
                profile.observe(q, int(_bucket_length(row)), seconds(q, int(_bucket_length(row))), force=True)
        return profile

    # --- reading -------------------------------------------------------------------------------
    @property
    def is_calibrated(self) -> bool:
        """Whether any cell holds a measurement."""
        return bool(np.any(self.weight > 0))

    def seconds(self, q: int, cache_length: int) -> float:
        """Estimated seconds of one pass of ``q`` tokens over ``cache_length`` cached tokens."""
        return float(self.curve(cache_length, q)[q - 1])

    def curve(self, cache_length: int, q_max: int) -> np.ndarray:
        """Estimated seconds for ``q = 1 .. q_max`` at ``cache_length`` (float64 ``[q_max]``)."""
        row = _l_bucket(cache_length)
        curve = self._curves.get(row)
        if curve is None or len(curve) < q_max:
            curve = self._interpolated_row(row, max(q_max, 64))
            self._curves[row] = curve
        return curve[:q_max]

    def _interpolated_row(self, row: int, q_max: int) -> np.ndarray:
        if not self.is_calibrated:
            raise RuntimeError("the cost profile holds no measurement; calibrate it first")
        log_row = self._filled_log_row(row)
        known = ~np.isnan(log_row)
        grid_q, grid_t = _Q[known], np.exp(log_row[known])
        q = np.arange(1, q_max + 1, dtype=np.float64)
        curve = np.interp(q, grid_q, grid_t)
        if len(grid_q) >= 2 and q_max > grid_q[-1]:
            # Beyond the largest measured q, grow linearly with the slope of the last measured stretch.
            slope = max((grid_t[-1] - grid_t[-2]) / (grid_q[-1] - grid_q[-2]), 0.0)
            beyond = q > grid_q[-1]
            curve[beyond] = grid_t[-1] + slope * (q[beyond] - grid_q[-1])
        return curve

    def _filled_log_row(self, row: int) -> np.ndarray:
        """Row ``row`` of log-times, its unknown cells borrowed from the nearest rows that know them."""
        filled = self.log_time[row].copy()
        others = sorted(range(self.log_time.shape[0]), key=lambda other: abs(other - row))
        for other in others[1:]:
            missing = np.isnan(filled) & ~np.isnan(self.log_time[other])
            if not missing.any():
                continue
            filled[missing] = self.log_time[other][missing] + self._row_offset(row, other)
        return filled

    def _row_offset(self, row: int, other: int) -> float:
        """Log-ratio of costs between two cache-length rows: measured where both know a q, else assumed."""
        both = ~np.isnan(self.log_time[row]) & ~np.isnan(self.log_time[other])
        if both.any():
            return float(np.median(self.log_time[row][both] - self.log_time[other][both]))
        return math.log1p(DEFAULT_GROWTH_PER_TOKEN * _bucket_length(row)) - math.log1p(
            DEFAULT_GROWTH_PER_TOKEN * _bucket_length(other)
        )

    def table(self) -> dict[str, Any]:
        """The measured cells as ``{"q": [...], "rows": [{"cache_length": L, "seconds": [...|None]}]}``."""
        rows = []
        for row in range(self.log_time.shape[0]):
            if np.any(self.weight[row] > 0):
                seconds = [None if np.isnan(v) else float(np.exp(v)) for v in self.log_time[row]]
                rows.append({"cache_length": _bucket_length(row), "seconds": seconds})
        return {"q": list(Q_GRID), "rows": rows}

    # --- files ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": "sam-decoding cost profile",
            "version": FILE_VERSION,
            "key": self.key,
            "q_grid": list(Q_GRID),
            "l_edges": list(L_EDGES),
            "log_time": [[None if np.isnan(v) else float(v) for v in row] for row in self.log_time],
            "weight": self.weight.tolist(),
            "calibration_seconds": self.calibration_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, path: Path | None = None, frozen: bool = False) -> CostProfile:
        """A profile from :meth:`to_json` output; raises ``ValueError`` for anything else."""
        if not isinstance(data, Mapping) or data.get("format") != "sam-decoding cost profile":
            raise ValueError("not a sam-decoding cost profile")
        if data.get("version") != FILE_VERSION:
            raise ValueError(f"cost profile version {data.get('version')!r} is not supported (expected {FILE_VERSION})")
        if list(data.get("q_grid", [])) != list(Q_GRID) or list(data.get("l_edges", [])) != list(L_EDGES):
            raise ValueError("cost profile grid differs from this version's; recalibrate")
        profile = cls(str(data.get("key", "file")), path=path, frozen=frozen)
        try:
            log_time = np.array([[np.nan if v is None else float(v) for v in row] for row in data["log_time"]])
            weight = np.asarray(data["weight"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed cost profile: {error}") from None
        if log_time.shape != profile.log_time.shape or weight.shape != profile.weight.shape:
            raise ValueError("malformed cost profile: table shape differs from the grid")
        if not np.all(np.isfinite(log_time[~np.isnan(log_time)])) or np.any(weight < 0):
            raise ValueError("malformed cost profile: non-finite times or negative weights")
        profile.log_time, profile.weight = log_time, np.minimum(weight, _MAX_WEIGHT)
        profile.calibration_seconds = float(data.get("calibration_seconds", 0.0))
        return profile

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, frozen: bool = True) -> CostProfile:
        """Read a profile file (e.g. one measured on a GPU); frozen by default, so it is used as given."""
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"cannot read cost profile {file}: {error.strerror or error}") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}: not a cost profile (invalid JSON: {error.msg})") from None
        try:
            return cls.from_json(data, path=None if frozen else file, frozen=frozen)
        except ValueError as error:
            raise ValueError(f"{file}: {error}") from None

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the profile atomically to ``path`` (default: where it was loaded from or will be cached)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with replacing_atomically(target) as temporary:
            Path(temporary).write_text(json.dumps(self.to_json()), encoding="utf-8")
        self._dirty = False

    def save_if_changed(self) -> None:
        """Save if observations arrived since the last save and the profile has a file."""
        if self._dirty and self.path is not None and not self.frozen:
            self.save()


def hardware_key(model: Any) -> str:
    """A short hash naming the model, its device and dtype, torch's thread count and version, and the processor."""
    import torch

    parameter = next(model.parameters())
    config = getattr(model, "config", None)
    config_text = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else repr(config)
    device = parameter.device
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    parts = [
        type(model).__name__,
        hashlib.sha256(config_text.encode()).hexdigest(),
        sum(p.numel() for p in model.parameters()),
        str(parameter.dtype),
        device.type,
        device_name,
        torch.get_num_threads(),
        torch.__version__,
        getattr(config, "_attn_implementation", None),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _max_positions(config: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibrate(model: Any, profile: CostProfile, *, budget_seconds: float = 2.0) -> float:
    """Time verification passes of :data:`CALIBRATION_Q` tokens on ``model`` into ``profile``; return seconds spent.

    Feeds random tokens over a cache of :data:`CALIBRATION_LENGTH` (then, budget allowing,
    :data:`CALIBRATION_LONG_LENGTH`) tokens; each q is timed at least once and the sweep repeats
    while time is left, keeping every pass as an observation (the profile averages them).
    """
    import torch
    from sam_decoding.kv_cache import cache_arguments, rollback_cache, truncate_cache

    started = time.perf_counter()
    parameter = next(model.parameters())
    device = parameter.device
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cache = rollback_cache(model.config)
    cache_kwargs = cache_arguments(model, cache)
    # Models with learned absolute positions (e.g. GPT-2) take no position beyond their table.
    positions_limit = _max_positions(model.config)
    length = min(CALIBRATION_LENGTH, max(positions_limit - max(CALIBRATION_Q), 1))
    long_length = CALIBRATION_LONG_LENGTH if CALIBRATION_LONG_LENGTH + max(CALIBRATION_LONG_Q) <= positions_limit else 0

    warmed: set[tuple[int, int]] = set()

    def timed_pass(q: int, length: int) -> float:
        if (q, length) not in warmed:
            # The first pass of a new shape also picks its kernels (on a GPU several times the
            # pass itself): run it untimed, or that one-time cost would stick to the cell.
            warmed.add((q, length))
            timed_pass(q, length)
        ids = torch.randint(0, vocab, (1, q), generator=generator).to(device)
        positions = torch.arange(length, length + q, device=device).unsqueeze(0)
        tick = time.perf_counter()
        model(input_ids=ids, position_ids=positions, use_cache=True, **cache_kwargs)
        synchronize()
        seconds = time.perf_counter() - tick
        truncate_cache(cache, length)
        return seconds

    def prefill(length: int) -> None:
        current = cache.get_seq_length()
        ids = torch.randint(0, vocab, (1, length - current), generator=generator).to(device)
        positions = torch.arange(current, length, device=device).unsqueeze(0)
        model(input_ids=ids, position_ids=positions, use_cache=True, **cache_kwargs)

    with torch.no_grad():
        prefill(length)
        # Untimed passes first: an idle GPU runs at a fraction of its clock until it has been busy
        # for a moment (on the H200 here the first sweep timed 27-37 ms passes that take 16-19 ms).
        burn_until = time.perf_counter() + budget_seconds * CALIBRATION_BURN_SHARE
        for _ in range(1000):
            timed_pass(1, length)
            if time.perf_counter() >= burn_until:
                break
        for sweep in range(CALIBRATION_SWEEPS):
            for index, q in enumerate(CALIBRATION_Q):
                if index >= _ESSENTIAL_Q and time.perf_counter() - started > budget_seconds * 0.7:
                    break
                profile.observe(q, length, timed_pass(q, length), force=True)
            if time.perf_counter() - started > budget_seconds * 0.6:
                break
        for q in CALIBRATION_LARGE_Q:
            if length + q > positions_limit or time.perf_counter() - started > budget_seconds * 0.6:
                break
            profile.observe(q, length, timed_pass(q, length), force=True)
        if long_length and time.perf_counter() - started < budget_seconds * 0.8:
            prefill(long_length)
            for q in CALIBRATION_LONG_Q:
                profile.observe(q, long_length, timed_pass(q, long_length), force=True)
    spent = time.perf_counter() - started
    profile.calibration_seconds = spent
    return spent
