"""The report's per-project view: for each project, its operations, failures, latency
percentiles, adapter changes and goodput, so that one slow project stands out.

Goodput counts the operations that completed within every latency SLO that covers them:
the capacity search's SLOs when the run was one, else the targets file's latency targets
(``p95_s:OP``, ``OP_p99_s``); with neither it is the completed operations a second."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datamodel.frame import Frame, span
from datamodel.quantiles import quantile_sorted
from datamodel.runfolder import RunData
from profiling.render.charts import format_value
from profiling.render.sections import Cell, Section, Table, missing, num
from profiling.verdict.capacity import Slo, good_mask, slos_from_targets
from profiling.verdict.goodput import slos_of
from profiling.verdict.targets import Target

SLOW = 2.0
"""A project whose p95 is this many times the median project's is marked slow."""


def run_slos(analysis: Mapping[str, Any] | None, capacity: Mapping[str, Any] | None) -> list[Slo]:
    """The SLOs goodput is counted against: the analysis's own choice; for an analysis
    written before it made one, the capacity search's, else the targets'."""
    counted = (analysis or {}).get("goodput") or {}
    if counted.get("slos"):
        return slos_of(counted["slos"], str(counted.get("against") or ""))
    if capacity and capacity.get("slos"):
        return [
            Slo(s["op"], s["metric"], float(s["threshold"]), s.get("source", ""))
            for s in capacity["slos"]
        ]
    targets = []
    for result in (analysis or {}).get("targets") or []:
        t = result.get("target") or {}
        try:
            targets.append(
                Target(t["name"], t["metric"], t["op"], float(t["threshold"]), t.get("unit", ""))
            )
        except (KeyError, TypeError, ValueError):
            continue
    return slos_from_targets(targets, "targets")


def project_rows(records: Sequence[Mapping[str, Any]], slos: Sequence[Slo]) -> list[dict[str, Any]]:
    """Per project: operations, failures, p50/p95/p99, adapter changes, goodput, slow."""
    window = span(records)
    seconds = window[1] - window[0] if window else 0.0
    frame = Frame.of(records)
    good, duration, switched = (
        good_mask(frame, slos),
        frame.value("duration"),
        frame.flag("switched"),
    )
    by = {str(p): mine for p, mine in frame.groups("project") if p}
    rows: list[dict[str, Any]] = []
    for project, mine in sorted(by.items()):
        ok = np.sort(duration[mine[frame.ok[mine]]])
        rows.append(
            {
                "project": project,
                "operations": int(mine.size),
                "failed": int((~frame.ok[mine]).sum()),
                "p50_s": quantile_sorted(ok, 0.50) if ok.size else None,
                "p95_s": quantile_sorted(ok, 0.95) if ok.size else None,
                "p99_s": quantile_sorted(ok, 0.99) if ok.size else None,
                "switches": int(switched[mine].sum()),
                "goodput_ops_s": int(good[mine].sum()) / seconds if seconds > 0 else None,
            }
        )
    p95s = [float(r["p95_s"]) for r in rows if r["p95_s"] is not None]
    typical = statistics.median(p95s) if p95s else None
    for row in rows:
        row["slow"] = bool(typical and row["p95_s"] is not None and row["p95_s"] > SLOW * typical)
    return rows


def projects_section(
    run: RunData, analysis: Mapping[str, Any] | None, capacity: Mapping[str, Any] | None
) -> Section:
    """The section: one row per project."""
    title = "Projects"
    slos = run_slos(analysis, capacity)
    rows = project_rows(run.records, slos)
    if not rows:
        return missing("projects", title, "no operation named a project")
    cells = []
    for r in rows:
        cells.append(
            [
                Cell(r["project"], "fail" if r["slow"] else "", note="slow" if r["slow"] else ""),
                num(f"{r['operations']:,}"),
                num(f"{r['failed']:,}", "fail" if r["failed"] else ""),
                *(
                    num(format_value(r[k], "s") if r[k] is not None else "-")
                    for k in ("p50_s", "p95_s", "p99_s")
                ),
                num(f"{r['switches']:,}"),
                num(f"{r['goodput_ops_s']:.3g}/s" if r["goodput_ops_s"] is not None else "-"),
            ]
        )
    within = ", ".join(s.text for s in slos if s.latency_field) or "no latency SLO: completed"
    slow = [r["project"] for r in rows if r["slow"]]
    intro = (
        f"{len(rows)} project(s). Goodput: operations a second that completed within "
        f"{within}. A project whose p95 is over {SLOW:g}x the median project's is marked slow"
        + (f": {', '.join(slow)}." if slow else "; none is.")
    )
    cols = ["project", "ops", "failed", "p50", "p95", "p99", "adapter changes", "goodput"]
    return Section("projects", title, intro=intro, tables=[Table(cols, cells)])
