"""The leak check's Theil-Sen slope and its one-sided 99% lower bound (scipy.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from profiling.verdict.health import _slope_per_min


def sen_bound(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Median pairwise slope and Sen's (1968) lower bound, written out (no ties)."""
    n = len(t)
    i, j = np.triu_indices(n, k=1)
    slopes = np.sort((v[j] - v[i]) / (t[j] - t[i]))
    spread = 2.326 * np.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    low = int(np.clip(np.round((len(slopes) - spread) / 2) - 1, 0, len(slopes) - 1))
    return float(np.median(slopes)) * 60, float(slopes[low]) * 60


def test_steady_growth_has_a_lower_bound_just_below_its_slope() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(120.0) * 5 + rng.random(120)
    v = 200 + t * 0.1 + rng.normal(scale=2.0, size=120)  # 6 MB/min
    slope, low = _slope_per_min(t, v)
    assert slope == pytest.approx(6.0, rel=0.05)
    assert 5.0 < low < slope
    assert (slope, low) == pytest.approx(sen_bound(t, v), rel=1e-9)


def test_a_two_valued_flat_series_has_no_positive_bound() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(200.0)
    v = np.where(rng.random(200) < 0.5, 100.0, 150.0)  # a buffer that comes and goes
    slope, low = _slope_per_min(t, v)
    assert low <= 0.0 <= slope + 1e-9


def test_too_few_samples_or_no_time_span_give_no_slope() -> None:
    assert _slope_per_min(np.array([0.0, 1.0]), np.array([1.0, 2.0])) == (0.0, 0.0)
    assert _slope_per_min(np.zeros(5), np.arange(5.0)) == (0.0, 0.0)
