"""Helpers for tests that drive real runs through the CLI in a process of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datamodel.errors import ConfigError
from datamodel.runfolder import load_records

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cache: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m workloads.run ARGS`` to its end, with ``cache`` as loadlens's cache."""
    env = {**os.environ, "LOADLENS_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "workloads.run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run(results: Path) -> Path:
    """The one run folder under ``results``."""
    (run,) = list(results.iterdir())
    return run


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def start(
    results: Path, cache: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``python -m workloads.run`` in a session of its own, as a terminal would start it
    (``env``: more environment variables)."""
    env = {**os.environ, "LOADLENS_CACHE": str(cache), **(env or {})}
    command = [
        sys.executable,
        "-m",
        "workloads.run",
        "--results-dir",
        str(results),
        "--no-fail-on-targets",
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(
    predicate: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 180.0
) -> None:
    """Poll ``predicate`` until it holds; fail if the run ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the run")


def run_records(run: Path) -> list[dict[str, Any]]:
    """The records of the run folder ``run`` as dicts (its shards while it is going)."""
    return load_records(run)


def records_so_far(results: Path) -> list[dict[str, Any]]:
    """The records written so far by the run under ``results`` (none before it has any)."""
    found = [p for p in results.iterdir() if (p / "run.json").exists()] if results.exists() else []
    try:
        return load_records(found[0]) if found else []
    except ConfigError:
        return []


def records_written(results: Path, at_least: int) -> Callable[[], bool]:
    return lambda: len(records_so_far(results)) >= at_least


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[float, str]:
    """Seconds until ``proc`` exits (its whole session killed if it overstays), and stderr."""
    start_t = time.monotonic()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return time.monotonic() - start_t, err
