"""One run, start to end: a run folder, the stack under load opened (:mod:`.builtin` or
:mod:`.http`), the profile's stages on it (:func:`~workloads.runs.live.run_stage`), then
the summary, the analysis and the report. An A/B (:mod:`.ab`, :mod:`.interleave`) opens
folders and sides with the same steps.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

from cluster.connect import disconnect
from datamodel.errors import LoadlensError, ResultsUnwritable
from datamodel.frame import infer_switches
from datamodel.runfolder import (
    DISK_ERRNOS,
    SCHEMA_VERSION,
    RecordWriter,
    RunData,
    read_run_records,
    unwritable,
    utc_now,
    write_json,
)
from profiling.render.html import write_report
from profiling.render.terminal import render_terminal, write_analysis
from profiling.verdict.analyze import analyze
from profiling.verdict.goodput import summary_with_goodput
from profiling.verdict.targets import known_targets, load_targets
from workloads.load.progress import Progress
from workloads.runs.builtin import open_builtin
from workloads.runs.http import open_http
from workloads.runs.live import Interrupts, Live, RunOutcome, RunSpec, run_stage
from workloads.runs.results import machine_info, new_run_id


def execute(spec: RunSpec) -> RunOutcome:
    """Run ``spec`` end to end; always leaves a consistent ``results/<run-id>/``."""
    run_dir, run_info, writer = open_folder(spec)
    progress = Progress(quiet=spec.quiet)
    status = "failed"
    hard = False
    failure: str | None = None
    try:
        with Interrupts() as interrupts:
            status = _execute(spec, run_dir, run_info, writer, progress, interrupts)
    except KeyboardInterrupt:
        status, hard = "interrupted", True
        progress.say("second interrupt: stopping at once; the records so far are kept")
    except ResultsUnwritable as exc:
        failure = str(exc)
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        failure = str(unwritable(Path(exc.filename or run_dir), exc))
    finally:
        disconnect()
        if failure is not None:
            writer.release()  # room to close the run
            run_info["error"] = failure
            progress.say(f"error: {failure}; the run stopped, what it measured before is kept")
        try:
            records, summary = close_folder(run_dir, run_info, writer, status, spec)
        except OSError as exc:
            raise unwritable(run_dir, exc) from None
    progress.final(summary, run_dir, status)
    if failure is not None or writer.failed is not None:
        progress.say(
            f"analysis skipped ({writer.failed or failure}); once there is room, "
            f"`python -m profiling.report {run_dir}` writes it"
        )
        return RunOutcome(run_dir, status, records, summary, [])
    if hard:
        progress.say(f"analysis skipped; `python -m profiling.report {run_dir}` writes it")
        return RunOutcome(run_dir, status, records, summary, [], stopped_at_once=True)
    failed = judge(run_dir, spec, progress)
    return RunOutcome(run_dir, status, records, summary, failed)


def open_folder(spec: RunSpec) -> tuple[Path, dict[str, Any], RecordWriter]:
    """A new run folder for ``spec``: its ``run.json`` (status ``starting``) and its
    records' writer."""
    run_id = new_run_id(spec.profile.name)
    run_dir = spec.results_dir / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(run_dir, exc) from None
    run_info: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "starting",
        "started_utc": utc_now(),
        "ended_utc": None,
        "spec": spec.as_dict(),
        "machine": machine_info(),
        "driver": {"pid": os.getpid(), "hostname": platform.node()},
    }
    try:
        write_json(run_dir / "run.json", run_info)
    except OSError as exc:
        raise unwritable(run_dir / "run.json", exc) from None
    return run_dir, run_info, RecordWriter(run_dir)


def close_folder(
    run_dir: Path, run_info: dict[str, Any], writer: RecordWriter, status: str, spec: RunSpec
) -> tuple[int, dict[str, Any]]:
    """Close the records, write ``summary.json`` (with goodput against the run's latency
    SLOs) and the final ``run.json``; the number of records and the summary."""
    writer.close()
    records = read_run_records(run_dir, [])
    infer_switches(records)
    name = targets_name(spec)
    try:
        targets = load_targets(name)
    except LoadlensError:  # judge says why; goodput counts against no latency SLO
        targets = []
    summary = summary_with_goodput(records, run_info, targets, name)
    write_json(run_dir / "summary.json", summary)
    run_info.update(status=status, ended_utc=utc_now(), records=len(records))
    write_json(run_dir / "run.json", run_info)
    return len(records), summary


def targets_name(spec: RunSpec) -> str:
    """``--targets`` if given, else a targets file named like the profile, else ``default``."""
    if spec.targets:
        return spec.targets
    return spec.profile.name if spec.profile.name in known_targets() else "default"


def judge(run_dir: Path, spec: RunSpec, progress: Progress) -> list[str]:
    """Analyse the run folder: findings and the targets table, printed and in analysis.json.

    A bad targets file or a failing detector is a message; the measured run is kept.
    """
    try:
        targets = load_targets(targets_name(spec))
    except LoadlensError as exc:
        progress.say(f"targets: {exc}; judging without targets")
        targets = []
    try:
        analysis = analyze(RunData.load(run_dir), targets, targets_name(spec))
    except LoadlensError as exc:
        progress.say(f"analysis: {exc}")
        return []
    write_analysis(analysis, run_dir)
    try:
        report = write_report(run_dir)
        progress.say(f"report: {report}")
    except (LoadlensError, OSError) as exc:
        progress.say(f"report: {exc}")
    if not spec.quiet:
        progress.say(render_terminal(analysis))
    return [r.target.name for r in analysis.targets if r.passed is False]


def _execute(
    spec: RunSpec,
    run_dir: Path,
    run_info: dict[str, Any],
    writer: RecordWriter,
    progress: Progress,
    interrupts: Interrupts,
) -> str:
    with open_side(spec, run_dir, run_info, writer, progress, interrupts) as live:
        stages = []
        for index, stage in enumerate(spec.profile.stages):
            if interrupts.count:
                break
            stages.append(run_stage(live, stage, index))
        run_info["stages"] = stages
    return "interrupted" if interrupts.count else "completed"


def open_side(
    spec: RunSpec,
    run_dir: Path,
    run_info: dict[str, Any],
    writer: RecordWriter,
    progress: Progress,
    interrupts: Interrupts,
) -> contextlib.AbstractContextManager[Live]:
    """The stack of ``spec`` opened for load: an HTTP server (:func:`.http.open_http`) or
    loadlens's own replicas (:func:`.builtin.open_builtin`); the rest of a run is the same."""
    opener = open_http if spec.stack.http else open_builtin
    return opener(spec, run_dir, run_info, writer, progress, interrupts)
