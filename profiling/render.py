"""Renderers of one :class:`~profiling.analyze.Analysis`: terminal text and ``analysis.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from profiling.analyze import Analysis
from profiling.targets import TargetResult
from workloads.results import write_json

ANALYSIS_JSON = "analysis.json"
_RESULT = {True: "PASS", False: "FAIL", None: "N/A"}


def _number(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.1f}"


def _evidence(evidence: dict[str, Any], limit: int = 6) -> str:
    """``key=value`` pairs of the scalar evidence, at most ``limit``."""
    pairs = []
    for key, value in evidence.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            pairs.append(f"{key}={_number(value)}")
        elif isinstance(value, str):
            pairs.append(f"{key}={value}")
    return ", ".join(pairs[:limit])


def _target_row(result: TargetResult) -> list[str]:
    t = result.target
    unit = f" {t.unit}" if t.unit else ""
    measured = "-" if result.value is None else f"{_number(result.value)}{unit}"
    return [t.name, f"{t.op} {_number(t.threshold)}{unit}", measured, _RESULT[result.passed]]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


def render_terminal(analysis: Analysis) -> str:
    """A compact ranked findings list, a targets table and the notes, as plain text."""
    lines = [f"analysis of run {analysis.run_id}", "", "findings (most severe first):"]
    if not analysis.findings:
        lines.append("  none")
    for n, f in enumerate(analysis.findings, 1):
        lines.append(f"  {n:>2}. [{f.severity_share:4.0%}] {f.kind}: {f.title}")
        detail = _evidence(f.evidence)
        if detail:
            lines.append(f"      {detail}  ({', '.join(f.files)})")
        lines.append(f"      -> {f.suggestion}")
    lines += ["", "targets:"]
    if analysis.targets:
        header = ["target", "threshold", "measured", "result"]
        lines += _table([header, *(_target_row(r) for r in analysis.targets)])
        unmeasured = [r for r in analysis.targets if r.passed is None]
        lines += [f"  N/A {r.target.name}: {r.evidence}" for r in unmeasured]
    else:
        lines.append("  none")
    if analysis.notes:
        lines += ["", "notes:", *(f"  - {note}" for note in analysis.notes)]
    return "\n".join(lines) + "\n"


def write_analysis(analysis: Analysis, run_dir: str | Path) -> Path:
    """Write ``analysis.json`` into ``run_dir`` atomically (temp file + ``os.replace``)."""
    path = Path(run_dir) / ANALYSIS_JSON
    write_json(path, analysis.as_dict())
    return path
