"""End to end through the CLI: a real embedded Ray, real replicas, real MLX, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cache: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOADLENS_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "workloads.run", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def only_run(results: Path) -> Path:
    (run,) = list(results.iterdir())
    return run


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_smoke_run_records_every_operation(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = run_cli("--profile", "smoke", "--results-dir", str(results), cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["schema_version"] == 1
    assert info["machine"]["versions"]["mlx"] and info["ended_utc"] > info["started_utc"]
    assert info["spec"]["profile"]["name"] == "smoke"
    records = read_jsonl(run / "records.jsonl")
    assert len(records) == sum(s["issued"] for s in info["stages"]) > 0
    assert {"analyze", "search", "embed"} <= {r["op"] for r in records}
    assert all(r["ok"] for r in records), [r["error"] for r in records if not r["ok"]]
    assert all(r["node"] and r["pid"] == info["replicas"][0]["pid"] for r in records)
    analyze = [r for r in records if r["op"] == "analyze"]
    assert all(r["stages"]["model"] > 0 and r["service"] <= r["duration"] for r in analyze)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["records"] == len(records)
    assert sum(s["count"] for s in summary["by_op"].values()) == len(records)
    assert summary["by_op"]["analyze"]["p99"] <= summary["by_op"]["analyze"]["max"]
    assert "run completed" in proc.stderr and "dashboard: http://127.0.0.1:" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nope"], "known: large-codebase, memory-pressure"),
        (["--profile", "smoke", "--duration", "0"], "duration"),
        (["--profile", "smoke", "--projects", "0"], "projects"),
        (["--config", "nope"], "unknown config 'nope' (known: baseline, default"),
        (["--profile", "smoke", "--address", "127.0.0.1:9"], "no Ray cluster answers at"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, cache_dir, args, message):
    start = time.monotonic()
    proc = run_cli(*args, "--results-dir", str(tmp_path), cache=cache_dir, timeout=60)
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
