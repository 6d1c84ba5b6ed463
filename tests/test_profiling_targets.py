"""Targets files and metrics measured from hand-written run folders (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datamodel.errors import ConfigError
from datamodel.runfolder import RunData
from profiling.verdict.targets import (
    METRICS,
    Target,
    TargetResult,
    check_targets,
    known_targets,
    load_targets,
    measure,
)

MB = 1_000_000


def record(**fields: Any) -> dict[str, Any]:
    """An ok analyze record, with ``fields`` changed."""
    base = {
        "op": "analyze",
        "project": "p0",
        "stage": "s",
        "worker": 0,
        "replica": 0,
        "planned": 1000.0,
        "duration": 0.5,
        "wait": 0.1,
        "service": 0.4,
        "stages": {},
        "node": "n",
        "pid": 7,
        "ok": True,
        "error": None,
        "switched": False,
    }
    return {**base, **fields}


def write_run(
    root: Path,
    *,
    run: dict[str, Any] | None = None,
    records: list[dict[str, Any]] | None = None,
    timeline: list[dict[str, Any]] | None = None,
    ingest: list[dict[str, Any]] | None = None,
) -> RunData:
    """Write a run folder by hand and load it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.json").write_text(json.dumps({"schema_version": 1, "run_id": "r", **(run or {})}))
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records or []))
    if timeline is not None:
        (root / "timeline.jsonl").write_text("".join(json.dumps(r) + "\n" for r in timeline))
    if ingest is not None:
        (root / "ingest.json").write_text(json.dumps(ingest))
    return RunData.load(root)


def write_targets(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


GOOD = '[[target]]\nname = "t"\nmetric = "error_rate"\nop = "<"\nthreshold = 0.01\n'


def test_default_and_smoke_targets_hold_the_seed_targets() -> None:
    assert {"default", "smoke"} <= set(known_targets())
    default = {t.metric: t for t in load_targets("default")}
    assert {m: (t.op, t.threshold, t.unit) for m, t in default.items()} == {
        "init_seconds_max": ("<", 5.0, "s"),
        "service_uss_mb_max": ("<", 500.0, "MB"),
        "switch_p99_s": ("<", 3.0, "s"),
        "active_projects": (">=", 10.0, "projects"),
        "lines_of_code": (">=", 100_000.0, "lines"),
    }
    smoke = {t.metric: t for t in load_targets("smoke")}
    assert smoke["active_projects"].threshold == 3
    assert smoke["lines_of_code"].threshold == 1000
    assert smoke["service_uss_mb_max"] == default["service_uss_mb_max"]
    assert all(t.description for t in smoke.values())


def test_targets_load_from_a_path_with_defaults(tmp_path: Path) -> None:
    path = write_targets(
        tmp_path, GOOD + '\n[[target]]\nmetric = "p95_s:search"\nop = "<="\nthreshold = 2\n'
    )
    first, second = load_targets(path)
    assert first == Target("t", "error_rate", "<", 0.01, "ratio", "")
    assert second.name == "p95_s:search" and second.unit == "s"
    assert load_targets(str(path)) == [first, second]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[target]]\nmetric = "bogus"\nop = "<"\nthreshold = 1\n', ["'metric'", "bogus"]),
        ('[[target]]\nmetric = "error_rate"\nop = "=="\nthreshold = 1\n', ["'op'", "=="]),
        (GOOD + 'colour = "red"\n', ["'colour'"]),
        ('[[target]]\nmetric = "error_rate"\nop = "<"\n', ["'threshold'"]),
        ('[[target]]\nmetric = "error_rate"\nop = "<"\nthreshold = "low"\n', ["'threshold'"]),
        (GOOD + 'unit = "%"\n', ["'unit'"]),
        ('[[target]]\nmetric = "p95_s"\nop = "<"\nthreshold = 1\n', ["p95_s", ":OP"]),
        ('[[target]]\nmetric = "p99_s:fly"\nop = "<"\nthreshold = 1\n', ["p99_s:fly"]),
        ('[[target]]\nmetric = "error_rate:x"\nop = "<"\nthreshold = 1\n', ["error_rate"]),
        ("oops = 1\n" + GOOD, ["'oops'"]),
        ("[[target]\nmetric = ", ["unreadable"]),
        ("target = 3\n", ["'target'"]),
    ],
)
def test_bad_targets_files_raise_config_error_naming_file_and_key(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    path = write_targets(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_targets(path)
    assert str(path) in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_unknown_or_missing_targets_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown targets 'nope'.*default"):
        load_targets("nope")
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_targets(tmp_path / "missing.toml")
    undecodable = tmp_path / "bin.toml"
    undecodable.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"bin\.toml"):
        load_targets(undecodable)


def uss_sample(t: float, uss: float | None, rss: float, role: str = "replica-0") -> dict[str, Any]:
    return {
        "t": t,
        "node": "n",
        "pid": 7,
        "role": role,
        "cpu_percent": 50.0,
        "rss": rss,
        "uss": uss,
        "pss": None,
        "threads": 4,
    }


def test_memory_target_fails_at_600_mb_uss_and_evidence_says_so(tmp_path: Path) -> None:
    timeline = [
        uss_sample(1, 300 * MB, 700 * MB),
        uss_sample(2, 600 * MB, 800 * MB),
        uss_sample(3, None, 900 * MB),
        uss_sample(3, 900 * MB, 0, role="generator-0"),
        {"t": 3, "node": "n", "role": "system", "cpu_percent": 1.0},
    ]
    run = write_run(tmp_path, timeline=timeline)
    (result,) = check_targets(run, [t for t in load_targets("default") if "uss" in t.metric])
    assert result.value == pytest.approx(600.0)
    assert result.passed is False
    assert "600.0 MB" in result.evidence and "USS" in result.evidence
    assert "timeline.jsonl" in result.evidence


def test_memory_falls_back_to_timeline_rss_then_replica_stats(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a", timeline=[uss_sample(1, None, 450 * MB)])
    value, evidence = measure(run, "service_uss_mb_max")
    assert value == pytest.approx(450.0) and "RSS" in evidence and "never sampled" in evidence
    stats = {
        "replica_stats": [
            {"replica": 0, "rss_bytes": 300 * MB},
            {"replica": 1, "rss_bytes": 520 * MB},
        ]
    }
    run = write_run(tmp_path / "b", run=stats)
    value, evidence = measure(run, "service_uss_mb_max")
    assert value == pytest.approx(520.0)
    assert "no replica samples" in evidence and "replica_stats" in evidence
    assert measure(write_run(tmp_path / "c"), "service_uss_mb_max")[0] is None


def test_init_seconds_max_over_replicas(tmp_path: Path) -> None:
    replicas = [
        {"replica": 0, "init_seconds": {"total": 2.5}},
        {"replica": 1, "init_seconds": {"total": 6.25}},
    ]
    (result,) = check_targets(
        write_run(tmp_path, run={"replicas": replicas}),
        [Target("init", "init_seconds_max", "<", 5, "s")],
    )
    assert (result.value, result.passed) == (6.25, False)
    assert "6.25 s (replica 1)" in result.evidence


def test_switch_p99_uses_switching_records_then_switch_ops(tmp_path: Path) -> None:
    switching = [record(switched=True, stages={"adapter": 0.1 * k}) for k in range(1, 11)]
    others = [record(stages={"adapter": 50.0}), record(switched=True, ok=False, stages={})]
    value, evidence = measure(write_run(tmp_path / "a", records=switching + others), "switch_p99_s")
    assert value == pytest.approx(0.991)
    assert "10 ok record(s) that switched" in evidence
    ops = [
        record(op="switch", stages={"adapter": 0.2}),
        record(op="switch", stages={"adapter": 0.4}),
    ]
    value, evidence = measure(write_run(tmp_path / "b", records=ops), "switch_p99_s")
    assert value == pytest.approx(0.398) and "no record switched" in evidence
    assert measure(write_run(tmp_path / "c", records=[record()]), "switch_p99_s")[0] is None


def test_active_projects_counts_distinct_projects_with_an_ok_record(tmp_path: Path) -> None:
    records = [
        record(project="a"),
        record(project="a"),
        record(project="b"),
        record(project="c", ok=False),
        record(op="embed", project=None),
    ]
    value, evidence = measure(write_run(tmp_path, records=records), "active_projects")
    assert value == 2.0 and "a, b" in evidence


def test_lines_of_code_sums_distinct_projects(tmp_path: Path) -> None:
    def entry(project: str, lines: int | None) -> dict[str, Any]:
        report = None if lines is None else {"project": project, "lines": lines, "files": 1}
        return {"project": project, "ok": True, "built": report is not None, "report": report}

    ingest = [entry("a", 60_000), entry("a", 60_000), entry("b", 50_000), entry("c", None)]
    (result,) = check_targets(
        write_run(tmp_path / "a", ingest=ingest),
        [t for t in load_targets("default") if t.metric == "lines_of_code"],
    )
    assert (result.value, result.passed) == (110_000.0, True)
    assert "110,000 lines over 2 project(s)" in result.evidence
    assert "1 project(s) without a report" in result.evidence
    assert measure(write_run(tmp_path / "b", ingest=[entry("c", None)]), "lines_of_code")[0] is None


def test_unmeasurable_targets_are_not_applicable(tmp_path: Path) -> None:
    results = check_targets(write_run(tmp_path), load_targets("default"))
    by_metric = {r.target.metric: r for r in results}
    assert by_metric["active_projects"].passed is False  # measurable: zero projects
    for metric in ("init_seconds_max", "service_uss_mb_max", "switch_p99_s", "lines_of_code"):
        assert by_metric[metric].passed is None and by_metric[metric].value is None
        assert by_metric[metric].evidence
    assert json.loads(json.dumps([r.as_dict() for r in results]))[0]["target"]["op"] == "<"


def test_generic_metrics(tmp_path: Path) -> None:
    records = [record(planned=1000.0 + k, duration=0.1 * (k + 1)) for k in range(10)]
    records.append(record(op="search", planned=1005.0, duration=2.0))
    records.append(record(op="search", planned=1010.0, duration=9.0, ok=False, error="X: y"))
    run = write_run(tmp_path, records=records)
    assert measure(run, "error_rate")[0] == pytest.approx(1 / 12)
    assert measure(run, "throughput_ops_s")[0] == pytest.approx(11 / 19.0)
    assert measure(run, "p95_s:analyze")[0] == pytest.approx(0.955)
    assert measure(run, "p99_s:search")[0] == pytest.approx(2.0 + 0.99 * 7.0)  # failure counts
    assert measure(run, "p99_s:embed")[0] is None
    with pytest.raises(ConfigError, match="unknown metric"):
        measure(run, "nope")


def test_every_metric_has_a_unit_and_results_compare_with_the_op() -> None:
    assert all(m.unit for m in METRICS.values())
    target = Target("t", "error_rate", ">=", 0.5, "ratio")
    assert TargetResult(target, 0.5, target.holds(0.5), "").passed is True
    assert not Target("t", "error_rate", "<", 0.5, "ratio").holds(0.5)
    assert Target("t", "error_rate", "<=", 0.5, "ratio").holds(0.5)
    assert not Target("t", "error_rate", ">", 0.5, "ratio").holds(0.5)
