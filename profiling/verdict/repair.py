"""A run whose driver died (SIGKILL, a lost machine) leaves ``run.json`` at "running".

:func:`repair` turns such a folder into a valid, clearly-marked partial run: its status
becomes ``crashed``, its end the last reply on record, and ``summary.json`` and
``analysis.json`` are computed from the records that reached the disk (its record shards
compacted, as the driver would have at its end). A run whose driver
is still alive on this machine is left alone.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from datamodel.errors import ConfigError
from datamodel.frame import infer_switches, span
from datamodel.runfolder import (
    RUN_JSON,
    RunData,
    compact,
    read_run_records,
    utc_now,
    write_json,
)
from profiling.verdict.analyze import analyze
from profiling.verdict.goodput import summary_with_goodput
from profiling.verdict.targets import known_targets, load_targets

UNFINISHED = ("starting", "running")
"""Statuses a finished driver never leaves behind."""


def _driver_alive(info: dict[str, Any]) -> bool:
    driver = info.get("driver") or {}
    pid, host = driver.get("pid"), driver.get("hostname")
    if not isinstance(pid, int) or host != platform.node() or not psutil.pid_exists(pid):
        return False
    try:
        return "python" in psutil.Process(pid).name().lower()
    except psutil.Error:
        return False


def repair(run_dir: Path) -> str | None:
    """Mark an abandoned run ``crashed`` and compute what it lacks; ``None`` if nothing to do.

    Raises :class:`ConfigError` when the folder is not a run folder.
    """
    path = Path(run_dir) / RUN_JSON
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable: {exc}") from None
    if info.get("status") not in UNFINISHED or _driver_alive(info):
        return None
    compact(Path(run_dir))  # what the driver would have done at its end
    try:
        records: Sequence[Mapping[str, Any]] = read_run_records(Path(run_dir), [])
    except ConfigError:  # died before its first records
        records = []
    infer_switches(records)
    window = span(records)
    ended = (
        datetime.fromtimestamp(window[1], UTC).isoformat(timespec="milliseconds")
        if window
        else None
    )
    left = info.get("status")
    info.update(status="crashed", ended_utc=ended, repaired_utc=utc_now(), records=len(records))
    profile = ((info.get("spec") or {}).get("profile") or {}).get("name")
    name = profile if profile in known_targets() else "default"
    targets = load_targets(name)
    write_json(Path(run_dir) / "summary.json", summary_with_goodput(records, info, targets, name))
    write_json(path, info)
    from profiling.render.terminal import write_analysis

    write_analysis(analyze(RunData.load(run_dir), targets, name), run_dir)
    return (
        f"{run_dir}: its driver is gone and it was left {left!r}; marked "
        f"'crashed' with the {len(records)} records on disk (summary and analysis written)"
    )
