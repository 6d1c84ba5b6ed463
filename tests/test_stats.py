"""Percentiles and summaries from merged raw samples, checked against numpy."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest

from datamodel.errors import ConfigError
from datamodel.frame import Frame, grouped
from datamodel.quantiles import Summary, quantile_sorted, summarize

QS = [0, 1, 10, 25, 33.3, 50, 66.7, 90, 95, 99, 99.9, 100]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_quantile_equals_numpy_linear(n):
    rng = random.Random(n)
    values = sorted(rng.lognormvariate(-3, 1) for _ in range(n))
    for q in QS:
        assert quantile_sorted(values, q / 100) == pytest.approx(
            float(np.percentile(values, q)), rel=1e-12
        )


def test_quantile_interpolates_between_ranks():
    assert quantile_sorted([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile_sorted([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert quantile_sorted([1.0, 2.0, 3.0, 4.0], 1) == 4.0
    assert quantile_sorted([10.0, 20.0], 0.9) == pytest.approx(19.0)


def test_quantile_rejects_bad_input():
    with pytest.raises(ConfigError, match="no values"):
        quantile_sorted([], 0.5)
    with pytest.raises(ConfigError, match=r"0\.\.1"):
        quantile_sorted([1.0], 1.01)
    with pytest.raises(ConfigError, match=r"0\.\.1"):
        quantile_sorted([1.0], -0.01)


def test_summarize_matches_numpy_and_does_not_need_sorted_input():
    rng = random.Random(0)
    values = [rng.expovariate(10) for _ in range(5000)]
    summary = summarize(values)
    assert summary.count == 5000
    assert summary.mean == pytest.approx(float(np.mean(values)))
    assert (summary.min, summary.max) == (min(values), max(values))
    for name, q in [("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)]:
        assert getattr(summary, name) == pytest.approx(float(np.percentile(values, q)))


def test_summarize_of_nothing_has_no_figures():
    summary = summarize([])
    assert summary.count == 0
    assert summary.as_dict() == {
        "count": 0,
        "mean": None,
        "min": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
        "max": None,
    }


def test_summarize_rejects_nan():
    with pytest.raises(ConfigError, match="NaN"):
        summarize([0.1, float("nan")])


def test_as_dict_has_every_figure_in_order():
    summary = summarize([0.1, 0.2, 0.3])
    d = summary.as_dict()
    assert list(d) == ["count", "mean", "min", "p50", "p90", "p95", "p99", "max"]
    assert d["count"] == 3
    assert d["p50"] == pytest.approx(0.2)


@dataclass
class Record:
    op: str
    duration: float


def test_grouped_summaries_keep_first_seen_order_over_columns():
    records = [Record("search", 0.01), Record("analyze", 0.2), Record("analyze", 0.4)]
    frame = Frame.of([{"op": r.op, "duration": r.duration} for r in records])
    groups = grouped(frame, "op")
    assert list(groups) == ["search", "analyze"]
    assert groups["analyze"].count == 2
    assert groups["analyze"].mean == pytest.approx(0.3)
    assert groups["analyze"] == summarize([0.2, 0.4])


def test_grouped_summaries_take_a_value_column_and_a_mask():
    records = [
        {"op": "a", "stage": "s", "wait": 5.0, "ok": True},
        {"op": "a", "stage": "t", "wait": 7.0, "ok": True},
        {"op": "a", "stage": "t", "wait": 9.0, "ok": False},
    ]
    frame = Frame.of(records)
    groups = grouped(frame, "stage", "wait", frame.ok)
    assert groups["s"].max == 5.0
    assert groups["t"].p50 == 7.0 and groups["t"].count == 1
    assert grouped(frame, "op", mask=np.zeros(3, dtype=bool)) == {}


def test_merged_p99_differs_from_averaged_p99():
    """Why percentiles come from merged samples, never from averaging workers' percentiles.

    Worker A served 1000 fast requests; worker B served 10 slow ones. Of all 1010 requests,
    fewer than 1% are slow, so the true p99 is fast. Averaging the two workers' p99s gives
    B's ten requests as much say as A's thousand and reports a p99 fifty times too high.
    """
    rng = random.Random(4)
    worker_a = [rng.uniform(0.009, 0.011) for _ in range(1000)]
    worker_b = [rng.uniform(0.9, 1.1) for _ in range(10)]
    per_worker = [summarize(worker_a), summarize(worker_b)]
    averaged = sum(s.p99 for s in per_worker if s.p99 is not None) / len(per_worker)
    merged = summarize(worker_a + worker_b)
    assert merged.p99 == pytest.approx(float(np.percentile(worker_a + worker_b, 99)))
    assert merged.p99 is not None and merged.p99 < 0.012
    assert averaged > 0.45
    assert averaged > 40 * merged.p99


def test_summary_is_frozen():
    summary = summarize([1.0])
    assert isinstance(summary, Summary)
    with pytest.raises(AttributeError):
        summary.count = 2  # type: ignore[misc]
