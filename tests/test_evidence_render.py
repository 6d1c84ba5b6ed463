"""A finding's evidence as labelled rows with units: pure unit tests, no run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from profiling.render.evidence import Row, evidence_rows, label, unit_of, value_text
from profiling.render.html import render_html
from profiling.render.sections import ReportData
from profiling.render.terminal import evidence_lines, render_terminal, write_analysis
from profiling.render.verdict_html import context_section, findings_section, targets_section
from profiling.verdict.analyze import Analysis
from profiling.verdict.findings import Finding

EVIL = "<script>alert(1)</script>"


def rows(evidence: dict[str, Any], limit: int = 100) -> dict[str, str]:
    return dict(evidence_rows(evidence, limit=limit))


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("wait_external_s", 1.234, ("wait external", "1.23 s")),
        ("per_request_s", 0.0456, ("per request", "45.6 ms")),
        ("median_reload_s", 0.00025, ("median reload", "250 µs")),
        ("span_s", 4321.0, ("span", "4,321 s")),
        ("seconds", 2.5, ("time", "2.5 s")),
        ("adapter_change_s_subtracted", 0.75, ("adapter change time subtracted", "750 ms")),
        ("cpu_ms_per_op", 62.5, ("CPU", "62.5 ms/op")),
        ("minutes_to_limit", 5.0833, ("time to limit", "5.08 min")),
        ("peak_mb", 348.24, ("peak", "348 MB")),
        ("rss_last_mb", 12345.6, ("RSS last", "12,346 MB")),
        ("held_at_start_bytes", 2_500_000, ("held at start", "2.5 MB")),
        ("budget_bytes", 3 * 2**30, ("budget", "3.22 GB")),
        ("arrivals_per_s", 12.3, ("arrivals", "12.3/s")),
        ("backlog_growth_per_s", 0.0123, ("backlog growth", "0.0123/s")),
        ("slope_mb_per_min", 61.2, ("slope", "61.2 MB/min")),
        ("matmul_gflops", 44.17, ("matmul", "44.2 GFLOP/s")),
        ("mean_cpu_percent", 89.234, ("mean CPU", "89.2%")),
        ("utilisation", 0.98237, ("utilisation", "98%")),
        ("saturated_share", 0.86, ("saturated share", "86%")),
        ("server_load_share", 0.05, ("server load share", "5.0%")),
        ("error_rate", 0.0042, ("error rate", "0.42%")),
        ("tail_share", 0.0, ("tail share", "0%")),
        ("load_p", 0.0001, ("load p-value", "<0.001")),
        ("backlog_p", 0.0312, ("backlog p-value", "0.031")),
        ("load_correlation", 0.73456, ("load correlation", "0.735")),
        ("capacity_misses", 12345, ("capacity misses", "12,345")),
        ("in_flight_mean", 2.34567, ("mean in flight", "2.35")),
        ("cores", 2.0, ("cores", "2")),
        ("idle_sent_alone", True, ("idle sent alone", "yes")),
        ("net_of_caches", False, ("net of caches", "no")),
        ("frame", "spin (tests/planted.py)", ("frame", "spin (tests/planted.py)")),
        ("server_exit_code", -9, ("server exit code", "-9")),
    ],
)
def test_each_key_is_labelled_and_shown_in_its_unit(
    key: str, value: Any, shown: tuple[str, str]
) -> None:
    assert evidence_rows({key: value}) == [Row(*shown)]


def test_units_come_from_the_key() -> None:
    assert unit_of("queue_s") == "s" and unit_of("seconds_by_replica") == "s"
    assert unit_of("mean_s_by_op") == "s" and unit_of("wall_s_by_state") == "s"
    assert unit_of("slope_low_mb_per_min") == "mb_per_min" and unit_of("error_rate") == "fraction"
    assert unit_of("records") is None and unit_of("blas_kind") is None
    assert label("lag_p50_s") == "lag p50" and label("little_in_flight").startswith("in flight")


def test_values_that_are_not_finite_or_too_long() -> None:
    assert value_text(math.inf, "minutes") == "∞" and value_text(-math.inf, "mb") == "-∞"
    assert value_text(math.nan, "s") == "-"
    text = value_text("x" * 500, width=40)
    assert len(text) == 40 and text.endswith("…")
    assert value_text("two\n  lines") == "two lines"


def test_ratio_is_a_percent_within_one_and_a_factor_beyond() -> None:
    assert rows({"ratio": 0.25}) == {"ratio": "25%"}
    assert rows({"ratio": 2.5}) == {"ratio": "×2.5"}


def test_none_and_empty_values_are_left_out() -> None:
    found = rows({"achievable_gflops": None, "batching": None, "by_op": {}, "example": "", "n": 3})
    assert found == {"n": "3"}


def test_nested_dicts_are_flattened_into_readable_paths() -> None:
    evidence = {
        "replicas": {
            "0": {"utilisation": 0.98237, "arrivals_per_s": 12.3, "capacity_per_s": 9.1},
            "1": {"utilisation": 0.4, "arrivals_per_s": 3.0, "capacity_per_s": None},
        },
        "queue_s": 12.5,
    }
    assert list(evidence_rows(evidence)) == [
        Row("queue", "12.5 s"),  # the evidence's own values come before its nested ones
        Row("replica 0 · utilisation", "98%"),
        Row("replica 0 · arrivals", "12.3/s"),
        Row("replica 0 · capacity", "9.1/s"),
        Row("replica 1 · utilisation", "40%"),
        Row("replica 1 · arrivals", "3/s"),
    ]


def test_entries_without_a_unit_take_their_parents() -> None:
    found = rows(
        {
            "seconds_by_replica": {"0": 3.2, "1": 0.4},
            "utilisation": {0: 0.5},
            "mean_s_by_op": {"embed": 0.04},
            "generator_cores_by_stage": {"warm": 0.05},
            "by_kind": {"Timeout": 3},
        }
    )
    assert found == {
        "time · replica 0": "3.2 s",
        "time · replica 1": "400 ms",
        "utilisation · 0": "50%",
        "mean time · op embed": "40 ms",
        "generator cores · stage warm": "0.05",
        "kind Timeout": "3",
    }


def test_dicts_of_named_things_are_labelled_by_them() -> None:
    found = rows(
        {
            "by_op": {
                "search": {"changed": 3, "p50_first_token_changed_s": 0.5, "idle_sent_alone": 1}
            },
            "nodes": {"n1": {"replicas": [0, 1], "blas_threads": 4, "cores": 2}},
            "cpu_by_node": {"abc": {"mean_cpu_percent": 89.2, "saturated_share": 0.86}},
            "caches": {"budget_bytes": 2e9, "fits": 1},
        }
    )
    assert found == {
        "op search · changed": "3",
        "op search · p50 first token changed": "500 ms",
        "op search · idle sent alone": "1",
        "node n1 · replicas": "0, 1",
        "node n1 · BLAS threads": "4",
        "node n1 · cores": "2",
        "node abc · mean CPU": "89.2%",
        "node abc · saturated share": "86%",
        "caches · budget": "2 GB",
        "caches · fits": "1",
    }


def test_lists_are_shortened_and_lists_of_dicts_get_a_row_each() -> None:
    assert rows({"blas_kind": ["reference"]}) == {"BLAS kind": "reference"}
    assert rows({"replicas": [0, 1, 2]}) == {"replicas": "0, 1, 2"}
    assert rows({"names": list("abcde")}) == {"names": "5 items: a, b, c, …"}
    top = [{"frame": "matmul (mlx/core.py)", "samples": 80, "share": 0.8}] * 2
    assert rows({"top": top}) == {
        "top 1": "matmul (mlx/core.py) · samples 80 · share 80%",
        "top 2": "matmul (mlx/core.py) · samples 80 · share 80%",
    }


def test_at_most_limit_rows_the_last_saying_how_many_more() -> None:
    evidence = {f"count_{k}": k for k in range(20)}
    found = evidence_rows(evidence, limit=6)
    assert len(found) == 6
    assert found[:5] == [Row(f"count {k}", f"{k:,}") for k in range(5)]
    assert found[-1] == Row("and 15 more", "")
    assert len(evidence_rows(evidence, limit=20)) == 20  # all fit: no "more" row


def test_terminal_table_is_aligned_and_indented() -> None:
    lines = evidence_lines({"queue_s": 1.95, "replicas": {"0": {"utilisation": 0.042}}})
    assert lines == [
        "      queue                    1.95 s",
        "      replica 0 · utilisation  4.2%",
    ]


def _finding(evidence: dict[str, Any]) -> Finding:
    return Finding(
        kind="queueing",
        title="queueing: requests wait",
        tier="latency",
        explains=["queue"],
        seconds=2.0,
        share=0.5,
        tail_seconds=1.0,
        tail_share=0.5,
        support=50,
        evidence=evidence,
        files=["records.jsonl"],
        suggestion="add replicas",
    )


def test_terminal_shows_the_table_and_the_json_keeps_the_raw_numbers(tmp_path: Path) -> None:
    evidence = {"queue_s": 1.95, "replicas": {"0": {"utilisation": 0.98237}}}
    analysis = Analysis("run", None, [_finding(evidence)], [], [])
    text = render_terminal(analysis)
    assert "      replica 0 · utilisation  98%\n" in text and "      from records.jsonl" in text
    assert "queue_s=" not in text
    saved = json.loads(write_analysis(analysis, tmp_path).read_text())
    assert saved["findings"][0]["evidence"] == evidence


def test_report_shows_evidence_as_an_escaped_table() -> None:
    finding = _finding({"frame": EVIL, EVIL: 1.5, "queue_s": 0.25}).as_dict()
    fact = {"kind": "cpu", "title": "node", "evidence": {"mean_cpu_percent": 95.0}}
    target = {"target": {"name": "t", "op": "<", "threshold": 1}, "passed": None}
    sections = [
        findings_section({"findings": [finding]}),
        context_section({"facts": [fact]}),
        targets_section({"targets": [{**target, "evidence": {"p95_s": 0.4}}]}),
    ]
    html = render_html(ReportData("run", "now", sections))
    assert EVIL not in html
    assert "<th>frame</th><td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
    assert "<th>&lt;script&gt;alert(1)&lt;/script&gt;</th><td>1.5</td>" in html
    assert "<th>queue</th><td>250 ms</td>" in html
    assert "<th>mean CPU</th><td>95%</td>" in html
    assert "<th>p95</th><td>400 ms</td>" in html  # a target's evidence, when a dict
    assert html.count('<table class="evidence">') == 3


def test_report_says_how_many_rows_were_left_out() -> None:
    finding = _finding({f"count_{k}": k for k in range(30)}).as_dict()
    html = render_html(ReportData("run", "now", [findings_section({"findings": [finding]})]))
    assert '<td class="more" colspan="2">and 19 more</td>' in html
