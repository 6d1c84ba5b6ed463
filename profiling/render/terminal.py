"""Renderers of one :class:`~profiling.verdict.analyze.Analysis`: terminal text, JSON."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datamodel.runfolder import write_json
from profiling.render.evidence import evidence_rows
from profiling.verdict.analyze import Analysis
from profiling.verdict.attribution import Budget
from profiling.verdict.findings import Finding
from profiling.verdict.goodput import describe as describe_goodput
from profiling.verdict.targets import TargetResult

ANALYSIS_JSON = "analysis.json"
_RESULT = {True: "PASS", False: "FAIL", None: "N/A"}
EVIDENCE_ROWS = 8
"""Rows of a finding's evidence the terminal shows (the rest: ``and K more``)."""
EVIDENCE_WIDTH = 80
"""Characters of a text value the terminal shows."""


def _number(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.1f}"


def evidence_lines(evidence: dict[str, Any], indent: str = "      ") -> list[str]:
    """The top rows of ``evidence`` as an aligned two-column table (label, value in its unit)."""
    rows = evidence_rows(evidence, limit=EVIDENCE_ROWS, width=EVIDENCE_WIDTH)
    width = max((len(r.label) for r in rows), default=0)
    return [f"{indent}{r.label.ljust(width)}  {r.value}".rstrip() for r in rows]


def _target_row(result: TargetResult) -> list[str]:
    t = result.target
    unit = f" {t.unit}" if t.unit else ""
    measured = "-" if result.value is None else f"{_number(result.value)}{unit}"
    return [t.name, f"{t.op} {_number(t.threshold)}{unit}", measured, _RESULT[result.passed]]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}" if seconds >= 0.01 else f"{seconds * 1000:.1f}"


def render_budget(budget: Budget) -> list[str]:
    """Where the latency went: mean ms per part for each op, and the share of all latency."""
    ops = sorted(budget.ops)
    shown = [p for p in budget.parts if p.seconds > 0]
    header = ["part", *ops, "share", "tail"]
    rows = [header]
    for p in shown:
        rows.append(
            [
                p.component,
                *(_ms(p.by_op.get(op, 0.0)) for op in ops),
                f"{p.share:.0%}",
                f"{p.tail_share:.0%}",
            ]
        )
    rows.append(["total (mean)", *(_ms(budget.ops[op]["mean_s"]) for op in ops), "100%", "100%"])
    rows.append(["p95", *(_ms(budget.ops[op]["p95_s"]) for op in ops), "", ""])
    lines = [
        f"where the latency went (ms per op, mean; {budget.records:,} ops, tail = the "
        f"slowest 5% of each op):"
    ]
    return lines + _table(rows)


def _finding_lines(n: int, f: Finding) -> list[str]:
    weak = " [few records]" if f.weak else ""
    if f.tier == "latency":
        share = f"{f.share:4.0%} / tail {f.tail_share:3.0%}, {f.seconds:.1f} s"
    else:
        share = f.tier
    lines = [f"  {n:>2}. [{share}] {f.kind}: {f.title}{weak}"]
    if f.by_op and f.tier == "latency":
        ops = ", ".join(
            f"{op} {s:.1f} s" for op, s in sorted(f.by_op.items(), key=lambda kv: -kv[1])
        )
        lines.append(f"      by op: {ops}")
    lines += evidence_lines(f.evidence)
    if f.files:
        lines.append(f"      from {', '.join(f.files)}")
    if f.gain_s is not None:
        lines.append(f"      estimated gain if fixed: {f.gain_s:.1f} s of latency")
    lines.append(f"      -> {f.suggestion}")
    return lines


def unexplained_line(row: dict[str, Any]) -> str:
    """The row of latency no finding claims, in words."""
    parts = ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in sorted(row.get("parts", {}).items())
    )
    return (
        f"unexplained: {row['share']:.0%} / tail {row['tail_share']:.0%}, "
        f"{row['seconds']:.1f} s of latency no finding claims"
        + (f" (parts no finding touches: {parts})" if parts else "")
    )


def goodput_lines(table: Mapping[str, Any]) -> list[str]:
    """The run's goodput and each op's, under the targets."""
    lines = [f"  {describe_goodput(table)}"]
    ops = [
        f"{op} {row['ops_s']:.3g}/s ({row['share']:.0%})"
        for op, row in (table.get("by_op") or {}).items()
        if row.get("ops_s") is not None and row.get("share") is not None
    ]
    if ops:
        lines.append("    by op: " + ", ".join(ops))
    return lines


def render_terminal(analysis: Analysis) -> str:
    """The budget, errors, ranked causes, context, targets and notes, as plain text."""
    lines = [f"analysis of run {analysis.run_id}", ""]
    if analysis.budget is not None:
        lines += [*render_budget(analysis.budget), ""]
    errors = [f for f in analysis.findings if f.tier == "errors"]
    ranked = [f for f in analysis.findings if f.tier != "errors"]
    if errors:
        lines.append("errors (reported before any latency cause):")
        for n, f in enumerate(errors, 1):
            lines += _finding_lines(n, f)
        lines.append("")
    lines.append("causes (ranked by the share of latency they explain, overall / in the tail):")
    if not ranked:
        lines.append("  none found")
    for n, f in enumerate(ranked, 1):
        lines += _finding_lines(n, f)
    if analysis.unexplained:
        lines.append(f"  -- {unexplained_line(analysis.unexplained)}")
    if analysis.facts:
        lines += ["", "context:"]
        lines += [f"  - {fact.title}" for fact in analysis.facts]
    lines += ["", "targets:"]
    if analysis.targets:
        header = ["target", "threshold", "measured", "result"]
        lines += _table([header, *(_target_row(r) for r in analysis.targets)])
        unmeasured = [r for r in analysis.targets if r.passed is None]
        lines += [f"  N/A {r.target.name}: {r.evidence}" for r in unmeasured]
    else:
        lines.append("  none")
    if analysis.goodput:
        lines += goodput_lines(analysis.goodput)
    if analysis.notes:
        lines += ["", "notes:", *(f"  - {note}" for note in analysis.notes)]
    return "\n".join(lines) + "\n"


def write_analysis(analysis: Analysis, run_dir: str | Path) -> Path:
    """Write ``analysis.json`` into ``run_dir`` atomically (temp file + ``os.replace``)."""
    path = Path(run_dir) / ANALYSIS_JSON
    write_json(path, analysis.as_dict())
    return path
