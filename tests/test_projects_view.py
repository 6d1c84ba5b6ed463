"""The per-project view: percentiles, failures, adapter changes and goodput per project,
with one slow project marked. Pure; hand-built records."""

from __future__ import annotations

from typing import Any

from profiling.render.projects_html import project_rows, run_slos
from profiling.verdict.capacity import Slo


def _records() -> list[dict[str, Any]]:
    out = []
    for k in range(100):
        for project, duration in (("fast-a", 0.1), ("fast-b", 0.12), ("slow", 0.9)):
            out.append(
                {
                    "op": "analyze",
                    "project": project,
                    "planned": 1000.0 + k * 0.1,
                    "duration": duration,
                    "ok": not (project == "fast-b" and k % 10 == 0),
                    "switched": project == "slow" and k % 4 == 0,
                }
            )
    return out


def test_one_slow_project_stands_out_with_its_goodput() -> None:
    slos = [Slo("analyze", "p95", 0.5)]
    rows = {r["project"]: r for r in project_rows(_records(), slos)}
    assert set(rows) == {"fast-a", "fast-b", "slow"}
    assert rows["slow"]["slow"] and not rows["fast-a"]["slow"] and not rows["fast-b"]["slow"]
    assert rows["slow"]["goodput_ops_s"] == 0.0  # every op over the 0.5 s SLO
    assert rows["fast-a"]["goodput_ops_s"] > rows["fast-b"]["goodput_ops_s"] > 0  # fails count
    assert rows["fast-b"]["failed"] == 10 and rows["slow"]["switches"] == 25
    assert rows["slow"]["p95_s"] == 0.9


def test_goodput_slos_come_from_the_capacity_search_else_the_latency_targets() -> None:
    capacity = {"slos": [{"op": "all", "metric": "p99", "threshold": 2.0, "source": "--slo"}]}
    assert [s.text for s in run_slos(None, capacity)] == ["all:p99<=2"]
    analysis = {
        "targets": [
            {"target": {"name": "a", "metric": "p95_s:analyze", "op": "<", "threshold": 1.5}},
            {"target": {"name": "m", "metric": "service_uss_mb_max", "op": "<", "threshold": 9}},
        ]
    }
    assert [s.text for s in run_slos(analysis, None)] == ["analyze:p95<=1.5"]
    assert run_slos(None, None) == []

    # An analysis that counted goodput says against what; the report takes its word.
    counted = {"goodput": {"slos": ["search:p99<=0.3"], "against": "targets: x"}, **analysis}
    assert [s.text for s in run_slos(counted, capacity)] == ["search:p99<=0.3"]
