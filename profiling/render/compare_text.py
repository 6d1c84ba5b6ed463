"""Terminal rendering of a :class:`~profiling.verdict.compare.Comparison` (data built elsewhere)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from profiling.verdict.compare import CompareRow, Comparison
from profiling.verdict.goodput import describe as describe_goodput

_PASSED = {True: "pass", False: "FAIL", None: "n/a"}


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.4g}"


def _times(ratio: float | None) -> str:
    return _num(ratio) if ratio is None or math.isinf(ratio) else f"{ratio:.3g}x"


def _p(value: float | None) -> str:
    return "-" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    rows = [header, *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _runs_text(runs: list[dict[str, Any]]) -> str:
    ids = ", ".join(str(r["run_id"]) for r in runs)
    return f"run {ids}" if len(runs) == 1 else f"{len(runs)} runs: {ids}"


def _interval(r: CompareRow) -> str:
    """``[low, high]`` of the ratio, or ``B-A [low, high]`` of a difference."""
    if r.ci_low is None or r.ci_high is None:
        return "-"
    if r.interval == "difference":
        return f"B-A [{r.ci_low:+.3g}, {r.ci_high:+.3g}]"
    low, high = (_num(v) if math.isinf(v) else f"{v:.3g}" for v in (r.ci_low, r.ci_high))
    return f"[{low}, {high}]"


def detectable_text(r: CompareRow) -> str:
    """The smallest change the row would have seen: ``x1.23``, ``+-0.012``, ``-``."""
    if r.detectable is None:
        return "-"
    if r.interval == "difference":
        return f"+-{r.detectable:.2g}"
    return _times(r.detectable)


def _row_cells(r: CompareRow) -> list[str]:
    ratio = "-" if r.ratio is None else _times(r.ratio)
    return [
        r.name,
        r.metric,
        _num(r.a),
        _num(r.b),
        ratio,
        _interval(r),
        _p(r.p_value),
        detectable_text(r),
        r.verdict,
    ]


def _target_cells(t: dict[str, Any]) -> list[str]:
    bound = f"{t['op']} {t['threshold']:g} {t['unit']}"
    a, b = (
        "n/a" if t[side] is None else f"{_num(t[side])} {_PASSED[t['passed_' + side]]}"
        for side in ("a", "b")
    )
    return [t["name"], bound, a, b]


def _units_text(units: str) -> str:
    return "interleaved block pairs" if units == "block pairs" else "runs and time blocks"


def render_terminal(comparison: Comparison) -> str:
    """The comparison as a plain-text table, then targets, flame graphs and warnings."""
    c = comparison
    level = f"{1 - c.alpha:.0%}"
    header = [
        f"A: {c.a_label} ({_runs_text(c.a_runs)})",
        f"B: {c.b_label} ({_runs_text(c.b_runs)})",
        f"a change must be significant with Holm's method over all {len(c.rows)} rows at "
        f"{c.alpha:g} ({_units_text(c.units)} as the units), its direction the sign of the "
        f"tested statistic and its ratio B/A beyond x{c.factor:g} either way",
        f"run-to-run drift allowed for: {c.drift or 'none'}",
    ]
    columns = [
        "name",
        "metric",
        "A",
        "B",
        "ratio",
        f"{level} CI",
        "p (raw)",
        "detectable",
        "verdict",
    ]
    table = _table(columns, [_row_cells(r) for r in c.rows])
    if any(r.detectable is not None for r in c.rows):
        table.append(
            "detectable: the smallest change each row would have seen (80% power); "
            f"'not detected' means a x{c.factor:g} change could have been missed, 'no change' "
            "that it would have been seen"
        )
    untestable: dict[str, list[str]] = {}
    for r in c.rows:
        if r.verdict == "not testable":
            untestable.setdefault(r.reason, []).append(f"{r.name} {r.metric}")
    table += [f"not testable ({why}): {', '.join(names)}" for why, names in untestable.items()]
    sections = [header, table]
    if c.targets:
        targets = _table(["target", "must be", "A", "B"], [_target_cells(t) for t in c.targets])
        sections.append(["targets:", *targets])
    if c.goodput:
        sides = [s for s in ("a", "b") if s in c.goodput]
        sections.append([f"{s.upper()}: {describe_goodput(c.goodput[s])}" for s in sides])
    if c.diff_flamegraphs:
        sections.append(
            ["differential flame graphs (red: larger share in B, blue: smaller):"]
            + [f"  {role}: {path}" for role, path in c.diff_flamegraphs.items()]
        )
    if c.warnings or c.notes:
        sections.append([f"warning: {w}" for w in c.warnings] + [f"note: {n}" for n in c.notes])
    worse = c.regressions
    sections.append(
        [
            f"{len(worse)} regression(s): "
            + "; ".join(f"{r.name} {r.metric} {_times(r.ratio)}" for r in worse)
        ]
        if worse
        else [
            f"no regression ({len(c.improvements)} improvement(s), "
            f"{len(c.undetected)} not detected)"
        ]
    )
    return "\n\n".join("\n".join(section) for section in sections)
