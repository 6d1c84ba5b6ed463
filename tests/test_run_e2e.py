"""End to end through the CLI: a real embedded Ray, real replicas, real MLX, real files."""

from __future__ import annotations

import itertools
import json
import signal
import tempfile
import time
from pathlib import Path

import pytest
from runs import finish, only_run, read_jsonl, records_so_far, run_cli, run_records, start, wait_for


def test_smoke_run_records_every_operation(tmp_path, cache_dir):
    results = tmp_path / "results"
    scratch = set(Path(tempfile.gettempdir()).glob("loadlens-pyspy-*"))
    proc = run_cli(
        "--profile",
        "smoke",
        "--duration",
        "15",
        "--results-dir",
        str(results),
        "--no-fail-on-targets",
        "--trace-python",
        cache=cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["schema_version"] == 2
    assert info["machine"]["versions"]["mlx"] and info["ended_utc"] > info["started_utc"]
    assert info["spec"]["profile"]["name"] == "smoke"
    records = run_records(run)
    assert len(records) == sum(s["issued"] for s in info["stages"]) > 0
    assert {"analyze", "search", "embed"} <= {r["op"] for r in records}
    assert all(r["ok"] for r in records), [r["error"] for r in records if not r["ok"]]
    assert all(r["node"] and r["pid"] == info["replicas"][0]["pid"] for r in records)
    analyze = [r for r in records if r["op"] == "analyze"]
    assert all(r["stages"]["model"] > 0 and r["service"] <= r["duration"] for r in analyze)
    issued = info["generators"]["issued_by_worker"]
    expected = {f"{w}-{k}" for w, n in issued.items() for k in range(n)}
    assert [r["id"] for r in records] and {r["id"] for r in records} == expected  # exactly once
    # Every record was written by the worker that issued it, none by the driver.
    assert info["generators"]["records_written"] == "by each worker, into its own shards"
    assert sum(info["generators"]["written_by_worker"].values()) == len(records)
    left = set(Path(tempfile.gettempdir()).glob("loadlens-pyspy-*")) - scratch
    assert not left, f"the profiling agent left its py-spy folder behind: {left}"
    assert len({r["id"] for r in records}) == len(records) and not info["generators"]["outages"]
    assert all(
        r["planned"] <= r["sent"] and r["lag"] + r["wait"] + r["service"] <= r["duration"]
        for r in records
    )
    assert all(r["flops"] > 0 for r in analyze) and any(r["misses"] for r in analyze)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["records"] == len(records)
    assert sum(s["count"] for s in summary["by_op"].values()) == len(records)
    assert summary["by_op"]["analyze"]["p99"] <= summary["by_op"]["analyze"]["max"]
    # The smoke targets bound one op's latency (switch_p99_s): the other ops all count.
    good = summary["goodput"]
    assert good["slos"] == ["switch:p99<=3"] and good["against"] == "targets: smoke"
    late = sum(1 for r in records if r["op"] == "switch" and r["duration"] > 3)
    assert good["good"] == good["ok"] - late == len(records) - late and good["ops_s"] > 0
    assert good["by_op"]["analyze"]["share"] == 1.0
    assert "run completed" in proc.stderr and "dashboard: http://127.0.0.1:" in proc.stderr
    check_profiling(run, records)


def check_profiling(run: Path, records: list[dict]) -> None:
    """Flame graph, timelines, snapshots and analysis agree with what was recorded."""
    collapsed = (run / "profiles" / "replica-0.collapsed").read_text()
    assert "workloads/service/service.py" in collapsed and "analyze" in collapsed
    assert (run / "profiles" / "replica-0.svg").read_text().startswith("<svg")
    speedscope = json.loads((run / "profiles" / "replica-0.speedscope.json").read_text())
    assert speedscope["profiles"][0]["samples"]
    timeline = read_jsonl(run / "timeline.jsonl")
    roles = {row["role"] for row in timeline}
    wanted = {"system", "replica-0", "generator-0", "generator-1", "driver", "raylet", "gcs"}
    assert wanted | {"dashboard"} <= roles, roles
    assert any(row.get("uss") for row in timeline if row["role"] == "replica-0")
    # A replica's memory: under the smoke target (500 MB) at its peak, which with
    # --trace-python includes tracemalloc's own tables at start-up (450 MB seen once), and
    # under 400 MB once it serves load (optimized trims its heap every second).
    uss = [row["uss"] for row in timeline if row["role"] == "replica-0" and row.get("uss")]
    assert max(uss) < 500e6, f"replica USS reached {max(uss) / 1e6:.0f} MB"
    assert uss[-1] < 400e6, f"replica USS ended at {uss[-1] / 1e6:.0f} MB"
    snapshots = json.loads((run / "snapshots.json").read_text())
    labels = [s["label"] for s in snapshots]
    assert labels[0] == "start" and labels[-1] == "end" and "stage:warm:end" in labels
    assert all(s["mlx_active"] > 0 and s["uss"] > 0 for s in snapshots)
    assert snapshots[-1]["tracemalloc_top"] and "tracemalloc_diff" in snapshots[-1]
    probe = json.loads((run / "mlx_probe.json").read_text())
    assert probe[0]["backend"] in ("cpu", "metal", "cuda") and probe[0]["matmul_gflops"] > 0
    # Threads fit the node: one replica gets every core as MLX streams, its BLAS one thread,
    # and the BLAS is the fastest one the survey measured on this CPU.
    assert probe[0]["streams"] == probe[0]["cpus_available"]
    assert probe[0]["env"]["OPENBLAS_NUM_THREADS"] == probe[0]["env"]["MKL_NUM_THREADS"] == "1"
    assert probe[0]["blas_choice"] == probe[0]["achievable_blas"] == probe[0]["blas_kind"]
    assert {c["blas"] for c in probe[0]["survey"]} == {"bundled", "openblas", "mkl"}
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["findings"], "a smoke run on 2 cores always has something to say"
    budget = analysis["budget"]
    assert budget["records"] == len(records)
    assert sum(p["share"] for p in budget["parts"]) == pytest.approx(1.0)
    gauges = read_jsonl(run / "gauges.jsonl")
    assert gauges and all(g["replica"] == 0 and g["rss"] > 0 for g in gauges)
    by_name = {t["target"]["name"]: t for t in analysis["targets"]}
    ok_projects = {r["project"] for r in records if r["ok"] and r["project"]}
    assert by_name["active projects"]["value"] == len(ok_projects)
    max_uss = max(r["uss"] for r in timeline if r["role"].startswith("replica") and r["uss"])
    assert abs(by_name["service memory"]["value"] - max_uss / 1e6) < 0.1
    assert by_name["service memory"]["passed"] == (max_uss / 1e6 < 500)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nope"], "known: large-codebase, memory-pressure"),
        (["--profile", "smoke", "--duration", "0"], "duration"),
        (["--profile", "smoke", "--projects", "0"], "projects"),
        (["--config", "nope"], "unknown config 'nope' (known: baseline, optimized"),
        (["--profile", "smoke", "--address", "127.0.0.1:9"], "no Ray cluster answers at"),
        (["--profile", "smoke", "--project", "x=/no/such/folder"], "does not exist"),
        (["--profile", "smoke", "--stack", "python:no_such_module:Svc"], "cannot import"),
        (["--profile", "smoke", "--stack", "python:json:JSONDecoder"], "lacks analyze"),
        (["--profile", "smoke", "--stack", "http://x"], "expected one of builtin, mlx-lm"),
        (["--profile", "smoke", "--stack", "mlx-lm"], "the profile also sends embed, ingest"),
        (["--profile", "smoke", "--stack", "openai"], "needs --stack-url URL"),
        (
            ["--profile", "smoke", "--stack", "openai", "--stack-url", "http://127.0.0.1:9"],
            "--stack-url http://127.0.0.1:9: nothing answers",
        ),
        (
            ["--stack", "openai", "--stack-url", "http://127.0.0.1:9", "--stack-pid", "999999"],
            "--stack-pid 999999: no such process",
        ),
        (["--stack", "mlx-lm", "--stack-url", "http://x"], "are for --stack openai"),
        # The old flags still work for a release, each with a note naming the new one.
        (["--profile", "smoke", "--target", "http://x"], "note: --target is now --stack"),
        (["--target", "openai", "--target-url", "http://127.0.0.1:9"], "nothing answers"),
        (["--stack", "builtin", "--target", "builtin"], "are the same flag; give only --stack"),
        (["--profile", "smoke", "--results-dir", "{a_file}"], "is a file, not a folder"),
        (["--profile", "smoke", "--capacity", "--slo", "analyse:p95<=2"], "unknown op 'analyse'"),
        (["--profile", "smoke", "--capacity", "--slo", "analyze:p95<=-1"], "must be > 0"),
        (["--profile", "smoke", "--capacity", "bogus", "--slo", "all:p95<=2"], "unknown axis"),
        (
            ["--profile", "smoke", "--capacity", "--slo", "all:p95<=2", "--precision", "1.5"],
            "--precision must be within (0, 1)",
        ),
        (
            ["--capacity", "projects", "--slo", "all:p95<=2", "--project-rate", "0"],
            "--project-rate must be > 0 ops/s",
        ),
        (
            ["--profile", "smoke", "--capacity", "--slo", "all:p95<=2", "--project-rate", "1"],
            "--project-rate is for --capacity projects",
        ),
        (
            ["--profile", "smoke", "--capacity", "--slo", "all:p95<=2", "--baseline", "nope"],
            "unknown config 'nope'",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, cache_dir, args, message):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    args = [arg.format(a_file=a_file) for arg in args]
    if "--results-dir" not in args:
        args += ["--results-dir", str(tmp_path)]
    start = time.monotonic()
    proc = run_cli(*args, cache=cache_dir, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert time.monotonic() - start < 30


def test_malformed_profile_file_names_the_field(tmp_path, cache_dir):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'description = "x"\n[[stage]]\nname = "a"\nduration_s = "ten"\nmode = "closed"\n'
    )
    proc = run_cli("--profile", str(bad), cache=cache_dir, timeout=60)
    assert proc.returncode == 2 and "bad.toml" in proc.stderr and "duration_s" in proc.stderr


def test_failing_project_and_ctrl_c_keep_every_record(tmp_path, cache_dir):
    """A project whose requests all fail is error records, and Ctrl-C ends the run cleanly."""
    results = tmp_path / "results"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "blob.py").write_bytes(b"\x00\x01\x02")  # binary: no index can be built
    proc = start(
        results,
        cache_dir,
        "--profile",
        "smoke",
        "--duration",
        "120",
        "--project",
        f"broken={broken}",
    )

    def broken_records_seen() -> bool:
        records = records_so_far(results)
        return sum(r.get("project") == "broken" for r in records) >= 2 and len(records) >= 8

    wait_for(broken_records_seen, proc, timeout=150)
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc, timeout=120)
    assert proc.returncode == 130, err[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    records = run_records(run)
    assert len(records) == sum(s["issued"] for s in info["stages"])
    broken_records = [r for r in records if r["project"] == "broken" and r["op"] != "embed"]
    assert broken_records and not any(r["ok"] for r in broken_records)
    assert all("broken" in r["error"] for r in broken_records)
    assert any(r["ok"] for r in records if r["project"] != "broken")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["errors"] == sum(1 for r in records if not r["ok"])


def test_ab_smoke_compares_and_reports(tmp_path, cache_dir):
    """Baseline and optimized interleaved: comparison, differential flame graph, report."""
    results = tmp_path / "results"
    proc = run_cli(
        "--profile",
        "smoke",
        "--duration",
        "10",
        "--config",
        "optimized",
        "--baseline",
        "baseline",
        "--rounds",
        "1",
        "--results-dir",
        str(results),
        "--no-fail-on-targets",
        cache=cache_dir,
        timeout=420,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    (ab,) = list(results.iterdir())
    info = json.loads((ab / "ab.json").read_text())
    assert sorted(r["side"] for r in info["rounds"]) == ["baseline", "candidate"]
    assert all(r["status"] == "completed" for r in info["rounds"])
    comparison = json.loads((ab / "comparison.json").read_text())
    rows = {(r["name"], r["metric"]): r for r in comparison["rows"]}
    assert ("analyze", "p50_s") in rows and rows[("analyze", "p50_s")]["n_a"] > 0
    assert (proc.returncode == 1) == (comparison["summary"].get("regression", 0) > 0)
    diff = comparison["diff_flamegraphs"]["replica-0"]
    assert (ab / diff).read_text().startswith("<svg")
    side = {r["side"]: r for r in info["rounds"]}
    probes = [
        json.loads((ab / side[s]["run_dir"] / "mlx_probe.json").read_text())[0]
        for s in ("candidate", "baseline")
    ]
    assert [p["blas_kind"] for p in probes] == [probes[0]["achievable_blas"], "reference"]
    report = (ab / side["candidate"]["run_dir"] / "report.html").read_text()
    assert "baseline" in report and "optimized" in report and diff in report


def test_interleaved_ab_runs_both_sides_in_blocks_and_pairs_them(tmp_path, cache_dir):
    """The default A/B: both sides alive in one session, blocks of the same load in a
    random order per pair, compared with the block pairs as units."""
    results = tmp_path / "results"
    proc = run_cli(
        "--profile",
        "smoke",
        "--duration",
        "10",
        "--block-s",
        "2.5",
        "--config",
        "optimized",
        "--baseline",
        "baseline",
        "--results-dir",
        str(results),
        "--no-fail-on-targets",
        cache=cache_dir,
        timeout=420,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "both sides fit, interleaving blocks" in proc.stderr
    (ab,) = list(results.iterdir())
    info = json.loads((ab / "ab.json").read_text())
    assert info["mode"] == "interleaved" and info["status"] == "completed" and info["pairs"] == 4
    blocks = info["blocks"]
    assert [b["pair"] for b in blocks] == [0, 0, 1, 1, 2, 2, 3, 3]
    sides = [{b["side"] for b in blocks if b["pair"] == p} for p in range(4)]
    assert all(s == {"baseline", "candidate"} for s in sides)
    assert all(x["end"] <= y["start"] for x, y in itertools.pairwise(blocks))  # one by one
    for name, folder in info["sides"].items():
        run = json.loads((ab / folder / "run.json").read_text())
        assert run["ab"]["side"] == name and len(run["blocks"]) == 4
        windows = [(b["start"], b["end"]) for b in run["blocks"]]
        records = run_records(ab / folder)
        assert records and all(any(s <= r["planned"] < e for s, e in windows) for r in records)
        assert all(r["ok"] for r in records)
    comparison = json.loads((ab / "comparison.json").read_text())
    assert comparison["units"] == "block pairs" and comparison["schema_version"] == 4
    rows = {(r["name"], r["metric"]): r for r in comparison["rows"]}
    analyze = rows[("analyze", "p50_s")]
    assert analyze["runs_a"] == analyze["runs_b"] == 4 and "paired t" in analyze["reason"]
    # optimized (candidate) runs the model many times faster than the reference BLAS; with
    # 4 pairs that agree exactly the sign-flip p is 1/8, so the verdict may be "not detected"
    assert analyze["ratio"] < 0.5 and analyze["verdict"] in ("improvement", "not detected")
    assert analyze["verdict"] == "improvement" or "x1.05 change" in " ".join(comparison["warnings"])
    memory = rows[("replicas", "memory_peak_mb")]
    assert memory["runs_a"] == 4 and "peak of each block" in memory["reason"]
    assert (proc.returncode == 1) == (comparison["summary"].get("regression", 0) > 0)
    report = (ab / info["sides"]["candidate"] / "report.html").read_text()
    assert "baseline" in report and "optimized" in report


def test_ctrl_c_in_a_capacity_search_keeps_the_levels_so_far(tmp_path, cache_dir):
    """Interrupted after its saturation probe, a search still writes capacity.json with
    every level it measured, says it was interrupted, and exits 130."""
    results = tmp_path / "results"
    proc = start(
        results,
        cache_dir,
        "--profile",
        "smoke",
        "--capacity",
        "--slo",
        "all:p95<=5",
        "--level-s",
        "3",
    )
    wait_for(
        lambda: any(r.get("stage") == "capacity-02" for r in records_so_far(results)),
        proc,
        timeout=150,
    )
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc, timeout=120)
    assert proc.returncode == 130, err[-3000:]
    run = only_run(results)
    found = json.loads((run / "capacity.json").read_text())
    assert found["status"] == "interrupted"
    kinds = [row["kind"] for row in found["levels"]]
    assert kinds[:2] == ["one user", "saturation"] and len(kinds) >= 3, kinds
    assert all(row["operations"] > 0 for row in found["levels"][:2])
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert '<section id="capacity">' in (run / "report.html").read_text()
