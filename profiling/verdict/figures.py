"""A run's records as the comparison's tests see them: ordered series, blocks, levels.

Shared by :mod:`profiling.verdict.compare` (A against B) and
:mod:`profiling.verdict.calibration` (A against A, to measure drift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datamodel.quantiles import quantile
from datamodel.records import number, span
from datamodel.runfolder import RunData
from profiling.verdict.statistics import Level, block_rate, exceedance, n_blocks

LATENCY_METRICS = {"p50_s": 0.50, "p95_s": 0.95, "p99_s": 0.99}
"""Latency metrics per op and their quantile."""


@dataclass(frozen=True)
class RunFigures:
    """One run's series as the tests use them."""

    durations: dict[str, list[float]]
    """op -> durations of its records in issue order (failed ones at the time they took)."""
    tested: dict[str, list[float]]
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

    @classmethod
    def of(cls, run: RunData) -> RunFigures:
        """The series of ``run``'s records."""
        rows = sorted(
            (r for r in run.records if number(r.get("planned")) > 0),
            key=lambda r: number(r.get("planned")),
        )
        window = span(rows)
        ops = sorted({str(r.get("op")) for r in rows})
        durations: dict[str, list[float]] = {op: [] for op in ops}
        tested: dict[str, list[float]] = {op: [] for op in ops}
        for r in rows:
            durations[str(r.get("op"))].append(number(r.get("duration")))
            tested[str(r.get("op"))].append(number(r.get("duration")) if r.get("ok") else math.inf)
        blocks = {op: n_blocks(durations[op]) for op in ops}
        throughput: dict[str, Level] = {}
        if window and window[1] > window[0]:
            for op in [*ops, "all"]:
                times = [
                    number(r.get("planned"))
                    for r in rows
                    if r.get("ok") and (op == "all" or r.get("op") == op)
                ]
                if times:
                    k = blocks.get(op) or n_blocks([number(r.get("duration")) for r in rows])
                    throughput[op] = block_rate(times, window[0], window[1], k)
        ok = np.array([bool(r.get("ok")) for r in rows], dtype=bool)
        k = n_blocks([number(r.get("duration")) for r in rows]) if rows else 1
        failures = [(int((~part).sum()), len(part)) for part in np.array_split(ok, max(k, 1))]
        return cls(durations, tested, blocks, throughput, int((~ok).sum()), len(rows), failures)


def latency_levels(
    a: Sequence[RunFigures], b: Sequence[RunFigures], op: str, q: float
) -> tuple[float, list[Level], list[Level]]:
    """The pooled ``q``-quantile ``T`` of ``op`` over both sides, and each run's share of
    operations slower than ``T`` (with its block variance)."""
    pooled = [d for f in (*a, *b) for d in f.durations.get(op, [])]
    threshold = quantile(pooled, q)
    levels = [
        [exceedance(f.tested[op], threshold, f.blocks[op]) for f in side if f.tested.get(op)]
        for side in (a, b)
    ]
    return threshold, levels[0], levels[1]
