"""Statistics for comparing load-test runs, whose records are not independent samples.

Queueing makes neighbouring operations slow together, and two runs of one configuration
drift apart as a whole. So the units here are **time blocks** within a run and **runs**:

- :func:`n_blocks` cuts a run's series into blocks several times longer than its
  autocorrelation time (:func:`autocorrelation_time`), so that blocks are nearly
  independent; figures that add up over records (counts) then get an honest variance from
  the spread of their block sums (:func:`exceedance`, :func:`block_rate`).
- A latency quantile is tested through exceedances: with ``T`` the pooled q-quantile of
  both sides, "no change" means each side has the same share of operations slower than
  ``T``. This stays calibrated in the tail (p99), where resampling sample quantiles does not.
- :func:`compare_levels` compares per-run figures of two sides with a random-effects model:
  the variance of a side's mean is its runs' within-run variance plus a between-run
  variance, estimated from the runs when there are several and taken, with its degrees of
  freedom, from an A/A calibration of the machine (a :class:`Prior`). With one run a side,
  run-to-run drift cannot be seen in the data: only the prior accounts for it.
- :func:`compare_pairs` tests the block pairs of an interleaved A/B (both sides in one
  session, short blocks of the same load alternating): a paired t on the pairs'
  differences, where slow drift cancels.
- :func:`holm` controls the family of rows of one comparison, and
  :func:`detectable_effect` sizes the smallest change a row could have seen.

Everything is deterministic: numpy, and scipy.stats for the t and normal distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

Array = NDArray[np.float64]

BLOCK_TAUS = 5.0
"""A block spans at least this many autocorrelation times."""
MAX_BLOCKS = 20
"""Most blocks a run is cut into."""
MIN_BLOCKS = 2
"""Fewest blocks (a variance needs two)."""


def autocorrelation_time(values: Sequence[float] | Array) -> float:
    """The integrated autocorrelation time of ``values`` in their order (1 = independent).

    ``1 + 2 * sum of autocorrelations``, summed until they drop below 0.05, computed on the
    ranks of the values: a monotone change of some values (a slower tail) leaves it as is.
    """
    raw = np.asarray(values, dtype=np.float64)
    n = raw.size
    if n < 4:
        return 1.0
    x = np.argsort(np.argsort(raw, kind="stable"), kind="stable").astype(np.float64)
    if float(np.ptp(raw)) == 0:
        return 1.0
    x = x - x.mean()
    var = float(x.var())
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / (var * n)
    tau = 1.0
    for k in range(1, n // 4):
        if acf[k] <= 0.05:
            break
        tau += 2 * float(acf[k])
    return tau


def n_blocks(values: Sequence[float] | Array) -> int:
    """How many blocks to cut ``values`` into: each :data:`BLOCK_TAUS` autocorrelation times
    long, between :data:`MIN_BLOCKS` and :data:`MAX_BLOCKS`."""
    n = len(values)
    if n < 2 * MIN_BLOCKS:
        return 1
    blocks = int(n / (BLOCK_TAUS * autocorrelation_time(values)))
    return max(MIN_BLOCKS, min(MAX_BLOCKS, blocks))


@dataclass(frozen=True)
class Level:
    """One run's figure, its variance within the run, and the degrees of freedom of that."""

    value: float
    """The figure (a share of slow operations, a log rate, a log peak)."""
    var: float
    """Its variance within the run."""
    df: float = math.inf
    """Degrees of freedom of ``var`` (blocks minus one; ``inf`` when exact)."""


def _block_sums(flags: Array, blocks: int) -> tuple[Array, Array]:
    parts = np.array_split(flags, blocks)
    return np.array([p.sum() for p in parts]), np.array([len(p) for p in parts], dtype=float)


def exceedance(ordered: Sequence[float] | Array, threshold: float, blocks: int) -> Level:
    """Share of ``ordered`` (values in issue order) above ``threshold``, with the variance of
    that share from the spread of its ``blocks`` consecutive block counts (a ratio
    estimator), and ``blocks - 1`` degrees of freedom."""
    values = np.asarray(ordered, dtype=np.float64)
    if values.size == 0:
        return Level(math.nan, math.nan, 0.0)
    above = (values > threshold).astype(np.float64)
    share = float(above.mean())
    if blocks < 2:
        return Level(share, share * (1 - share) / values.size, max(values.size - 1.0, 1.0))
    counts, sizes = _block_sums(above, blocks)
    spread = float(((counts - share * sizes) ** 2).sum()) / values.size**2 * blocks / (blocks - 1)
    return Level(share, spread, blocks - 1.0)


def block_rate(times: Sequence[float] | Array, start: float, end: float, blocks: int) -> Level:
    """Log of events per second over ``[start, end]`` (``times`` are the events), with the
    variance of that log from the spread of event counts in ``blocks`` equal time slices."""
    t = np.asarray(times, dtype=np.float64)
    seconds = end - start
    if t.size == 0 or seconds <= 0:
        return Level(math.nan, math.nan, 0.0)
    k = max(blocks, 1)
    edges = np.minimum(((t - start) / seconds * k).astype(np.intp), k - 1)
    counts = np.bincount(np.maximum(edges, 0), minlength=k).astype(np.float64)
    mean = counts.mean()
    if k < 2 or mean <= 0:
        return Level(math.log(t.size / seconds), 1.0 / t.size, math.inf)
    # Var of the log of a mean of k block counts: (var of counts / k) / mean^2 (delta method).
    return Level(math.log(t.size / seconds), float(counts.var(ddof=1)) / k / mean**2, k - 1.0)


@dataclass(frozen=True)
class Prior:
    """What an A/A calibration says about run-to-run drift of one kind of figure."""

    sigma: float
    """Standard deviation of a run's figure around its configuration's level."""
    df: float
    """Degrees of freedom behind ``sigma`` (runs of the calibration minus one)."""
    source: str
    """Where it came from (a calibration file, or the shipped default)."""


@dataclass(frozen=True)
class Test:
    """Side B against side A for one figure."""

    diff: float
    """Mean figure of B's runs minus A's."""
    low: float
    """Lower bound of the interval of ``diff``."""
    high: float
    """Upper bound."""
    p: float
    """Two-sided p-value of "no change"; ``nan`` when nothing varies (see :attr:`testable`)."""
    se: float
    """Standard error of ``diff``; ``0`` when nothing varies."""
    df: float
    """Degrees of freedom of the t reference (Welch-Satterthwaite; ``inf``: normal)."""
    sigma_between: float
    """Run-to-run standard deviation used."""

    @property
    def testable(self) -> bool:
        """Whether anything varies: no within-run, between-run or prior variance at all
        means the data cannot tell a change from chance (never that it is certain)."""
        return self.se > 0


def compare_levels(
    a: Sequence[Level], b: Sequence[Level], prior: Prior | None, *, confidence: float = 0.95
) -> Test:
    """Test whether B's mean figure differs from A's, runs as units (see the module docstring).

    The between-run variance pools the prior (``sigma^2`` with ``df`` degrees of freedom)
    with what the runs show beyond their within-run noise. The t reference's degrees of
    freedom combine the within-run and between-run parts (Welch-Satterthwaite).

    When nothing varies at all (no within-run variance, one run a side or identical runs,
    and no prior drift), the result is not testable: ``p``, ``low`` and ``high`` are
    ``nan`` and ``se`` is 0. A zero variance is missing information, not certainty.
    """
    if not a or not b:
        raise ValueError("compare_levels needs at least one run a side")
    xa, xb = np.array([x.value for x in a]), np.array([x.value for x in b])
    diff = float(xb.mean() - xa.mean())
    parts: list[tuple[float, float]] = []  # (variance of diff contributed, its df)
    for side in (a, b):
        for level in side:
            parts.append((level.var / len(side) ** 2, level.df))
    nu_data = len(a) + len(b) - 2
    ss = float(((xa - xa.mean()) ** 2).sum() + ((xb - xb.mean()) ** 2).sum())
    within_mean = float(np.mean([lv.var for lv in (*a, *b)]))
    s2_data = max(ss / nu_data - within_mean, 0.0) if nu_data else 0.0
    nu_prior = prior.df if prior else 0.0
    df_between = nu_prior + nu_data
    sigma2 = (
        ((nu_prior * prior.sigma**2 if prior else 0.0) + nu_data * s2_data) / df_between
        if df_between > 0
        else 0.0
    )
    if sigma2 > 0:
        parts.append((sigma2 * (1 / len(a) + 1 / len(b)), df_between))
    var = sum(v for v, _ in parts)
    if var <= 0:
        return Test(diff, math.nan, math.nan, math.nan, 0.0, math.inf, 0.0)
    denominator = sum(v * v / df for v, df in parts if v > 0 and math.isfinite(df) and df > 0)
    df = var * var / denominator if denominator > 0 else math.inf
    se = math.sqrt(var)
    half = t_critical(confidence, df) * se
    return Test(
        diff, diff - half, diff + half, t_two_sided_p(diff / se, df), se, df, math.sqrt(sigma2)
    )


def compare_pairs(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> Test:
    """Test whether B's figure differs from A's, block pairs as the units.

    ``a[i]`` and ``b[i]`` are one figure of the two blocks of pair ``i`` of an interleaved
    A/B (the same load, run one after the other). Drift slower than a pair falls on both
    and cancels in ``d = b - a``; the test is Student's paired t on the mean of ``d``
    (``n - 1`` degrees of freedom), so the spread of the pairs' differences, whatever its
    source (noise within a block, drift within a pair), is the whole error term, and no
    calibration is needed. Fewer than two pairs, or differences that are all zero, are
    not testable (``se`` 0, ``p`` ``nan``): no spread is no information.

    Differences that are all equal but not zero (every block of B slower than the pooled
    quantile, none of A's) have no spread for a t; then the sides' order within each pair
    is what was randomized, and the exact sign-flip test says how often chance alone puts
    every pair on one side: ``p = 2 ** (1 - n)``. Its ``se`` is the one that gives that
    ``p`` in the t reference, so intervals and power read the same evidence.
    """
    if len(a) != len(b):
        raise ValueError(
            f"compare_pairs needs one figure a side per pair, got {len(a)} and {len(b)}"
        )
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    diff = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or not (sd > 0 or diff != 0):
        return Test(diff, math.nan, math.nan, math.nan, 0.0, math.inf, 0.0)
    df = n - 1.0
    if sd > 0:
        se = sd / math.sqrt(n)
    else:  # all equal, not zero: the exact sign-flip p, as a t with the se that gives it
        p = 2.0 ** (1 - n)
        se = abs(diff) / t_critical(1 - p, df)
    half = t_critical(confidence, df) * se
    return Test(diff, diff - half, diff + half, t_two_sided_p(diff / se, df), se, df, sd)


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rejections at family-wise level ``alpha``, in input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    m = len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom (normal if ``inf``)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    tail = stats.norm.sf(abs(t)) if math.isinf(df) else stats.t.sf(abs(t), df)
    return min(1.0, 2.0 * float(tail))


def t_critical(confidence: float, df: float) -> float:
    """The ``t`` with ``P(|T| <= t) = confidence`` (e.g. 2.228 for 0.95 and ``df=10``)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    q = 0.5 + confidence / 2.0
    return float(stats.norm.ppf(q) if math.isinf(df) else stats.t.ppf(q, df))


DETECT_POWER = 0.8
"""Power at which a row's minimum detectable change is stated."""


def detectable_effect(
    se: float, df: float, *, alpha: float = 0.05, power: float = DETECT_POWER
) -> float:
    """Smallest true change (in the units of ``diff``) that a two-sided test at ``alpha``
    with standard error ``se`` detects with ``power``: ``(t(1 - alpha/2) + t(power)) * se``,
    with ``df`` degrees of freedom (the normal quantiles when ``inf``)."""
    if se <= 0:
        return 0.0
    return (t_critical(1 - alpha, df) + t_critical(2 * power - 1, df)) * se


def power_rounds(
    effect: float,
    sigma: float,
    within: float,
    *,
    alpha: float = 0.05,
    power: float = 0.9,
    most: int = 50,
) -> int | None:
    """Fewest runs a side that detect a change of size ``effect`` (in the figure's units)
    with ``power``, given run-to-run sd ``sigma`` and one run's within-run variance;
    two-sided at ``alpha``, normal reference. ``None`` when ``most`` are not enough."""
    if effect <= 0:
        return None
    if sigma**2 + within <= 0:  # nothing varies: one run a side shows any change
        return 1
    z = t_critical(1 - alpha, math.inf) + t_critical(2 * power - 1, math.inf)
    for k in range(1, most + 1):
        if effect / math.sqrt(2 * (sigma**2 + within) / k) >= z:
            return k
    return None
