"""A run's records as the comparison's tests see them: ordered series, blocks, levels, and
the scales that read a tested difference as a ratio of the figure (:class:`Scale`).

Shared by :mod:`profiling.verdict.compare` (A against B) and
:mod:`profiling.verdict.calibration` (A against A, to measure drift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from datamodel.frame import Frame
from datamodel.quantiles import quantile
from datamodel.runfolder import RunData
from profiling.verdict.statistics import Array, Level, block_rate, exceedance, n_blocks

LATENCY_METRICS = {"p50_s": 0.50, "p95_s": 0.95, "p99_s": 0.99}
"""Latency metrics per op and their quantile."""


@dataclass(frozen=True)
class RunFigures:
    """One run's series as the tests use them."""

    durations: dict[str, Array]
    """op -> durations of its records in issue order (failed ones at the time they took):
    an array, eight bytes a record."""
    tested: dict[str, Array]
    """op -> the same with failures as infinitely slow (a failure is never a good latency)."""
    blocks: dict[str, int]
    """op -> time blocks its series is cut into (from its autocorrelation)."""
    throughput: dict[str, Level]
    """op (or ``all``) -> log ok ops per second and its block variance."""
    failed: int
    """Records that failed."""
    total: int
    """Records."""
    block_failures: list[tuple[int, int]]
    """(failed, total) per time block of the whole run."""

    def failure_level(self, null_rate: float) -> Level | None:
        """The run's share of failed records, with its variance from the spread of the
        block failure counts (a ratio estimator, as :func:`exceedance`), but at least the
        binomial variance at ``null_rate`` (the rate both sides would share if nothing
        changed): failures spread evenly over blocks by chance are not a certainty.
        ``None`` when the run has no records."""
        if not self.total:
            return None
        share = self.failed / self.total
        floor = null_rate * (1 - null_rate) / self.total
        blocks = [(f, t) for f, t in self.block_failures if t]
        if len(blocks) < 2:
            return Level(share, floor, max(self.total - 1.0, 1.0))
        spread = sum((f - share * t) ** 2 for f, t in blocks) / self.total**2
        k = len(blocks)
        return Level(share, max(spread * k / (k - 1), floor), k - 1.0)

    @classmethod
    def of(cls, run: RunData) -> RunFigures:
        """The series of ``run``'s records."""
        frame = Frame.of(run.records)
        all_planned = frame.value("planned")
        rows = np.flatnonzero(all_planned > 0)
        rows = rows[np.argsort(all_planned[rows], kind="stable")]
        planned, duration = all_planned[rows], frame.value("duration")[rows]
        ok = frame.ok[rows]
        labels = frame.labels("op")[rows]
        window = (float(planned.min()), float((planned + duration).max())) if rows.size else None
        ops = sorted(set(labels.tolist()))
        durations = {op: duration[labels == op] for op in ops}
        tested_all = np.where(ok, duration, math.inf)
        tested = {op: tested_all[labels == op] for op in ops}
        blocks = {op: n_blocks(durations[op]) for op in ops}
        throughput: dict[str, Level] = {}
        if window and window[1] > window[0]:
            for op in [*ops, "all"]:
                times = planned[ok & ((labels == op) if op != "all" else True)]
                if times.size:
                    k = blocks.get(op) or n_blocks(duration)
                    throughput[op] = block_rate(times, window[0], window[1], k)
        k = n_blocks(duration) if rows.size else 1
        failures = [(int((~part).sum()), len(part)) for part in np.array_split(ok, max(k, 1))]
        return cls(
            durations, tested, blocks, throughput, int((~ok).sum()), int(rows.size), failures
        )


def latency_levels(
    a: Sequence[RunFigures], b: Sequence[RunFigures], op: str, q: float
) -> tuple[float, list[Level], list[Level]]:
    """The pooled ``q``-quantile ``T`` of ``op`` over both sides, and each run's share of
    operations slower than ``T`` (with its block variance)."""
    threshold = quantile(pool([*a, *b], op), q)
    levels = [
        [exceedance(f.tested[op], threshold, f.blocks[op]) for f in side if has(f, op)]
        for side in (a, b)
    ]
    return threshold, levels[0], levels[1]


def pool(figures: Sequence[RunFigures], op: str) -> Array:
    """The durations of ``op`` over ``figures``, run after run, as one array."""
    parts = [f.durations[op] for f in figures if op in f.durations]
    return np.concatenate(parts) if parts else np.empty(0)


def has(figures: RunFigures, op: str) -> bool:
    """Whether ``figures`` has records of ``op``."""
    return op in figures.tested and figures.tested[op].size > 0


class Scale(Protocol):
    """How a row's tested difference reads as a change of its value (B over A)."""

    def ratio(self, shift: float) -> float:
        """The ratio B/A a tested difference ``shift`` stands for."""
        ...

    def shift(self, ratio: float) -> float:
        """The tested difference a ratio B/A would make."""
        ...


@dataclass(frozen=True)
class LogScale:
    """A test of the log of a figure (a rate, a peak): the difference is the log ratio."""

    def ratio(self, shift: float) -> float:
        """``e^shift``."""
        return math.exp(shift) if not math.isnan(shift) else math.nan

    def shift(self, ratio: float) -> float:
        """``log(ratio)``."""
        return math.log(ratio) if ratio > 0 else -math.inf


@dataclass(frozen=True)
class RateScale:
    """A test of a share (the error rate): a difference read as a ratio of ``base``."""

    base: float
    """The share a ratio is of (the pooled share of both sides)."""

    def ratio(self, shift: float) -> float:
        """``1 + shift / base``."""
        return 1.0 + shift / self.base

    def shift(self, ratio: float) -> float:
        """``base * (ratio - 1)``."""
        return self.base * (ratio - 1.0)


SCALE_SPAN = 30.0
"""Widest log ratio :meth:`ShareScale.ratio` searches (``e^30``: any ratio that matters)."""


@dataclass(frozen=True)
class ShareScale:
    """Reads a change of the share of operations slower than ``T`` (the pooled quantile) as
    a ratio of the quantile, through the baseline's own distribution of durations.

    If every operation of B were ``r`` times as slow as A's, B's share above ``T`` would be
    ``S(T / r)``, ``S`` being A's survival function; the change of the share is then
    ``S(T / r) - S(T)``: :meth:`shift`. That map rises with ``r``, and :meth:`ratio`
    inverts it, so an interval (or a detectable change) of the share becomes one of the
    quantile ratio. It is an approximation: exact when B is A scaled as a whole, rougher
    for a change in the tail alone, and failed operations (slower than any ``T`` in the
    test) read as slowness. A's own ``S`` rather than the pooled one (the mixture of both
    sides, which sits between them only for small changes) keeps a large change in the
    tail unbiased and its limits real: a B that is faster can at most bring its share to
    zero, so a share interval reaching below ``-S(T)`` has no lower ratio (``0``).
    ``S`` is the empirical survival function, interpolated linearly in log duration.
    """

    log_values: Array
    """Distinct logs of A's positive durations, ascending."""
    cdf: Array
    """Share of A's durations at or below each of :attr:`log_values`."""
    log_threshold: float
    """Log of the pooled quantile ``T``."""

    @classmethod
    def of(cls, durations: Sequence[float] | Array, threshold: float) -> ShareScale | None:
        """The scale of side A's ``durations`` around ``threshold``; ``None`` when there are
        fewer than two distinct positive durations or ``threshold`` is not positive."""
        values = np.asarray(durations, dtype=np.float64)
        values = values[np.isfinite(values) & (values > 0)]
        if threshold <= 0 or not math.isfinite(threshold) or values.size == 0:
            return None
        distinct, counts = np.unique(np.log(values), return_counts=True)
        if distinct.size < 2:
            return None
        return cls(distinct, np.cumsum(counts) / values.size, math.log(threshold))

    def _cdf(self, log_x: float) -> float:
        return float(np.interp(log_x, self.log_values, self.cdf, left=0.0, right=1.0))

    def shift(self, ratio: float) -> float:
        """B's share above ``T`` less A's when B is ``ratio`` times as slow as A."""
        at = self._cdf(self.log_threshold)
        if ratio <= 0:
            return at - 1.0
        if math.isinf(ratio):
            return at
        return at - self._cdf(self.log_threshold - math.log(ratio))

    def ratio(self, shift: float) -> float:
        """The ratio whose :meth:`shift` is ``shift`` (see :func:`invert_shift`)."""
        return invert_shift(self, shift)


@dataclass(frozen=True)
class MixedShareScale:
    """The share of every op's operations slower than its own op's pooled quantile, read as
    one ratio of every op's durations: the ops' :class:`ShareScale` shifts weighted by
    each op's share of side A's operations (what a uniform slowdown does to the pooled
    share)."""

    parts: tuple[tuple[float, ShareScale], ...]
    """(weight, the op's scale); weights sum to one."""

    def shift(self, ratio: float) -> float:
        """The pooled share's change when every op is ``ratio`` times as slow."""
        return sum(w * scale.shift(ratio) for w, scale in self.parts)

    def ratio(self, shift: float) -> float:
        """The ratio whose :meth:`shift` is ``shift`` (see :func:`invert_shift`)."""
        return invert_shift(self, shift)


def invert_shift(scale: Scale, shift: float) -> float:
    """The ratio whose ``scale.shift`` is ``shift``, for a shift that rises with the ratio
    (``1`` for none; ``inf`` or ``0`` when no ratio within ``e^30`` moves the share that far;
    ``nan`` for ``nan``): bisection on the log ratio."""
    if math.isnan(shift):
        return math.nan
    if shift == 0:
        return 1.0
    far = SCALE_SPAN if shift > 0 else -SCALE_SPAN
    if (scale.shift(math.exp(far)) - shift) * far < 0:
        return math.inf if shift > 0 else 0.0
    near = 0.0
    for _ in range(80):
        mid = (near + far) / 2
        if (scale.shift(math.exp(mid)) - shift) * far < 0:
            near = mid
        else:
            far = mid
    return math.exp((near + far) / 2)
