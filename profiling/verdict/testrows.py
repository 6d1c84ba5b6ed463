"""A comparison's rows before judgement: what each side measured and its test, or why
it has none. Shared by whole-run comparisons and interleaved block pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from profiling.verdict.figures import Scale
from profiling.verdict.statistics import Test

Kind = Literal["op", "resource"]
Verdict = Literal["improvement", "regression", "no change", "not detected", "not testable"]
VERDICTS: tuple[Verdict, ...] = (
    "regression",
    "improvement",
    "no change",
    "not detected",
    "not testable",
)
"""Every verdict, in the order summaries count them."""
Interval = Literal["ratio", "difference"]


@dataclass
class Row:
    """A row before Holm's method: its test, or why it has none."""

    key: tuple[Kind, str, str]
    values: tuple[float | None, float | None]
    counts: tuple[int, int]
    runs: tuple[int, int]
    how: str
    test: Test | None = None
    scale: Scale | None = None
    """Reads the test's difference as a ratio (for the interval, the factor, the power)."""
    statistic: str = ""
    """The tested statistic of each side, in words (for when the ratio points elsewhere)."""
    interval: Interval = "ratio"
    verdict: Verdict = "not testable"
    """The verdict of a row without a test."""
    ci: tuple[float, float] | None = None
    """An interval of a row without a test (none failed: each side's exact bound)."""
