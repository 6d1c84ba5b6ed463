"""Faults injected into real runs through the CLI: signals to the process group, a killed
driver repaired afterwards, a profiling agent killed mid-run. Nothing measured is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from runs import ROOT, finish, only_run, records_written, run_records, start, wait_for


def test_sigterm_is_a_graceful_stop_with_summary_analysis_and_report(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(results, cache_dir, "--profile", "smoke", "--duration", "120")
    wait_for(records_written(results, 10), proc)
    proc.send_signal(signal.SIGTERM)
    seconds, err = finish(proc, timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert seconds < 20, f"SIGTERM took {seconds:.1f} s to a finished run folder"
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["ended_utc"]
    records = run_records(run)
    assert len(records) == sum(s["issued"] for s in info["stages"]) == info["records"]
    assert json.loads((run / "summary.json").read_text())["records"] == len(records)
    assert json.loads((run / "analysis.json").read_text())["budget"]["records"] == len(records)
    assert (run / "report.html").is_file()


OVERLOAD = """
description = "open loop far above capacity: a backlog that a graceful stop has to wait for"
projects = 3
replicas = 1
max_chunks_per_project = 24
[[stage]]
name = "flood"
duration_s = 120
mode = "open"
rate = 40.0
mix = { analyze = 1.0 }
"""


def test_ctrl_c_to_the_process_group_once_then_twice(tmp_path, cache_dir):
    """Once: a graceful stop, bounded even behind a backlog. Twice: out at once."""
    profile = tmp_path / "flood.toml"
    profile.write_text(OVERLOAD)
    results = tmp_path / "once"
    proc = start(results, cache_dir, "--profile", str(profile))
    wait_for(records_written(results, 20), proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    seconds, err = finish(proc, timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert seconds < 20, f"a Ctrl-C took {seconds:.1f} s to a finished run folder"
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    records = run_records(run)
    assert info["status"] == "interrupted" and info["records"] == len(records)
    assert len(records) == sum(s["issued"] for s in info["stages"])  # the backlog recorded too
    assert any("Interrupted: no reply" in (r["error"] or "") for r in records)
    assert (run / "analysis.json").is_file() and (run / "report.html").is_file()

    results = tmp_path / "twice"
    proc = start(results, cache_dir, "--profile", str(profile))
    wait_for(records_written(results, 20), proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    seconds, err = finish(proc, timeout=30)
    assert proc.returncode == 130, err[-3000:]
    assert seconds < 3, f"a second Ctrl-C took {seconds:.1f} s"
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert len(run_records(run)) == info["records"] >= 20
    assert "profiling.report" in err  # how to get the analysis it skipped


def test_a_killed_driver_leaves_a_run_that_report_repairs(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(results, cache_dir, "--profile", "smoke", "--duration", "120")
    wait_for(records_written(results, 10), proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.communicate()
    run = only_run(results)
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    repaired = subprocess.run(
        [sys.executable, "-m", "profiling.report", str(run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert "marked 'crashed'" in repaired.stderr
    info = json.loads((run / "run.json").read_text())
    records = run_records(run)
    assert info["status"] == "crashed" and info["records"] == len(records) >= 10
    assert info["ended_utc"] and info["repaired_utc"]
    assert json.loads((run / "analysis.json").read_text())["budget"]["records"] == len(records)
    assert "crashed" in (run / "report.html").read_text()


def test_a_profiling_agent_killed_mid_run_costs_only_its_capture(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(results, cache_dir, "--profile", "smoke", "--duration", "15")
    wait_for(records_written(results, 10), proc)
    for agent in _actors(proc, "ProfilingAgent", 1, known=set()):  # one node: one agent
        os.kill(agent, signal.SIGKILL)
    _, err = finish(proc, timeout=180)
    assert proc.returncode == 0, err[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed"
    records = run_records(run)
    assert len(records) == sum(s["issued"] for s in info["stages"]) and all(
        r["ok"] for r in records
    )
    problems = json.loads((run / "profiling.json").read_text())["problems"]
    assert any("lost mid-run" in p or "agent" in p for p in problems), problems


def _in_session(process: psutil.Process, sid: int) -> bool:
    try:
        return os.getsid(process.pid) == sid
    except (ProcessLookupError, PermissionError):
        return False


INGEST = """
projects = 3
replicas = 1
max_chunks_per_project = 300
[[stage]]
name = "after"
duration_s = 5
mode = "closed"
users = 1
mix = { search = 1.0 }
"""


def test_ctrl_c_during_the_index_build_stops_it_and_the_next_run_resumes(tmp_path):
    cache = tmp_path / "cache"  # empty: every index has to be built
    profile = tmp_path / "ingest.toml"
    profile.write_text(INGEST)
    results = tmp_path / "results"
    proc = start(results, cache, "--profile", str(profile))
    wait_for(lambda: len(list(cache.glob("embeddings/*/shard-*.npz"))) >= 2, proc)
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    seconds, err = finish(proc, timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert seconds < 10, f"the index build took {seconds:.1f} s to stop"
    first = json.loads((only_run(results) / "run.json").read_text())
    assert first["status"] == "interrupted" and first["ingest"]["interrupted"]
    embedded_before = first["ingest"]["embedded"]
    assert 0 < embedded_before < first["ingest"]["chunks"]
    assert time.monotonic() - stopped_at < 60
    again = tmp_path / "again"
    proc = start(again, cache, "--profile", str(profile))
    _, err = finish(proc, timeout=300)
    assert proc.returncode == 0, err[-3000:]
    second = json.loads((only_run(again) / "run.json").read_text())["ingest"]
    assert second["chunks"] == first["ingest"]["chunks"]
    assert second["embedded"] <= second["chunks"] - embedded_before  # resumed, not redone


def expected_ids(issued_by_worker: dict[str, int]) -> set[str]:
    """The ids the generator workers say they issued: ``<worker>-<0..issued-1>``."""
    return {f"{w}-{k}" for w, n in issued_by_worker.items() for k in range(n)}


def test_a_killed_generator_worker_is_replaced_and_nothing_is_lost(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(results, cache_dir, "--profile", "smoke", "--duration", "20")
    wait_for(records_written(results, 10), proc)
    os.kill(min(_actors(proc, "GeneratorWorker", 2, known=set())), signal.SIGKILL)
    _, err = finish(proc, timeout=180)
    assert proc.returncode == 0, err[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed"
    (outage,) = info["generators"]["outages"]
    records = run_records(run)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "an operation was recorded twice"
    issued = info["generators"]["issued_by_worker"]
    survivors = {w: n for w, n in issued.items() if int(w) != outage["worker"]}
    assert expected_ids(survivors) <= set(ids)  # every op a live worker issued is a record
    lost = [r for r in records if (r["error"] or "").startswith("GeneratorLost")]
    assert len(lost) == outage["in_flight_lost"]
    assert all(r["worker"] == outage["worker"] for r in lost)
    assert any(r["worker"] == outage["replaced_by"] and r["ok"] for r in records)
    assert "generator" in err and "was lost" in err


def _actors(proc: subprocess.Popen[str], name: str, count: int, known: set[int]) -> set[int]:
    """The pids of ``count`` processes of Ray actor class ``name`` in the run's session, not
    in ``known``, found by their titles. Ray rewrites a title at every method call and a
    read can catch it half written, so a look that misses one proves nothing: look until
    ``count`` have been seen."""
    seen: set[int] = set()

    def found() -> bool:
        seen.update(_actor_pids(proc.pid, name) - known)
        return len(seen) >= count

    try:
        wait_for(found, proc, timeout=60)
    except AssertionError as failed:
        titles = [
            " ".join(_cmdline(p))[:80] for p in psutil.process_iter() if _in_session(p, proc.pid)
        ]
        raise AssertionError(f"{failed}; the session's processes: {titles}") from None
    assert len(seen) == count, f"{len(seen)} {name} processes, expected {count}"
    return seen


def _actor_pids(sid: int, name: str) -> set[int]:
    return {
        p.pid
        for p in psutil.process_iter()
        if _in_session(p, sid) and name in " ".join(_cmdline(p))
    }


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_a_replica_killed_twice_leaves_error_records_not_a_failed_run(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(results, cache_dir, "--profile", "smoke", "--duration", "20")
    wait_for(records_written(results, 10), proc)
    (replica,) = json.loads((only_run(results) / "run.json").read_text())["replicas"]
    first = int(replica["pid"])
    assert os.getsid(first) == proc.pid  # the run's own replica, before it is killed
    os.kill(first, signal.SIGKILL)
    (second,) = _actors(proc, "ServiceReplica", 1, known={first})  # Ray restarted it
    os.kill(second, signal.SIGKILL)  # beyond max_restarts: gone for good
    killed_at = time.time()
    _, err = finish(proc, timeout=180)
    assert proc.returncode == 0, err[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed"
    records = run_records(run)
    assert len(records) == sum(s["issued"] for s in info["stages"])
    after = [r for r in records if r["sent"] > killed_at + 2]
    assert after and not any(r["ok"] for r in after)
    assert all("Actor" in r["error"] or "died" in r["error"] for r in after)
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["findings"][0]["kind"] == "errors"


def test_the_embedded_cluster_refuses_requests_without_its_token(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(results, cache_dir, "--profile", "smoke", "--duration", "60")
    try:
        wait_for(records_written(results, 5), proc)
        cluster = json.loads((only_run(results) / "run.json").read_text())["cluster"]
        url = f"{cluster['dashboard_url']}/api/version"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code in (401, 403)
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"}
        intruder = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import ray; ray.init(address={cluster['address']!r}); print('joined')",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert intruder.returncode != 0 and "joined" not in intruder.stdout
        assert "auth" in (intruder.stderr + intruder.stdout).lower()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = finish(proc, timeout=60)
    assert proc.returncode == 130, err[-2000:]  # loadlens's own calls kept working
    records = run_records(only_run(results))
    assert records and all(r["ok"] for r in records)
