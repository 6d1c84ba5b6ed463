"""Quantiles and summaries of raw samples.

Percentiles are always computed from the merged raw samples of every worker, never by
averaging per-worker percentiles: a worker with few, slow samples would otherwise count as
much as one with many fast ones, and the mean of two p99s is the p99 of nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from datamodel.errors import ConfigError

PERCENTILES: dict[str, float] = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
"""The quantiles a :class:`Summary` reports, by field name."""


def quantile_sorted(sorted_values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-quantile (``0 <= q <= 1``) of ascending ``sorted_values``.

    Linear interpolation between the two nearest ranks, the same as numpy's default
    (``method="linear"``). The input is not re-sorted: pass it sorted. This is the one
    quantile of loadlens: summaries, targets, the live display and comparisons all use it.
    """
    if not len(sorted_values):
        raise ConfigError("quantile of no values")
    if not 0 <= q <= 1:
        raise ConfigError(f"quantile q must be within 0..1, got {q}")
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    frac = position - low
    a, b = float(sorted_values[low]), float(sorted_values[high])
    # Interpolate from the nearer end, as numpy does, so that the result stays exact at ends.
    return b - (b - a) * (1 - frac) if frac >= 0.5 else a + (b - a) * frac


def quantile(values: Iterable[float], q: float) -> float:
    """The ``q``-quantile (``0 <= q <= 1``) of ``values`` in any order."""
    if isinstance(values, np.ndarray):  # millions of them: sorted as an array
        return quantile_sorted(np.sort(values.astype(np.float64, copy=False)), q)
    return quantile_sorted(sorted(float(v) for v in values), q)


@dataclass(frozen=True)
class Summary:
    """Count and latency figures of one group of samples (seconds; ``None`` when empty)."""

    count: int
    """How many samples."""
    mean: float | None
    """Arithmetic mean."""
    min: float | None
    """Smallest sample."""
    p50: float | None
    """Median."""
    p90: float | None
    """90th percentile."""
    p95: float | None
    """95th percentile."""
    p99: float | None
    """99th percentile."""
    max: float | None
    """Largest sample."""

    def as_dict(self) -> dict[str, int | float | None]:
        """The figures as a plain dict (for JSON), in field order."""
        return dataclasses.asdict(self)


def summarize(values: Iterable[float]) -> Summary:
    """Summarise raw samples; no samples gives ``count=0`` and ``None`` for every figure."""
    if isinstance(values, np.ndarray):
        ordered = np.sort(values.astype(np.float64, copy=False))
    else:
        ordered = np.sort(np.fromiter((float(v) for v in values), dtype=np.float64))
    if np.isnan(ordered).any():
        raise ConfigError("cannot summarise samples that contain NaN")
    if not ordered.size:
        return Summary(
            count=0, mean=None, min=None, p50=None, p90=None, p95=None, p99=None, max=None
        )
    figures = {name: quantile_sorted(ordered, q) for name, q in PERCENTILES.items()}
    return Summary(
        count=int(ordered.size),
        mean=math.fsum(ordered) / len(ordered),
        min=float(ordered[0]),
        max=float(ordered[-1]),
        **figures,
    )
