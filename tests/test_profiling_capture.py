"""Capture pieces on real processes: psutil sampling, py-spy, memory snapshots, MLX probe."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx

from profiling.capture import pyspy
from profiling.capture.memory import MemoryWatcher
from profiling.capture.mlx_probe import blas_kind, probe
from profiling.capture.sampler import ProcessSampler
from workloads.load.progress import Progress
from workloads.load.spec import load_profile
from workloads.runs.runner import RunSpec, judge
from workloads.stack.config import load_config

BUSY = "import time\nt = time.time()\nwhile time.time() - t < 30:\n    sum(range(10000))\n"


def test_sampler_follows_processes_and_survives_one_that_exits():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    sampler = ProcessSampler("node-a", full_every=1)
    sampler.set_roles({child.pid: "replica-0", 999_999_999: "ghost"})
    first = sampler.sample()
    child.wait()
    time.sleep(0.1)
    second = sampler.sample()
    roles_first = {row["role"] for row in first}
    assert {"system", "replica-0"} <= roles_first
    assert all(row["uss"] is not None for row in first if row["role"] == "replica-0")
    assert {row["role"] for row in second} == {"system"}
    assert {(g["role"], g["why"]) for g in sampler.gone} == {
        ("ghost", "absent"),
        ("replica-0", "exited"),
    }
    system = first[0]
    assert system["mem_total"] > system["mem_used"] > 0 and len(system["cpu_per_core"]) >= 1


def test_pyspy_records_a_python_process_and_explains_a_failure(tmp_path):
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        good = pyspy.start("replica-0", busy.pid, tmp_path, rate_hz=50)
        bad = pyspy.start("replica-1", sleeper.pid, tmp_path, rate_hz=50)
        time.sleep(2)
        text, problem = pyspy.stop(good)
        bad_text, bad_problem = pyspy.stop(bad)
    finally:
        busy.kill()
        sleeper.kill()
    assert problem is None and text.startswith("replica-0;") and "<module>" in text
    assert bad_text == "" and bad_problem and "replica-1" in bad_problem


def test_memory_snapshots_see_mlx_and_python_allocations():
    watcher = MemoryWatcher(trace_python=True)
    first = watcher.snapshot("start")
    kept = [bytearray(1000) for _ in range(2000)]  # ~2 MB of Python objects
    big = mx.ones((1024, 1024))
    mx.eval(big)
    second = watcher.snapshot("after")
    assert second["mlx_active"] >= first["mlx_active"] + 4 * 1024 * 1024
    assert second["mlx_peak"] >= 4 * 1024 * 1024 and second["uss"] > 0
    grew = sum(d["bytes_diff"] for d in second["tracemalloc_diff"] if d["bytes_diff"] > 0)
    assert grew >= 1_500_000 and len(kept) == 2000


def test_probe_names_the_blas_that_is_mapped():
    facts = probe()
    assert facts["backend"] in ("cpu", "metal", "cuda") and facts["matmul_gflops"] > 0
    assert facts["blas_kind"] == blas_kind(facts["blas"])
    wheel = "/x/mlx_cpu.libs/libblas-bd8a282c.so.3.10.0"
    assert blas_kind([wheel]) == "reference"
    assert blas_kind([wheel, "/usr/lib/openblas-pthread/libopenblasp-r0.3.21.so"]) == "openblas"


def test_unreadable_targets_file_is_a_message_and_judging_goes_on(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "data" / "run_fixture", run)
    bad = tmp_path / "targets.toml"
    bad.write_bytes(b"[[target]\nname = \xff")
    spec = RunSpec(
        profile=load_profile("smoke"),
        config=load_config("optimized"),
        results_dir=tmp_path,
        targets=str(bad),
    )
    out = io.StringIO()
    failed = judge(run, spec, Progress(stream=out))
    assert failed == []
    assert "targets.toml" in out.getvalue() and "judging without targets" in out.getvalue()
    assert (run / "analysis.json").is_file()


def test_ptrace_refusal_says_how_to_fix_it(monkeypatch, tmp_path):
    """Pure logic: as a non-root user on Linux with Yama's ptrace_scope at 1."""
    monkeypatch.setattr(pyspy.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(pyspy.sys, "platform", "linux")
    scope = tmp_path / "ptrace_scope"
    scope.write_text("1\n")
    real_path = pyspy.Path
    monkeypatch.setattr(
        pyspy,
        "Path",
        lambda p: scope if p == "/proc/sys/kernel/yama/ptrace_scope" else real_path(p),
    )
    message = pyspy.ptrace_problem()
    assert message and "ptrace_scope is 1" in message and "CAP_SYS_PTRACE" in message
    assert "continues without flame graphs" in message
    scope.write_text("0\n")
    assert pyspy.ptrace_problem() is None


def test_missing_pyspy_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(pyspy, "pyspy_binary", lambda: None)
    try:
        pyspy.start("replica-0", 1, tmp_path)
    except OSError as exc:
        assert "py-spy is not installed" in str(exc)
    else:
        raise AssertionError("start() should refuse without py-spy")
