"""Two-sample statistics for comparing runs, in plain numpy (no scipy).

Everything here is pure and deterministic: the bootstrap takes a seed, and the same
inputs always give the same answer. Samples are one-dimensional sequences of floats.

- :func:`quantile` matches ``numpy.quantile(values, q)`` (``method="linear"``).
- :func:`mann_whitney_u` tests whether one sample tends to be larger than the other.
- :func:`bootstrap_ratio_ci` gives a confidence interval of ``quantile(b) / quantile(a)``.
- :func:`welch_log_ratio` compares a few per-run figures (throughput, memory peak) on a
  log scale, where a t-test still works with three runs per side and a rank test cannot.
- :func:`two_proportion_test` compares error rates from failure counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

Sample = Sequence[float] | NDArray[np.float64]
"""A one-dimensional sample of floats."""


def _array(values: Sample, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: no values")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite numbers")
    return arr


def _check_q(q: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be within 0..1, got {q}")


def _lerp(low: NDArray[np.float64], high: NDArray[np.float64], t: float) -> NDArray[np.float64]:
    # Interpolate from the nearer end, as numpy does, so results stay exact at the ends.
    if t >= 0.5:
        return high - (high - low) * (1.0 - t)
    return low + (high - low) * t


def _ranks(n: int, q: float) -> tuple[int, int, float]:
    """The two sorted positions around quantile ``q`` of ``n`` values, and the weight."""
    position = (n - 1) * q
    low = math.floor(position)
    return low, min(low + 1, n - 1), position - low


def quantile(values: Sample, q: float) -> float:
    """The ``q``-quantile (``0 <= q <= 1``) of ``values``, like ``numpy.quantile``.

    Linear interpolation between the two nearest order statistics (numpy's default
    ``method="linear"``). Raises ``ValueError`` for an empty sample or ``q`` outside 0..1.
    """
    _check_q(q)
    arr = np.sort(_array(values, "quantile"))
    low, high, frac = _ranks(arr.size, q)
    return float(_lerp(arr[low : low + 1], arr[high : high + 1], frac)[0])


def _boot_quantiles(
    values: NDArray[np.float64], q: float, n_boot: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """``quantile(resample, q)`` for ``n_boot`` resamples (with replacement) of ``values``.

    Drawing ``n`` values with replacement is drawing ``n`` uniforms ``U`` and taking the
    sorted value at ``floor(n * U)``; that map keeps order, so the ``k``-th smallest value
    of a resample is the sorted value at ``floor(n * U_(k))``, with ``U_(k)`` the ``k``-th
    smallest uniform. Only the two order statistics around the quantile matter, and their
    distribution is known: ``U_(k) ~ Beta(k, n - k + 1)`` and, given ``U_(k) = u``,
    ``U_(k+1) = u + (1 - u) * Beta(1, n - k)``. Sampling those two is the same bootstrap as
    resampling whole arrays, at O(n_boot) instead of O(n_boot * n).
    """
    ordered = np.sort(values)
    n = ordered.size
    low, high, frac = _ranks(n, q)
    u_low = rng.beta(low + 1, n - low, size=n_boot)
    u_high = u_low + (1.0 - u_low) * rng.beta(1, n - high, size=n_boot) if high > low else u_low
    pick_low = np.minimum((u_low * n).astype(np.int64), n - 1)
    pick_high = np.minimum((u_high * n).astype(np.int64), n - 1)
    return _lerp(ordered[pick_low], ordered[pick_high], frac)


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return 1.0 if num == 0 else math.inf
    return num / den


def bootstrap_ratio_ci(
    a: Sample,
    b: Sample,
    *,
    q: float = 0.5,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(ratio, low, high)``: ``quantile(b, q) / quantile(a, q)`` and its bootstrap interval.

    A percentile bootstrap: each side is resampled with replacement ``n_boot`` times, on
    its own; the interval holds the middle ``confidence`` of the resampled ratios.
    Resampling is vectorised (see :func:`_boot_quantiles`) and seeded, so the same inputs
    give the same interval. A zero denominator gives an infinite ratio; resamples whose
    ratio is not finite are left out of the interval (``nan`` bounds when none is
    finite). Raises ``ValueError`` for an empty side, ``n_boot < 1`` or ``confidence``
    outside (0, 1).
    """
    _check_q(q)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    arr_a, arr_b = _array(a, "a"), _array(b, "b")
    ratio = _ratio(quantile(arr_b, q), quantile(arr_a, q))
    rng = np.random.default_rng(seed)
    boot_a = _boot_quantiles(arr_a, q, n_boot, rng)
    boot_b = _boot_quantiles(arr_b, q, n_boot, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(boot_a == boot_b, 1.0, boot_b / boot_a)
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return ratio, math.nan, math.nan
    tail = (1.0 - confidence) / 2
    return ratio, quantile(ratios, tail), quantile(ratios, 1.0 - tail)


def _normal_two_sided(z: float) -> float:
    """``P(|Z| >= z)`` for a standard normal ``Z`` and ``z >= 0``."""
    return min(1.0, math.erfc(z / math.sqrt(2.0)))


def mann_whitney_u(a: Sample, b: Sample) -> tuple[float, float]:
    """``(U, p)``: the Mann-Whitney U statistic of ``a`` and its two-sided p-value.

    ``U`` counts the pairs ``(x in a, y in b)`` with ``x > y``, a tie counting one half;
    ``U`` near ``len(a) * len(b) / 2`` means neither side tends to be larger. Tied values
    get their average rank, and the variance is corrected for ties. The p-value comes from
    the normal approximation with a continuity correction, as ``scipy.stats.mannwhitneyu``
    with ``method="asymptotic"`` computes it: good from about 8 values per side, only
    approximate below that (there is no exact small-sample table here). When every value
    is equal there is no evidence of a difference and ``p`` is 1. Raises ``ValueError`` for
    an empty side.
    """
    arr_a, arr_b = _array(a, "a"), _array(b, "b")
    n_a, n_b = arr_a.size, arr_b.size
    n = n_a + n_b
    _, inverse, counts = np.unique(
        np.concatenate([arr_a, arr_b]), return_inverse=True, return_counts=True
    )
    first_rank = np.cumsum(counts) - counts + 1
    mean_rank = first_rank + (counts - 1) / 2.0
    rank_sum_a = float(mean_rank[inverse[:n_a]].sum())
    u = rank_sum_a - n_a * (n_a + 1) / 2.0
    ties = float(np.sum(counts.astype(np.float64) ** 3 - counts))
    variance = n_a * n_b / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return u, 1.0
    z = max(abs(u - n_a * n_b / 2.0) - 0.5, 0.0) / math.sqrt(variance)
    return u, _normal_two_sided(z)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for aa in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return min(1.0, _betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_critical(confidence: float, df: float) -> float:
    """The ``t`` with ``P(|T| <= t) = confidence`` (e.g. 2.228 for 0.95 and ``df=10``)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    target = 1.0 - confidence
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > target:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_two_sided_p(mid, df) > target:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


def welch_log_ratio(
    a: Sample, b: Sample, *, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """``(ratio, low, high, p)`` of the geometric means of positive ``b`` over ``a``.

    Welch's t-test on ``log(values)``: a ratio test for a few per-run figures (3 or more
    per side), assuming they are roughly log-normal. ``ratio`` is
    ``exp(mean(log b) - mean(log a))`` with its t interval. When neither side varies,
    ``p`` is 1 for equal means and 0 otherwise. Raises ``ValueError`` for fewer than two
    values per side or a value that is not positive.
    """
    arr_a, arr_b = _array(a, "a"), _array(b, "b")
    if arr_a.size < 2 or arr_b.size < 2:
        raise ValueError("Welch's t-test needs at least two values per side")
    if np.any(arr_a <= 0) or np.any(arr_b <= 0):
        raise ValueError("a log-ratio test needs positive values")
    log_a, log_b = np.log(arr_a), np.log(arr_b)
    diff = float(log_b.mean() - log_a.mean())
    var_a = float(log_a.var(ddof=1)) / arr_a.size
    var_b = float(log_b.var(ddof=1)) / arr_b.size
    se = math.sqrt(var_a + var_b)
    ratio = math.exp(diff)
    if se == 0:
        return ratio, ratio, ratio, 1.0 if diff == 0 else 0.0
    df = (var_a + var_b) ** 2 / (var_a**2 / (arr_a.size - 1) + var_b**2 / (arr_b.size - 1))
    half = t_critical(confidence, df) * se
    p = t_two_sided_p(diff / se, df)
    return ratio, math.exp(diff - half), math.exp(diff + half), p


def two_proportion_test(
    failed_a: int, total_a: int, failed_b: int, total_b: int, *, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """``(ratio, low, high, p)`` comparing the rates ``failed_b/total_b`` and ``failed_a/total_a``.

    ``p`` is the two-sided pooled two-proportion z-test. The interval is the log (Katz)
    interval of the rate ratio; with a zero count, one half is added to every count
    (Haldane-Anscombe) so that it stays finite. ``ratio`` is the plain rate ratio
    (infinite when only ``b`` fails, 1 when neither does). Raises ``ValueError`` for an
    empty side or counts out of range.
    """
    for failed, total in ((failed_a, total_a), (failed_b, total_b)):
        if total < 1 or not 0 <= failed <= total:
            raise ValueError(f"bad counts: {failed} failed of {total}")
    rate_a, rate_b = failed_a / total_a, failed_b / total_b
    ratio = _ratio(rate_b, rate_a)
    pooled = (failed_a + failed_b) / (total_a + total_b)
    spread = pooled * (1 - pooled) * (1 / total_a + 1 / total_b)
    p = 1.0 if spread == 0 else _normal_two_sided(abs(rate_b - rate_a) / math.sqrt(spread))
    if failed_a == 0 and failed_b == 0:
        return ratio, math.nan, math.nan, p
    extra = 0.5 if 0 in (failed_a, failed_b) else 0.0
    xa, na, xb, nb = failed_a + extra, total_a + extra, failed_b + extra, total_b + extra
    log_ratio = math.log((xb / nb) / (xa / na))
    se = math.sqrt(max(1 / xa - 1 / na + 1 / xb - 1 / nb, 0.0))
    z = -_normal_quantile((1.0 - confidence) / 2)
    return ratio, math.exp(log_ratio - z * se), math.exp(log_ratio + z * se), p


def _normal_quantile(p: float) -> float:
    """The standard normal quantile, by bisection on ``erfc`` (exact to ~1e-12)."""
    low, high = -40.0, 40.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0
