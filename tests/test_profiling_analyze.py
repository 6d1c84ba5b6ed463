"""Run folders read back, each bottleneck detector, ranking, and the renderers (pure)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datamodel.errors import ConfigError
from datamodel.runfolder import RunData
from profiling.render.terminal import render_terminal, write_analysis
from profiling.verdict import causes
from profiling.verdict.analyze import Analysis, analyze
from profiling.verdict.attribution import COMPONENTS, Attribution, split
from profiling.verdict.causes import ServiceClaims
from profiling.verdict.findings import Finding, rank
from profiling.verdict.targets import load_targets

FIXTURE = Path(__file__).parent / "data" / "run_fixture"
MB = 1_000_000
T0 = 1_767_225_600.0


def record(**fields: Any) -> dict[str, Any]:
    """An ok analyze record, with ``fields`` changed."""
    base = {
        "id": "0-0",
        "op": "analyze",
        "project": "p0",
        "stage": "main",
        "worker": 0,
        "replica": 0,
        "planned": T0,
        "sent": T0,
        "duration": 1.0,
        "lag": 0.0,
        "wait": 0.1,
        "service": 0.9,
        "stages": {"adapter": 0.0, "index": 0.0, "embed": 0.2, "search": 0.1, "model": 0.6},
        "misses": [],
        "flops": 0.0,
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
    **files: Any,
) -> RunData:
    """Write a run folder by hand (``files``: name -> rows or text, dots as ``_``) and load it."""
    root.mkdir(parents=True, exist_ok=True)
    info = {"schema_version": 2, "run_id": "hand", "machine": {"cpus_logical": 4}, **(run or {})}
    (root / "run.json").write_text(json.dumps(info))
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records or []))
    for key, content in files.items():
        name = key.replace("_jsonl", ".jsonl").replace("_json", ".json")
        if key in ("profiles", "wall"):
            (root / "profiles").mkdir(exist_ok=True)
            suffix = "collapsed" if key == "profiles" else "wall"
            for role, text in content.items():
                (root / "profiles" / f"{role}.{suffix}").write_text(text)
        elif name.endswith(".jsonl"):
            (root / name).write_text("".join(json.dumps(r) + "\n" for r in content))
        else:
            (root / name).write_text(json.dumps(content))
    return RunData.load(root)


def series(n: int, gap: float = 1.0, **fields: Any) -> list[dict[str, Any]]:
    """``n`` records planned ``gap`` seconds apart, each with ``fields``."""
    return [record(id=f"0-{k}", planned=T0 + k * gap, **fields) for k in range(n)]


def kinds(analysis: Analysis) -> list[str]:
    return [f.kind for f in analysis.findings]


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


# --- attribution -----------------------------------------------------------------------------


def test_a_record_splits_into_parts_that_sum_to_its_latency() -> None:
    parts = split(record(duration=1.2, lag=0.1, wait=0.2, service=0.8))
    assert list(parts) == list(COMPONENTS)
    assert sum(parts.values()) == pytest.approx(1.2)
    assert parts["lag"] == 0.1 and parts["queue"] == 0.2
    assert parts["model"] == pytest.approx(0.6 * 0.8 / 0.9)  # stages scaled to fit service
    assert parts["other"] == pytest.approx(0.0)
    assert parts["transport"] == pytest.approx(0.1)
    failed = split(record(ok=False, duration=3.0, error="Timeout: no reply"))
    assert failed["failed"] == 3.0 and sum(failed.values()) == 3.0


def test_the_budget_counts_all_records_and_each_op_tail() -> None:
    records = [record(id=str(k), duration=1.0 + k / 100, wait=0.1) for k in range(100)]
    records += [
        record(
            id=f"s{k}", op="search", duration=0.1, wait=0.05, service=0.05, stages={"embed": 0.05}
        )
        for k in range(20)
    ]
    att = Attribution(records)
    budget = att.budget()
    assert budget.records == 120 and budget.seconds == pytest.approx(att.duration.sum())
    assert budget.tail_records == 5 + 1  # slowest 5% of analyze, at least one search
    assert budget.part("queue").seconds == pytest.approx(100 * 0.1 + 20 * 0.05)
    assert sum(p.share for p in budget.parts) == pytest.approx(1.0)
    assert budget.ops["search"]["p95_s"] == pytest.approx(0.1)


# --- causes ----------------------------------------------------------------------------------


def test_adapter_thrash_claims_reloads_of_evicted_adapters_not_first_loads(tmp_path: Path) -> None:
    rows = []
    for k in range(40):
        rows.append(
            record(
                id=str(k),
                planned=T0 + k,
                project=f"p{k % 3}",
                misses=["adapter"],
                duration=0.5,
                wait=0.0,
                service=0.5,
                stages={"adapter": 0.45, "model": 0.05},
            )
        )
    run = write_run(
        tmp_path, records=rows, run={"spec": {"config": {"service": {"adapter_cache_count": 1}}}}
    )
    analysis = analyze(run, [])
    top = analysis.findings[0]
    assert top.kind == "adapter_thrash" and top.explains == ["adapter", "queue"]
    assert top.evidence["capacity_misses"] == 37 and top.evidence["compulsory_misses"] == 3
    assert top.seconds == pytest.approx(37 * 0.45) and top.share == pytest.approx(37 * 0.45 / 20)
    assert "adapter_cache_count to at least 3" in top.suggestion
    assert any(f.kind == "cold_start" for f in analysis.facts)


def test_queue_wait_is_shared_by_the_service_time_each_cause_claims(tmp_path: Path) -> None:
    rows = [
        record(
            id=str(k),
            planned=T0 + k * 0.5,
            project=f"p{k % 2}",
            misses=["index"],
            duration=1.0,
            wait=0.5,
            service=0.5,
            stages={"index": 0.4, "embed": 0.1},
            op="search",
        )
        for k in range(60)
    ]
    analysis = analyze(write_run(tmp_path, records=rows), [])
    thrash = next(f for f in analysis.findings if f.kind == "index_thrash")
    # 58 reloads x (0.4 s of index + 0.4/0.5 of each record's 0.5 s queue)
    assert thrash.seconds == pytest.approx(58 * 0.4 + 60 * 0.5 * (58 * 0.4) / (60 * 0.5))
    queue = next(f for f in analysis.findings if f.explains == ["queue"])
    assert queue.seconds == pytest.approx(60 * 0.5 - 60 * 0.5 * (58 * 0.4) / 30)
    assert kinds(analysis)[0] == "index_thrash"


def test_slow_blas_claims_the_matmul_time_a_faster_blas_saves(tmp_path: Path) -> None:
    rows = series(
        30, flops=2.5e9, duration=1.1, wait=0.0, service=1.05, stages={"embed": 0.05, "model": 1.0}
    )
    probe = [
        {"replica": 0, "blas_kind": "reference", "matmul_gflops": 2.5, "achievable_gflops": 100.0}
    ]
    analysis = analyze(write_run(tmp_path, records=rows, mlx_probe_json=probe), [])
    top = analysis.findings[0]
    assert top.kind == "slow_blas"
    per_record = min(1.05, 2.5e9 / 2.5e9) - 2.5e9 / 100e9
    assert top.seconds == pytest.approx(30 * per_record) and top.gain_s == top.seconds
    fast = [
        {"replica": 0, "blas_kind": "openblas", "matmul_gflops": 90.0, "achievable_gflops": 100.0}
    ]
    quiet = analyze(write_run(tmp_path / "fast", records=rows, mlx_probe_json=fast), [])
    assert "slow_blas" not in kinds(quiet)
    # The fastest BLAS is loaded but probed slow (a busy machine): not a BLAS to change.
    busy = [
        {
            "replica": 0,
            "blas_kind": "mkl",
            "achievable_blas": "mkl",
            "matmul_gflops": 44.0,
            "achievable_gflops": 96.0,
        }
    ]
    noisy = analyze(write_run(tmp_path / "busy", records=rows, mlx_probe_json=busy), [])
    assert "slow_blas" not in kinds(noisy)
    other = [{**busy[0], "blas_kind": "openblas"}]
    slower = analyze(write_run(tmp_path / "other", records=rows, mlx_probe_json=other), [])
    assert kinds(slower)[0] == "slow_blas"


def test_oversubscribed_threads_stretch_model_and_embed(tmp_path: Path) -> None:
    rows = [
        record(id=f"{k}-{r}", replica=r, planned=T0 + k, duration=0.9, wait=0.0, service=0.9)
        for k in range(30)
        for r in (0, 1)
    ]
    replicas = [{"replica": r, "node": "n1"} for r in (0, 1)]
    probes = [
        {
            "replica": r,
            "blas_kind": "openblas",
            "matmul_gflops": 90.0,
            "blas_threads": 2,
            "cpu_count": 2,
        }
        for r in (0, 1)
    ]
    run = write_run(tmp_path, records=rows, mlx_probe_json=probes, run={"replicas": replicas})
    found = next(f for f in analyze(run, []).findings if f.kind == "oversubscription")
    assert found.evidence["nodes"]["n1"] == {"replicas": [0, 1], "blas_threads": 4, "cores": 2}
    assert found.seconds > 0


def test_overload_is_named_with_arrivals_against_capacity(tmp_path: Path) -> None:
    rows = [
        record(
            id=str(k),
            planned=T0 + k * 0.1,
            duration=0.2 + k * 0.05,
            wait=k * 0.05,
            service=0.2,
            stages={"model": 0.2},
        )
        for k in range(50)
    ]
    spec = {"spec": {"profile": {"stages": [{"mode": "open"}]}}}
    top = analyze(write_run(tmp_path, records=rows, run=spec), []).findings[0]
    assert top.kind == "overload" and top.explains == ["queue"]
    replica = top.evidence["replicas"]["0"]
    assert replica["arrivals_per_s"] == pytest.approx(10.0)
    assert replica["capacity_per_s"] == pytest.approx(5.0)


def test_routing_imbalance_when_one_replica_waits_and_the_other_idles(tmp_path: Path) -> None:
    busy = [
        record(
            id=f"b{k}",
            planned=T0 + k * 0.2,
            duration=0.5,
            wait=0.3,
            service=0.2,
            stages={"model": 0.2},
        )
        for k in range(50)
    ]
    idle = [
        record(
            id=f"i{k}",
            replica=1,
            planned=T0 + k * 2,
            duration=0.05,
            wait=0.0,
            service=0.05,
            stages={"model": 0.05},
        )
        for k in range(5)
    ]
    top = analyze(write_run(tmp_path, records=busy + idle), []).findings[0]
    assert top.kind == "routing_imbalance" and "replica 0" in top.title


def test_hot_code_is_placed_in_the_part_its_stack_runs_in(tmp_path: Path) -> None:
    rows = series(40, duration=0.2, wait=0.0, service=0.2, stages={"model": 0.05})
    markers = {"request": ["ServiceReplica.call"], "model": ["generate_greedy"]}
    root = "replica-0;ServiceReplica.call (workloads/stack/replica.py:1);Service.analyze (s.py:2)"
    profile = {
        "replica-0": f"{root};spin (tests/planted.py:9) 100\n"
        f"{root};generate_greedy (b.py:3) 20\n"
        "replica-0;Worker.main_loop (ray/_private/worker.py:9) 500\n"
    }
    run = write_run(
        tmp_path,
        records=rows,
        profiles=profile,
        run={"stage_frames": markers, "spec": {"pyspy_rate_hz": 20}},
    )
    top = analyze(run, []).findings[0]
    assert top.kind == "hot_code" and top.evidence["frame"] == "spin (tests/planted.py)"
    assert top.evidence["component"] == "other" and top.evidence["running_s"] == 100 / 20
    assert top.seconds == pytest.approx(100 / 20)  # its samples over the sampling rate
    assert "py-spy" in top.evidence["source"]


def test_a_call_into_native_compute_is_not_hot_python_code(tmp_path: Path) -> None:
    # The builtin model's mx.eval line: the request's thread runs a fifth of the time
    # (building and scheduling the graph) while MLX's threads compute. A Python loop in
    # the same function has no native time: only it is hot code.
    rows = series(40, duration=0.2, wait=0.0, service=0.2, stages={"model": 0.1})
    markers = {"request": ["ServiceReplica.call"], "model": ["generate_greedy"]}
    root = "replica-0;ServiceReplica.call (workloads/stack/replica.py:1);Svc.analyze (s.py:2)"
    eval_line = f"{root};generate_greedy (b.py:3)"
    wall = {
        "replica-0": f"{eval_line};[cpu] 1200\n{eval_line};[runq] 400\n{eval_line};[native] 5000\n"
    }
    run = write_run(tmp_path / "eval", records=rows, wall=wall, run={"stage_frames": markers})
    assert "hot_code" not in kinds(analyze(run, []))
    wall["replica-0"] += f"{root};generate_greedy (b.py:7);[cpu] 1500\n"
    run = write_run(tmp_path / "loop", records=rows, wall=wall, run={"stage_frames": markers})
    found = [f for f in analyze(run, []).findings if f.kind == "hot_code"]
    assert [f.evidence["frame"] for f in found] == ["generate_greedy (b.py)"]
    assert found[0].evidence["running_s"] == pytest.approx(1.5)  # the loop line's alone
    assert found[0].evidence["native_s"] == 0 and "in Python" in found[0].suggestion
    # The same call outside every named part (user code computing on each request beside
    # its work) is a hot spot of that code, with the native threads' time it waits on.
    other = {"replica-0": wall["replica-0"].replace("generate_greedy (b.py:3)", "rerank (u.py:4)")}
    run = write_run(tmp_path / "other", records=rows, wall=other, run={"stage_frames": markers})
    found = [f for f in analyze(run, []).findings if f.kind == "hot_code"]
    native = next(f for f in found if f.evidence["frame"] == "rerank (u.py)")
    assert native.evidence["component"] == "other"
    assert native.evidence["running_s"] == pytest.approx(6.6)
    assert native.evidence["native_s"] == pytest.approx(5.0)
    assert "in native code" in native.suggestion


def test_waiting_is_placed_in_the_frame_it_waited_in_with_its_queue(tmp_path: Path) -> None:
    # 40 requests of 0.2 s service, each waiting 0.2 s in the queue; the wall profile says
    # 6 of the 8 service seconds were spent waiting in load_rows, outside the process.
    rows = series(40, duration=0.4, wait=0.2, service=0.2, stages={"search": 0.05})
    markers = {"request": ["ServiceReplica.call"], "search": ["ProjectIndex.search"]}
    root = "replica-0;ServiceReplica.call (workloads/stack/replica.py:1);Remote.search (s.py:2)"
    wall = {
        "replica-0": f"{root};load_rows (s.py:9);[wait] 6000\n"
        f"{root};ProjectIndex.search (i.py:3);[cpu] 300\n"
        f"{root};ProjectIndex.search (i.py:3);[native] 1700\n"
    }
    run = write_run(tmp_path, records=rows, wall=wall, run={"stage_frames": markers})
    analysis = analyze(run, [])
    top = analysis.findings[0]
    assert top.kind == "waiting" and top.evidence["frame"] == "load_rows (s.py)", kinds(analysis)
    assert top.evidence["component"] == "other" and "outside" not in top.suggestion
    assert top.evidence["wait_external_s"] == 6.0 and top.evidence["wait_on_threads_s"] == 0
    # The other part (0.15 s a request) is all it can claim, plus that share of the queue.
    assert top.seconds == pytest.approx(40 * 0.15 + 40 * 0.2 * 0.15 / 0.2)
    assert analysis.unexplained["seconds"] == pytest.approx(
        analysis.budget.seconds - sum(f.seconds for f in analysis.findings)
    )
    assert "other" not in analysis.unexplained["parts"]
    assert "search" in analysis.unexplained["parts"]


def test_unexplained_is_always_reported(tmp_path: Path) -> None:
    rows = series(30, duration=0.1, wait=0.0, service=0.1, stages={"embed": 0.1})
    analysis = analyze(write_run(tmp_path, records=rows), [])
    assert not [f for f in analysis.findings if f.tier == "latency"]
    assert analysis.unexplained["share"] == pytest.approx(1.0)
    assert analysis.unexplained["parts"] == {"embed": pytest.approx(3.0)}
    assert "unexplained: 100%" in render_terminal(analysis)


def test_generator_lag_is_its_own_cause(tmp_path: Path) -> None:
    rows = series(30, duration=1.0, lag=0.6, wait=0.0, service=0.4)
    top = analyze(write_run(tmp_path, records=rows), []).findings[0]
    assert top.kind == "generator_lag" and top.share == pytest.approx(0.6)


def test_material_errors_come_first_in_their_own_tier(tmp_path: Path) -> None:
    rows = series(50, duration=1.0, wait=0.5)
    rows += [
        record(id=f"e{k}", ok=False, error="Timeout: no reply", duration=300.0) for k in range(3)
    ]
    analysis = analyze(write_run(tmp_path, records=rows), [])
    assert analysis.findings[0].kind == "errors" and analysis.findings[0].tier == "errors"
    assert analysis.findings[0].evidence["by_kind"] == {"Timeout": 3}
    few = analyze(write_run(tmp_path / "few", records=series(200, wait=0.0) + rows[-1:]), [])
    assert "errors" not in kinds(few) and any(f.kind == "errors" for f in few.facts)


def _memory_run(root: Path, rss_mb: Any, gauges_mb: Any = None) -> RunData:
    rows = series(60, duration=0.1, wait=0.0, service=0.1)
    timeline = [
        {"t": T0 + k, "role": "replica-0", "pid": 7, "rss": rss_mb(k) * MB} for k in range(60)
    ]
    gauges = (
        [
            {
                "t": T0 + k,
                "replica": 0,
                "mlx_active": gauges_mb(k) * MB,
                "mlx_cache": 0,
                "index_bytes": 0,
            }
            for k in range(60)
        ]
        if gauges_mb
        else []
    )
    return write_run(root, records=rows, timeline_jsonl=timeline, gauges_jsonl=gauges)


def test_a_leak_ranks_as_a_stability_risk(tmp_path: Path) -> None:
    analysis = analyze(_memory_run(tmp_path, lambda k: 300 + 3 * k), [])
    top = analysis.findings[0]
    assert top.kind == "memory_leak" and top.tier == "stability"
    assert top.evidence["slope_mb_per_min"] == pytest.approx(180, rel=0.01)


def test_growth_that_caches_explain_or_that_flattens_is_context(tmp_path: Path) -> None:
    cached = analyze(_memory_run(tmp_path / "c", lambda k: 300 + 3 * k, lambda k: 3 * k), [])
    assert "memory_leak" not in kinds(cached)
    flat = analyze(_memory_run(tmp_path / "f", lambda k: 300 + 200 * (1 - math.exp(-k / 8))), [])
    assert "memory_leak" not in kinds(flat)


def test_noisy_cache_figures_and_allocator_creep_are_not_a_leak(tmp_path: Path) -> None:
    """MLX's active memory jumps by a whole buffer between samples (two-valued, in no order)
    while resident memory creeps a few MB as allocators settle: no leak (a CI failure of
    a planted overload run, where a least-squares slope of that series read 5+ MB/min)."""
    for seed in range(20):
        jumps = np.random.default_rng(seed).integers(0, 2, size=60) * 31.0
        noisy = analyze(
            _memory_run(
                tmp_path / f"n{seed}", lambda k: 379 + 0.1 * k, lambda k, j=jumps: 135 + j[k]
            ),
            [],
        )
        assert "memory_leak" not in kinds(noisy), seed
        assert not [f for f in noisy.facts if f.kind == "memory_growth"], seed
    steady = analyze(
        _memory_run(tmp_path / "s", lambda k: 379 + 1.0 * k, lambda k: 135 + jumps[k]), []
    )
    assert kinds(steady)[0] == "memory_leak"


# --- ranking and rendering -------------------------------------------------------------------


def _finding(kind: str, share: float, *, tier: str = "latency", support: int = 50) -> Finding:
    return Finding(
        kind=kind,
        title=kind,
        tier=tier,
        explains=[],
        seconds=share,
        share=share,  # type: ignore[arg-type]
        tail_seconds=share,
        tail_share=share,
        support=support,
        evidence={},
        files=[],
        suggestion="",
    )


def test_rank_puts_errors_then_stability_then_well_supported_causes_first() -> None:
    findings = [
        _finding("a", 0.5),
        _finding("b", 0.9, support=2),
        _finding("c", 0.1),
        _finding("leak", 0.0, tier="stability"),
        _finding("errors", 0.01, tier="errors"),
    ]
    ranked = rank(findings)
    assert [f.kind for f in ranked] == ["errors", "leak", "a", "c", "b"]
    assert ranked[-1].weak and not ranked[2].weak


def test_analysis_of_the_fixture_has_a_budget_causes_and_targets() -> None:
    analysis = analyze(RunData.load(FIXTURE), load_targets("smoke"))
    assert analysis.budget is not None and analysis.budget.records == 40
    assert analysis.findings and all(f.seconds >= 0 for f in analysis.findings)
    assert {t.target.name for t in analysis.targets} >= {"service init"}


def test_a_bare_run_has_a_note_per_missing_file(tmp_path: Path) -> None:
    analysis = analyze(write_run(tmp_path, records=series(5)), [])
    assert sum("in the run folder" in n for n in analysis.notes) == 3


def test_terminal_output_matches_the_stored_expected_output() -> None:
    analysis = analyze(RunData.load(FIXTURE), load_targets("smoke"))
    text = render_terminal(analysis)
    assert text == (FIXTURE / "expected_terminal.txt").read_text()
    assert "where the latency went" in text and "causes (ranked" in text


def test_terminal_targets_table_shows_not_applicable(tmp_path: Path) -> None:
    text = render_terminal(analyze(write_run(tmp_path), load_targets("smoke")))
    assert "N/A" in text


def test_write_analysis_writes_json_atomically(tmp_path: Path) -> None:
    analysis = analyze(RunData.load(FIXTURE), load_targets("smoke"))
    path = write_analysis(analysis, tmp_path)
    data = json.loads(path.read_text())
    assert data["run_id"] == analysis.run_id and data["budget"]["records"] == 40
    assert {"kind", "tier", "explains", "seconds", "share", "tail_share", "weak", "score"} <= set(
        data["findings"][0]
    )
    assert not list(tmp_path.glob(".analysis.json.*"))


def test_causes_report_the_claims_they_make() -> None:
    att = Attribution(
        [
            record(
                id=str(k),
                misses=["adapter"],
                project=f"p{k % 2}",
                stages={"adapter": 0.5},
                service=0.5,
                duration=1.0,
                wait=0.5,
            )
            for k in range(10)
        ]
    )
    claims = ServiceClaims(att)
    run = RunData(path=Path("."), run={}, records=att.records)
    (found,) = causes.adapter_thrash(run, att, claims)
    assert claims.by_cause["adapter_thrash"].sum() == pytest.approx(8 * 0.5)
    assert claims.queue_share("adapter_thrash").sum() == pytest.approx(10 * 0.5 * 4 / 5)
    assert found.support == 8


def test_a_replica_over_its_memory_budget_is_a_stability_finding(tmp_path: Path) -> None:
    def run_with(uss_mb: float, root: Path) -> Analysis:
        timeline = [
            {"t": T0 + k, "role": "replica-0", "pid": 7, "uss": uss_mb * MB, "rss": uss_mb * MB}
            for k in range(5)
        ]
        spec = {"spec": {"profile": {"memory_budget_mb": 300}}}
        return analyze(write_run(root, records=series(20), timeline_jsonl=timeline, run=spec), [])

    over = run_with(400, tmp_path / "over")
    assert over.findings[0].kind == "memory_over_budget" and over.findings[0].tier == "stability"
    within = run_with(200, tmp_path / "within")
    assert "memory_over_budget" not in kinds(within)
    assert any(f.kind == "memory_budget" and "within" in f.title for f in within.facts)


# --- HTTP targets ------------------------------------------------------------------------------


def _served(name: str) -> str:
    return json.dumps({"adapters": f"/a/{name}", "model": "/m"}, sort_keys=True)


def test_switches_of_an_http_target_are_inferred_from_the_order_requests_were_sent(
    tmp_path: Path,
) -> None:
    # Written out of order (two workers): the order they were sent is what counts.
    rows = [
        record(id="1-0", sent=T0 + 2, served=_served("b")),
        record(id="0-0", sent=T0 + 0, served=_served("a")),
        record(id="0-1", sent=T0 + 1, served=_served("a")),
        record(id="1-1", sent=T0 + 3, served=_served("a")),
        record(id="2-0", sent=T0 + 4, switched=True),  # builtin records keep their own
    ]
    run = write_run(tmp_path, records=rows)
    switched = {r["id"]: r["switched"] for r in run.records}
    assert switched == {"0-0": False, "0-1": False, "1-0": True, "1-1": True, "2-0": True}


def test_adapter_change_compares_first_tokens_and_what_the_server_streamed(tmp_path: Path) -> None:
    rows = []
    for k in range(60):
        project = "a" if (k // 6) % 2 == 0 else "b"  # runs of six requests per adapter
        change = k % 6 == 0 and k > 0
        ttft = 0.5 if change else 0.05
        rows.append(
            record(
                id=f"0-{k}",
                planned=T0 + k * 0.2,
                sent=T0 + k * 0.2,
                served=_served(project),
                ttft=ttft,
                duration=ttft + 0.3,
                wait=0.0,
                service=ttft + 0.3,
                stages={"model": ttft + 0.3},
            )
        )
    profiles = {
        "target": "main;serve;load (mlx_lm/utils.py:10);read 30\n"
        "main;serve;generate (mlx_lm/generate.py:5);matmul 70\n"
        "main;Worker.main_loop (ray/_private/worker.py:900) 500\n"
    }
    timeline = [{"t": T0 + k, "role": "target", "pid": 9, "uss": (100 + k) * MB} for k in range(5)]
    run = write_run(tmp_path, records=rows, profiles=profiles, timeline_jsonl=timeline)
    analysis = analyze(run, load_targets("smoke"))
    assert kinds(analysis)[0] == "adapter_change"
    switch = next(t for t in analysis.targets if t.target.name == "project switch")
    assert switch.value == pytest.approx(0.5) and "first token" in switch.evidence
    memory = next(t for t in analysis.targets if t.target.name == "service memory")
    assert memory.value == pytest.approx(104) and "target sample" in memory.evidence
    top = analysis.findings[0]
    assert top.evidence["changed"] == 9 and top.evidence["requests"] == 60
    figures = top.evidence["by_op"]["analyze"]
    assert figures["p50_first_token_changed_s"] == pytest.approx(0.5)
    assert figures["p50_first_token_unchanged_s"] == pytest.approx(0.05)
    assert top.evidence["server_load_share"] == pytest.approx(0.3)  # idle samples left out
    # Little's law over the 12.15 s span: 60 requests in flight 0.35 s (0.8 s when they
    # changed), streaming 0.3 s of it.
    batch = top.evidence["batching"]
    assert batch["in_flight"] == pytest.approx((51 * 0.35 + 9 * 0.8) / 12.15)
    assert batch["streaming"] == pytest.approx(60 * 0.3 / 12.15)
    assert "waited 500 ms for their first token at p50, 50 ms when they did not" in top.title
    # The same latency with one adapter throughout changes nothing: no finding.
    same = [{**r, "served": _served("a")} for r in rows]
    assert "adapter_change" not in kinds(analyze(write_run(tmp_path / "one", records=same), []))


@pytest.mark.parametrize("key", ["stack", "target"])  # "target": a folder from before the rename
def test_a_server_that_exited_mid_run_is_an_errors_finding(tmp_path: Path, key: str) -> None:
    rows = series(40, served=_served("a"), wait=0.0)
    rows += [record(id=f"e{k}", ok=False, error="ClientConnectorError: refused") for k in range(2)]
    stack = {"kind": "mlx-lm", "exited_mid_run": True, "exit_code": -9}
    analysis = analyze(write_run(tmp_path, run={key: stack}, records=rows), [])
    top = analysis.findings[0]
    assert top.kind == "errors" and top.title.startswith("the stack's server exited mid-run")
    assert top.evidence["server_exit_code"] == -9 and "server.log" in top.files
    assert any("no MLX counters" in note for note in analysis.notes)
    assert not any(note.startswith("no mlx_probe.json") for note in analysis.notes)


def test_a_frame_that_runs_does_not_hide_one_that_waits_in_the_same_part(
    tmp_path: Path,
) -> None:
    rows = series(40, duration=0.2, wait=0.0, service=0.2, stages={})
    markers = {"request": ["ServiceReplica.call"]}
    root = "replica-0;ServiceReplica.call (workloads/stack/replica.py:1);Svc.search (s.py:2)"
    wall = {
        "replica-0": f"{root};parse (s.py:5);[cpu] 1500\n"
        f"{root};load_rows (s.py:9);[wait] 5000\n"
        f"{root};load_rows (s.py:9);[cpu] 500\n"
    }
    run = write_run(tmp_path, records=rows, wall=wall, run={"stage_frames": markers})
    found = {(f.kind, f.evidence["frame"]) for f in analyze(run, []).findings}
    assert ("waiting", "load_rows (s.py)") in found
    assert ("hot_code", "parse (s.py)") in found and ("hot_code", "load_rows (s.py)") in found
