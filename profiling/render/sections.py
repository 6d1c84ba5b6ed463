"""The report's building blocks: sections, tables and cells, and how numbers are written.

Data only: :mod:`profiling.render.html` turns a :class:`ReportData` into HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from profiling.render.charts import Chart, format_value
from profiling.render.evidence import Row, evidence_rows

RESULT_CLASS = {"PASS": "pass", "FAIL": "fail", "N/A": "na"}
EVIDENCE_ROWS = 12
"""Rows of a finding's evidence the report shows (the rest: ``and K more``)."""
EVIDENCE_WIDTH = 300
"""Characters of a text value the report shows."""


@dataclass(frozen=True)
class Cell:
    """One table cell: text, plus an optional CSS class, relative link, note, share bar or
    table of labelled values."""

    text: str
    cls: str = ""
    """CSS class: ``pass``, ``fail``, ``na``, ``num``, ``good``, ``bad``."""
    href: str | None = None
    """A relative link (never a network address)."""
    note: str = ""
    """A second, smaller line."""
    bar: float | None = None
    """A 0..1 share drawn as a bar under the text."""
    detail: tuple[Row, ...] = ()
    """Labelled values drawn as a small two-column table under the text (evidence)."""


@dataclass(frozen=True)
class Table:
    """A table of :class:`Cell` rows under column headings."""

    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """One section of the report; ``missing`` set means its data was not captured."""

    key: str
    """Anchor id."""
    title: str
    missing: str | None = None
    """Why there is nothing to show, as one short line."""
    intro: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportData:
    """Everything the HTML report shows, already computed and formatted."""

    run_id: str
    generated_utc: str
    sections: list[Section]

    def section(self, key: str) -> Section:
        """The section with anchor ``key`` (raises ``KeyError`` if absent)."""
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)


def result_text(passed: Any) -> str:
    return "PASS" if passed is True else "FAIL" if passed is False else "N/A"


def missing(key: str, title: str, what: str) -> Section:
    return Section(key, title, missing=f"Not captured in this run: {what}.")


def fmt(value: Any, key: str = "") -> str:
    """A number formatted by the unit its key names (``_s``, ``bytes``, ``share``, ``_mb``)."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if not isinstance(value, int | float):
        text = str(value)
        return text[:12] if len(text) >= 40 and text.isalnum() else text
    k = key.lower()
    if k.endswith(("ops_s", "per_s", "_rps")):
        return f"{value:,.0f}/s" if abs(value) >= 1000 else f"{value:.3g}/s"
    if k.endswith(("_s", "_seconds", "seconds")) or k in {"s", "duration", "wait"}:
        return format_value(value, "s")
    if "bytes" in k:
        return format_value(value, "bytes")
    if "share" in k or k.endswith("_rate"):
        return f"{value:.0%}"
    if "percent" in k:
        return format_value(value, "percent")
    if k.endswith("_mb"):
        return f"{value:,.1f} MB"
    return format_value(value, "count")


def with_unit(value: Any, unit: str) -> str:
    """A target's value in its unit: seconds scale to ms or µs, other units are appended."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if unit == "s":
        return format_value(value, "s")
    return f"{fmt(value)} {unit}".rstrip()


def evidence_detail(evidence: Any) -> tuple[Row, ...]:
    """A finding's evidence as rows for a cell's :attr:`Cell.detail` (none unless a dict)."""
    if not isinstance(evidence, dict):
        return ()
    return tuple(evidence_rows(evidence, limit=EVIDENCE_ROWS, width=EVIDENCE_WIDTH))


def num(text: str, cls: str = "") -> Cell:
    return Cell(text, f"num {cls}".strip())
