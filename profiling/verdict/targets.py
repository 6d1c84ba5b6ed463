"""Targets a run must hold, read from TOML, and how each metric is measured from a run.

A targets file (``profiling/verdict/targets/<name>.toml`` or any path) is a list of tables::

    [[target]]
    name = "service init"          # optional, defaults to the metric
    metric = "init_seconds_max"    # see METRICS; "p95_s:OP" / "p99_s:OP" take an op
    op = "<"                       # one of < <= > >=
    threshold = 5
    unit = "s"                     # optional; must be the metric's unit
    description = "..."            # optional

A top-level ``description = "..."`` is allowed. A metric that cannot be measured from a
run (its file is missing, no samples) gives ``value=None`` and a result of ``passed=None``
(N/A), with the evidence saying why.
"""

from __future__ import annotations

import operator
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from datamodel.errors import ConfigError
from datamodel.frame import STAGE_PREFIX, Frame, throughput
from datamodel.quantiles import quantile, quantile_sorted
from datamodel.records import number
from datamodel.runfolder import INGEST, RECORDS, RUN_JSON, TIMELINE, RunData

Op = Literal["<", "<=", ">", ">="]
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
"""Comparison operators a target may use."""
RECORD_OPS = ("analyze", "search", "embed", "switch", "ingest")
"""Operation names the ``p95_s:OP`` / ``p99_s:OP`` metrics accept."""
TARGETS_DIR = Path(__file__).resolve().parent / "targets"
"""Where named targets files live."""
MB = 1_000_000
"""Bytes per MB in memory metrics (SI)."""

_KEYS = {"name", "metric", "op", "threshold", "unit", "description"}
Measured = tuple[float | None, str]


@dataclass(frozen=True)
class Target:
    """One condition a run must hold: ``measure(metric) <op> threshold``."""

    name: str
    """Short human name, e.g. ``service init``."""
    metric: str
    """Metric key (see :data:`METRICS`), e.g. ``init_seconds_max`` or ``p99_s:analyze``."""
    op: Op
    """Comparison: ``<``, ``<=``, ``>`` or ``>=``."""
    threshold: float
    """The bound, in :attr:`unit`."""
    unit: str
    """Unit of the metric and threshold (``s``, ``MB``, ``ops/s``, ...)."""
    description: str = ""
    """Why the target matters."""

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets this target."""
        return OPS[self.op](value, self.threshold)


@dataclass(frozen=True)
class TargetResult:
    """A target checked against one run."""

    target: Target
    """The target."""
    value: float | None
    """The measured value, ``None`` when it could not be measured."""
    passed: bool | None
    """Whether the target held; ``None`` when not measured (N/A)."""
    evidence: str
    """How the value was measured, from which file, or why it could not be."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "target": asdict(self.target)}


def _values(rows: Sequence[Mapping[str, Any]], *path: str) -> list[float]:
    out = []
    for row in rows:
        node: Any = row
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, int | float) and not isinstance(node, bool):
            out.append(float(node))
    return out


def _init_seconds_max(run: RunData, _: str | None) -> Measured:
    rows = [
        (v, r.get("replica"))
        for r in run.section("replicas")
        for v in _values([r], "init_seconds", "total")
    ]
    if not rows:
        return None, f"no replicas[].init_seconds.total in {RUN_JSON}"
    value, replica = max(rows, key=lambda vr: vr[0])
    return value, (
        f"max init_seconds.total {value:.2f} s (replica {replica}) over {len(rows)} "
        f"replica(s) in {RUN_JSON}"
    )


def _peak(samples: list[dict[str, Any]], key: str) -> tuple[float, str, int] | None:
    """``(MB, where, count)`` of the largest ``key`` among ``samples``, if any."""
    rows = [(number(s[key]), s) for s in samples if isinstance(s.get(key), int | float)]
    if not rows:
        return None
    value, top = max(rows, key=lambda vs: vs[0])
    where = f"{top.get('role', 'replica ' + str(top.get('replica')))}, pid {top.get('pid')}"
    return value / MB, where, len(rows)


def _service_uss_mb_max(run: RunData, _: str | None) -> Measured:
    what = "replica"
    samples = run.samples(what)
    if not samples:  # a server loadlens reaches over HTTP: its own processes
        what = "target"
        samples = run.samples(what)
    if uss := _peak(samples, "uss"):
        mb, where, n = uss
        return mb, f"max USS {mb:.1f} MB ({where}) over {n} {what} sample(s) in {TIMELINE}"
    if rss := _peak(samples, "rss"):
        mb, where, n = rss
        return mb, (
            f"max RSS {mb:.1f} MB ({where}) over {n} {what} sample(s) in {TIMELINE}: USS was "
            "never sampled, and RSS also counts shared pages"
        )
    if stats := _peak(run.section("replica_stats"), "rss_bytes"):
        mb, where, n = stats
        return mb, (
            f"no replica samples in {TIMELINE}: fell back to end-of-run replica_stats.rss_bytes "
            f"in {RUN_JSON}, max RSS {mb:.1f} MB ({where}; RSS, not USS)"
        )
    return None, f"no replica memory in {TIMELINE} or {RUN_JSON} replica_stats"


def _p99(values: list[float]) -> float:
    return quantile(values, 0.99)


def _switch_seconds(records: Sequence[Mapping[str, Any]]) -> list[float]:
    """Adapter plus index stage seconds of each record: what switching project cost it."""
    return [
        number((r.get("stages") or {}).get("adapter"))
        + number((r.get("stages") or {}).get("index"))
        for r in records
    ]


def _switch_p99_s(run: RunData, _: str | None) -> Measured:
    frame = Frame.of(run.records)
    changed = frame.ok & frame.flag("switched")
    served = changed & frame.served()
    if served.any():  # an HTTP stack does not report its switch apart: its first token bounds it
        ttft = frame.value("ttft")
        first = np.where(ttft != 0, ttft, frame.value("service"))[served]
        p99 = _p99(first.tolist())
        return p99, (
            f"p99 {p99:.3f} s to the first token over {first.size} ok request(s) that changed "
            f"the served adapter in {RECORDS} (the server reports no switch time of its own)"
        )
    cost = frame.value(STAGE_PREFIX + "adapter") + frame.value(STAGE_PREFIX + "index")
    switched = cost[changed].tolist()
    if switched:
        p99 = _p99(switched)
        return p99, (
            f"p99 {p99:.3f} s of stages adapter + index over {len(switched)} ok record(s) that "
            f"switched project in {RECORDS}"
        )
    ops = run.ok_records("switch")
    values = _switch_seconds(ops) or _values(ops, "service")
    if values:
        p99 = _p99(values)
        return p99, (
            f"no record switched project: p99 {p99:.3f} s over {len(values)} ok switch op(s) "
            f"in {RECORDS}"
        )
    return None, f"no project switch in {RECORDS}"


def _active_projects(run: RunData, _: str | None) -> Measured:
    frame = Frame.of(run.records)
    names = sorted(str(p) for p, _ in frame.groups("project", frame.ok) if p)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return float(len(names)), (
        f"{len(names)} distinct project(s) with an ok record in {RECORDS}"
        + (f": {shown}" if names else "")
    )


def _lines_of_code(run: RunData, _: str | None) -> Measured:
    if run.ingest is None:
        return None, f"no {INGEST} (the run did not ingest at start)"
    lines: dict[str, float] = {}
    unknown: set[str] = set()
    for entry in run.ingest:
        project = str(entry.get("project"))
        report = entry.get("report")
        value = report.get("lines") if isinstance(report, dict) else None
        if isinstance(value, int | float):
            lines[project] = max(lines.get(project, 0.0), float(value))
        else:
            unknown.add(project)
    unknown -= set(lines)
    if not lines:
        return None, f"no ingest report with lines in {INGEST} (indexes reused?)"
    total = sum(lines.values())
    missing = (
        f"; {len(unknown)} project(s) without a report (index reused) not counted"
        if unknown
        else ""
    )
    return total, f"{total:,.0f} lines over {len(lines)} project(s) in {INGEST}{missing}"


def _error_rate(run: RunData, _: str | None) -> Measured:
    if not run.records:
        return None, f"no records in {RECORDS}"
    errors = sum(1 for r in run.records if not r.get("ok"))
    rate = errors / len(run.records)
    return rate, f"{errors} of {len(run.records)} record(s) failed ({rate:.2%}) in {RECORDS}"


def _throughput(run: RunData, _: str | None) -> Measured:
    if not run.records:
        return None, f"no records in {RECORDS}"
    rate = throughput(run.records, blocks=run.run.get("blocks"))
    if rate is None:
        return None, f"records in {RECORDS} span no time"
    value, ok, seconds = rate
    return value, f"{ok} ok op(s) over {seconds:.1f} s = {value:.2f} ops/s in {RECORDS}"


def _latency(q: float) -> Callable[[RunData, str | None], Measured]:
    def measure(run: RunData, op: str | None) -> Measured:
        frame = Frame.of(run.records)
        mine = frame.equals("op", op)
        durations = frame.floats["duration"][mine]
        values = np.sort(durations[~np.isnan(durations)])
        if not values.size:
            return None, f"no {op} record in {RECORDS}"
        value = quantile_sorted(values, q / 100)
        failed = int((~frame.ok[mine]).sum())
        return value, (
            f"p{q:g} {value:.3f} s of duration (from the planned send) over {len(values)} {op} "
            f"op(s), {failed} failed ones counted at their observed time, in {RECORDS}"
        )

    return measure


@dataclass(frozen=True)
class Metric:
    """How one metric is measured."""

    unit: str
    """Unit of the value."""
    measure: Callable[[RunData, str | None], Measured]
    """``(run, op argument) -> (value or None, evidence)``."""
    takes_op: bool = False
    """Whether the metric is written ``name:OP``."""


METRICS: dict[str, Metric] = {
    "init_seconds_max": Metric("s", _init_seconds_max),
    "service_uss_mb_max": Metric("MB", _service_uss_mb_max),
    "switch_p99_s": Metric("s", _switch_p99_s),
    "active_projects": Metric("projects", _active_projects),
    "lines_of_code": Metric("lines", _lines_of_code),
    "error_rate": Metric("ratio", _error_rate),
    "throughput_ops_s": Metric("ops/s", _throughput),
    "p95_s": Metric("s", _latency(95.0), takes_op=True),
    "p99_s": Metric("s", _latency(99.0), takes_op=True),
}
"""Known metrics by name."""


def _metric(key: str) -> tuple[Metric, str | None]:
    """The metric of ``key`` and its op argument; raises ValueError with the reason."""
    name, sep, arg = key.partition(":")
    metric = METRICS.get(name)
    if metric is None:
        raise ValueError(f"unknown metric {key!r} (known: {', '.join(sorted(METRICS))})")
    if metric.takes_op and arg not in RECORD_OPS:
        raise ValueError(f"metric {key!r} needs ':OP' with OP one of {', '.join(RECORD_OPS)}")
    if not metric.takes_op and sep:
        raise ValueError(f"metric {name!r} takes no ':' argument")
    return metric, arg or None


def measure(run: RunData, metric: str) -> Measured:
    """``(value, evidence)`` of ``metric`` for ``run``; value ``None`` when not measurable."""
    try:
        spec, arg = _metric(metric)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return spec.measure(run, arg)


def check_targets(run: RunData, targets: list[Target]) -> list[TargetResult]:
    """Measure every target on ``run``."""
    results = []
    for target in targets:
        value, evidence = measure(run, target.metric)
        passed = None if value is None else target.holds(value)
        results.append(TargetResult(target, value, passed, evidence))
    return results


def _target(path: Path, index: int, table: Any) -> Target:
    where = f"{path}: [[target]] #{index + 1}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} is not a table")
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})")
    for key in ("metric", "op", "threshold"):
        if key not in table:
            raise ConfigError(f"{where}: missing key {key!r}")
    try:
        metric, _ = _metric(str(table["metric"]))
    except ValueError as exc:
        raise ConfigError(f"{where}: key 'metric': {exc}") from None
    if table["op"] not in OPS:
        raise ConfigError(f"{where}: key 'op': {table['op']!r} is not one of {', '.join(OPS)}")
    threshold = table["threshold"]
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        raise ConfigError(f"{where}: key 'threshold' must be a number, got {threshold!r}")
    unit = str(table.get("unit", metric.unit))
    if unit != metric.unit:
        raise ConfigError(f"{where}: key 'unit': metric {table['metric']!r} is in {metric.unit!r}")
    return Target(
        name=str(table.get("name", table["metric"])),
        metric=str(table["metric"]),
        op=cast(Op, table["op"]),
        threshold=float(threshold),
        unit=unit,
        description=str(table.get("description", "")),
    )


def known_targets() -> list[str]:
    """Names of the targets files shipped in :data:`TARGETS_DIR`."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def load_targets(name_or_path: str | Path) -> list[Target]:
    """Targets from a named file in :data:`TARGETS_DIR` or from a TOML file path.

    Raises :class:`ConfigError` naming the file (and the key) when it is missing, not
    TOML, or names an unknown metric, op or key.
    """
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".toml" or "/" in text or path.exists()):
        path = TARGETS_DIR / f"{text}.toml"
        if not path.exists():
            raise ConfigError(f"unknown targets {text!r} (known: {', '.join(known_targets())})")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"targets file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"targets file {path} is unreadable: {exc}") from None
    for key in data:
        if key not in ("target", "description"):
            raise ConfigError(f"{path}: unknown key {key!r} (expected [[target]] tables)")
    tables = data.get("target", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: key 'target' must be [[target]] tables")
    return [_target(path, i, t) for i, t in enumerate(tables)]
