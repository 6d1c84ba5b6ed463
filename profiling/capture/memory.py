"""Memory snapshots taken inside a replica: process, MLX, caches and Python allocations.

tracemalloc sees Python objects only (not MLX or BLAS buffers, which MLX's own counters
and the process's USS cover), so the three views are reported side by side.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import mlx.core as mx
import psutil

TOP_N = 15


class MemoryWatcher:
    """Takes labelled snapshots; each one diffs Python allocations against the previous."""

    def __init__(self, *, trace_python: bool = True, frames: int = 1) -> None:
        self.trace_python = trace_python
        if trace_python and not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        self._previous: tracemalloc.Snapshot | None = None
        self._process = psutil.Process()
        self._peak = 0

    def peak_since_start(self) -> int:
        """MLX's peak memory since this watcher began (snapshots reset MLX's own peak)."""
        return max(self._peak, mx.get_peak_memory())

    def snapshot(self, label: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Measure now; ``mx.reset_peak_memory`` afterwards so each phase has its own peak."""
        full = self._process.memory_full_info()
        record: dict[str, Any] = {
            "label": label,
            "t": time.time(),
            "uss": full.uss,
            "pss": getattr(full, "pss", None),
            "rss": full.rss,
            "mlx_active": mx.get_active_memory(),
            "mlx_peak": mx.get_peak_memory(),
            "mlx_cache": mx.get_cache_memory(),
            "tracemalloc_top": [],
            "tracemalloc_diff": [],
            **(extra or {}),
        }
        self._peak = max(self._peak, record["mlx_peak"])
        mx.reset_peak_memory()
        if self.trace_python and tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            record["tracemalloc_top"] = [
                {"where": str(s.traceback), "bytes": s.size, "count": s.count}
                for s in snap.statistics("lineno")[:TOP_N]
            ]
            if self._previous is not None:
                record["tracemalloc_diff"] = [
                    {
                        "where": str(d.traceback),
                        "bytes_diff": d.size_diff,
                        "count_diff": d.count_diff,
                    }
                    for d in snap.compare_to(self._previous, "lineno")[:TOP_N]
                ]
            self._previous = snap
        return record
