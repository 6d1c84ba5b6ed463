"""Interleaved A/B comparisons: the two sides' blocks, paired, are the units.

An interleaved A/B (``workloads.runs.interleave``) runs both sides in one session and the same
load in short blocks, one side right after the other; each side's ``run.json`` lists its
blocks (``blocks``: pair, start, end) and names the A/B (``ab``: id, side, mode). Here each
block becomes a run of its own (the records planned in it, the samples taken in it), and
every row is one figure per block, tested on the pairs' differences
(:func:`~profiling.verdict.statistics.compare_pairs`): the drift a whole-run comparison
must allow for from a calibration cancels within a pair, so none is needed.

Rows as in a whole-run comparison: per op p50, p95 and p99 (each block's share of
operations slower than the pooled quantile of all blocks, failures as slower than any),
per op and all ok ops per second (log), the error rate (each block's failed share), and
the replicas' memory peak (log of the largest sample in the block); and one row a
whole-run comparison lacks, ``all p50_s``: each block's share of all its operations slower
than their own op's pooled median. A change of every op moves every op's share the same
way, so pooling them sees it with fewer pairs than any op's row alone (a 5% change in
about half the pairs, measured with ``bench verdicts --interleaved``); a change of one op
still shows in that op's rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datamodel.frame import Frame
from datamodel.quantiles import quantile
from datamodel.records import number
from datamodel.runfolder import RunData
from profiling.verdict.capacity import Slo, good_mask
from profiling.verdict.figures import (
    LATENCY_METRICS,
    LogScale,
    MixedShareScale,
    RateScale,
    RunFigures,
    Scale,
    ShareScale,
    has,
    pool,
)
from profiling.verdict.statistics import Test, compare_pairs, exceedance
from profiling.verdict.testrows import Interval, Kind, Row

MB = 1e6


@dataclass(frozen=True)
class BlockPairs:
    """The blocks both sides of one interleaved A/B ran, pair by pair."""

    pairs: list[int]
    """Pair numbers present on both sides, in order."""
    a: list[RunData]
    """Side A's block of each pair, as a run of its own."""
    b: list[RunData]
    """Side B's."""
    seconds: float
    """Mean seconds of a block."""

    @property
    def figures(self) -> tuple[list[RunFigures], list[RunFigures]]:
        """Each block's series, side A's and side B's."""
        return [RunFigures.of(r) for r in self.a], [RunFigures.of(r) for r in self.b]


def block_pairs(a: RunData, b: RunData) -> BlockPairs | None:
    """The pairs of blocks of ``a`` and ``b`` when they are the two sides of one interleaved
    A/B (else ``None``: compare them as whole runs)."""
    ia, ib = a.run.get("ab"), b.run.get("ab")
    if not isinstance(ia, dict) or not isinstance(ib, dict):
        return None
    if ia.get("mode") != "interleaved" or ia.get("id") != ib.get("id"):
        return None
    wa, wb = _windows(a), _windows(b)
    common = sorted(set(wa) & set(wb))
    if not common:
        return None
    spans = [w[1] - w[0] for w in (*wa.values(), *wb.values())]
    return BlockPairs(
        common,
        [_block(a, wa[p]) for p in common],
        [_block(b, wb[p]) for p in common],
        sum(spans) / len(spans),
    )


def _windows(run: RunData) -> dict[int, tuple[float, float]]:
    out: dict[int, tuple[float, float]] = {}
    for row in run.run.get("blocks") or []:
        if isinstance(row, dict) and isinstance(row.get("pair"), int):
            out[row["pair"]] = (number(row.get("start")), number(row.get("end")))
    return out


def _block(run: RunData, window: tuple[float, float]) -> RunData:
    """``run`` cut to one block: records planned in it, samples and gauges taken in it."""
    start, end = window

    def inside(rows: list[dict[str, Any]] | None, key: str) -> list[dict[str, Any]] | None:
        if rows is None:
            return None
        return [r for r in rows if start <= number(r.get(key)) <= end]

    records = [r for r in run.records if start <= number(r.get("planned")) < end]
    return dataclasses.replace(
        run,
        records=records,
        timeline=inside(run.timeline, "t"),
        gauges=inside(run.gauges, "t"),
    )


def paired_rows(pairs: BlockPairs, alpha: float, slos: Sequence[Slo] = ()) -> list[Row]:
    """Every row of an interleaved comparison, each tested on block pairs; with latency
    ``slos``, goodput too."""
    fa, fb = pairs.figures
    rows = _latency(fa, fb, alpha)
    rows.append(_every_op(fa, fb, alpha))
    rows += _throughput(pairs, fa, fb, alpha)
    if any(s.latency_field for s in slos):
        rows.append(_goodput(pairs, slos, alpha))
    rows.append(_memory(pairs, alpha))
    rows.append(_errors(fa, fb, alpha))
    return rows


def _row(
    key: tuple[Kind, str, str],
    values: tuple[float | None, float | None],
    counts: tuple[int, int],
    a: Sequence[float],
    b: Sequence[float],
    how: str,
    alpha: float,
    *,
    scale: Scale | None,
    statistic: str,
    interval: Interval = "ratio",
) -> Row:
    """A row tested on per-block figures ``a[i]``, ``b[i]`` of the pairs both measured."""
    n = len(a)
    if n == 0:
        return Row(key, values, counts, (0, 0), f"{how}; not measured in any pair of blocks")
    if scale is None:
        return Row(key, values, counts, (n, n), f"{how}; too few distinct values to size a change")
    test: Test = compare_pairs(a, b, confidence=1 - alpha)
    if not test.testable:
        return Row(
            key,
            values,
            counts,
            (n, n),
            f"{how}; cannot tell: the {n} pairs' differences do not vary",
        )
    said = f"{statistic} {sum(a) / n:.4g} on A, {sum(b) / n:.4g} on B"
    spread = f"sd of a pair's difference {test.sigma_between:.3g}"
    how = f"{how}; {n} block pairs as units (paired t), {spread}"
    return Row(key, values, counts, (n, n), how, test, scale, said, interval)


def _latency(fa: list[RunFigures], fb: list[RunFigures], alpha: float) -> list[Row]:
    rows: list[Row] = []
    ops = sorted({op for f in fa + fb for op in f.durations})
    for op in ops:
        da, db = pool(fa, op), pool(fb, op)
        both = [(x, y) for x, y in zip(fa, fb, strict=True) if has(x, op) and has(y, op)]
        for metric, q in LATENCY_METRICS.items():
            threshold = quantile(np.concatenate([da, db]), q)
            sa = [exceedance(x.tested[op], threshold, x.blocks[op]).value for x, _ in both]
            sb = [exceedance(y.tested[op], threshold, y.blocks[op]).value for _, y in both]
            rows.append(
                _row(
                    ("op", op, metric),
                    (quantile(da, q) if da.size else None, quantile(db, q) if db.size else None),
                    (len(da), len(db)),
                    sa,
                    sb,
                    f"each block's share of ops slower than the pooled p{q * 100:g} "
                    f"({threshold * 1000:.1f} ms, failures as slower than any); interval: the "
                    "ratio of every op's duration that would shift the share as much",
                    alpha,
                    scale=ShareScale.of(da, threshold),
                    statistic=f"mean share slower than {threshold * 1000:.1f} ms or failed",
                )
            )
    return rows


EVERY_OP_Q = 0.5
"""The quantile of the pooled every-op row."""


def _every_op(fa: list[RunFigures], fb: list[RunFigures], alpha: float) -> Row:
    """``all p50_s``: each block's share of all its ops slower than their op's pooled
    median (failures as slower than any), tested on block pairs; its value on each side is
    the ops' medians' geometric mean weighted by their operations."""
    ops = sorted({op for f in fa + fb for op in f.durations})
    thresholds: dict[str, float] = {}
    parts: list[tuple[float, ShareScale]] = []
    for op in ops:
        da = pool(fa, op)
        pooled = np.concatenate([da, pool(fb, op)])
        if not da.size or not pooled.size:
            continue
        thresholds[op] = quantile(pooled, EVERY_OP_Q)
        scale = ShareScale.of(da, thresholds[op])
        if scale is not None:
            parts.append((float(len(da)), scale))
    total = sum(w for w, _ in parts)
    mixed = MixedShareScale(tuple((w / total, s) for w, s in parts)) if total else None

    def share(f: RunFigures) -> float | None:
        above = count = 0
        for op, threshold in thresholds.items():
            if has(f, op):
                above += int((f.tested[op] > threshold).sum())
                count += len(f.tested[op])
        return above / count if count else None

    def centre(figs: list[RunFigures]) -> float | None:
        logs = [
            (len(d), math.log(quantile(d, EVERY_OP_Q)))
            for op in thresholds
            if (d := pool(figs, op)).size and quantile(d, EVERY_OP_Q) > 0
        ]
        n = sum(k for k, _ in logs)
        return math.exp(sum(k * v for k, v in logs) / n) if n else None

    both = [
        (x, y)
        for f, g in zip(fa, fb, strict=True)
        if (x := share(f)) is not None and (y := share(g)) is not None
    ]
    return _row(
        ("op", "all", "p50_s"),
        (centre(fa), centre(fb)),
        (
            sum(sum(len(v) for v in f.durations.values()) for f in fa),
            sum(sum(len(v) for v in f.durations.values()) for f in fb),
        ),
        [x for x, _ in both],
        [y for _, y in both],
        "each block's share of all its ops slower than their own op's pooled median "
        "(failures as slower than any); value: the ops' medians' geometric mean weighted by "
        "their operations; interval: the ratio of every op's duration that would shift the "
        "share as much",
        alpha,
        scale=mixed,
        statistic="mean share of ops slower than their op's median or failed",
    )


def _throughput(
    pairs: BlockPairs, fa: list[RunFigures], fb: list[RunFigures], alpha: float
) -> list[Row]:
    rows: list[Row] = []
    ops = sorted({op for f in fa + fb for op in f.durations})
    for name in [*ops, "all"]:
        both = [
            (x.throughput[name].value, y.throughput[name].value)
            for x, y in zip(fa, fb, strict=True)
            if name in x.throughput and name in y.throughput
        ]
        rows.append(
            _row(
                ("op", name, "throughput_ops_s"),
                (_rate(pairs.a, name), _rate(pairs.b, name)),
                (len(both), len(both)),
                [x for x, _ in both],
                [y for _, y in both],
                "log ok ops per second of each block",
                alpha,
                scale=LogScale(),
                statistic="mean log rate per block",
            )
        )
    return rows


def _goodput(pairs: BlockPairs, slos: Sequence[Slo], alpha: float) -> Row:
    """Ops a second within every latency SLO, per block (log); a pair where either block
    kept none is left out (its log is not finite), and the row says how many were."""
    per = [[_good_rate(run, slos) for run in side] for side in (pairs.a, pairs.b)]
    both = [(x, y) for x, y in zip(*per, strict=True) if x and y]
    left = len(pairs.pairs) - len(both)
    how = "log ops per second within every latency SLO of each block" + (
        f" ({left} pair(s) where a block kept none left out)" if left else ""
    )
    totals = [sum(_good(run, slos) for run in side) for side in (pairs.a, pairs.b)]
    seconds = [sum(_seconds(run) for run in side) for side in (pairs.a, pairs.b)]
    values = tuple(t / s if s > 0 else None for t, s in zip(totals, seconds, strict=True))
    return _row(
        ("op", "all", "goodput_ops_s"),
        (values[0], values[1]),
        (len(both), len(both)),
        [math.log(x) for x, _ in both],
        [math.log(y) for _, y in both],
        how,
        alpha,
        scale=LogScale(),
        statistic="mean log goodput per block",
    )


def _good(run: RunData, slos: Sequence[Slo]) -> int:
    frame = Frame.of(run.records)
    return int((good_mask(frame, slos) & (frame.value("planned") > 0)).sum())


def _seconds(run: RunData) -> float:
    """Seconds from a block's first planned send to its last reply."""
    rows = [r for r in run.records if number(r.get("planned")) > 0]
    if not rows:
        return 0.0
    t0 = min(number(r.get("planned")) for r in rows)
    return max(max(number(r.get("planned")) + number(r.get("duration")) for r in rows) - t0, 0.0)


def _good_rate(run: RunData, slos: Sequence[Slo]) -> float | None:
    seconds = _seconds(run)
    return _good(run, slos) / seconds if seconds > 0 else None


def _rate(blocks: list[RunData], name: str) -> float | None:
    """Ok ops per second over the blocks' own time (not the other side's in between)."""
    ok = seconds = 0.0
    for run in blocks:
        rows = [r for r in run.records if number(r.get("planned")) > 0]
        seconds += _seconds(run)
        ok += sum(1 for r in rows if r.get("ok") and (name == "all" or r.get("op") == name))
    return ok / seconds if seconds > 0 else None


def _peak(run: RunData, key: str) -> float | None:
    """The largest replica sample of ``key`` (bytes) in the block, in MB."""
    values = [number(x[key]) for x in run.samples("replica") if isinstance(x.get(key), int | float)]
    return max(values) / MB if values and max(values) > 0 else None


def _memory(pairs: BlockPairs, alpha: float) -> Row:
    """The replicas' peak of each block: USS where every block sampled it, else RSS (the
    profiler reads USS less often; one measure for every block, never a mix)."""
    key: tuple[Kind, str, str] = ("resource", "replicas", "memory_peak_mb")
    n = len(pairs.pairs)
    for field, source in (("uss", "USS"), ("rss", "RSS")):
        a = [_peak(x, field) for x in pairs.a]
        b = [_peak(y, field) for y in pairs.b]
        both = [(x, y) for x, y in zip(a, b, strict=True) if x and y]
        if len(both) == n or (field == "rss" and both):
            return _row(
                key,
                (max(x for x, _ in both), max(y for _, y in both)),
                (len(both), len(both)),
                [math.log(x) for x, _ in both],
                [math.log(y) for _, y in both],
                f"log {source} peak of each block",
                alpha,
                scale=LogScale(),
                statistic="mean log peak per block",
            )
    return Row(key, (None, None), (0, 0), (0, 0), "no replica memory samples in the blocks")


def _errors(fa: list[RunFigures], fb: list[RunFigures], alpha: float) -> Row:
    key: tuple[Kind, str, str] = ("resource", "records", "error_rate")
    failed = (sum(f.failed for f in fa), sum(f.failed for f in fb))
    total = (sum(f.total for f in fa), sum(f.total for f in fb))
    both = [(x, y) for x, y in zip(fa, fb, strict=True) if x.total and y.total]
    values = (
        failed[0] / total[0] if total[0] else None,
        failed[1] / total[1] if total[1] else None,
    )
    n = len(both)
    if failed == (0, 0) and total[0] and total[1]:
        low, high = (1 - (alpha / 2) ** (1 / t) for t in total)
        how = (
            f"no failure on either side in {n} block pairs; interval of B - A from each side's "
            f"exact binomial bound at zero failures ({1 - alpha:.0%})"
        )
        return Row(
            key,
            values,
            total,
            (n, n),
            how,
            interval="difference",
            verdict="no change",
            ci=(-low, high),
        )
    rate = (failed[0] + failed[1]) / max(total[0] + total[1], 1)
    return _row(
        key,
        values,
        total,
        [x.failed / x.total for x, _ in both],
        [y.failed / y.total for _, y in both],
        f"{failed[0]}/{total[0]} vs {failed[1]}/{total[1]} failed; each block's failed share",
        alpha,
        scale=RateScale(rate) if rate > 0 else None,
        statistic="mean failed share per block",
        interval="difference",
    )
