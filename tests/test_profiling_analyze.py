"""Run folders read back, each bottleneck detector, ranking, and the renderers (pure)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from profiling import analyze as an
from profiling.analyze import Analysis, Finding, analyze
from profiling.render import render_terminal, write_analysis
from profiling.rundata import RunData
from profiling.targets import load_targets
from workloads.errors import ConfigError

FIXTURE = Path(__file__).parent / "data" / "run_fixture"
MB = 1_000_000
T0 = 1_767_225_600.0


def record(**fields: Any) -> dict[str, Any]:
    """An ok analyze record, with ``fields`` changed."""
    base = {"op": "analyze", "project": "p0", "stage": "main", "worker": 0, "replica": 0,
            "issued": T0, "duration": 1.0, "wait": 0.1, "service": 0.9,
            "stages": {"switch": 0.0, "embed": 0.2, "search": 0.1, "model": 0.6},
            "node": "n", "pid": 7, "ok": True, "error": None, "switched": False}  # fmt: skip
    return {**base, **fields}


def write_run(root: Path, *, run: dict[str, Any] | None = None,
              records: list[dict[str, Any]] | None = None, **files: Any) -> RunData:  # fmt: skip
    """Write a run folder by hand (``files``: name -> rows or text, dots as ``_``) and load it."""
    root.mkdir(parents=True, exist_ok=True)
    info = {"schema_version": 1, "run_id": "hand", "machine": {"cpus_logical": 4}, **(run or {})}
    (root / "run.json").write_text(json.dumps(info))
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records or []))
    for key, content in files.items():
        name = key.replace("_jsonl", ".jsonl").replace("_json", ".json")
        if key == "profiles":
            (root / "profiles").mkdir()
            for role, text in content.items():
                (root / "profiles" / f"{role}.collapsed").write_text(text)
        elif name.endswith(".jsonl"):
            (root / name).write_text("".join(json.dumps(r) + "\n" for r in content))
        else:
            (root / name).write_text(json.dumps(content))
    return RunData.load(root)


def findings(run: RunData, detector: str) -> list[Finding]:
    return [f for f in an.DETECTORS[detector](run) if isinstance(f, Finding)]


def notes(run: RunData, detector: str) -> list[str]:
    return [n for n in an.DETECTORS[detector](run) if isinstance(n, str)]


# --- the run folder --------------------------------------------------------------------------


def test_missing_folder_run_json_or_records_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere.*does not exist"):
        RunData.load(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"run\.json is missing"):
        RunData.load(tmp_path)
    (tmp_path / "run.json").write_text("{torn")
    with pytest.raises(ConfigError, match=r"run\.json is unreadable"):
        RunData.load(tmp_path)
    (tmp_path / "run.json").write_text("[]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        RunData.load(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"records\.jsonl is missing"):
        RunData.load(tmp_path)


def test_fixture_loads_with_torn_lines_skipped_and_optional_files_read() -> None:
    run = RunData.load(FIXTURE)
    assert run.run_id == "20260101-000000-smoke-abcd"
    assert len(run.records) == 40
    assert run.notes == ["records.jsonl: skipped 1 unreadable line(s)"]
    assert run.profiles is not None and set(run.profiles) == {"replica-0", "generator-0"}
    assert sum(run.profiles["replica-0"].values()) == 100
    assert run.ingest and run.timeline and run.snapshots and run.mlx_probe
    assert run.cpus == 8 and run.service_config()["adapter_cache_count"] == 4


def test_optional_files_may_be_missing_or_garbled(tmp_path: Path) -> None:
    run = write_run(tmp_path, ingest_json="x", timeline_jsonl=[{"t": 1}])
    (tmp_path / "mlx_probe.json").write_text("{nope")
    (tmp_path / "timeline.jsonl").write_text('{"t": 1}\n[1]\n{"t": 2')
    run = RunData.load(tmp_path)
    assert run.ingest is None and run.mlx_probe is None and run.snapshots is None
    assert run.timeline == [{"t": 1}] and run.profiles is None
    assert any("ingest.json" in n and "list" in n for n in run.notes)
    assert any("mlx_probe.json" in n for n in run.notes)
    assert "timeline.jsonl: skipped 2 unreadable line(s)" in run.notes


# --- detectors -------------------------------------------------------------------------------


def test_hot_frames_lists_the_top_five_self_frames_per_replica(tmp_path: Path) -> None:
    lines = [f"replica-1;call (svc.py:{k});leaf{k} (mod{k}.py:{k}) {10 * k}" for k in range(1, 8)]
    lines.append("replica-1;call (svc.py:99);leaf7 (mod7.py:100) 30")
    profiles = {"replica-1": "\n".join(lines), "generator-0": "gen;busy (g.py:1) 1000"}
    (finding,) = findings(write_run(tmp_path, profiles=profiles), "hot_frames")
    top = finding.evidence["top"]
    assert [t["frame"] for t in top] == [f"leaf{k} (mod{k}.py)" for k in (7, 6, 5, 4, 3)]
    assert top[0]["samples"] == 100 and finding.evidence["samples"] == 310
    assert finding.severity_share == pytest.approx(100 / 310)
    assert finding.files == ["profiles/replica-1.collapsed"]
    assert "mod7.py" in finding.suggestion


def test_hot_frames_without_profiles_is_a_note(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    assert findings(run, "hot_frames") == []
    assert "profiles/*.collapsed" in notes(run, "hot_frames")[0]


def system(t: float, cpu: float, node: str = "node-a") -> dict[str, Any]:
    return {"t": t, "node": node, "role": "system", "cpu_percent": cpu, "cpu_per_core": [cpu]}


def test_cpu_saturation_fires_above_half_of_samples_per_node(tmp_path: Path) -> None:
    timeline = [system(k, 95.0 if k < 6 else 20.0) for k in range(10)]
    timeline += [system(k, 90.0 if k < 5 else 89.0, node="node-b") for k in range(10)]
    (finding,) = findings(write_run(tmp_path, timeline_jsonl=timeline), "cpu_saturation")
    assert finding.evidence["node"] == "node-a"
    assert finding.severity_share == pytest.approx(0.6)
    assert finding.files == ["timeline.jsonl"]
    assert "replicas" in finding.suggestion


def test_cpu_saturation_without_timeline_is_a_note(tmp_path: Path) -> None:
    assert notes(write_run(tmp_path), "cpu_saturation") == [
        "cpu saturation: skipped, no timeline.jsonl in the run folder"
    ]


def test_queueing_fires_per_op_above_thirty_percent(tmp_path: Path) -> None:
    records = [record(wait=0.5, duration=1.0) for _ in range(4)]
    records += [record(op="search", wait=0.3, duration=1.0) for _ in range(4)]
    records += [record(op="embed", wait=9.0, duration=10.0, ok=False)]
    (finding,) = findings(write_run(tmp_path, records=records), "queueing")
    assert finding.evidence["op"] == "analyze"
    assert finding.severity_share == pytest.approx(0.5)
    assert "replicas" in finding.suggestion


def replica_stats(replica: int, hits: int, misses: int, loads: list[float]) -> dict[str, Any]:
    return {"replica": replica, "rss_bytes": 100 * MB,
            "adapters": {"hits": hits, "misses": misses, "evictions": misses,
                         "load_seconds": loads, "activate_seconds": []}}  # fmt: skip


def test_adapter_thrash_costs_misses_against_service_time(tmp_path: Path) -> None:
    stats = [replica_stats(0, 6, 4, [0.1, 0.5, 0.2]), replica_stats(1, 9, 1, [1.0]),
             replica_stats(2, 1, 8, [1.0])]  # fmt: skip
    run_info = {"replica_stats": stats,
                "spec": {"config": {"service": {"adapter_cache_count": 4}}}}  # fmt: skip
    records = [record(replica=0, service=2.0) for _ in range(4)]
    records += [record(replica=1, service=2.0) for _ in range(4)]
    (finding,) = findings(write_run(tmp_path, run=run_info, records=records), "adapter_thrash")
    assert finding.evidence["replica"] == 0
    assert finding.evidence["miss_ratio"] == pytest.approx(0.4)
    assert finding.evidence["miss_cost_s"] == pytest.approx(4 * 0.2)
    assert finding.severity_share == pytest.approx(0.8 / 8.0)
    assert finding.evidence["adapter_cache_count"] == 4
    assert "adapter_cache_count" in finding.suggestion


def test_adapter_thrash_without_replica_stats_is_a_note(tmp_path: Path) -> None:
    assert "replica_stats" in notes(write_run(tmp_path), "adapter_thrash")[0]


def memory_run(root: Path, mb_at: Any, *, seconds: int = 180, uss: bool = True) -> RunData:
    """A replica sampled every 5 s during one stage, memory ``mb_at(t)`` MB."""
    samples = [{"t": T0 + t, "node": "n", "pid": 7, "role": "replica-0",
                "rss": 10**9 if uss else mb_at(t) * MB, "uss": mb_at(t) * MB if uss else None}
               for t in range(0, seconds + 1, 5)]  # fmt: skip
    records = [record(issued=T0, duration=0.1), record(issued=T0 + seconds - 0.1, duration=0.1),
               record(stage="short", issued=T0 + seconds + 10, duration=1.0)]  # fmt: skip
    return write_run(root, records=records, timeline_jsonl=samples)


def test_memory_growth_reports_a_possible_leak_for_steady_growth(tmp_path: Path) -> None:
    (finding,) = findings(memory_run(tmp_path, lambda t: 300 + 0.5 * t), "memory_growth")
    assert finding.evidence["verdict"] == "possible leak"
    assert finding.evidence["slope_mb_per_min"] == pytest.approx(30.0)
    assert finding.evidence["stage"] == "main" and finding.evidence["metric"] == "uss"
    assert "possible leak" in finding.title
    assert finding.evidence["growth"] > 0.05
    assert finding.severity_share == pytest.approx(finding.evidence["growth"])


def test_memory_growth_tells_warm_up_from_a_leak(tmp_path: Path) -> None:
    (finding,) = findings(
        memory_run(tmp_path, lambda t: 200 + 80 * (1 - math.exp(-t / 25)), uss=False),
        "memory_growth",
    )
    assert finding.evidence["verdict"] == "warm-up" and finding.evidence["metric"] == "rss"


@pytest.mark.parametrize(
    ("mb_at", "seconds"),
    [(lambda t: 300.0, 180), (lambda t: 300 + 0.5 * t, 50), (lambda t: 3000 + 0.1 * t, 180)],
    ids=["flat", "too-short", "under-5-percent"],
)
def test_memory_growth_stays_quiet(tmp_path: Path, mb_at: Any, seconds: int) -> None:
    assert findings(memory_run(tmp_path, mb_at, seconds=seconds), "memory_growth") == []


def test_memory_growth_only_looks_at_the_longest_stage(tmp_path: Path) -> None:
    samples = [{"t": T0 + t, "node": "n", "pid": 7, "role": "replica-0", "rss": 1,
                "uss": (300 + (t if t > 200 else 0)) * MB} for t in range(0, 400, 5)]  # fmt: skip
    records = [record(issued=T0, duration=150.0), record(stage="late", issued=T0 + 250)]
    run = write_run(tmp_path, records=records, timeline_jsonl=samples)
    assert findings(run, "memory_growth") == []


def probe(kind: str, gflops: float, replica: int = 0) -> dict[str, Any]:
    return {"replica": replica, "device": "cpu", "backend": "cpu", "blas": [f"/lib/{kind}.so"],
            "blas_kind": kind, "matmul_gflops": gflops, "threads": 8}  # fmt: skip


def test_slow_blas_fires_on_reference_blas_with_the_model_embed_share(tmp_path: Path) -> None:
    records = [record(service=1.0, stages={"embed": 0.2, "model": 0.5, "search": 0.1})] * 3
    probes = [probe("reference", 7.6), probe("openblas", 240.0, 1)]
    run = write_run(tmp_path, records=records, mlx_probe_json=probes)
    (finding,) = findings(run, "slow_blas")
    assert finding.evidence["replicas"] == [0]
    assert "7.6 GFLOP/s" in finding.title
    assert finding.severity_share == pytest.approx(0.7)
    assert "openblas" in finding.suggestion.lower() and "optimized" in finding.suggestion
    assert "libopenblas0-pthread" in finding.suggestion


def test_slow_blas_fires_on_low_gflops_and_stays_quiet_on_fast_blas(tmp_path: Path) -> None:
    slow = write_run(tmp_path / "a", mlx_probe_json=[probe("openblas", 12.0)])
    assert findings(slow, "slow_blas")[0].evidence["matmul_gflops"] == 12.0
    fast = write_run(tmp_path / "b", mlx_probe_json=[probe("accelerate", 900.0)])
    assert findings(fast, "slow_blas") == []
    assert "mlx_probe.json" in notes(write_run(tmp_path / "c"), "slow_blas")[0]


def test_generator_cost_fires_above_a_tenth_of_a_core(tmp_path: Path) -> None:
    stages = [{"stage": "warm", "cpu_seconds": 0.5, "wall_seconds": 10.0},
              {"stage": "main", "cpu_seconds": 12.0, "wall_seconds": 40.0}]  # fmt: skip
    (finding,) = findings(write_run(tmp_path / "a", run={"stages": stages}), "generator_cost")
    assert finding.evidence["stage"] == "main" and finding.evidence["cores"] == pytest.approx(0.3)
    assert finding.severity_share == pytest.approx(0.3 / 4)
    cheap = [{"stage": "warm", "cpu_seconds": 1.0, "wall_seconds": 10.0}]
    assert findings(write_run(tmp_path / "b", run={"stages": cheap}), "generator_cost") == []
    assert "stages" in notes(write_run(tmp_path / "c"), "generator_cost")[0]


def test_errors_fire_with_the_error_rate_by_kind(tmp_path: Path) -> None:
    records = [record() for _ in range(6)]
    records += [record(ok=False, error="AdapterError: corrupt") for _ in range(3)]
    records += [record(op="search", ok=False, error="TimeoutError: slow")]
    (finding,) = findings(write_run(tmp_path / "a", records=records), "errors")
    assert finding.severity_share == pytest.approx(0.4)
    assert finding.evidence["by_kind"] == {"AdapterError": 3, "TimeoutError": 1}
    assert finding.evidence["by_op"] == {"analyze": 3, "search": 1}
    assert "AdapterError" in finding.title
    assert findings(write_run(tmp_path / "b", records=[record()]), "errors") == []


def test_stage_breakdown_names_the_dominant_stage(tmp_path: Path) -> None:
    records = [record(service=1.0, stages={"switch": 0.1, "embed": 0.6, "search": 0.1,
                                           "model": 0.2})] * 2 + [record(op="search")]  # fmt: skip
    (finding,) = findings(write_run(tmp_path / "a", records=records), "stage_breakdown")
    assert "embed" in finding.title and finding.severity_share == pytest.approx(0.6)
    assert finding.evidence["shares"]["model"] == pytest.approx(0.2)
    assert findings(write_run(tmp_path / "b", records=[record(op="search")]),
                    "stage_breakdown") == []  # fmt: skip


# --- ranking and rendering -------------------------------------------------------------------


def test_findings_rank_by_share_then_kind() -> None:
    def f(kind: str, share: float) -> Finding:
        return Finding(kind, kind, share, {}, [], "")

    ranked = an.rank([f("b", 0.2), f("z", 0.9), f("a", 0.2), f("c", 0.0)])
    assert [x.kind for x in ranked] == ["z", "a", "b", "c"]


def test_analysis_of_the_fixture_ranks_findings_and_checks_targets() -> None:
    analysis = analyze(RunData.load(FIXTURE), load_targets("default"))
    kinds = [f.kind for f in analysis.findings]
    assert kinds == ["cpu_saturation", "hot_frames", "adapter_thrash", "stage_breakdown",
                     "slow_blas", "memory_growth", "errors", "generator_cost"]  # fmt: skip
    shares = [f.severity_share for f in analysis.findings]
    assert shares == sorted(shares, reverse=True) and all(0 <= s <= 1 for s in shares)
    assert "queueing" not in kinds
    results = {r.target.metric: r.passed for r in analysis.targets}
    assert results == {"init_seconds_max": True, "service_uss_mb_max": True,
                       "switch_p99_s": True, "active_projects": False,
                       "lines_of_code": False}  # fmt: skip
    assert analysis.notes == ["records.jsonl: skipped 1 unreadable line(s)"]


def test_a_bare_run_has_a_note_per_missing_file(tmp_path: Path) -> None:
    analysis = analyze(write_run(tmp_path, records=[record()]), [])
    assert analysis.findings[0].kind == "stage_breakdown"
    assert len(analysis.notes) == 6
    assert render_terminal(analysis).count("skipped, no") == 6


def test_terminal_output_matches_the_stored_expected_output() -> None:
    analysis = analyze(RunData.load(FIXTURE), load_targets("default"))
    text = render_terminal(analysis)
    assert text == (FIXTURE / "expected_terminal.txt").read_text()
    assert "PASS" in text and "FAIL" in text


def test_terminal_targets_table_shows_not_applicable(tmp_path: Path) -> None:
    text = render_terminal(analyze(write_run(tmp_path), load_targets("smoke")))
    row = next(line for line in text.splitlines() if line.strip().startswith("service init"))
    assert row.split() == ["service", "init", "<", "5", "s", "-", "N/A"]
    assert "N/A service init: no replicas[].init_seconds.total in run.json" in text


def test_write_analysis_writes_json_atomically(tmp_path: Path) -> None:
    analysis = analyze(RunData.load(FIXTURE), load_targets("smoke"))
    path = write_analysis(analysis, tmp_path)
    assert path == tmp_path / "analysis.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(analysis.as_dict()))
    assert [p.name for p in tmp_path.iterdir()] == ["analysis.json"]
    data = json.loads(path.read_text())
    assert data["run_id"] == analysis.run_id and len(data["targets"]) == 5
    assert data["findings"][0]["files"] == ["timeline.jsonl"]
    assert isinstance(Analysis(run_id="x", findings=[], targets=[]).as_dict()["notes"], list)


def test_idle_ray_main_loop_is_not_a_hot_frame():
    from profiling.analyze import _busy

    stacks = {
        "replica-0;<module> (ray/_private/workers/default_worker.py);"
        "Worker.main_loop (ray/_private/worker.py)": 900,
        "replica-0;call (workloads/replica.py);analyze (workloads/service/service.py)": 100,
    }
    busy = _busy(stacks)
    assert list(busy) == [next(s for s in stacks if "analyze" in s)]
