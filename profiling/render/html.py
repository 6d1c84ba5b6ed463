"""The self-contained HTML report of a run: ``results/<run-id>/report.html``.

Built in two steps, like the other renderers: :func:`build_report` turns a run folder
(:class:`~datamodel.runfolder.RunData`), its ``analysis.json`` and an optional A/B comparison
into one :class:`ReportData` of sections, tables and charts; :func:`render_html` turns that into
one HTML file with inline CSS and inline SVG charts. The page loads nothing: no scripts, no
fonts, no network (its Content-Security-Policy forbids it); links to flame graphs are relative.
Usage: ``python -m profiling.render.html results/<run-id> [--comparison comparison.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from datamodel.errors import LoadlensError
from datamodel.frame import Frame
from datamodel.quantiles import quantile_sorted
from datamodel.records import number
from datamodel.runfolder import RunData
from profiling.render import charts
from profiling.render.capacity_html import CAPACITY_JSON, capacity_section
from profiling.render.charts import Chart, Series, format_value
from profiling.render.evidence import Row
from profiling.render.projects_html import projects_section
from profiling.render.sections import (
    Cell,
    ReportData,
    Section,
    Table,
    fmt,
    missing,
    num,
)
from profiling.render.verdict_html import (
    budget_section,
    comparison_section,
    context_section,
    findings_section,
    targets_section,
)

REPORT_HTML = "report.html"
ANALYSIS_JSON = "analysis.json"
COMPARISON_JSON = "comparison.json"
WINDOW_S = 5.0
"""Width of the latency windows, in seconds."""
PROCESS_GROUPS = (
    ("service replicas", ("replica",)),
    ("load generators and driver", ("generator", "driver")),
    ("Ray and other processes", ("",)),
)
"""Process charts, by role prefix; a role lands in the first group that matches."""


def _epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp() if value else None
    except ValueError:
        return None


def _origin(run: RunData) -> float:
    """The x origin of every chart: the run start, or the first timestamp in the data when
    ``started_utc`` is missing or disagrees with the data (after it, or an hour before it)."""
    times = [number(s.get("t")) for s in (run.timeline or []) + (run.snapshots or [])]
    planned = Frame.of(run.records).value("planned")
    planned = planned[planned > 0]
    first = min((t for t in times if t > 0), default=0.0)
    if planned.size:
        first = min(first, float(planned.min())) if first > 0 else float(planned.min())
    start = _epoch(run.run.get("started_utc"))
    return start if start is not None and 0 <= first - start < 3600 else first


def _markers(run: RunData, t0: float) -> list[tuple[float, str]]:
    """Stage starts, and each generator outage: its last issue and when it was found lost
    (the arrivals between were issued late by its replacement, or are lost records)."""
    windows = sorted(run.stage_windows().items(), key=lambda kv: kv[1][0])
    marks = [(lo - t0, name) for name, (lo, _) in windows]
    for outage in _outages(run):
        k = outage.get("worker")
        if isinstance(outage.get("last_issue_utc"), int | float):
            marks.append((number(outage["last_issue_utc"]) - t0, f"generator {k} last issue"))
        if isinstance(outage.get("lost_utc"), int | float):
            marks.append((number(outage["lost_utc"]) - t0, f"generator {k} lost"))
    return sorted(marks)


def _outages(run: RunData) -> list[dict[str, Any]]:
    generators = run.run.get("generators")
    outages = generators.get("outages") if isinstance(generators, dict) else None
    return [o for o in outages or [] if isinstance(o, dict)]


def _listed(names: list[str], limit: int = 12) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "-"


def _errors(run: RunData, t0: float, limit: int = 20) -> Table | None:
    """Failed operations grouped by op and error message, most frequent first."""
    frame = Frame.of(run.records)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    failed = np.flatnonzero(~frame.ok)
    ops, errors = frame.labels("op")[failed], frame.text("error")[failed]
    for i, op, error in zip(failed.tolist(), ops.tolist(), errors.tolist(), strict=True):
        groups[(op, str(error or "unknown error"))].append(i)
    if not groups:
        return None
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    planned, projects = frame.value("planned"), frame.labels("project")
    rows = [
        [
            Cell(op),
            num(f"{len(rs):,}"),
            num(f"{planned[rs].min() - t0:.1f} s"),
            Cell(_listed(sorted(set(projects[rs].tolist())), 3)),
            Cell(error[:500]),
        ]
        for (op, error), rs in ranked[:limit]
    ]
    caption = f"failed operations by error ({len(ranked)} distinct, {limit} shown at most)"
    return Table(["op", "count", "first at", "projects", "error"], rows, caption)


def _header(run: RunData, analysis: dict[str, Any] | None) -> Section:
    info, spec = run.run, run.run.get("spec") or {}
    profile, config = spec.get("profile") or {}, spec.get("config") or {}
    machine = info.get("machine") or {}
    start, end = _epoch(info.get("started_utc")), _epoch(info.get("ended_utc"))
    frame = Frame.of(run.records)
    ok = int(frame.ok.sum())
    facts = [
        ("run id", run.run_id),
        ("status", str(info.get("status", "unknown"))),
        ("profile", f"{profile.get('name', '?')}: {profile.get('description', '')}".rstrip(": ")),
        ("config", f"{config.get('name', '?')}: {config.get('description', '')}".rstrip(": ")),
        ("BLAS", str(config.get("blas", "-"))),
        ("started (UTC)", str(info.get("started_utc", "-"))),
        ("ended (UTC)", str(info.get("ended_utc", "-"))),
        ("duration", format_value(end - start, "s") if start and end else "-"),
        ("operations", f"{len(run.records):,} issued, {ok:,} ok, {len(run.records) - ok:,} failed"),
        ("replicas", str(len(run.section("replicas")))),
        ("projects", _listed(sorted(set(frame.labels("project").tolist())))),
        ("machine", f"{machine.get('hostname', '?')} · {machine.get('os', '?')}"),
        ("chip", f"{machine.get('chip', '?')} ({machine.get('machine', '?')})"),
        (
            "CPUs",
            f"{machine.get('cpus_logical', '?')} logical, "
            f"{machine.get('cpus_physical', '?')} physical",
        ),
        ("memory", format_value(number(machine.get("memory_bytes")), "bytes")),
        ("python", str(machine.get("python", "-"))),
        ("git commit", str(machine.get("git_commit") or "-")),
    ]
    ingest = info.get("ingest")
    if isinstance(ingest, dict):
        rate = ingest.get("chunks_per_s")
        facts.append(
            (
                "index build",
                f"{ingest.get('chunks', 0):,} chunks of {ingest.get('projects', 0)} projects, "
                f"{ingest.get('embedded', 0):,} embedded in {number(ingest.get('seconds')):.1f} s"
                + (f" ({number(rate):.1f} chunks/s)" if rate else "")
                + (", interrupted" if ingest.get("interrupted") else ""),
            )
        )
    outages = _outages(run)
    if outages:
        lost = "; ".join(
            f"generator {o.get('worker')} lost ({str(o.get('error') or '?').split(':')[0]}): "
            f"{o.get('in_flight_lost')} in flight"
            + (
                f", {o['sent_after_last_drain']} sent after its last drain"
                if o.get("sent_after_last_drain")
                else ""
            )
            + (
                f", {o['spooled_not_collected']} written to its node's spool, not collected"
                if o.get("spooled_not_collected")
                else ""
            )
            + (f"; generator {o['replaced_by']} carried on" if "replaced_by" in o else "")
            for o in outages
        )
        facts.append(("generator outages", lost + " (marked on the latency charts)"))
    versions = machine.get("versions") or {}
    if isinstance(versions, dict):
        facts += [(name, str(version or "-")) for name, version in versions.items()]
    notes = list(run.notes) + [str(n) for n in (analysis or {}).get("notes") or []]
    return Section("run", f"Run {run.run_id}", facts=facts, notes=notes)


def _windows(frame: Frame, rows: np.ndarray, t0: float) -> list[tuple[float, np.ndarray]]:
    """``(window centre, sorted durations)`` of the ok records among ``rows`` per window of
    issue time: the charts draw one point per window, never one per record."""
    rows = rows[frame.ok[rows]]
    slots = ((frame.value("planned")[rows] - t0) // WINDOW_S).astype(np.int64)
    durations = frame.value("duration")[rows]
    order = np.lexsort((durations, slots))
    slots, durations = slots[order], durations[order]
    cuts = np.flatnonzero(np.diff(slots)) + 1
    return [
        ((int(chunk_slots[0]) + 0.5) * WINDOW_S, chunk)
        for chunk_slots, chunk in zip(np.split(slots, cuts), np.split(durations, cuts), strict=True)
        if chunk.size
    ]


def _latency(run: RunData, t0: float) -> Section:
    title = "Latency over time"
    frame = Frame.of(run.records)
    if not frame.ok.any():
        return missing("latency", title, "no completed operations in records.jsonl")
    markers = _markers(run, t0)
    rows, figs, counts = [], [], []
    ops = frame.labels("op")
    for i, op in enumerate(sorted(set(ops.tolist()))):
        mine = np.flatnonzero(ops == op)
        windows = _windows(frame, mine, t0)
        p50 = Series(
            f"{op} p50", [(x, quantile_sorted(v, 0.50)) for x, v in windows], charts.color(0)
        )
        p95 = [(x, quantile_sorted(v, 0.95)) for x, v in windows]
        what = f"{op}: end-to-end latency, p50 and p95 per {WINDOW_S:g}-s window"
        figs.append(
            Chart(what, "s", [p50, Series(f"{op} p95", p95, charts.color(1), dashed=True)], markers)
        )
        counts.append(Series(op, [(x, float(len(v))) for x, v in windows], charts.color(i)))
        ok = mine[frame.ok[mine]]
        durations = np.sort(frame.value("duration")[ok])
        figures = [quantile_sorted(durations, q) for q in (0.50, 0.95, 0.99)] if ok.size else []
        if ok.size:
            figures += [float(durations[-1]), float(frame.value("wait")[ok].mean())]
        failed = len(mine) - len(ok)
        rows.append(
            [Cell(op), num(f"{len(mine):,}"), num(f"{failed:,}", "fail" if failed else "")]
            + [num(format_value(v, "s")) for v in figures or [math.nan] * 5]
        )
    figs.append(Chart(f"completed operations per {WINDOW_S:g}-s window", "count", counts, markers))
    cols = ["op", "issued", "failed", "p50", "p95", "p99", "max", "mean wait"]
    intro = (
        f"End-to-end duration (queue wait + service) of completed operations, grouped into "
        f"{WINDOW_S:g}-s windows by issue time; dashed lines mark the start of each stage."
    )
    tables = [Table(cols, rows), *filter(None, [_errors(run, t0)])]
    return Section("latency", title, intro=intro, tables=tables, charts=figs)


def _role_key(sample: dict[str, Any], multi_node: bool) -> str:
    role = str(sample.get("role", "?"))
    return f"{role}@{str(sample.get('node', '?'))[:8]}" if multi_node else role


def _summed(samples: list[dict[str, Any]], key: str, t0: float) -> list[tuple[float, float]]:
    """Per-time sums of ``key`` (processes of one role sampled at the same time add up)."""
    totals: dict[float, float] = defaultdict(float)
    for s in samples:
        if isinstance(s.get(key), int | float):
            totals[round(number(s.get("t")) - t0, 3)] += number(s.get(key))
    return sorted(totals.items())


def _processes(run: RunData, t0: float) -> Section:
    title = "Processes: memory and CPU"
    procs = [s for s in run.timeline or [] if s.get("role") not in (None, "system")]
    if not procs:
        return missing("processes", title, "no process samples in timeline.jsonl")
    multi_node = len({s.get("node") for s in procs}) > 1
    by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in sorted(procs, key=lambda s: number(s.get("t"))):
        by_role[_role_key(s, multi_node)].append(s)
    markers = _markers(run, t0)
    figs, placed = [], set()
    for name, prefixes in PROCESS_GROUPS:
        roles = [r for r in sorted(by_role) if r not in placed and r.startswith(prefixes)]
        placed.update(roles)
        if not roles:
            continue
        colours = {role: charts.color(i) for i, role in enumerate(roles)}
        memory, cpu = [], []
        for role in roles:
            memory.append(Series(f"{role} RSS", _summed(by_role[role], "rss", t0), colours[role]))
            uss = _summed(by_role[role], "uss", t0)
            if uss:
                memory.append(Series(f"{role} USS", uss, colours[role], kind="points"))
            cpu.append(Series(role, _summed(by_role[role], "cpu_percent", t0), colours[role]))
        figs.append(Chart(f"{name}: memory (RSS lines, USS dots)", "bytes", memory, markers))
        figs.append(Chart(f"{name}: CPU (100% = one core)", "percent", cpu, markers))
    intro = "Every process the agents sampled, by role; a role's processes are summed."
    return Section("processes", title, intro=intro, charts=figs)


def _system(run: RunData, t0: float) -> Section:
    title = "System CPU and memory"
    rows = run.samples("system")
    if not rows:
        return missing("system", title, "no system samples in timeline.jsonl")
    nodes = sorted({str(s.get("node", "?")) for s in rows})
    cpu, mem, markers = [], [], _markers(run, t0)
    for i, node in enumerate(nodes):
        mine = [s for s in rows if str(s.get("node", "?")) == node]
        label = f"node {node[:12]}"
        cores = max((len(s.get("cpu_per_core") or []) for s in mine), default=0)
        for c in range(min(cores, 64) if len(nodes) == 1 else 0):
            pts = [(number(s.get("t")) - t0, _core(s, c)) for s in mine]
            cpu.append(Series("each core", pts, "#9aa5b1", faint=True, in_legend=c == 0))
        cpu.append(Series(f"{label} CPU", _summed(mine, "cpu_percent", t0), charts.color(i)))
        mem.append(Series(f"{label} used", _summed(mine, "mem_used", t0), charts.color(i)))
        total = _summed(mine, "mem_total", t0)
        if total:
            mem.append(Series(f"{label} total", total, charts.color(i), dashed=True))
    figs = [
        Chart("system CPU (100% = all cores; grey: each core)", "percent", cpu, markers, y_max=100),
        Chart("system memory used", "bytes", mem, markers),
    ]
    return Section("system", title, charts=figs)


def _core(sample: dict[str, Any], core: int) -> float:
    cores = sample.get("cpu_per_core") or []
    return number(cores[core]) if core < len(cores) else 0.0


def _snapshots(run: RunData) -> list[dict[str, Any]]:
    return sorted(run.snapshots or [], key=lambda s: (number(s.get("replica")), number(s.get("t"))))


def _per_replica(snaps: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    by_replica: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for snap in snaps:
        by_replica[int(number(snap.get("replica")))].append(snap)
    return dict(sorted(by_replica.items()))


def _adapters(run: RunData, t0: float) -> Section:
    title = "Adapter cache and project switches"
    frame = Frame.of(run.records)
    switched = frame.flag("switched")
    ends = np.sort(frame.value("planned")[switched] + frame.value("duration")[switched] - t0)
    ends = ends.tolist()
    steps = [(t, float(n)) for n, t in enumerate(ends, 1)]
    series = [Series("records that switched project (cumulative)", steps, "#555", "step")]
    counters = ("adapter_hits", "adapter_misses", "adapter_evictions")
    snaps = _snapshots(run)
    for k, (replica, mine) in enumerate(_per_replica(snaps).items()):
        for j, key in enumerate(counters):
            pts = [(number(s.get("t")) - t0, number(s[key])) for s in mine if key in s]
            name = f"replica-{replica} {key.split('_')[1]}"
            series.append(Series(name, pts, charts.color(3 * k + j)))
    series = [s for s in series if s.points]
    rows = []
    for stats in run.section("replica_stats"):
        a, ix = stats.get("adapters") or {}, stats.get("indexes") or {}
        looked_up = number(a.get("hits")) + number(a.get("misses"))
        rate = number(a.get("hits")) / looked_up if looked_up else None
        values = [a.get("hits"), a.get("misses"), a.get("evictions")]
        values += [stats.get("switches"), ix.get("hits"), ix.get("misses"), ix.get("evictions")]
        rows.append(
            [
                Cell(f"replica-{stats.get('replica', '?')}"),
                num(fmt(rate, "hit_rate")),
                num(fmt(a.get("bytes_resident"), "bytes")),
            ]
            + [num(fmt(v)) for v in values]
        )
    if not series and not rows:
        return missing("adapters", title, "no switched records, adapter counters or replica stats")
    cols = "replica,hit rate,resident,adapter hits,misses,evictions,switches,index hits,"
    cols += "index misses,index evictions"
    tables = [Table(cols.split(","), rows, "final counts from run.json")] if rows else []
    notes = []
    if snaps and not any(key in s for s in snaps for key in counters):
        notes.append("the memory snapshots carry no adapter counters; see the final counts")
    chart = Chart("adapter cache counters and project switches", "count", series, _markers(run, t0))
    return Section("adapters", title, tables=tables, charts=[chart] if series else [], notes=notes)


def _mlx(run: RunData, t0: float) -> Section:
    title = "MLX memory"
    snaps = [s for s in _snapshots(run) if any(k in s for k in ("mlx_active", "mlx_peak"))]
    target = run.stack
    if not snaps and target.get("mlx_counters"):
        return Section(
            "mlx",
            title,
            missing=f"Not available for stack {target.get('kind')}: {target['mlx_counters']}.",
        )
    if not snaps and not run.mlx_probe:
        return missing("mlx", title, "no memory snapshots or MLX probe")
    tables = []
    if run.mlx_probe:
        rows = [
            [Cell(f"replica-{p.get('replica', '?')}")]
            + [Cell(str(p.get(k, "-"))) for k in ("device", "backend", "blas_kind")]
            + [
                num(f"{number(p.get('matmul_gflops')):,.1f} GFLOP/s"),
                num(fmt(p.get("memory_limit_bytes"), "bytes")),
                num(fmt(p.get("threads"))),
            ]
            for p in run.mlx_probe
        ]
        cols = ["replica", "device", "backend", "BLAS", "matmul", "memory limit", "threads"]
        tables.append(Table(cols, rows, "MLX runtime facts (mlx_probe.json)"))
    series = []
    for k, (replica, mine) in enumerate(_per_replica(snaps).items()):
        for j, key in enumerate(("mlx_active", "mlx_peak", "mlx_cache")):
            pts = [(number(s.get("t")) - t0, number(s.get(key))) for s in mine]
            name, dashed = f"replica-{replica} {key[4:]}", key == "mlx_peak"
            series.append(Series(name, pts, charts.color(3 * k + j), dashed=dashed))
    if snaps:
        keys = ("rss", "uss", "mlx_active", "mlx_peak", "mlx_cache", "adapter_bytes", "index_bytes")
        rows = [
            [
                Cell(f"replica-{s.get('replica', '?')}"),
                Cell(str(s.get("label", "?"))),
                num(f"{number(s.get('t')) - t0:.1f} s"),
            ]
            + [num(fmt(s.get(k), "bytes")) for k in keys]
            for s in snaps
        ]
        heads = "replica,snapshot,at,RSS,USS,MLX active,MLX peak,MLX cache,adapters,indexes"
        tables.append(Table(heads.split(","), rows, "memory snapshots (snapshots.json)"))
    figs = [Chart("MLX memory per snapshot", "bytes", series, _markers(run, t0))] if snaps else []
    return Section("mlx", title, tables=tables, charts=figs)


def _flamegraphs(run: RunData) -> Section:
    title = "Flame graphs"
    folder = run.path / "profiles"
    roles = set(run.profiles or {})
    if folder.is_dir():
        roles |= {p.name.split(".")[0] for p in folder.iterdir() if p.suffix in {".svg", ".json"}}
    if not roles:
        return missing("flamegraphs", title, "no profiles/ folder (profiling was off)")
    rows = []
    for role in sorted(roles):
        stacks = (run.profiles or {}).get(role, {})
        total = sum(stacks.values())
        leaves: dict[str, int] = defaultdict(int)
        for stack, count in stacks.items():
            leaves[stack.rsplit(";", 1)[-1]] += count
        top = max(leaves.items(), key=lambda kv: kv[1], default=None)
        links = [
            Cell(f"{role}{suffix}", href=quote(f"profiles/{role}{suffix}"))
            if (folder / f"{role}{suffix}").exists()
            else Cell("-")
            for suffix in (".svg", ".speedscope.json", ".collapsed")
        ]
        hottest = f"{top[0]} ({top[1] / total:.0%})" if top and total else "-"
        rows.append([Cell(role), *links, num(f"{total:,}"), Cell(hottest)])
    cols = ["role", "flame graph", "speedscope", "collapsed", "samples", "hottest leaf frame"]
    intro = "py-spy profiles per process role (the speedscope files load into speedscope offline)."
    return Section("flamegraphs", title, intro=intro, tables=[Table(cols, rows)])


def build_report(
    run: RunData,
    analysis: dict[str, Any] | None,
    comparison: dict[str, Any] | None = None,
    capacity: dict[str, Any] | None = None,
) -> ReportData:
    """Every section of the report of ``run``, computed; missing data makes a short section."""
    t0 = _origin(run)
    sections = [
        _header(run, analysis),
        *filter(None, [capacity_section(capacity)]),
        targets_section(analysis),
        budget_section(analysis),
        findings_section(analysis),
        context_section(analysis),
        _latency(run, t0),
        projects_section(run, analysis, capacity),
        _processes(run, t0),
        _system(run, t0),
        _adapters(run, t0),
        _mlx(run, t0),
    ]
    if comparison is not None:
        sections.append(comparison_section(comparison, run.path))
    sections.append(_flamegraphs(run))
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return ReportData(run_id=run.run_id, generated_utc=generated, sections=sections)


CSS = """
:root { --fg: #1d2430; --muted: #5b6675; --line: #dde2e8; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { background: #1d2430; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; overflow-wrap: anywhere; }
header p { margin: 4px 0 0; color: #c3cad4; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line);
  padding: 8px 32px; display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 13px; }
nav a { color: #1f5fa8; text-decoration: none; }
nav a.missing { color: #98a2ae; }
main { max-width: 1120px; margin: 0 auto; padding: 8px 24px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px;
  margin: 16px 0; padding: 14px 20px; }
h2 { font-size: 17px; margin: 0 0 8px; overflow-wrap: anywhere; }
h3 { font-size: 14px; margin: 14px 0 4px; color: var(--muted); font-weight: 600; }
p.intro, p.missing { color: var(--muted); margin: 4px 0 10px; }
p.missing { font-style: italic; }
ul.notes { margin: 6px 0; padding-left: 20px; color: #8a5a00; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 13px; }
caption { text-align: left; color: var(--muted); padding: 2px 0 4px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; overflow-wrap: break-word; }
th { background: #f0f2f5; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td .note { color: var(--muted); font-size: 12px; margin-top: 2px; }
table.evidence { width: auto; margin: 4px 0 0; font-size: 12px; }
table.evidence th, table.evidence td { padding: 1px 12px 1px 0; border: 0; background: none; }
table.evidence th { font-weight: 400; color: var(--muted); white-space: nowrap; }
table.evidence td { font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
table.evidence td.more { color: var(--muted); font-style: italic; }
td .bar { height: 4px; background: #e8ebef; margin-top: 4px; border-radius: 2px; }
td .bar span { display: block; height: 4px; background: #d9822b; border-radius: 2px; }
td.pass, td.fail, td.na, td.good, td.bad { font-weight: 700; }
td.pass, td.good { color: #176a2c; background: #e6f4ea; }
td.fail, td.bad { color: #a4161a; background: #fbe9e9; }
td.na { color: #5b6675; background: #f0f2f5; }
td.num.fail { background: none; }
a { color: #1f5fa8; }
div.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px 24px; }
@media (max-width: 900px) { div.charts { grid-template-columns: minmax(0, 1fr); } }
figure { margin: 10px 0 12px; min-width: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg.chart { width: 100%; height: auto; display: block; font-family: inherit; }
svg .plot { fill: #fff; stroke: #c9d0d8; }
svg .grid { stroke: #edf0f3; }
svg .axis { stroke: #6b7480; }
svg .tick { font-size: 11px; fill: #4a5361; }
svg .label { font-size: 12px; fill: #4a5361; }
svg .legend text { font-size: 12px; fill: #1d2430; }
svg .marker line { stroke: #9aa5b1; stroke-dasharray: 4 3; }
svg .marker text { font-size: 10px; fill: #6b7480; }
footer { text-align: center; color: var(--muted); font-size: 12px; padding: 0 0 24px; }
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""Nothing may load: no scripts, no fonts, no images except inline data."""


def _detail(rows: tuple[Row, ...]) -> str:
    """Labelled values as a small two-column table inside a cell, every text escaped."""
    body = "".join(
        f"<tr><th>{escape(r.label)}</th><td>{escape(r.value)}</td></tr>"
        if r.value
        else f'<tr><td class="more" colspan="2">{escape(r.label)}</td></tr>'
        for r in rows
    )
    return f'<table class="evidence"><tbody>{body}</tbody></table>'


def _cell(cell: Cell, tag: str = "td") -> str:
    body = escape(cell.text)
    if cell.href:
        body = f'<a href="{escape(cell.href, quote=True)}">{body}</a>'
    if cell.note:
        body += f'<div class="note">{escape(cell.note)}</div>'
    if cell.detail:
        body += _detail(cell.detail)
    if cell.bar is not None:
        body += f'<div class="bar"><span style="width:{cell.bar * 100:.1f}%"></span></div>'
    cls = f' class="{escape(cell.cls, quote=True)}"' if cell.cls else ""
    return f"<{tag}{cls}>{body}</{tag}>"


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _section(s: Section) -> str:
    out = [f'<section id="{escape(s.key, quote=True)}">', f"<h2>{escape(s.title)}</h2>"]
    if s.missing:
        out.append(f'<p class="missing">{escape(s.missing)}</p>')
    if s.intro:
        out.append(f'<p class="intro">{escape(s.intro)}</p>')
    if s.facts:
        out.append('<dl class="facts">')
        out += [f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in s.facts]
        out.append("</dl>")
    if s.notes:
        out.append(
            '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in s.notes) + "</ul>"
        )
    out += [_table(t) for t in s.tables]
    if s.charts:
        out.append('<div class="charts">')
        out += [
            f"<figure><figcaption>{escape(c.title)}</figcaption>{charts.render_svg(c)}</figure>"
            for c in s.charts
        ]
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML document."""
    nav = "".join(
        f'<a href="#{escape(s.key, quote=True)}"{" class=missing" if s.missing else ""}>'
        f"{escape(s.title if s.key != 'run' else 'Run')}</a>"
        for s in data.sections
    )
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>loadlens report: {escape(data.run_id)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<header><h1>loadlens report: {escape(data.run_id)}</h1>"
            f"<p>generated {escape(data.generated_utc)}</p></header>",
            f"<nav>{nav}</nav><main>",
            *(_section(s) for s in data.sections),
            "</main><footer>loadlens: self-contained report; open it from disk, nothing loads "
            "from the network.</footer></body></html>",
            "",
        ]
    )


def _load_optional(path: Path) -> dict[str, Any] | None:
    """A JSON object file, ``None`` when absent; an unreadable one becomes just a note."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"notes": [f"ignored {path.name}: {exc}"]}
    return data if isinstance(data, dict) else {"notes": [f"ignored {path.name}: not an object"]}


def write_report(run_dir: str | Path, comparison: dict[str, Any] | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` atomically (temp file + ``os.replace``).

    Reads the run folder, its ``analysis.json`` and, unless ``comparison`` is given, its
    ``comparison.json`` (``python -m workloads.compare`` writes it into run B's folder), each
    when present. Returns the report's path.
    Raises :class:`~datamodel.errors.ConfigError` when ``run_dir`` is not a run folder.
    """
    folder = Path(run_dir)
    if comparison is None:
        comparison = _load_optional(folder / COMPARISON_JSON)
    analysis = _load_optional(folder / ANALYSIS_JSON)
    capacity = _load_optional(folder / CAPACITY_JSON)
    html = render_html(build_report(RunData.load(folder), analysis, comparison, capacity))
    path = folder / REPORT_HTML
    fd, tmp = tempfile.mkstemp(prefix=f".{REPORT_HTML}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m profiling.report RUN_DIR [--comparison FILE]``: write the report."""
    parser = argparse.ArgumentParser(prog="python -m profiling.report", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a finished run folder, results/<run-id>/")
    parser.add_argument("--comparison", type=Path, help="an A/B comparison JSON file")
    args = parser.parse_args(argv)
    try:
        from profiling.verdict.repair import repair

        repaired = repair(args.run_dir)
        if repaired:
            print(repaired, file=sys.stderr)
        comparison = json.loads(args.comparison.read_text()) if args.comparison else None
        print(write_report(args.run_dir, comparison))
    except (LoadlensError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
