"""A/B comparison of runs: did B really get faster, slower, leaner or heavier than A?

Each side is one run or several (the rounds of an interleaved A/B run). Latency
percentiles shown are of each side's merged raw records (failed and timed-out operations
included at the time they took), never averages of per-run percentiles. Whether a row
changed is tested with runs and time blocks as the units (see
:mod:`profiling.verdict.statistics`): each run's figure and its block variance, compared
between sides with a between-run variance that pools what the runs show with the
machine's A/A calibration (:mod:`profiling.verdict.calibration`).

Every row is tested on its own (p50, p95 and p99 each, so a change in the tail alone is
seen), the family of rows is controlled with Holm's method, and a change counts only when
it is significant and larger than ``factor``. Its direction is the sign of the tested
statistic (a latency row's share of operations slower than the pooled quantile, failures
counted as infinitely slow; the log of a rate or a peak; the share of failed records),
never the ratio of the values shown, which can point the other way (a side that fails
fast has a lower quantile of durations). Every tested row has an interval and the smallest
change it could have detected (:attr:`CompareRow.detectable`); a row that is not
significant is "no change" only when a ``factor``-sized change would have been seen, else
"not detected". A figure with no variance at all is "not testable", never certain.

Rows, each a :class:`CompareRow`: per op ``p50_s``, ``p95_s``, ``p99_s``; per op and for
all ops ``throughput_ops_s``; the replicas' ``memory_peak_mb`` and ``mlx_peak_mb``; and
the ``error_rate`` of all records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datamodel.cache import default_cache_dir
from datamodel.errors import ConfigError
from datamodel.frame import adapter_changes
from datamodel.quantiles import quantile
from datamodel.runfolder import RunData
from profiling.verdict import calibration
from profiling.verdict.capacity import slos_from_targets
from profiling.verdict.figures import (
    LATENCY_METRICS,
    LogScale,
    RateScale,
    RunFigures,
    Scale,
    ShareScale,
    latency_levels,
    pool,
)
from profiling.verdict.goodput import goodput_table
from profiling.verdict.pairs import block_pairs, paired_rows
from profiling.verdict.sides import (
    adapter_note,
    check_same_experiment,
    describe,
    diff_flamegraphs,
    machine,
    memory_peak,
    merge_runs,
    mlx_peak,
    pooled_rate,
    spec_value,
    targets_table,
    warnings_of,
)
from profiling.verdict.statistics import (
    DETECT_POWER,
    Level,
    Prior,
    Test,
    compare_levels,
    detectable_effect,
    holm,
)
from profiling.verdict.targets import Target
from profiling.verdict.testrows import VERDICTS, Interval, Kind, Row, Verdict

__all__ = [
    "DEFAULT_FACTOR",
    "CompareRow",
    "Comparison",
    "compare_runs",
    "merge_runs",
    "spec_value",
]

SCHEMA_VERSION = 4
"""Version of the ``comparison.json`` layout (2: runs and blocks as units, Holm; 3: every
row's ``interval`` kind and ``detectable`` change, the "not detected" verdict, and the
error rate tested with runs as units; 4: ``units``, block pairs of an interleaved A/B)."""
HIGHER_IS_BETTER = frozenset({"throughput_ops_s", "goodput_ops_s"})
"""Metrics where a larger B is an improvement; for every other one it is a regression."""
KIND_OF = {
    "p50_s": "p50",
    "p95_s": "p95",
    "p99_s": "p99",
    "throughput_ops_s": "throughput",
    "memory_peak_mb": "memory",
    "mlx_peak_mb": "memory",
}
"""Which calibration kind each metric's run-to-run drift comes from."""
DEFAULT_FACTOR = 1.05
"""Smallest ratio that counts as a change by default. A threshold at the very size of the
change one wants to see would miss half of such changes, so it sits below 10%."""
MOST_ROUNDS = 50
"""Most runs a side a comparison's warning sizes; beyond it, it says "more than"."""
MOST_PAIRS = 1000
"""Most block pairs an interleaved comparison's warning sizes (a pair is seconds long)."""
LISTED = 6
"""Rows a warning names before it says how many more."""


@dataclass(frozen=True)
class Unit:
    """What a comparison's tests count as units, as its warnings say them."""

    name: str
    """``runs`` or ``block pairs``."""
    said: str
    """How a warning names more of them (``runs a side of this length``)."""
    seconds: float = 0.0
    """Seconds of load one more unit costs (both sides), if known."""
    most: int = MOST_ROUNDS
    """Most units a warning sizes; beyond it, it says "more than"."""


WHOLE_RUNS = Unit("runs", "runs a side of this length")


@dataclass(frozen=True)
class CompareRow:
    """One metric of A against the same metric of B."""

    kind: Kind
    """``op`` (per operation, or ``all``) or ``resource`` (replicas, records)."""
    name: str
    """Op name, ``all``, ``replicas`` or ``records``."""
    metric: str
    """Metric key, e.g. ``p95_s``, ``throughput_ops_s``, ``memory_peak_mb``, ``error_rate``."""
    a: float | None
    """Value of side A (merged over its runs); ``None`` when not measured."""
    b: float | None
    """Value of side B."""
    ratio: float | None
    """``b / a``; ``inf`` when only ``a`` is zero, ``None`` when not measured."""
    p_value: float | None
    """Two-sided p-value of the test named in :attr:`reason`; ``None`` when not tested."""
    ci_low: float | None
    """Lower bound of the ``1 - alpha`` interval of what :attr:`interval` names."""
    ci_high: float | None
    """Upper bound of that interval."""
    significant: bool
    """The statistics say A and B differ: Holm's method over all rows rejects "no change"."""
    verdict: Verdict
    """``regression`` or ``improvement``: significant and past the factor, read by the sign
    of the tested statistic and the metric's direction. ``no change``: significant but
    within the factor, or not significant although a factor-sized change would have been
    detected (:attr:`detectable` within the factor). ``not detected``: not significant, and
    a factor-sized change could have been missed. ``not testable``: not measured on a side,
    measured differently, or nothing varies (no variance is no information)."""
    n_a: int = 0
    """Samples behind ``a``: records (latency, error rate) or runs (throughput, memory)."""
    n_b: int = 0
    """Samples behind ``b``."""
    reason: str = ""
    """How it was tested, or why it could not be."""
    runs_a: int = 0
    """Runs (the units of the test) on side A."""
    runs_b: int = 0
    """Runs on side B."""
    interval: Interval = "ratio"
    """What :attr:`ci_low`, :attr:`ci_high` and :attr:`detectable` are of: ``ratio`` (B/A of
    the value; for a latency quantile, the interval of its exceedance-share test mapped
    through the pooled durations, see :class:`~profiling.verdict.figures.ShareScale`) or
    ``difference`` (B - A, for the error rate: a share of failed records)."""
    detectable: float | None = None
    """Smallest change this row would have detected with 80% power at the level Holm's
    method holds a lone change to (``alpha`` over the tested rows): a ratio (at least 1,
    the larger of the two directions) or a difference, as :attr:`interval` says. ``None``
    when not tested; ``inf`` (``None`` in JSON) when no change of any size would be."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (a number that is not finite becomes ``None``)."""
        return {k: _finite(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Comparison:
    """Everything :func:`compare_runs` concluded about A against B."""

    a_label: str
    """Name of side A (the baseline)."""
    b_label: str
    """Name of side B (the candidate)."""
    a_runs: list[dict[str, Any]]
    """Runs of side A: run_id, path, config, git_commit, status."""
    b_runs: list[dict[str, Any]]
    """Runs of side B."""
    factor: float
    """Smallest ratio (or its inverse) that counts as a change."""
    alpha: float
    """Significance level."""
    rows: list[CompareRow]
    """Every metric compared."""
    targets: list[dict[str, Any]] = field(default_factory=list)
    """Targets side by side: name, metric, op, threshold, unit, a, b, passed_a, passed_b."""
    diff_flamegraphs: dict[str, str] = field(default_factory=dict)
    """Replica role -> differential flame graph file, relative to the output folder."""
    warnings: list[str] = field(default_factory=list)
    """Why the comparison may mislead (different machines, settings, unfinished runs, rows
    that could miss a factor-sized change, a machine with no calibration of its own)."""
    notes: list[str] = field(default_factory=list)
    """What could not be read from the run folders."""
    drift: str = ""
    """Where the run-to-run drift the tests allow for came from (a calibration)."""
    rounds_needed: int | None = None
    """Runs a side this machine needs to tell a 10% change of p95 (from the calibration)."""
    units: str = "runs"
    """The units of every test: ``runs`` (whole runs, their time blocks within) or ``block
    pairs`` (an interleaved A/B, see :mod:`profiling.verdict.pairs`)."""
    goodput: dict[str, Any] = field(default_factory=dict)
    """Each side's goodput against the targets' latency SLOs (``a``, ``b``: see
    :func:`~profiling.verdict.goodput.goodput_table`)."""

    @property
    def regressions(self) -> list[CompareRow]:
        """Rows whose verdict is a regression."""
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def improvements(self) -> list[CompareRow]:
        """Rows whose verdict is an improvement."""
        return [r for r in self.rows if r.verdict == "improvement"]

    @property
    def undetected(self) -> list[CompareRow]:
        """Rows whose verdict is "not detected" (a factor-sized change could be missed)."""
        return [r for r in self.rows if r.verdict == "not detected"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: the layout of ``comparison.json``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "a": {"label": self.a_label, "runs": self.a_runs},
            "b": {"label": self.b_label, "runs": self.b_runs},
            "factor": self.factor,
            "alpha": self.alpha,
            "summary": {v: sum(1 for r in self.rows if r.verdict == v) for v in VERDICTS},
            "rows": [r.as_dict() for r in self.rows],
            "targets": [{k: _finite(v) for k, v in t.items()} for t in self.targets],
            "diff_flamegraphs": dict(self.diff_flamegraphs),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "drift": self.drift,
            "rounds_needed": self.rounds_needed,
            "units": self.units,
            "goodput": dict(self.goodput),
        }


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _level_row(
    key: tuple[Kind, str, str],
    values: tuple[float | None, float | None],
    counts: tuple[int, int],
    a: list[Level],
    b: list[Level],
    prior: Prior | None,
    how: str,
    confidence: float,
    *,
    scale: Scale | None,
    statistic: str,
    interval: Interval = "ratio",
) -> Row:
    """A row tested on per-run levels; its ratio is of ``values`` (B over A)."""
    runs = (len(a), len(b))
    if not a or not b:
        return Row(key, values, counts, runs, f"not measured on {'A' if not a else 'B'}")
    if scale is None:
        return Row(key, values, counts, runs, f"{how}; too few distinct values to size a change")
    test = compare_levels(a, b, prior, confidence=confidence)
    if not test.testable:
        why = "no run-to-run drift to allow for" + (
            f" ({prior.source} says none)" if prior else " (no calibration prior)"
        )
        return Row(
            key,
            values,
            counts,
            runs,
            f"{how}; cannot tell: nothing varies ({len(a)} vs {len(b)} runs, no within-run "
            f"variance, {why})",
        )
    drift = f"run-to-run sd {test.sigma_between:.3g}" + (f" ({prior.source})" if prior else "")
    how = f"{how}; {len(a)} vs {len(b)} runs as units, {drift}"
    ma = sum(x.value for x in a) / len(a)
    mb = sum(x.value for x in b) / len(b)
    said = f"{statistic} {ma:.4g} on A, {mb:.4g} on B"
    return Row(key, values, counts, runs, how, test, scale, said, interval)


def _error_row(a: Sequence[RunFigures], b: Sequence[RunFigures], alpha: float) -> Row:
    """Failed records: each run's failed share, runs as units (see the module docstring)."""
    key: tuple[Kind, str, str] = ("resource", "records", "error_rate")
    fa, ta = sum(f.failed for f in a), sum(f.total for f in a)
    fb, tb = sum(f.failed for f in b), sum(f.total for f in b)
    runs = (len(a), len(b))
    if not ta or not tb:
        return Row(key, (None, None), (ta, tb), runs, f"no records on {'A' if not ta else 'B'}")
    values = (fa / ta, fb / tb)
    if fa == fb == 0:
        low, high = (1 - (alpha / 2) ** (1 / n) for n in (ta, tb))
        how = (
            "no failure on either side; interval of B - A from each side's exact binomial "
            f"bound at zero failures ({1 - alpha:.0%})"
        )
        return Row(
            key,
            values,
            (ta, tb),
            runs,
            how,
            interval="difference",
            verdict="no change",
            ci=(-low, high),
        )
    rate = (fa + fb) / (ta + tb)
    la = [level for f in a if (level := f.failure_level(rate))]
    lb = [level for f in b if (level := f.failure_level(rate))]
    how = (
        f"{fa}/{ta} vs {fb}/{tb} failed; each run's failed share, variance from time blocks "
        f"(at least binomial at the pooled {rate:.3g})"
    )
    if max(runs) < 2:
        how += "; one run a side: drift of the error rate between runs is not allowed for"
    return _level_row(
        key,
        values,
        (ta, tb),
        la,
        lb,
        None,
        how,
        1 - alpha,
        scale=RateScale(rate),
        statistic="mean failed share per run",
        interval="difference",
    )


@dataclass(frozen=True)
class _Power:
    """What a tested row could have seen."""

    detectable: float
    """Its minimum detectable change, in the units of its interval."""
    seen: bool
    """Whether a factor-sized change either way would have been detected."""
    runs_needed: int | None
    """Runs a side (of this length) that would see a factor-sized change; ``None``: more
    than :data:`MOST_ROUNDS`."""


def _power(
    r: Row, test: Test, scale: Scale, level: float, factor: float, most: int = MOST_ROUNDS
) -> _Power:
    """The row's minimum detectable change at :data:`DETECT_POWER` and two-sided ``level``,
    and about how many runs a side would make a ``factor``-sized change detectable (the
    variance of a side's mean falls as one over its runs, so the detectable change as
    the square root of that)."""
    effect = detectable_effect(test.se, test.df, alpha=level)
    needed = min(scale.shift(factor), -scale.shift(1 / factor))
    if r.interval == "ratio":
        up, down = scale.ratio(effect), scale.ratio(-effect)
        detectable = max(up, 1 / down if down > 0 else math.inf)
        now, wanted = math.log(detectable), math.log(factor)
    else:
        detectable = now = effect
        wanted = needed
    seen = effect <= needed
    runs_needed: int | None = None
    if wanted > 0 and math.isfinite(now):
        k = 2 * (now / wanted) ** 2 / (1 / r.runs[0] + 1 / r.runs[1])
        runs_needed = max(1, math.ceil(k)) if k <= most else None
    return _Power(detectable, seen, runs_needed)


def _judge(
    rows: list[Row], alpha: float, factor: float, most: int = MOST_ROUNDS
) -> tuple[list[CompareRow], dict[int, _Power]]:
    """Holm over every tested row, then the factor threshold, then the direction of the
    tested statistic and the metric; with each tested row's power (by index)."""
    tested = [r for r in rows if r.test is not None]
    p_values = [r.test.p for r in tested if r.test is not None]
    rejected = dict(zip(map(id, tested), holm(p_values, alpha), strict=True))
    level = alpha / max(len(tested), 1)  # Holm's level for a lone change
    out: list[CompareRow] = []
    powers: dict[int, _Power] = {}
    for index, r in enumerate(rows):
        (a, b), (n_a, n_b), (k_a, k_b) = r.values, r.counts, r.runs
        ratio = None if a is None or b is None else _ratio(b, a)
        p: float | None = None
        low, high = r.ci if r.ci else (None, None)
        significant, verdict, how, detectable = False, r.verdict, r.how, None
        if r.test is not None and r.scale is not None:
            test, scale = r.test, r.scale
            power = powers[index] = _power(r, test, scale, level, factor, most)
            p, detectable = test.p, power.detectable
            if r.interval == "ratio":
                low, high = scale.ratio(test.low), scale.ratio(test.high)
            else:
                low, high = test.low, test.high
            significant = rejected[id(r)]
            how = f"{r.how}; Holm over {len(tested)} rows"
            verdict = "no change" if power.seen else "not detected"
            if significant:
                verdict, how = _direction(r, test, scale, ratio, factor, how)
            elif not power.seen:
                how += f"; a x{factor:g} change could have been missed"
        out.append(
            CompareRow(
                *r.key,
                a,
                b,
                ratio,
                p,
                low,
                high,
                significant,
                verdict,
                n_a,
                n_b,
                how,
                k_a,
                k_b,
                r.interval,
                detectable,
            )
        )
    return out, powers


def _direction(
    r: Row, test: Test, scale: Scale, ratio: float | None, factor: float, how: str
) -> tuple[Verdict, str]:
    """The verdict of a significant row, all from its test: the sign of the tested
    statistic says which way, and the change that statistic maps to (as a ratio) how far;
    within ``factor`` it is "no change". The ratio of the values shown is not used: with
    failures counted as infinitely slow it can point the other way, or nowhere."""
    up = test.diff > 0
    size = scale.ratio(test.diff)
    how += f"; the tested change maps to x{size:.3g}" + (
        " of the pooled rate" if r.interval == "difference" else ""
    )
    if ratio is not None and ratio != 1 and (ratio > 1) != up:
        how += (
            f"; the ratio of the values (x{ratio:.3g}) points the other way from the tested "
            f"statistic ({r.statistic}): the verdict follows the test"
        )
    if not (size >= factor if up else size <= 1 / factor):
        return "no change", f"{how}; significant, but within the x{factor:g} threshold"
    return ("regression" if up != (r.key[2] in HIGHER_IS_BETTER) else "improvement"), how


def _detection_warning(
    rows: list[CompareRow], powers: dict[int, _Power], factor: float, unit: Unit = WHOLE_RUNS
) -> str | None:
    """Which rows are "not detected" (a ``factor``-sized change could have been missed),
    each with the smallest change it would have seen, and how many units (runs a side, or
    block pairs, with the minutes of load they take) would see a ``factor``-sized one."""
    blind = [(rows[i], p) for i, p in sorted(powers.items()) if rows[i].verdict == "not detected"]
    if not blind:
        return None
    blind.sort(key=lambda rp: -(rp[1].detectable if rp[0].interval == "ratio" else 0.0))
    named = [f"{r.name} {r.metric} ({_detectable_text(r)})" for r, _ in blind[:LISTED]]
    if len(blind) > LISTED:
        named.append(f"and {len(blind) - LISTED} more")
    needs = [p.runs_needed for _, p in blind]
    far = [f"{r.name} {r.metric}" for r, p in blind if p.runs_needed is None]
    if far:
        runs = f"more than {unit.most} {unit.said} would be needed for " + ", ".join(far)
    else:
        most = max(n for n in needs if n is not None)
        load = f" ({most * unit.seconds / 60:.0f} minutes of load)" if unit.seconds else ""
        runs = f"about {most} {unit.said}{load} would see it on each of them"
    sized = [(p.runs_needed, r) for r, p in blind if p.runs_needed is not None]
    if sized:
        fewest, first = min(sized, key=lambda nr: nr[0])
        load = f" ({fewest * unit.seconds / 60:.0f} minutes of load)" if unit.seconds else ""
        runs += (
            f"; a x{factor:g} change of every op would show first in {first.name} "
            f"{first.metric}, with about {fewest} {unit.said}{load}"
        )
    (row, _), *_ = blind
    have = (
        f"{row.runs_a} vs {row.runs_b} runs a side"
        if unit is WHOLE_RUNS
        else f"{row.runs_a} {unit.name}"
    )
    return (
        f"{len(blind)} of {len(powers)} tested rows could have missed a x{factor:g} change "
        f"with {have}, so they say 'not detected', not "
        f"'no change' (the smallest change each would see with {DETECT_POWER:.0%} power at "
        f"Holm's level for a lone change): {', '.join(named)}; {runs}"
    )


def _detectable_text(row: CompareRow) -> str:
    """The row's detectable change in words: ``x1.23`` or ``+-0.012``."""
    d = row.detectable
    if d is None or math.isinf(d):
        return "a change of any size could be missed"
    return f"x{d:.3g}" if row.interval == "ratio" else f"+-{d:.2g}"


def _ratio(b: float, a: float) -> float:
    return b / a if a else (1.0 if b == 0 else math.inf)


def compare_runs(
    a: Sequence[RunData],
    b: Sequence[RunData],
    *,
    a_label: str = "A",
    b_label: str = "B",
    factor: float = DEFAULT_FACTOR,
    alpha: float = 0.05,
    targets: Sequence[Target] = (),
    out_dir: Path | None = None,
    priors: dict[str, Prior] | None = None,
    cache_dir: Path | None = None,
) -> Comparison:
    """Compare the runs of side ``a`` (baseline) with those of side ``b`` (candidate).

    See the module docstring for the rows and tests. ``priors`` (kind -> :class:`Prior`)
    gives the run-to-run drift to allow for; by default it comes from the calibration that
    fits the runs' machine and profile (in ``cache_dir``, else loadlens's cache), and when
    that is the shipped default rather than this machine's own, only as a weak prior and
    with a warning. Targets are checked on each merged side and shown side by side. With
    ``out_dir``, a differential flame graph per replica role profiled on both sides is
    written there. Raises :class:`ConfigError` when a side is empty, the runs used
    different profiles or schema versions, or ``factor`` or ``alpha`` is out of range;
    other machines only warn.
    """
    if not a or not b:
        raise ConfigError(f"nothing to compare: side {'A' if not a else 'B'} has no run")
    if not factor >= 1.0:
        raise ConfigError(f"factor must be >= 1 (e.g. 1.05 for 5%), got {factor}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be within (0, 1), got {alpha}")
    sides = [("A", a), ("B", b)]
    check_same_experiment(sides)
    warnings = warnings_of(sides)
    drift, rounds_needed = "priors given by the caller", None
    paired = block_pairs(a[0], b[0]) if len(a) == len(b) == 1 else None
    unit = WHOLE_RUNS
    slos = slos_from_targets(targets, "targets")
    if paired is not None:
        rows = paired_rows(paired, alpha, slos)
        unit = Unit(
            "block pairs",
            f"block pairs of {paired.seconds:.0f} s a side",
            2 * paired.seconds,
            MOST_PAIRS,
        )
        drift = (
            f"none needed: {len(paired.pairs)} interleaved block pairs of {paired.seconds:.0f} s "
            "a side, drift cancels within a pair"
        )
    elif priors is None:
        found = calibration.find_calibration(
            machine(b[0]), spec_value(b[0], "profile", "name"), cache_dir or default_cache_dir()
        )
        drift = found.source
        priors = found.calibration.priors(drift)
        rounds_needed = found.calibration.rounds.get("p95")
        if not found.own:
            warnings.append(
                "this machine has no A/A calibration of its own: the run-to-run drift allowed "
                f"for is the shipped default's ({found.calibration.machine}), weighed as only "
                f"{calibration.DEFAULT_PRIOR_DF:g} degrees of freedom, so a 'no change' here "
                "is untested on this machine; `python -m workloads.bench verdicts` makes one"
            )
    if paired is None:
        rows = _whole_run_rows(a, b, priors or {}, alpha)
    judged, powers = _judge(rows, alpha, factor, unit.most)
    if blind := _detection_warning(judged, powers, factor, unit):
        warnings.append(blind)
    merged_a, merged_b = merge_runs(a), merge_runs(b)
    flamegraphs = {}
    if out_dir is not None:
        flamegraphs = diff_flamegraphs(merged_a, merged_b, (a_label, b_label), out_dir)
    return Comparison(
        a_label=a_label,
        b_label=b_label,
        a_runs=[describe(r) for r in a],
        b_runs=[describe(r) for r in b],
        factor=factor,
        alpha=alpha,
        rows=judged,
        targets=targets_table(merged_a, merged_b, targets),
        diff_flamegraphs=flamegraphs,
        warnings=warnings,
        notes=[
            f"{label}: {note}"
            for (label, _), m in zip(sides, (merged_a, merged_b), strict=True)
            for note in m.notes
        ]
        + [
            adapter_note(name, m)
            for name, m in ((a_label, merged_a), (b_label, merged_b))
            if adapter_changes(m.records)
        ],
        drift=drift,
        rounds_needed=rounds_needed,
        units=unit.name,
        goodput={
            side: goodput_table(m.records, slos, m.run.get("blocks"))
            for side, m in (("a", merged_a), ("b", merged_b))
        },
    )


def _whole_run_rows(
    a: Sequence[RunData], b: Sequence[RunData], priors: dict[str, Prior], alpha: float
) -> list[Row]:
    """Every row of a comparison of whole runs, runs and their time blocks as units."""
    figs_a = [RunFigures.of(r) for r in a]
    figs_b = [RunFigures.of(r) for r in b]
    rows = _latency_rows(figs_a, figs_b, priors, alpha)
    rows += _throughput_rows(a, b, figs_a, figs_b, priors, alpha)
    rows += _memory_rows(a, b, priors, alpha)
    rows.append(_error_row(figs_a, figs_b, alpha))
    return rows


def _latency_rows(
    figs_a: list[RunFigures], figs_b: list[RunFigures], priors: dict[str, Prior], alpha: float
) -> list[Row]:
    """p50, p95 and p99 of each op, tested on shares slower than the pooled quantile."""
    rows: list[Row] = []
    ops = sorted({op for f in figs_a + figs_b for op in f.durations})
    for op in ops:
        da, db = pool(figs_a, op), pool(figs_b, op)
        for metric, q in LATENCY_METRICS.items():
            threshold, la, lb = latency_levels(figs_a, figs_b, op, q)
            how = (
                f"share of ops slower than the pooled p{q * 100:g} ({threshold * 1000:.1f} "
                "ms, failures as slower than any), variance from time blocks; interval: "
                "the ratio of every op's duration that would shift the share as much, read "
                "off A's durations"
            )
            rows.append(
                _level_row(
                    ("op", op, metric),
                    (quantile(da, q) if da.size else None, quantile(db, q) if db.size else None),
                    (len(da), len(db)),
                    la,
                    lb,
                    priors.get(f"{op}:{KIND_OF[metric]}") or priors.get(KIND_OF[metric]),
                    how,
                    1 - alpha,
                    scale=ShareScale.of(da, threshold),
                    statistic=f"share slower than {threshold * 1000:.1f} ms or failed",
                )
            )
    return rows


def _throughput_rows(
    a: Sequence[RunData],
    b: Sequence[RunData],
    figs_a: list[RunFigures],
    figs_b: list[RunFigures],
    priors: dict[str, Prior],
    alpha: float,
) -> list[Row]:
    """Ok ops per second of each op and of all, tested on each run's log rate."""
    rows: list[Row] = []
    ops = sorted({op for f in figs_a + figs_b for op in f.durations})
    for name in [*ops, "all"]:
        la = [f.throughput[name] for f in figs_a if name in f.throughput]
        lb = [f.throughput[name] for f in figs_b if name in f.throughput]
        rows.append(
            _level_row(
                ("op", name, "throughput_ops_s"),
                (pooled_rate(a, name), pooled_rate(b, name)),
                (len(la), len(lb)),
                la,
                lb,
                priors.get(f"{name}:throughput") or priors.get("throughput"),
                "log ok ops per second per run, variance from time blocks",
                1 - alpha,
                scale=LogScale(),
                statistic="mean log rate per run",
            )
        )
    return rows


def _memory_rows(
    a: Sequence[RunData], b: Sequence[RunData], priors: dict[str, Prior], alpha: float
) -> list[Row]:
    """The replicas' memory peaks (and MLX peaks where reported), one log peak per run."""
    rows: list[Row] = []
    for metric, peak in (("memory_peak_mb", memory_peak), ("mlx_peak_mb", mlx_peak)):
        peaks_a, peaks_b = [m for m in map(peak, a) if m], [m for m in map(peak, b) if m]
        if not (peaks_a or peaks_b or metric == "memory_peak_mb"):
            continue
        key: tuple[Kind, str, str] = ("resource", "replicas", metric)
        pooled_peak = (
            max((m for m, _ in peaks_a), default=None),
            max((m for m, _ in peaks_b), default=None),
        )
        counts = (len(peaks_a), len(peaks_b))
        sources = sorted({source for _, source in peaks_a + peaks_b})
        if len(sources) > 1:
            how = f"sides measured differently: {', '.join(sources)}"
            rows.append(Row(key, pooled_peak, counts, counts, how))
            continue
        rows.append(
            _level_row(
                key,
                pooled_peak,
                counts,
                [Level(math.log(m), 0.0) for m, _ in peaks_a if m > 0],
                [Level(math.log(m), 0.0) for m, _ in peaks_b if m > 0],
                priors.get("memory"),
                f"log {sources[0] if sources else ''} peak, one per run",
                1 - alpha,
                scale=LogScale(),
                statistic="mean log peak per run",
            )
        )
    return rows
