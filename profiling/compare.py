"""A/B comparison of runs: did B really get faster, slower, leaner or heavier than A?

Each side is one run or several rounds of an interleaved A/B run. The raw records of a
side's rounds are merged before any statistic, so a percentile is always the percentile of
every sample, never an average of per-round percentiles. A change counts only when the
statistics say so (``p < alpha`` and the ``1 - alpha`` interval of the ratio excludes 1)
and it is large enough to matter (``ratio >= factor`` or ``ratio <= 1 / factor``).

What is compared, each as a :class:`CompareRow`:

- per op, ``p50_s`` / ``p95_s`` / ``p99_s`` of the ok durations: a bootstrap interval of
  the ratio of the quantiles and a Mann-Whitney p-value on the raw durations (it tests a
  shift of the whole distribution, so a change of the tail alone reads "no change");
- per op and for all ops, ``throughput_ops_s``: ok ops over the runs' active spans. One
  run per side gives one number, so it is tested only with 3 or more runs per side
  (Welch on log per-run throughputs), else it is "not testable";
- ``memory_peak_mb`` of the replicas (max USS, else RSS from the timeline, else the
  end-of-run RSS in run.json) and ``mlx_peak_mb``, tested like throughput; and
  ``error_rate`` of all records (two-proportion test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from profiling.flamegraph import merge, render_diff_svg, strip_line_numbers
from profiling.rundata import RunData, number
from profiling.statistics import (
    bootstrap_ratio_ci,
    mann_whitney_u,
    quantile,
    two_proportion_test,
    welch_log_ratio,
)
from profiling.targets import MB, Target, check_targets
from workloads.errors import ConfigError

SCHEMA_VERSION = 1
"""Version of the ``comparison.json`` layout."""
LATENCY_METRICS = {"p50_s": 0.50, "p95_s": 0.95, "p99_s": 0.99}
"""Latency metrics per op and their quantile."""
HIGHER_IS_BETTER = frozenset({"throughput_ops_s"})
"""Metrics where a larger B is an improvement; for every other one it is a regression."""
MIN_RUNS = 3
"""Runs per side needed to test a per-run figure (throughput, memory peak)."""
SMALL_SAMPLE = 8
"""Below this many samples per side a Mann-Whitney p-value is only approximate."""
MACHINE_KEYS = ("hostname", "os", "machine", "chip", "cpus_logical", "memory_bytes")
"""Machine facts that make two runs incomparable in absolute terms when they differ."""

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
    """The statistics say A and B differ: ``p < alpha`` and the interval excludes 1."""
    verdict: Verdict
    """``significant`` and past the factor threshold, read by the metric's direction."""
    n_a: int = 0
    """Samples behind ``a``: records (latency, error rate) or runs (throughput, memory)."""
    n_b: int = 0
    """Samples behind ``b``."""
    reason: str = ""
    """How it was tested, or why it could not be."""

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
        }


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def spec_value(run: RunData, *keys: str) -> Any:
    """``run.json`` ``spec.<keys...>`` (e.g. ``"profile", "name"``), ``None`` when absent."""
    node: Any = run.run.get("spec")
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _machine(run: RunData) -> dict[str, Any]:
    machine = run.run.get("machine")
    return machine if isinstance(machine, dict) else {}


def _describe(run: RunData) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "path": str(run.path), "config": spec_value(run, "config", "name"),
        "git_commit": _machine(run).get("git_commit"), "status": run.run.get("status"),
    }  # fmt: skip


def _span(records: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """``(first issue, last completion)`` of ``records`` in UNIX seconds."""
    timed = [r for r in records if number(r.get("issued")) > 0]
    if not timed:
        return None
    start = min(number(r["issued"]) for r in timed)
    return start, max(number(r["issued"]) + number(r.get("duration")) for r in timed)


def _shifted(rows: Sequence[dict[str, Any]], key: str, offset: float) -> list[dict[str, Any]]:
    if not offset:
        return list(rows)
    return [{**r, key: number(r[key]) + offset} if number(r.get(key)) > 0 else r for r in rows]


def merge_runs(runs: Sequence[RunData]) -> RunData:
    """One :class:`RunData` holding the raw data of several rounds of one side.

    Records, timelines, ingest reports, snapshots, replica sections and profiles are
    concatenated (profiles summed per role). Each later round's times are shifted to start
    where the previous round ended, so that a rate over the merged records (throughput)
    is the pooled rate, not one diluted by the other side's interleaved rounds.
    """
    if not runs:
        raise ConfigError("no run to merge")
    if len(runs) == 1:
        return runs[0]
    records: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    cursor: float | None = None
    for run in runs:
        span = _span(run.records)
        offset = cursor - span[0] if span and cursor is not None else 0.0
        records += _shifted(run.records, "issued", offset)
        timeline += _shifted(run.timeline or [], "t", offset)
        cursor = span[1] + offset if span else cursor

    def joined(get: Callable[[RunData], list[dict[str, Any]] | None]) -> Any:
        parts = [get(r) for r in runs]
        return None if all(p is None for p in parts) else [x for p in parts for x in p or []]

    roles = sorted({role for r in runs for role in r.profiles or {}})
    profiles = {role: merge(*((r.profiles or {}).get(role, {}) for r in runs)) for role in roles}
    first = runs[0]
    return RunData(
        path=first.path,
        run={
            **first.run,
            "replicas": joined(lambda r: r.section("replicas")),
            "replica_stats": joined(lambda r: r.section("replica_stats")),
            "merged_runs": [r.run_id for r in runs],
        },
        records=records,
        ingest=joined(lambda r: r.ingest),
        timeline=timeline if any(r.timeline is not None for r in runs) else None,
        profiles=profiles or None,
        snapshots=joined(lambda r: r.snapshots),
        mlx_probe=joined(lambda r: r.mlx_probe),
        notes=[f"{r.run_id}: {note}" for r in runs for note in r.notes],
    )


def _check_same_experiment(sides: Sequence[tuple[str, Sequence[RunData]]]) -> None:
    """Raise :class:`ConfigError` when the runs used different profiles or schemas."""
    for what, get, advice in (
        ("profiles", lambda r: spec_value(r, "profile", "name"), "run both sides with one profile"),
        ("schema versions", lambda r: r.run.get("schema_version"),
         "rerun the older side with this loadlens version"),
    ):  # fmt: skip
        seen: dict[Any, str] = {}
        for label, runs in sides:
            for run in runs:
                seen.setdefault(get(run), f"{label}: run {run.run_id}")
        if len(seen) > 1:
            found = ", ".join(f"{value!r} ({where})" for value, where in seen.items())
            raise ConfigError(f"cannot compare runs of different {what}: {found}; {advice}")


def _warnings(sides: Sequence[tuple[str, Sequence[RunData]]]) -> list[str]:
    """Why the comparison may mislead: unfinished runs, other machines, other settings."""
    (label_0, runs_0), *_ = sides
    ref = runs_0[0]
    where_ref = f"{label_0}: run {ref.run_id}"
    out: list[str] = []
    for label, runs in sides:
        for run in runs:
            where = f"{label}: run {run.run_id}"
            if run.run.get("status") not in (None, "completed"):
                out.append(f"{where} did not complete (status {run.run.get('status')!r})")
            if run is ref:
                continue
            for key in MACHINE_KEYS:
                x, y = _machine(ref).get(key), _machine(run).get(key)
                if x is not None and y is not None and x != y:
                    out.append(
                        f"different machines: {key} {x!r} ({where_ref}) vs {y!r} ({where}); "
                        "absolute numbers may not be comparable"
                    )
            p_ref, p_run = spec_value(ref, "profile") or {}, spec_value(run, "profile") or {}
            differ = sorted(k for k in set(p_ref) | set(p_run) if p_ref.get(k) != p_run.get(k))
            if differ:
                out.append(f"profile settings differ ({where_ref} vs {where}): {', '.join(differ)}")
    return list(dict.fromkeys(out))


def _memory_peak(run: RunData) -> tuple[float, str] | None:
    """``(MB, source)`` of the run's largest replica memory figure, if any."""
    samples = run.samples("replica")
    for key, source in (("uss", "USS"), ("rss", "RSS")):
        values = [number(s[key]) for s in samples if isinstance(s.get(key), int | float)]
        if values:
            return max(values) / MB, source
    ends = [number(s.get("rss_bytes")) for s in run.section("replica_stats")]
    return (max(ends) / MB, "end-of-run RSS") if any(ends) else None


def _mlx_peak(run: RunData) -> tuple[float, str] | None:
    """``(MB, source)`` of the largest MLX peak memory any replica reported, if any."""
    mlx = [s.get("mlx") for s in run.section("replica_stats")]
    peaks = [number(m.get("peak_bytes")) for m in mlx if isinstance(m, dict)]
    return (max(peaks) / MB, "MLX peak_bytes") if any(peaks) else None


@dataclass(frozen=True)
class _Rules:
    """When a difference counts, and how a row is judged."""

    alpha: float
    """Significance level."""
    factor: float
    """Smallest ratio (or inverse) that counts as a change."""

    def row(
        self,
        key: tuple[Kind, str, str],
        values: tuple[float | None, float | None],
        counts: tuple[int, int],
        test: tuple[float, float, float, float] | None,
        how: str,
    ) -> CompareRow:
        """The judged row of ``key = (kind, name, metric)``.

        ``test`` is ``(ratio, low, high, p)``, or ``None`` when the metric is not testable
        (``how`` then says why); otherwise ``how`` names the test.
        """
        (a, b), (n_a, n_b) = values, counts
        if test is None:
            ratio = None if a is None or b is None else _ratio(b, a)
            return CompareRow(*key, a, b, ratio, None, None, None, False, "not testable",
                              n_a, n_b, how)  # fmt: skip
        ratio, low, high, p = test
        if math.isnan(low) or math.isnan(high):
            return CompareRow(*key, a, b, ratio, p, None, None, False, "no change", n_a, n_b, how)
        significant = p < self.alpha and (low > 1 or high < 1)
        verdict: Verdict = "no change"
        if significant:
            up = low > 1
            if ratio >= self.factor if up else ratio <= 1 / self.factor:
                verdict = "regression" if up != (key[2] in HIGHER_IS_BETTER) else "improvement"
            else:
                how += f"; significant, but within the x{self.factor:g} threshold"
        return CompareRow(*key, a, b, ratio, p, low, high, significant, verdict, n_a, n_b, how)


def _ratio(b: float, a: float) -> float:
    return b / a if a else (1.0 if b == 0 else math.inf)


@dataclass(frozen=True)
class _Side:
    """What one side's rounds hold, merged or per run."""

    durations: dict[str, list[float]]
    """Op -> ok durations of every round."""
    spans: list[float]
    """Active span (first issue to last completion) of each round with records."""
    ok_per_run: list[dict[str, int]]
    """Op -> ok records, per round (aligned with ``spans``)."""
    failed: int
    """Records that failed, over all rounds."""
    total: int
    """Records, over all rounds."""

    @classmethod
    def of(cls, runs: Sequence[RunData]) -> _Side:
        durations: dict[str, list[float]] = {}
        spans, ok_per_run = [], []
        for run in runs:
            counts: dict[str, int] = {}
            for r in run.ok_records():
                op = str(r.get("op"))
                durations.setdefault(op, []).append(number(r.get("duration")))
                counts[op] = counts.get(op, 0) + 1
            span = _span(run.records)
            if span and span[1] > span[0]:
                spans.append(span[1] - span[0])
                ok_per_run.append(counts)
        failed = sum(1 for run in runs for r in run.records if not r.get("ok"))
        return cls(durations, spans, ok_per_run, failed, sum(len(r.records) for r in runs))

    def throughput(self, op: str | None) -> tuple[float | None, list[float]]:
        """Pooled ok ops per second and the per-run figures (``op=None``: all ops)."""
        oks = [sum(c.values()) if op is None else c.get(op, 0) for c in self.ok_per_run]
        pooled = sum(oks) / sum(self.spans) if self.spans else None
        return pooled, [ok / span for ok, span in zip(oks, self.spans, strict=True)]


def _per_run_row(
    rules: _Rules,
    key: tuple[Kind, str, str],
    pooled: tuple[float | None, float | None],
    per_run: tuple[list[float], list[float]],
    source: str = "",
) -> CompareRow:
    """A figure measured once per run: tested only with :data:`MIN_RUNS` runs a side."""
    (a, b), (ra, rb) = pooled, per_run
    counts = (len(ra), len(rb))
    suffix = f" ({source})" if source else ""
    if a is None or b is None:
        return rules.row(key, pooled, counts, None, f"not measured on {'A' if a is None else 'B'}")
    if min(counts) < MIN_RUNS:
        why = f"one figure per run: testing needs >= {MIN_RUNS} runs (rounds) a side"
        return rules.row(key, pooled, counts, None, why + suffix)
    if min(ra + rb) <= 0:
        return rules.row(key, pooled, counts, None, "a run measured zero" + suffix)
    _, low, high, p = welch_log_ratio(ra, rb, confidence=1 - rules.alpha)
    how = f"Welch t-test on log per-run values, {len(ra)} vs {len(rb)} runs{suffix}"
    return rules.row(key, pooled, counts, (_ratio(b, a), low, high, p), how)


def _latency_rows(rules: _Rules, op: str, a: list[float], b: list[float], n_boot: int,
                  seed: int) -> list[CompareRow]:  # fmt: skip
    counts = (len(a), len(b))
    if not a or not b:
        why = f"no ok {op} record on {'A' if not a else 'B'}"
        return [rules.row(("op", op, m), (None, None), counts, None, why) for m in LATENCY_METRICS]
    _, p = mann_whitney_u(a, b)
    how = f"Mann-Whitney U on {len(a)} vs {len(b)} durations, bootstrap CI"
    if min(counts) < SMALL_SAMPLE:
        how += f" (under {SMALL_SAMPLE} samples a side: approximate)"
    rows = []
    for metric, q in LATENCY_METRICS.items():
        ratio, low, high = bootstrap_ratio_ci(
            a, b, q=q, n_boot=n_boot, seed=seed, confidence=1 - rules.alpha
        )
        values = (quantile(a, q), quantile(b, q))
        rows.append(rules.row(("op", op, metric), values, counts, (ratio, low, high, p), how))
    return rows


def _peak_row(
    rules: _Rules, metric: str, a: list[tuple[float, str]], b: list[tuple[float, str]]
) -> CompareRow:
    """Replica memory peaks, one per run; comparable only when measured the same way."""
    key: tuple[Kind, str, str] = ("resource", "replicas", metric)
    ra, rb = [m for m, _ in a], [m for m, _ in b]
    pooled = (max(ra, default=None), max(rb, default=None))
    sources = sorted({source for _, source in a + b})
    if len(sources) > 1:
        why = f"sides measured differently: {', '.join(sources)}"
        return rules.row(key, pooled, (len(ra), len(rb)), None, why)
    return _per_run_row(rules, key, pooled, (ra, rb), f"{sources[0]} peak" if sources else "")


def _error_row(rules: _Rules, a: _Side, b: _Side) -> CompareRow:
    key: tuple[Kind, str, str] = ("resource", "records", "error_rate")
    counts = (a.total, b.total)
    if not a.total or not b.total:
        return rules.row(
            key, (None, None), counts, None, f"no records on {'B' if a.total else 'A'}"
        )
    test = two_proportion_test(a.failed, a.total, b.failed, b.total, confidence=1 - rules.alpha)
    how = f"two-proportion z-test, {a.failed}/{a.total} vs {b.failed}/{b.total} failed"
    return rules.row(key, (a.failed / a.total, b.failed / b.total), counts, test, how)


def _targets_table(a: RunData, b: RunData, targets: Sequence[Target]) -> list[dict[str, Any]]:
    table = []
    checked = zip(check_targets(a, list(targets)), check_targets(b, list(targets)), strict=True)
    for ra, rb in checked:
        t = ra.target
        table.append({
            "name": t.name, "metric": t.metric, "op": t.op, "threshold": t.threshold,
            "unit": t.unit, "a": ra.value, "b": rb.value, "passed_a": ra.passed,
            "passed_b": rb.passed, "evidence_a": ra.evidence, "evidence_b": rb.evidence,
        })  # fmt: skip
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
    factor: float = 1.10,
    alpha: float = 0.05,
    targets: Sequence[Target] = (),
    out_dir: Path | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare the runs of side ``a`` (baseline) with those of side ``b`` (candidate).

    Each side's runs are rounds whose raw data are merged first (see the module
    docstring for the metrics and tests). ``targets`` are checked on each merged side and
    shown side by side. With ``out_dir``, a differential flame graph per replica role
    profiled on both sides is written there. Raises :class:`ConfigError` when a side is
    empty, the runs used different profiles or schema versions, or ``factor`` or
    ``alpha`` is out of range; runs from different machines only warn.
    """
    if not a or not b:
        raise ConfigError(f"nothing to compare: side {'A' if not a else 'B'} has no run")
    if not factor >= 1.0:
        raise ConfigError(f"factor must be >= 1 (e.g. 1.1 for 10%), got {factor}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be within (0, 1), got {alpha}")
    sides = [("A", a), ("B", b)]
    _check_same_experiment(sides)
    rules = _Rules(alpha, factor)
    side_a, side_b = _Side.of(a), _Side.of(b)
    ops = sorted(set(side_a.durations) | set(side_b.durations))
    rows: list[CompareRow] = []
    for op in ops:
        da, db = side_a.durations.get(op, []), side_b.durations.get(op, [])
        rows += _latency_rows(rules, op, da, db, n_boot, seed)
    for name in [*ops, None]:
        (pa, ra), (pb, rb) = side_a.throughput(name), side_b.throughput(name)
        key: tuple[Kind, str, str] = ("op", name or "all", "throughput_ops_s")
        rows.append(_per_run_row(rules, key, (pa, pb), (ra, rb)))
    for metric, peak in (("memory_peak_mb", _memory_peak), ("mlx_peak_mb", _mlx_peak)):
        peaks_a, peaks_b = [m for m in map(peak, a) if m], [m for m in map(peak, b) if m]
        if peaks_a or peaks_b or metric == "memory_peak_mb":
            rows.append(_peak_row(rules, metric, peaks_a, peaks_b))
    rows.append(_error_row(rules, side_a, side_b))
    merged_a, merged_b = merge_runs(a), merge_runs(b)
    flamegraphs = {}
    if out_dir is not None:
        flamegraphs = _diff_flamegraphs(merged_a, merged_b, (a_label, b_label), out_dir)
    return Comparison(
        a_label=a_label,
        b_label=b_label,
        a_runs=[_describe(r) for r in a],
        b_runs=[_describe(r) for r in b],
        factor=factor,
        alpha=alpha,
        rows=rows,
        targets=_targets_table(merged_a, merged_b, targets),
        diff_flamegraphs=flamegraphs,
        warnings=_warnings(sides),
        notes=[
            f"{label}: {note}"
            for (label, _), m in zip(sides, (merged_a, merged_b), strict=True)
            for note in m.notes
        ],
    )
