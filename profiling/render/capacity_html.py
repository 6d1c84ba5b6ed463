"""The report's capacity section: the levels of a capacity search (``capacity.json``), the
answer with its interval, latency and goodput against load with the SLO lines, and what
gives way between the last passing level and the first failing one."""

from __future__ import annotations

from typing import Any

from profiling.render import charts
from profiling.render.charts import Chart, Series, format_value
from profiling.render.sections import Cell, Section, Table, num

CAPACITY_JSON = "capacity.json"


def capacity_section(found: dict[str, Any] | None) -> Section | None:
    """The section, or ``None`` when the run was not a capacity search."""
    if not found or "capacity" not in found:
        return None
    unit = str(found.get("unit", ""))
    answer = found["capacity"]
    levels = [r for r in found.get("levels", []) if r.get("kind") == "level"]
    levels.sort(key=lambda r: r["value"])
    markers = [
        (float(answer[key]), f"capacity {key}")
        for key in ("low", "value", "high")
        if answer.get(key) is not None
    ]
    x_label = f"load ({unit})"
    latency = [
        Series("p50", [(r["value"], r["p50_s"]) for r in levels if r["p50_s"]], charts.color(0)),
        Series(
            "p95",
            [(r["value"], r["p95_s"]) for r in levels if r["p95_s"]],
            charts.color(1),
            dashed=True,
        ),
    ]
    xs = [r["value"] for r in levels]
    for k, slo in enumerate(s for s in found.get("slos", []) if s.get("op") != "errors"):
        if xs:
            latency.append(
                Series(
                    f"SLO {slo['text']}",
                    [(min(xs), slo["threshold"]), (max(xs), slo["threshold"])],
                    charts.color(3 + k),
                    faint=True,
                )
            )
    served = [
        Series(
            "throughput", [(r["value"], r["throughput_ops_s"]) for r in levels], charts.color(0)
        ),
        Series(
            "goodput", [(r["value"], r["goodput_ops_s"] or 0.0) for r in levels], charts.color(2)
        ),
    ]
    figures = [
        Chart("latency of each level against its load", "s", latency, markers, x_label),
        Chart(
            "operations a second served, and within every SLO", "count", served, markers, x_label
        ),
    ]
    rows = []
    for r in found.get("levels", []):
        shares = [a["estimate"] for a in r.get("attainment", []) if a.get("estimate") is not None]
        rows.append(
            [
                num(str(r["number"])),
                Cell(r["kind"]),
                num(f"{r['value']:.3g} {r['unit']}"),
                num(f"{r['throughput_ops_s']:.3g}/s"),
                num(f"{r['goodput_ops_s'] or 0.0:.3g}/s"),
                num(format_value(r["p95_s"] or float("nan"), "s")),
                num(f"{min(shares):.1%}" if shares else "-"),
                Cell(r["verdict"], "fail" if r["verdict"] == "fail" else ""),
                Cell(r.get("stopped_early") or ""),
            ]
        )
    cols = ["#", "kind", "load", "served", "goodput", "p95", "kept", "verdict", "note"]
    facts = [
        ("answer", answer.get("sentence", "")),
        ("axis", f"{found['axis']} ({unit})"),
        ("SLOs", ", ".join(s["text"] for s in found.get("slos", []))),
        ("search ended", found.get("ended") or "-"),
    ]
    saturated = found.get("saturated_ops_s")
    if saturated:
        facts.append(
            (
                "saturated throughput",
                f"{saturated['value']:.3g} ops/s [{saturated['low']:.3g}, {saturated['high']:.3g}]",
            )
        )
    if found.get("project_rate_ops_s"):
        facts.append(
            (
                "each project",
                f"{found['project_rate_ops_s']:.3g} ops/s (from {found.get('project_rate_from')})",
            )
        )
    if found.get("knee") is not None:
        facts.append(("knee", f"{found['knee']:.3g} {unit}"))
    notes = []
    why = found.get("why") or {}
    for key, label in (("last_pass", "last level that held"), ("first_fail", "first that broke")):
        level = why.get(key)
        if level and level.get("causes"):
            top = "; ".join(f"{c['title']}" for c in level["causes"][:2])
            notes.append(f"{label} ({level['value']:.3g} {unit}): {top}")
    notes += [f"what grew: {line}" for line in why.get("grew", [])]
    notes += [f"if fixed: {fix['sentence']}" for fix in why.get("if_fixed") or []]
    intro = (
        "Levels of load measured one after another in one session. kept: the lowest share "
        "of operations that kept an SLO; a level is unresolved when too few operations ran "
        "to tell that share from the SLO's with 95% confidence (blocks of one second as "
        "the units). Dashed lines: the capacity and its interval."
    )
    return Section(
        "capacity",
        "Capacity",
        intro=intro,
        facts=facts,
        tables=[Table(cols, rows)],
        charts=figures,
        notes=notes,
    )
