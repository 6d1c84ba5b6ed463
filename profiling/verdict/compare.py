"""A/B comparison of runs: did B really get faster, slower, leaner or heavier than A?

Each side is one run or several (the rounds of an interleaved A/B run). Latency
percentiles shown are of each side's merged raw records (failed and timed-out operations
included at the time they took), never averages of per-run percentiles. Whether a row
changed is tested with runs and time blocks as the units (see
:mod:`profiling.verdict.statistics`): each run's log figure and its block-bootstrap
variance, compared between sides with a between-run variance that pools what the runs
show with the machine's A/A calibration (:mod:`profiling.verdict.calibration`).

Every row is tested on its own (p50, p95 and p99 each, so a change in the tail alone is
seen), the family of rows is controlled with Holm's method, and a change counts only when
it is significant and larger than ``factor`` (``ratio >= factor`` or ``<= 1 / factor``).

Rows, each a :class:`CompareRow`: per op ``p50_s``, ``p95_s``, ``p99_s``; per op and for
all ops ``throughput_ops_s``; the replicas' ``memory_peak_mb`` and ``mlx_peak_mb``; and
the ``error_rate`` of all records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from datamodel.cache import default_cache_dir
from datamodel.errors import ConfigError
from datamodel.quantiles import quantile
from datamodel.records import adapter_changes, span, throughput
from datamodel.runfolder import RunData
from datamodel.stacks import strip_line_numbers
from profiling.render.flamegraph import render_diff_svg
from profiling.verdict import calibration
from profiling.verdict.figures import LATENCY_METRICS, RunFigures, latency_levels
from profiling.verdict.sides import (
    check_same_experiment,
    describe,
    machine,
    memory_peak,
    merge_runs,
    mlx_peak,
    spec_value,
    warnings_of,
)
from profiling.verdict.statistics import (
    Level,
    Prior,
    compare_levels,
    holm,
)
from profiling.verdict.targets import Target, check_targets

SCHEMA_VERSION = 2
"""Version of the ``comparison.json`` layout (2: runs and blocks as units, Holm)."""
HIGHER_IS_BETTER = frozenset({"throughput_ops_s"})
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

Kind = Literal["op", "resource"]
Verdict = Literal["improvement", "regression", "no change", "not testable"]


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
    """Lower bound of the ``1 - alpha`` interval of the ratio."""
    ci_high: float | None
    """Upper bound of that interval."""
    significant: bool
    """The statistics say A and B differ: Holm's method over all rows rejects "no change"."""
    verdict: Verdict
    """``significant`` and past the factor threshold, read by the metric's direction."""
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
    """Why the comparison may mislead (different machines, settings, unfinished runs)."""
    notes: list[str] = field(default_factory=list)
    """What could not be read from the run folders."""
    drift: str = ""
    """Where the run-to-run drift the tests allow for came from (a calibration)."""
    rounds_needed: int | None = None
    """Runs a side this machine needs to tell a 10% change of p95 (from the calibration)."""

    @property
    def regressions(self) -> list[CompareRow]:
        """Rows whose verdict is a regression."""
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def improvements(self) -> list[CompareRow]:
        """Rows whose verdict is an improvement."""
        return [r for r in self.rows if r.verdict == "improvement"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: the layout of ``comparison.json``."""
        verdicts = ("regression", "improvement", "no change", "not testable")
        return {
            "schema_version": SCHEMA_VERSION,
            "a": {"label": self.a_label, "runs": self.a_runs},
            "b": {"label": self.b_label, "runs": self.b_runs},
            "factor": self.factor,
            "alpha": self.alpha,
            "summary": {v: sum(1 for r in self.rows if r.verdict == v) for v in verdicts},
            "rows": [r.as_dict() for r in self.rows],
            "targets": [{k: _finite(v) for k, v in t.items()} for t in self.targets],
            "diff_flamegraphs": dict(self.diff_flamegraphs),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "drift": self.drift,
            "rounds_needed": self.rounds_needed,
        }


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass
class _Row:
    """A row before Holm's method: its test, or why it has none."""

    key: tuple[Kind, str, str]
    values: tuple[float | None, float | None]
    counts: tuple[int, int]
    runs: tuple[int, int]
    how: str
    test: tuple[float, float, float, float] | None = None
    """``(ratio, low, high, p)``."""


def _level_row(
    key: tuple[Kind, str, str],
    values: tuple[float | None, float | None],
    counts: tuple[int, int],
    a: list[Level],
    b: list[Level],
    prior: Prior | None,
    how: str,
    confidence: float,
    log_scale: bool,
) -> _Row:
    """A row tested on per-run levels; its ratio is of ``values`` (B over A)."""
    runs = (len(a), len(b))
    if not a or not b:
        return _Row(key, values, counts, runs, f"not measured on {'A' if not a else 'B'}")
    test = compare_levels(a, b, prior, confidence=confidence)
    drift = f"run-to-run sd {test.sigma_between:.3g}" + (f" ({prior.source})" if prior else "")
    how = f"{how}; {len(a)} vs {len(b)} runs as units, {drift}"
    va, vb = values
    ratio = _ratio(vb, va) if va is not None and vb is not None else math.nan
    low, high = (math.exp(test.low), math.exp(test.high)) if log_scale else (math.nan, math.nan)
    return _Row(key, values, counts, runs, how, (ratio, low, high, test.p))


def _error_row(a: Sequence[RunFigures], b: Sequence[RunFigures]) -> _Row:
    key: tuple[Kind, str, str] = ("resource", "records", "error_rate")
    fa, ta = sum(f.failed for f in a), sum(f.total for f in a)
    fb, tb = sum(f.failed for f in b), sum(f.total for f in b)
    runs = (len(a), len(b))
    if not ta or not tb:
        return _Row(key, (None, None), (ta, tb), runs, f"no records on {'A' if not ta else 'B'}")
    values = (fa / ta, fb / tb)
    if fa == fb == 0:
        return _Row(key, values, (ta, tb), runs, "no failure on either side", None)

    def block_var(side: Sequence[RunFigures], rate: float) -> float:
        blocks = [(f, t) for fig in side for f, t in fig.block_failures if t]
        n = sum(t for _, t in blocks)
        spread = sum(t * t * (f / t - rate) ** 2 for f, t in blocks)
        return max(spread / n**2, rate * (1 - rate) / n, 1e-12)

    se = math.sqrt(block_var(a, values[0]) + block_var(b, values[1]))
    diff = values[1] - values[0]
    p = math.erfc(abs(diff) / se / math.sqrt(2))
    ratio = values[1] / values[0] if values[0] else math.inf
    how = f"{fa}/{ta} vs {fb}/{tb} failed; z-test with variance from time blocks"
    return _Row(key, values, (ta, tb), runs, how, (ratio, ratio, ratio, p))


def _judge(rows: list[_Row], alpha: float, factor: float) -> list[CompareRow]:
    """Holm over every tested row, then the factor threshold, then the metric's direction."""
    tested = [r for r in rows if r.test is not None]
    rejected = dict(
        zip(map(id, tested), holm([r.test[3] for r in tested if r.test], alpha), strict=True)
    )
    out = []
    for r in rows:
        (a, b), (n_a, n_b), (k_a, k_b) = r.values, r.counts, r.runs
        if r.test is None:
            ratio = None if a is None or b is None else _ratio(b, a)
            verdict_none: Verdict = "no change" if "no failure" in r.how else "not testable"
            out.append(
                CompareRow(
                    *r.key,
                    a,
                    b,
                    ratio,
                    None,
                    None,
                    None,
                    False,
                    verdict_none,
                    n_a,
                    n_b,
                    r.how,
                    k_a,
                    k_b,
                )
            )
            continue
        ratio, low, high, p = r.test
        low_v = None if math.isnan(low) else low
        high_v = None if math.isnan(high) else high
        significant = rejected[id(r)]
        how = f"{r.how}; Holm over {len(tested)} rows"
        verdict: Verdict = "no change"
        if significant:
            up = ratio > 1
            if ratio >= factor if up else ratio <= 1 / factor:
                verdict = "regression" if up != (r.key[2] in HIGHER_IS_BETTER) else "improvement"
            else:
                how += f"; significant, but within the x{factor:g} threshold"
        out.append(
            CompareRow(
                *r.key, a, b, ratio, p, low_v, high_v, significant, verdict, n_a, n_b, how, k_a, k_b
            )
        )
    return out


def _ratio(b: float, a: float) -> float:
    return b / a if a else (1.0 if b == 0 else math.inf)


def _targets_table(a: RunData, b: RunData, targets: Sequence[Target]) -> list[dict[str, Any]]:
    table = []
    checked = zip(check_targets(a, list(targets)), check_targets(b, list(targets)), strict=True)
    for ra, rb in checked:
        t = ra.target
        table.append(
            {
                "name": t.name,
                "metric": t.metric,
                "op": t.op,
                "threshold": t.threshold,
                "unit": t.unit,
                "a": ra.value,
                "b": rb.value,
                "passed_a": ra.passed,
                "passed_b": rb.passed,
                "evidence_a": ra.evidence,
                "evidence_b": rb.evidence,
            }
        )
    return table


def _diff_flamegraphs(
    a: RunData, b: RunData, labels: tuple[str, str], out_dir: Path
) -> dict[str, str]:
    """Write ``diff-<role>.svg`` per replica role profiled on both sides; role -> file name."""
    pa, pb = a.profiles or {}, b.profiles or {}
    written = {}
    for role in sorted(set(pa) & set(pb)):
        if not role.startswith("replica"):
            continue
        name = f"diff-{role}.svg"
        title = f"{role}: {labels[0]} -> {labels[1]} (red: larger share in {labels[1]})"
        svg = render_diff_svg(strip_line_numbers(pa[role]), strip_line_numbers(pb[role]), title)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text(svg, encoding="utf-8")
        written[role] = name
    return written


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
    fits the runs' machine and profile (in ``cache_dir``, else loadlens's cache). Targets
    are checked on each merged side and shown side by side. With ``out_dir``, a
    differential flame graph per replica role profiled on both sides is written there.
    Raises :class:`ConfigError` when a side is empty, the runs used different profiles or
    schema versions, or ``factor`` or ``alpha`` is out of range; other machines only warn.
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
    if priors is None:
        cal, drift = calibration.find(
            machine(b[0]), spec_value(b[0], "profile", "name"), cache_dir or default_cache_dir()
        )
        priors = cal.priors(drift)
        rounds_needed = cal.rounds.get("p95")
    if rounds_needed and min(len(a), len(b)) < rounds_needed:
        warnings.append(
            f"{len(a)} vs {len(b)} runs a side: on this machine a 10% change of p95 needs "
            f"{rounds_needed} runs a side to be told from run-to-run drift ({drift}); a "
            "'no change' here may be a change too small to see"
        )
    figs_a = [RunFigures.of(r) for r in a]
    figs_b = [RunFigures.of(r) for r in b]
    confidence = 1 - alpha
    rows: list[_Row] = []
    ops = sorted({op for f in figs_a + figs_b for op in f.durations})
    for op in ops:
        da = [d for f in figs_a for d in f.durations.get(op, [])]
        db = [d for f in figs_b for d in f.durations.get(op, [])]
        for metric, q in LATENCY_METRICS.items():
            key: tuple[Kind, str, str] = ("op", op, metric)
            values = (quantile(da, q) if da else None, quantile(db, q) if db else None)
            threshold, la, lb = latency_levels(figs_a, figs_b, op, q)
            how = (
                f"share of ops slower than the pooled p{q * 100:g} ({threshold * 1000:.1f} "
                "ms), variance from time blocks"
            )
            prior = priors.get(f"{op}:{KIND_OF[metric]}") or priors.get(KIND_OF[metric])
            rows.append(
                _level_row(key, values, (len(da), len(db)), la, lb, prior, how, confidence, False)
            )
    for name in [*ops, "all"]:
        la = [f.throughput[name] for f in figs_a if name in f.throughput]
        lb = [f.throughput[name] for f in figs_b if name in f.throughput]
        pooled = (_pooled_rate(a, name), _pooled_rate(b, name))
        rows.append(
            _level_row(
                ("op", name, "throughput_ops_s"),
                pooled,
                (len(la), len(lb)),
                la,
                lb,
                priors.get(f"{name}:throughput") or priors.get("throughput"),
                "log ok ops per second per run, variance from time blocks",
                confidence,
                True,
            )
        )
    for metric, peak in (("memory_peak_mb", memory_peak), ("mlx_peak_mb", mlx_peak)):
        peaks_a, peaks_b = [m for m in map(peak, a) if m], [m for m in map(peak, b) if m]
        if not (peaks_a or peaks_b or metric == "memory_peak_mb"):
            continue
        key = ("resource", "replicas", metric)
        pooled_peak = (
            max((m for m, _ in peaks_a), default=None),
            max((m for m, _ in peaks_b), default=None),
        )
        counts = (len(peaks_a), len(peaks_b))
        sources = sorted({source for _, source in peaks_a + peaks_b})
        if len(sources) > 1:
            rows.append(
                _Row(
                    key,
                    pooled_peak,
                    counts,
                    counts,
                    f"sides measured differently: {', '.join(sources)}",
                )
            )
            continue
        la = [Level(math.log(m), 0.0) for m, _ in peaks_a if m > 0]
        lb = [Level(math.log(m), 0.0) for m, _ in peaks_b if m > 0]
        rows.append(
            _level_row(
                key,
                pooled_peak,
                counts,
                la,
                lb,
                priors.get("memory"),
                f"log {sources[0] if sources else ''} peak, one per run",
                confidence,
                True,
            )
        )
    rows.append(_error_row(figs_a, figs_b))
    merged_a, merged_b = merge_runs(a), merge_runs(b)
    flamegraphs = {}
    if out_dir is not None:
        flamegraphs = _diff_flamegraphs(merged_a, merged_b, (a_label, b_label), out_dir)
    return Comparison(
        a_label=a_label,
        b_label=b_label,
        a_runs=[describe(r) for r in a],
        b_runs=[describe(r) for r in b],
        factor=factor,
        alpha=alpha,
        rows=_judge(rows, alpha, factor),
        targets=_targets_table(merged_a, merged_b, targets),
        diff_flamegraphs=flamegraphs,
        warnings=warnings,
        notes=[
            f"{label}: {note}"
            for (label, _), m in zip(sides, (merged_a, merged_b), strict=True)
            for note in m.notes
        ]
        + [
            _adapter_note(name, m)
            for name, m in ((a_label, merged_a), (b_label, merged_b))
            if adapter_changes(m.records)
        ],
        drift=drift,
        rounds_needed=rounds_needed,
    )


def _adapter_note(label: str, run: RunData) -> str:
    """What changing the adapter cost one side: p50 of requests that changed it and not."""
    parts = [
        f"{op} {f['p50_changed_s'] * 1000:.0f} ms when it changed ({f['changed']}) vs "
        f"{f['p50_unchanged_s'] * 1000:.0f} ms when not ({f['unchanged']})"
        for op, f in adapter_changes(run.records).items()
    ]
    return f"{label}: adapter changes, p50 end to end: " + "; ".join(parts)


def _pooled_rate(runs: Sequence[RunData], op: str) -> float | None:
    """Ok ops of ``op`` (or all) per second, pooled over the runs' spans."""
    ok = seconds = 0.0
    for run in runs:
        rows = [r for r in run.records if op == "all" or r.get("op") == op]
        rate = throughput(rows, span(run.records))
        if rate is not None:
            ok += rate[1]
            seconds += rate[2]
    return ok / seconds if seconds > 0 else None
