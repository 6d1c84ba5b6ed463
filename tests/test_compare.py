"""A/B comparison of hand-built run folders (pure: no Ray, no MLX)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datamodel.errors import ConfigError
from datamodel.runfolder import SCHEMA_VERSION, RunData
from profiling.render.compare_text import render_terminal
from profiling.verdict.compare import CompareRow, Comparison, compare_runs, merge_runs
from profiling.verdict.targets import Target, measure

START = 1_767_225_600.0
MACHINE = {
    "hostname": "mac-a",
    "os": "macOS-15",
    "machine": "arm64",
    "chip": "Apple M3",
    "cpus_logical": 8,
    "memory_bytes": 16_000_000_000,
    "git_commit": "abc",
}


def make_run(
    root: Path,
    *,
    scale: float = 1.0,
    n: int = 200,
    seed: int = 0,
    ops: tuple[str, ...] = ("analyze", "search"),
    failed: int = 0,
    fail_scale: float = 1.0,
    gap: float = 0.1,
    profile: str = "smoke",
    config: str = "baseline",
    machine: dict[str, Any] | None = None,
    uss_mb: float | None = None,
    stacks: dict[str, str] | None = None,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write a run folder: ``n`` ok records per op with log-normal durations x ``scale``,
    planned every ``gap`` seconds, and ``failed`` failed records spread evenly among them
    (their durations x ``fail_scale``: below 1 they fail fast); optional USS timeline and
    collapsed profiles (role -> text)."""
    rng = np.random.default_rng(seed)
    records = []
    total = n * len(ops) + failed
    failing = {round(k * total / failed) for k in range(failed)} if failed else set()
    for i in range(total):
        ok = i not in failing
        records.append(
            {
                "op": ops[i % len(ops)],
                "project": f"p{i % 3}",
                "stage": "mixed",
                "worker": 0,
                "replica": 0,
                "planned": START + i * gap,
                "id": f"0-{i}",
                "duration": float(rng.lognormal(-1.5, 0.4)) * scale * (1 if ok else fail_scale),
                "wait": 0.0,
                "service": 0.1,
                "stages": {},
                "node": "n",
                "pid": 7,
                "ok": ok,
                "error": None if ok else "boom",
                "switched": False,
            }
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    info = {
        "schema_version": SCHEMA_VERSION,
        "run_id": root.name,
        "status": "completed",
        "spec": {"profile": {"name": profile, "projects": 3}, "config": {"name": config}},
        "machine": {**MACHINE, **(machine or {})},
        "replicas": [],
        "replica_stats": [],
        **(run or {}),
    }
    (root / "run.json").write_text(json.dumps(info))
    if uss_mb is not None:
        rows = [
            {
                "t": START + k,
                "role": "replica-0",
                "pid": 7,
                "rss": uss_mb * 2e6,
                "uss": uss_mb * 1e6 * (0.9 + 0.05 * k),
            }
            for k in range(3)
        ]
        (root / "timeline.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if stacks:
        (root / "profiles").mkdir(exist_ok=True)
        for role, text in stacks.items():
            (root / "profiles" / f"{role}.collapsed").write_text(text)
    return root


def load(*paths: Path) -> list[RunData]:
    return [RunData.load(p) for p in paths]


def compare(a: list[RunData], b: list[RunData], **kwargs: Any) -> Comparison:
    """Compare with no calibration prior unless one is given (the tests stay pure)."""
    kwargs.setdefault("priors", {})
    return compare_runs(a, b, **kwargs)


def row(comparison: Comparison, name: str, metric: str) -> CompareRow:
    (found,) = [r for r in comparison.rows if r.name == name and r.metric == metric]
    return found


def test_slower_b_is_a_latency_regression(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1))
    b = load(make_run(tmp_path / "b", seed=2, scale=1.5))
    comparison = compare(a, b)
    p50 = row(comparison, "analyze", "p50_s")
    assert p50.verdict == "regression" and p50.significant
    assert p50.p_value is not None and p50.p_value < 0.01
    assert p50.ratio == pytest.approx(1.5, rel=0.15)
    assert (p50.n_a, p50.n_b) == (200, 200)
    assert {(r.name, r.metric) for r in comparison.regressions} >= {
        ("analyze", "p50_s"),
        ("search", "p50_s"),
        ("analyze", "p95_s"),
    }


def test_faster_b_is_an_improvement_and_the_same_runs_are_no_change(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1))
    faster = compare(a, load(make_run(tmp_path / "b", seed=2, scale=0.6)))
    assert row(faster, "analyze", "p50_s").verdict == "improvement"
    assert not faster.regressions
    same = compare(a, a)
    assert {r.verdict for r in same.rows} <= {"no change", "not detected", "not testable"}
    assert row(same, "analyze", "p95_s").ratio == 1.0
    assert row(same, "analyze", "p95_s").p_value == 1.0


def test_a_significant_change_below_the_factor_is_no_change(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1, n=3000, ops=("embed",)))
    b = load(make_run(tmp_path / "b", seed=2, n=3000, ops=("embed",), scale=1.04))
    p50 = row(compare(a, b), "embed", "p50_s")
    assert p50.significant and p50.verdict == "no change"
    assert "threshold" in p50.reason
    assert row(compare(a, b, factor=1.02), "embed", "p50_s").verdict == "regression"


def test_rounds_are_merged_before_statistics(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a1", seed=1, n=50), make_run(tmp_path / "a2", seed=2, n=70))
    b = load(make_run(tmp_path / "b1", seed=3, n=60), make_run(tmp_path / "b2", seed=4, n=40))
    comparison = compare(a, b)
    p99 = row(comparison, "analyze", "p99_s")
    assert (p99.n_a, p99.n_b) == (50 + 70, 60 + 40)
    merged = [r["duration"] for run in a for r in run.ok_records("analyze")]
    assert p99.a == pytest.approx(float(np.quantile(merged, 0.99)))
    throughput = row(comparison, "all", "throughput_ops_s")
    assert (throughput.runs_a, throughput.runs_b) == (2, 2) and throughput.p_value is not None
    spans = [max(r["planned"] + r["duration"] for r in run.records) - START for run in a]
    assert throughput.a == pytest.approx((2 * 50 + 2 * 70) / sum(spans))
    assert [r["run_id"] for r in comparison.a_runs] == ["a1", "a2"]


def test_merge_runs_pools_rates_across_interleaved_rounds(tmp_path: Path) -> None:
    first = make_run(tmp_path / "r1", seed=1, n=20)
    second = make_run(tmp_path / "r2", seed=2, n=30, run={"spec": {"profile": {"name": "smoke"}}})
    runs = load(first, second)
    merged = merge_runs(runs)
    assert len(merged.records) == 100
    planned = [r["planned"] for r in merged.records]
    assert planned == sorted(planned)  # the second round starts where the first ended
    value, _ = measure(merged, "throughput_ops_s")
    spans = [max(r["planned"] + r["duration"] for r in run.records) - START for run in runs]
    assert value == pytest.approx(100 / sum(spans))


def test_throughput_with_three_rounds_per_side_is_tested(tmp_path: Path) -> None:
    a = load(*(make_run(tmp_path / f"a{i}", seed=i, gap=0.10 + 0.002 * i) for i in range(3)))
    b = load(*(make_run(tmp_path / f"b{i}", seed=i, gap=0.15 + 0.002 * i) for i in range(3)))
    throughput = row(compare(a, b), "all", "throughput_ops_s")
    assert throughput.ratio is not None and throughput.ratio < 0.75
    assert throughput.verdict == "regression"  # fewer ops per second is worse
    back = row(compare(b, a), "all", "throughput_ops_s")
    assert back.verdict == "improvement"


def test_error_rate_and_memory_regressions(tmp_path: Path) -> None:
    a = load(*(make_run(tmp_path / f"a{i}", seed=i, uss_mb=200 + i) for i in range(3)))
    b = load(*(make_run(tmp_path / f"b{i}", seed=i, uss_mb=300 + i, failed=40) for i in range(3)))
    comparison = compare(a, b)
    errors = row(comparison, "records", "error_rate")
    assert errors.verdict == "regression" and errors.a == 0.0
    assert errors.b == pytest.approx(40 / 440)
    memory = row(comparison, "replicas", "memory_peak_mb")
    assert memory.verdict == "regression" and "USS" in memory.reason
    assert memory.a == pytest.approx(202 * 1.0)
    assert memory.ratio == pytest.approx(302 / 202)


def test_memory_measured_differently_is_not_testable(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", uss_mb=200))
    stats = {"replica_stats": [{"replica": 0, "rss_bytes": 300_000_000}]}
    b = load(make_run(tmp_path / "b", run=stats))
    memory = row(compare(a, b), "replicas", "memory_peak_mb")
    assert memory.verdict == "not testable" and "measured differently" in memory.reason


def test_different_profiles_or_schemas_are_refused(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"'smoke'.*'sustained'"):
        compare(a, load(make_run(tmp_path / "b", profile="sustained")))
    with pytest.raises(ConfigError, match="schema versions"):
        compare(a, load(make_run(tmp_path / "c", run={"schema_version": 1})))


def test_different_machines_warn_and_commits_do_not(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a"))
    b = load(make_run(tmp_path / "b", machine={"hostname": "mac-b", "git_commit": "def"}))
    warnings = [w for w in compare(a, b).warnings if w.startswith("different machines")]
    assert len(warnings) == 1
    assert "hostname 'mac-a'" in warnings[0] and "'mac-b'" in warnings[0]


def test_targets_side_by_side(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a"))
    b = load(make_run(tmp_path / "b", failed=100))
    target = Target("errors", "error_rate", "<", 0.01, "ratio")
    (entry,) = compare(a, b, targets=[target]).targets
    assert entry["name"] == "errors" and entry["a"] == 0.0
    assert entry["b"] == pytest.approx(0.2)
    assert (entry["passed_a"], entry["passed_b"]) == (True, False)


def test_differential_flame_graphs_per_replica_role(tmp_path: Path) -> None:
    def stacks(line: int, matmul: int, io: int) -> dict[str, str]:
        call = f"replica-0;call (r.py:{line})"
        return {
            "replica-0": f"{call};matmul (m.py:{line + 1}) {matmul}\n{call};io {io}\n",
            "generator-0": "generator-0;loop 5\n",
        }

    stacks_a, stacks_b = stacks(10, matmul=90, io=10), stacks(11, matmul=40, io=60)
    a = load(make_run(tmp_path / "a", stacks=stacks_a))
    b = load(make_run(tmp_path / "b", stacks=stacks_b))
    out = tmp_path / "out"
    comparison = compare(a, b, out_dir=out)
    assert comparison.diff_flamegraphs == {"replica-0": "diff-replica-0.svg"}
    svg = (out / "diff-replica-0.svg").read_text()
    assert svg.startswith("<svg") or "<svg" in svg[:200]
    assert "r.py:10" not in svg and "call (r.py)" in svg  # line numbers stripped, merged
    assert compare(a, b).diff_flamegraphs == {}


def test_json_and_terminal_forms(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1))
    b = load(make_run(tmp_path / "b", seed=2, scale=1.5, machine={"chip": "Apple M4"}))
    comparison = compare(a, b, a_label="before", b_label="after")
    data = json.loads(json.dumps(comparison.as_dict(), allow_nan=False))
    assert data["a"]["label"] == "before" and data["b"]["runs"][0]["run_id"] == "b"
    assert data["summary"]["regression"] == len(comparison.regressions) > 0
    assert {
        "kind",
        "name",
        "metric",
        "a",
        "b",
        "ratio",
        "p_value",
        "ci_low",
        "ci_high",
        "significant",
        "verdict",
        "n_a",
        "n_b",
        "reason",
        "interval",
        "detectable",
    } <= set(data["rows"][0])
    assert data["schema_version"] == 4
    assert set(data["summary"]) >= {"not detected", "no change", "not testable"}
    text = render_terminal(comparison)
    assert "95% CI" in text and "regression" in text and "Holm" in text
    assert "warning: different machines: chip" in text
    assert "regression(s): analyze p50_s" in text


def test_empty_side_and_bad_thresholds_are_config_errors(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a"))
    with pytest.raises(ConfigError, match="side B"):
        compare(a, [])
    with pytest.raises(ConfigError, match="factor"):
        compare(a, a, factor=0.9)
    with pytest.raises(ConfigError, match="alpha"):
        compare(a, a, alpha=1.5)
