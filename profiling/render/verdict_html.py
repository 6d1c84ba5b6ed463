"""The verdict's sections of the report: targets, where the latency went, the ranked
causes, context, and the A/B comparison, from ``analysis.json`` and ``comparison.json``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from datamodel.records import number
from profiling.render.sections import (
    RESULT_CLASS,
    Cell,
    Section,
    Table,
    evidence_detail,
    fmt,
    missing,
    num,
    result_text,
    with_unit,
)

_GOOD = ("better", "faster", "improv", "win", "pass")
_BAD = ("worse", "slower", "regress", "loss", "fail")


def _evidence_cell(evidence: Any) -> Cell:
    """A target's evidence: its text, or a table of its values when it is a dict."""
    if isinstance(evidence, dict):
        return Cell("", detail=evidence_detail(evidence))
    return Cell("" if evidence is None else str(evidence))


def targets_section(analysis: dict[str, Any] | None) -> Section:
    title = "Targets"
    if analysis is None or not isinstance(analysis.get("targets"), list):
        return missing("targets", title, "no analysis.json with a targets table")
    good = _goodput_table(analysis.get("goodput"))
    if not analysis["targets"]:
        if good is None:
            return missing("targets", title, "no targets were checked")
        return Section("targets", title, intro="no targets were checked", tables=[good])
    rows = []
    for result in analysis["targets"]:
        t = result.get("target") or {}
        unit = str(t.get("unit") or "")
        verdict = result_text(result.get("passed"))
        rows.append(
            [
                Cell(str(t.get("name", "?")), note=str(t.get("description", ""))),
                Cell(f"{t.get('op', '')} {with_unit(t.get('threshold'), unit)}", "num"),
                Cell(with_unit(result.get("value"), unit), "num"),
                Cell(verdict, RESULT_CLASS[verdict]),
                _evidence_cell(result.get("evidence")),
            ]
        )
    failed = sum(1 for r in analysis["targets"] if r.get("passed") is False)
    intro = f"{len(rows)} target(s) checked, {failed} failed."
    table = Table(["target", "threshold", "measured", "result", "evidence"], rows)
    return Section("targets", title, intro=intro, tables=[table, *([good] if good else [])])


def _goodput_table(table: Any) -> Table | None:
    """Goodput over the run and per op: ok ops a second beside those within every SLO."""
    if not isinstance(table, dict) or table.get("ops_s") is None:
        return None
    seconds = number(table.get("seconds"))
    rows = []
    for name, row in [("all", table), *sorted((table.get("by_op") or {}).items())]:
        share = row.get("share")
        rows.append(
            [
                Cell(str(name)),
                num(f"{number(row.get('ok')) / seconds:.3g}/s" if seconds > 0 else "-"),
                num(f"{number(row.get('ops_s')):.3g}/s"),
                num("-" if share is None else f"{share:.1%}"),
            ]
        )
    kept = ", ".join(table.get("slos") or []) or "no latency SLO: every completed op counts"
    caption = f"goodput: completed within {kept} ({table.get('against', '')})"
    return Table(["op", "completed", "goodput", "share of ops"], rows, caption)


def _ms(seconds: Any) -> str:
    value = number(seconds) * 1000
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def budget_section(analysis: dict[str, Any] | None) -> Section:
    """Where the latency went: each part's mean per op, its share of all latency and of the
    tail (each op's slowest 5%)."""
    title = "Where the latency went"
    budget = (analysis or {}).get("budget")
    if not isinstance(budget, dict) or not budget.get("parts"):
        return missing("budget", title, "no analysis.json with a latency budget")
    ops = sorted(budget.get("ops") or {})
    rows = []
    for part in budget["parts"]:
        if not number(part.get("seconds")):
            continue
        share, tail = number(part.get("share")), number(part.get("tail_share"))
        by_op = part.get("by_op") or {}
        rows.append(
            [Cell(str(part.get("component")))]
            + [num(_ms(by_op.get(op))) for op in ops]
            + [
                Cell(f"{share:.0%}", "num", bar=min(share, 1.0)),
                Cell(f"{tail:.0%}", "num", bar=min(tail, 1.0)),
                num(f"{number(part.get('seconds')):,.1f} s"),
            ]
        )
    stats = budget.get("ops") or {}
    for label, key in (("total (mean)", "mean_s"), ("p95", "p95_s"), ("p99", "p99_s")):
        rows.append([Cell(label, note="failed ops included")] if label == "p99" else [Cell(label)])
        rows[-1] += [num(_ms((stats.get(op) or {}).get(key))) for op in ops] + [num("")] * 3
    intro = (
        f"Each operation's latency, measured from its planned send time, split into parts "
        f"measured for that operation (ms per op, mean). {budget.get('records', 0):,} ops, "
        f"{number(budget.get('seconds')):,.1f} s of latency in all; the tail is the "
        f"{budget.get('tail_definition', 'slowest 5% of each op')}."
    )
    columns = ["part", *(f"{op} (ms)" for op in ops), "share of latency", "of the tail", "sum"]
    return Section("budget", title, intro=intro, tables=[Table(columns, rows)])


def _finding_row(rank: int, f: dict[str, Any]) -> list[Cell]:
    share, tail = number(f.get("share")), number(f.get("tail_share"))
    tier = str(f.get("tier", "latency"))
    weight = (
        Cell(
            f"{share:.0%}",
            "num",
            note=f"tail {tail:.0%} · {number(f.get('seconds')):,.1f} s",
            bar=min(max(share, tail), 1.0),
        )
        if tier == "latency"
        else Cell(tier, "num fail")
    )
    by_op = f.get("by_op") or {}
    parts = ", ".join(map(str, f.get("explains") or [])) or "-"
    detail = " · ".join(f"{op} {number(v):.1f} s" for op, v in sorted(by_op.items()))
    gain = f.get("gain_s")
    weak = " (few records: ranked after well-supported findings)" if f.get("weak") else ""
    return [
        Cell(str(rank), "num"),
        weight,
        Cell(str(f.get("title", "")) + weak, detail=evidence_detail(f.get("evidence"))),
        Cell(parts, note=detail),
        Cell(
            str(f.get("suggestion", "")),
            note=(f"estimated gain {number(gain):,.1f} s · " if gain is not None else "")
            + ", ".join(map(str, f.get("files") or [])),
        ),
    ]


def findings_section(analysis: dict[str, Any] | None) -> Section:
    """Errors first, then the causes ranked by the latency they explain."""
    title = "Causes, ranked"
    if analysis is None or not isinstance(analysis.get("findings"), list):
        return missing("findings", title, "no analysis.json with findings")
    if not analysis["findings"] and not analysis.get("unexplained"):
        return missing("findings", title, "the analysis found no cause of latency or error")
    rows = [_finding_row(k, f) for k, f in enumerate(analysis["findings"], 1)]
    rest = analysis.get("unexplained")
    if isinstance(rest, dict) and rest:
        share, tail = number(rest.get("share")), number(rest.get("tail_share"))
        parts = ", ".join(
            f"{k} {number(v):.1f} s" for k, v in sorted((rest.get("parts") or {}).items())
        )
        rows.append(
            [
                Cell("-", "num"),
                Cell(
                    f"{share:.0%}",
                    "num",
                    note=f"tail {tail:.0%} · {number(rest.get('seconds')):,.1f} s",
                    bar=min(max(share, tail), 1.0),
                ),
                Cell(
                    "unexplained: latency no finding claims (the work itself, or a cause "
                    "loadlens cannot see)"
                ),
                Cell(parts or "-", note="parts no finding touches"),
                Cell(""),
            ]
        )
    intro = (
        "Errors first when their rate is material, then a leak that reaches the memory limit "
        "soon, then causes of latency by the share of all latency (and of the tail) they "
        "explain, queue wait included where a cause's slower service made others wait."
    )
    table = Table(["#", "share", "finding and evidence", "explains", "suggestion (source)"], rows)
    return Section("findings", title, intro=intro, tables=[table])


def context_section(analysis: dict[str, Any] | None) -> Section:
    """Facts that explain no latency by themselves (CPU, cold start, hot frames, ...)."""
    title = "Context"
    facts = (analysis or {}).get("facts")
    if not isinstance(facts, list) or not facts:
        return missing("context", title, "no context facts in analysis.json")
    rows = [
        [
            Cell(str(f.get("kind", ""))),
            Cell(str(f.get("title", "")), detail=evidence_detail(f.get("evidence"))),
        ]
        for f in facts
    ]
    return Section("context", title, tables=[Table(["about", "fact"], rows)])


def _link(path: Any, base: Path) -> str | None:
    """A relative link for ``path``; ``None`` for anything that is not a local file path."""
    text = str(path or "")
    if not text or "://" in text or text.startswith(("//", "javascript:", "data:")):
        return None
    return os.path.relpath(text, base) if os.path.isabs(text) else text


def _p_value(p: Any) -> str:
    if not isinstance(p, int | float):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _verdict_class(verdict: str) -> str:
    low = verdict.lower()
    return "good" if low.startswith(_GOOD) else "bad" if low.startswith(_BAD) else "na"


def _side(comparison: dict[str, Any], side: str) -> tuple[str, list[str]]:
    """Label and run ids of side ``a`` or ``b`` (``a_label`` or ``comparison.json``'s ``a``)."""
    found = comparison.get(side)
    info: dict[str, Any] = found if isinstance(found, dict) else {}
    label = comparison.get(f"{side}_label") or info.get("label") or side.upper()
    runs = [str(r.get("run_id", "?")) for r in info.get("runs") or [] if isinstance(r, dict)]
    return str(label), runs


def _interval_text(row: dict[str, Any]) -> str:
    """A row's interval: of the ratio B/A, or ``B−A`` of a difference (``comparison.json``
    schema 3's ``interval``; earlier layouts hold ratios only)."""
    low, high = row.get("ci_low"), row.get("ci_high")
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return "-" if low is None else f"{fmt(low)} to {fmt(high)}"
    if row.get("interval") == "difference":
        return f"B−A {low:+.2%} to {high:+.2%}"
    return f"×{low:.3g} to ×{high:.3g}"


def _detectable_text(row: dict[str, Any]) -> str:
    """The smallest change the row would have seen (80% power): ``×1.23`` or ``±1.2%``."""
    found = row.get("detectable")
    if not isinstance(found, int | float):
        # Tested with no finite detectable change: even a change of any size could be missed.
        return "∞" if row.get("p_value") is not None and "interval" in row else "-"
    return f"±{found:.2%}" if row.get("interval") == "difference" else f"×{found:.3g}"


def comparison_section(comparison: dict[str, Any], base: Path) -> Section:
    """The A/B table, the targets side by side and the differential flame graph links.

    Takes the layout of ``comparison.json`` (``profiling.verdict.compare``) or the flat one with
    ``a_label``/``b_label`` and a single ``diff_flamegraph``; link paths are relative to the run.
    """
    (a, a_runs), (b, b_runs) = _side(comparison, "a"), _side(comparison, "b")
    level = 1 - number(comparison.get("alpha") or 0.05)
    rows = []
    for row in comparison.get("rows") or []:
        metric, verdict = str(row.get("metric", "")), str(row.get("verdict") or "-")
        ratio, significant = row.get("ratio"), "significant" if row.get("significant") else ""
        ci = _interval_text(row)
        if verdict == "not detected":
            significant = f"a change up to {_detectable_text(row)} could have been missed"
        rows.append(
            [
                Cell(str(row.get("name", "")), note=str(row.get("kind", ""))),
                Cell(metric, note=str(row.get("reason") or "")),
                num(fmt(row.get("a"), metric)),
                num(fmt(row.get("b"), metric)),
                num("-" if ratio is None else f"×{number(ratio):.3g}"),
                num(ci),
                num(_p_value(row.get("p_value"))),
                num(_detectable_text(row)),
                Cell(verdict, _verdict_class(verdict), note=significant),
            ]
        )
    cols = [
        "name",
        "metric",
        a,
        b,
        "B/A",
        f"{level:.0%} CI (of B/A, or of B−A)",
        "p-value",
        "detectable",
        "verdict",
    ]
    tables = [Table(cols, rows)] if rows else []
    target_rows = []
    for t in comparison.get("targets") or []:
        unit = str(t.get("unit") or "")
        results = [result_text(t.get("passed_a")), result_text(t.get("passed_b"))]
        target_rows.append(
            [
                Cell(str(t.get("name", "?"))),
                num(f"{t.get('op', '')} {with_unit(t.get('threshold'), unit)}".strip()),
            ]
            + [num(with_unit(t.get(k), unit)) for k in ("a", "b")]
            + [Cell(r, RESULT_CLASS[r]) for r in results]
        )
    if target_rows:
        cols = ["target", "threshold", a, b, f"{a} result", f"{b} result"]
        tables.append(Table(cols, target_rows, "targets in both runs"))
    good = comparison.get("goodput") or {}
    for side, label in (("a", a), ("b", b)):
        table = _goodput_table(good.get(side))
        if table is not None:
            tables.append(dataclasses.replace(table, caption=f"{label}: {table.caption}"))
    diffs = comparison.get("diff_flamegraphs")
    paths = dict(diffs) if isinstance(diffs, dict) else {}
    if comparison.get("diff_flamegraph"):
        paths["differential"] = comparison["diff_flamegraph"]
    links = [(role, _link(path, base)) for role, path in paths.items()]
    diff_rows = [[Cell(str(role)), Cell(href, href=quote(href))] for role, href in links if href]
    if diff_rows:
        caption = f"red: a larger share of samples in {b}"
        tables.append(Table(["role", "differential flame graph"], diff_rows, caption))
    intro = f"A: {a}" + (f" ({', '.join(a_runs)})" if a_runs else "")
    intro += f"; B: {b}" + (f" ({', '.join(b_runs)})" if b_runs else "") + "."
    summary = comparison.get("summary")
    if isinstance(summary, dict):
        intro += " Verdicts: " + ", ".join(f"{v} {n}" for v, n in summary.items()) + "."
    notes = [str(w) for w in comparison.get("warnings") or []]
    notes += [str(n) for n in comparison.get("notes") or []]
    title = f"A/B comparison: {a} vs {b}"
    if not tables:
        return Section(
            "comparison", title, "Not captured: the comparison holds no rows.", notes=notes
        )
    return Section("comparison", title, intro=intro, tables=tables, notes=notes)
