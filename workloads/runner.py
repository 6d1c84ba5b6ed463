"""One run, start to end: cluster, replicas, ingest, stages, records, summary.

The driver never busy-waits: it blocks in ``ray.wait`` with a one-second timeout, and
drains finished records from the generator workers each time it wakes.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.connect import Cluster, connect, disconnect
from datamodel.cache import default_cache_dir
from datamodel.errors import LoadlensError
from datamodel.runfolder import (
    GAUGES,
    PROFILES,
    SCHEMA_VERSION,
    RecordWriter,
    RunData,
    read_records,
    utc_now,
    write_json,
)
from datamodel.summary import summarize
from profiling.capture.session import ProfilingSession, head_processes
from profiling.render.html import write_report
from profiling.render.terminal import render_terminal, write_analysis
from profiling.verdict.analyze import analyze
from profiling.verdict.targets import known_targets, load_targets
from workloads.blas import BLAS_THREADS, blas_env, resolve, survey
from workloads.fleet import Fleet
from workloads.ingest import ingest_all
from workloads.progress import Progress
from workloads.replica import ServiceReplica
from workloads.results import machine_info, new_run_id
from workloads.routing import assign
from workloads.service.projects import Project, default_projects
from workloads.service.service import STAGE_FRAMES
from workloads.shapes import WorkerPlan, active_projects, plan_stage
from workloads.spec import Profile, Stage
from workloads.system_config import SystemConfig
from workloads.targets import BUILTIN, Target, worker_env


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, resolved once from flags, env and files."""

    profile: Profile
    config: SystemConfig
    results_dir: Path
    seed: int = 0
    address: str | None = None
    workers: int = 2
    extra_projects: tuple[Project, ...] = ()
    base_model: Path | None = None
    cache_dir: Path | None = None
    quiet: bool = False
    profiling: bool = True
    """Capture timelines, flame graphs and snapshots (``--no-profile`` turns it off)."""
    trace_python: bool = False
    """Trace Python allocations with tracemalloc in replicas (top-N and diffs in snapshots).
    Off by default: it slows every Python allocation of the service."""
    pyspy_rate_hz: int = 20
    """py-spy sampling rate for the replicas' flame graphs."""
    targets: str | None = None
    """Targets file name or path; ``None``: the profile's own if there is one, else default."""
    target: Target = field(default_factory=lambda: Target(BUILTIN))
    """The system under load: the builtin stack or a user's service class."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for run.json."""
        return asdict(self)


@dataclass
class RunOutcome:
    """Where the run landed and how it ended."""

    run_dir: Path
    status: str
    records: int
    summary: dict[str, Any] = field(default_factory=dict)
    targets_failed: list[str] = field(default_factory=list)
    """Names of targets that were measured and missed."""
    stopped_at_once: bool = False
    """A second interrupt ended it: the analysis was skipped, the process should exit now."""


class _Interrupts:
    """First Ctrl-C (or SIGTERM: a CI timeout, ``kill``, a service manager): stop issuing
    and finish gracefully. A second one: raise KeyboardInterrupt at once.

    Python runs a handler once for signals that arrive while the main thread waits in C
    (``ray.wait``), so each signal is also counted through a wakeup pipe, one byte a signal.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.count = 0
        self._old: dict[int, Any] = {}
        self._old_fd = -1
        self._pipe: tuple[int, int] | None = None

    def __enter__(self) -> _Interrupts:
        self._pipe = os.pipe()
        for fd in self._pipe:
            os.set_blocking(fd, False)
        self._old_fd = signal.set_wakeup_fd(self._pipe[1])
        for sig in self.SIGNALS:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def reinstall(self) -> None:
        """Take the signals back: ``ray.init`` installs handlers of its own (SIGTERM)."""
        if self._pipe is not None:
            signal.set_wakeup_fd(self._pipe[1])
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        arrived = 0
        if self._pipe is not None:
            with contextlib.suppress(BlockingIOError):
                arrived = sum(1 for b in os.read(self._pipe[0], 4096) if b in self.SIGNALS)
        self.count += max(arrived, 1)
        if self.count > 1:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None


def choose_projects(spec: RunSpec) -> list[Project]:
    """The user's projects first, then default ones, ``profile.projects`` in all."""
    wanted = spec.profile.projects
    chosen = list(spec.extra_projects)[:wanted]
    if len(chosen) < wanted:
        taken = {p.name for p in chosen}
        more = [p for p in default_projects(wanted) if p.name not in taken]
        chosen += more[: wanted - len(chosen)]
    return chosen


def _service_config(spec: RunSpec) -> dict[str, Any]:
    config: dict[str, Any] = dict(spec.config.service)
    profile = spec.profile
    for key in (
        "adapter_cache_count",
        "index_cache_count",
        "max_chunks_per_project",
        "memory_budget_mb",
    ):
        value = getattr(profile, key, None)
        if value is not None:
            config[key] = value
    if spec.cache_dir is not None:
        config["cache_dir"] = spec.cache_dir
    if spec.base_model is not None:
        config["base_model"] = spec.base_model
    return config


@dataclass
class _Live:
    """What a running run holds: the actors, the sinks, and how to stop."""

    spec: RunSpec
    run_dir: Path
    names: list[str]
    replicas: list[Any]
    fleet: Fleet
    writer: RecordWriter
    progress: Progress
    interrupts: _Interrupts
    profiling: ProfilingSession | None = None
    replica_pids: dict[int, int] = field(default_factory=dict)
    gauges: RecordWriter | None = None
    _pending_gauges: list[Any] = field(default_factory=list)

    def drain(self) -> None:
        """Move finished records (and profiling samples) to disk and the display."""
        self.fleet.drain(self.writer, self.progress)
        if self.profiling is not None:
            self.profiling.drain()
        self.poll_gauges()

    def poll_gauges(self) -> None:
        """Ask every replica for its gauges about once a second, never waiting for them."""
        if self.gauges is None:
            return
        if self._pending_gauges:
            done, self._pending_gauges = ray.wait(
                self._pending_gauges, num_returns=len(self._pending_gauges), timeout=0
            )
            rows = []
            for ref in done:
                try:
                    rows.append(ray.get(ref))
                except Exception:  # a dead replica: its records say so; gauges just stop
                    continue
            self.gauges.write(rows)
        if not self._pending_gauges:
            self._pending_gauges = [r.gauges.remote() for r in self.replicas]

    def watch_generators(self, numbers: list[int]) -> None:
        """Profile new generator workers (a replacement) under their own roles."""
        if self.profiling is None:
            return
        roles: dict[str, dict[int, str]] = {}
        for info in self.fleet.infos(numbers):
            roles.setdefault(info["node"], {})[info["pid"]] = f"generator-{info['worker']}"
        self.profiling.watch(roles)

    def rewatch_replicas(self) -> None:
        """A restarted replica has a new pid: point the profiler at it."""
        if self.profiling is None:
            return
        infos = []
        for k, replica in enumerate(self.replicas):
            try:
                infos.append(ray.get(replica.info.remote(), timeout=30))
            except Exception as exc:
                self.profiling.problems.append(f"replica {k} unreachable: {exc!r}"[:300])
        moved = [i for i in infos if self.replica_pids.get(i["replica"]) != i["pid"]]
        if moved:
            self.profiling.watch({i["node"]: {i["pid"]: f"replica-{i['replica']}"} for i in moved})
            self.profiling.record_flames(moved)
            self.replica_pids.update({i["replica"]: i["pid"] for i in moved})


def _start_plan(
    worker: Any, stage: Stage, plan: WorkerPlan, names: list[str], elapsed: float
) -> Any:
    """Start ``plan`` on ``worker``, ``elapsed`` seconds into the stage (for a replacement:
    what is left of the time, or the arrivals not due yet); ``None`` if nothing is left."""
    if stage.mode == "closed":
        left = stage.duration_s - elapsed
        if plan.users == 0 or left <= 0.5:
            return None
        return worker.run_closed.remote(
            stage.name,
            users=plan.users,
            duration_s=left,
            think_time_s=stage.think_time_s,
            mix=list(stage.mix),
            projects=active_projects(stage, names),
            popularity=stage.popularity,
            zipf_s=stage.zipf_s,
            seed=plan.seed + int(elapsed * 1000),
        )
    arrivals = [(o.at_s - elapsed, o.op, o.project) for o in plan.ops if o.at_s > elapsed]
    if not arrivals:
        return None
    return worker.run_open.remote(stage.name, arrivals=arrivals, seed=plan.seed)


def _run_stage(
    live: _Live, stage: Stage, index: int, *, seed_index: int | None = None, snapshot: bool = True
) -> dict[str, Any]:
    """Run ``stage`` (the ``index``-th of the profile) on every generator worker; its
    plans are drawn from the run's seed plus ``seed_index`` (default ``index``: two
    blocks given one ``seed_index`` issue the same load). ``snapshot``: take a memory
    snapshot at its end."""
    spec, names, fleet = live.spec, live.names, live.fleet
    numbers = sorted(fleet.workers)
    plans = plan_stage(
        stage, names, spec.seed + (index if seed_index is None else seed_index), len(numbers)
    )
    started = time.perf_counter()
    runs: dict[Any, tuple[int, WorkerPlan]] = {}
    for k, plan in zip(numbers, plans, strict=True):
        ref = _start_plan(fleet.workers[k], stage, plan, names, 0.0)
        if ref is not None:
            runs[ref] = (k, plan)
    live.progress.start_stage(stage, index)
    costs: list[dict[str, Any]] = []
    stopped = False
    while runs:
        ready, _ = ray.wait(list(runs), num_returns=len(runs), timeout=1.0)
        if live.interrupts.count and not stopped:
            fleet.stop()
            stopped = True
        live.drain()
        for ref in ready:
            k, plan = runs.pop(ref)
            try:
                costs.append(ray.get(ref))
            except Exception as exc:  # the worker died: record its loss, carry its plan on
                fleet.lose(k, exc, live.writer, live.progress)
                if stopped:
                    continue
                (new,) = fleet.start(1)
                live.watch_generators([new])
                fleet.outages[-1]["replaced_by"] = new
                elapsed = time.perf_counter() - started
                ref = _start_plan(fleet.workers[new], stage, plan, names, elapsed)
                if ref is not None:
                    runs[ref] = (new, plan)
    live.drain()
    if live.profiling is not None:
        live.rewatch_replicas()
        if snapshot:
            live.profiling.snapshot(live.replicas, f"stage:{stage.name}:end")
    return {
        "stage": stage.name,
        "cpu_seconds": sum(c["cpu_seconds"] for c in costs),
        "issued": sum(c["issued"] for c in costs),
        "wall_seconds": max((c["wall_seconds"] for c in costs), default=0.0),
        "interrupted": stopped,
    }


def execute(spec: RunSpec) -> RunOutcome:
    """Run ``spec`` end to end; always leaves a consistent ``results/<run-id>/``."""
    run_dir, run_info, writer = open_folder(spec)
    progress = Progress(quiet=spec.quiet)
    status = "failed"
    hard = False
    try:
        with _Interrupts() as interrupts:
            body = _execute
            if spec.target.http:
                from workloads.http_runner import execute_http as body
            status = body(spec, run_dir, run_info, writer, progress, interrupts)
    except KeyboardInterrupt:
        status, hard = "interrupted", True
        progress.say("second interrupt: stopping at once; the records so far are kept")
    finally:
        disconnect()
        records, summary = close_folder(run_dir, run_info, writer, status)
    progress.final(summary, run_dir, status)
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
    run_dir.mkdir(parents=True, exist_ok=True)
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
    write_json(run_dir / "run.json", run_info)
    return run_dir, run_info, RecordWriter(run_dir / "records.jsonl")


def close_folder(
    run_dir: Path, run_info: dict[str, Any], writer: RecordWriter, status: str
) -> tuple[int, dict[str, Any]]:
    """Close the records, write ``summary.json`` and the final ``run.json``; the number
    of records and the summary."""
    writer.close()
    records = read_records(run_dir / "records.jsonl")
    summary = summarize(records, run_info.get("blocks"))
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
        analysis = analyze(RunData.load(run_dir), targets)
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
    interrupts: _Interrupts,
) -> str:
    with open_side(spec, run_dir, run_info, writer, progress, interrupts) as live:
        stages = []
        for index, stage in enumerate(spec.profile.stages):
            if interrupts.count:
                break
            stages.append(_run_stage(live, stage, index))
        run_info["stages"] = stages
    return "interrupted" if interrupts.count else "completed"


@contextlib.contextmanager
def open_side(
    spec: RunSpec,
    run_dir: Path,
    run_info: dict[str, Any],
    writer: RecordWriter,
    progress: Progress,
    interrupts: _Interrupts,
) -> Iterator[_Live]:
    """The builtin or Python-service system of ``spec``, started and ready for load: its
    replicas (probed one at a time), generator workers, profiling and indexes. On a normal
    exit it records the replicas' final figures and profiles; on any exit it ends them.
    An interleaved A/B holds two of these at once and runs blocks of load on each."""
    cache = spec.cache_dir or default_cache_dir()
    blas = resolve(spec.config.blas, cache)
    env = {**blas_env(blas), **worker_env(spec.target)}
    blas_facts = _blas_facts(spec.config.blas, blas, cache)
    cluster: Cluster = connect(spec.address)
    interrupts.reinstall()
    progress.cluster(cluster)
    projects = choose_projects(spec)
    names = [p.name for p in projects]
    replica_count = spec.config.replicas or spec.profile.replicas
    routes = assign(names, replica_count)
    config = _service_config(spec)
    nodes = [n["node_id"] for n in cluster.nodes if n["alive"] and n["resources"].get("CPU", 0) > 0]
    streams = _streams(cluster, nodes, replica_count)
    profiling = (
        ProfilingSession(run_dir, nodes, pyspy_rate_hz=spec.pyspy_rate_hz)
        if spec.profiling
        else None
    )
    live: _Live | None = None
    replicas: list[Any] = []
    fleet: Fleet | None = None
    try:
        replicas = [
            ServiceReplica.options(  # type: ignore[attr-defined]
                name=f"replica-{k}-{run_dir.name}",
                runtime_env={"env_vars": env} if env else None,
                # Round-robin over nodes so replicas spread; soft, so a full node is no dead end.
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    nodes[k % len(nodes)], soft=True
                ),
            ).remote(
                k,
                {**config, "cpu_streams": streams[k]},
                [
                    (p.name, str(p.root), str(p.adapter) if p.adapter else None)
                    for p in projects
                    if routes[p.name] == k or not spec.config.affinity
                ],
                trace_python=spec.profiling and spec.trace_python,
                factory=spec.target.factory,
                wall_clock=spec.profiling,
            )
            for k in range(replica_count)
        ]
        infos = ray.get([r.info.remote() for r in replicas])
        # One replica at a time, before any load: a probe taken while others run reads low.
        probes = [{**ray.get(r.probe.remote()), **blas_facts} for r in replicas]
        write_json(run_dir / "mlx_probe.json", probes)
        run_info.update(
            status="running",
            cluster=asdict(cluster),
            replicas=infos,
            routes=routes,
            projects=[{"name": p.name, "root": str(p.root)} for p in projects],
            stage_frames=STAGE_FRAMES,
        )
        write_json(run_dir / "run.json", run_info)
        progress.say(
            f"{len(replicas)} replicas ready; {len(projects)} projects: {', '.join(names)}"
        )
        fleet = Fleet(replicas, routes if spec.config.affinity else None, run_dir.name)
        first = fleet.start(spec.workers)
        gauges = RecordWriter(run_dir / GAUGES) if profiling is not None else None
        live = _Live(
            spec,
            run_dir,
            names,
            replicas,
            fleet,
            writer,
            progress,
            interrupts,
            profiling,
            {i["replica"]: i["pid"] for i in infos},
            gauges,
        )
        if profiling is not None:
            _watch_everything(profiling, infos, fleet.infos(first), cluster.embedded)
            profiling.record_flames(infos)
            profiling.snapshot(replicas, "start")
        if spec.profile.ingest_at_start:
            _ingest(live, routes, run_info)
        yield live
        run_info["generators"] = {"issued_by_worker": fleet.issued, "outages": fleet.outages}
        run_info["replica_stats"] = _replica_stats(replicas, progress)
        if profiling is not None:
            profiling.snapshot(replicas, "end")
            _write_wall_profiles(replicas, run_dir / PROFILES)
    finally:
        if profiling is not None:
            if interrupts.count > 1:
                profiling.abort("a second interrupt stopped the run at once")
            else:
                profiling.finish()
        if live is not None and live.gauges is not None:
            live.gauges.close()
        release(replicas, fleet)


def _ingest(live: _Live, routes: dict[str, int], run_info: dict[str, Any]) -> None:
    """Build (or find) every project's index before any load; ``ingest.json`` says how."""
    spec, progress, names = live.spec, live.progress, live.names
    summary = ingest_all(
        live.replicas,
        {n: routes[n] for n in names},
        stopped=lambda: live.interrupts.count > 0,
        report=progress.ingest,
        every_replica=not spec.config.affinity,
    )
    write_json(live.run_dir / "ingest.json", summary.reports)
    run_info["ingest"] = summary.as_dict()
    write_json(live.run_dir / "run.json", run_info)
    built = sum(1 for i in summary.reports if i.get("built"))
    progress.say(
        f"indexes ready in {summary.seconds:.1f} s ({built} built, {summary.embedded:,} of "
        f"{summary.chunks:,} chunks embedded, the rest found by content)"
    )


def release(replicas: list[Any], fleet: Fleet | None) -> None:
    """End the run's replicas and generator workers: a Ray session that outlives the run
    (an A/B's rounds, a test session) must not keep them serving or holding memory."""
    for replica in replicas:
        with contextlib.suppress(Exception):  # already gone
            ray.kill(replica)
    if fleet is not None:
        fleet.close()


def _replica_stats(replicas: list[Any], progress: Progress) -> list[dict[str, Any]]:
    """Each replica's final figures; a replica that is gone (restarts spent) is a message."""
    out = []
    for k, replica in enumerate(replicas):
        try:
            out.append(ray.get(replica.stats.remote(), timeout=60))
        except Exception as exc:  # a dead actor: its records already say so
            progress.say(f"replica {k}: no final figures ({type(exc).__name__})")
    return out


def _write_wall_profiles(replicas: list[Any], folder: Path) -> None:
    """``profiles/replica-<k>.wall``: each replica's wall-clock samples of its requests
    (milliseconds per stack and state); a replica that is gone leaves none."""
    for k, replica in enumerate(replicas):
        try:
            stacks = ray.get(replica.wall_profile.remote(), timeout=30)
        except Exception:  # a dead actor: its records already say so
            continue
        if stacks:
            folder.mkdir(parents=True, exist_ok=True)
            role = f"replica-{k}"
            lines = [f"{role};{stack} {ms}" for stack, ms in sorted(stacks.items())]
            (folder / f"{role}.wall").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _streams(cluster: Cluster, nodes: list[str], replicas: int) -> list[int]:
    """Cores each replica gets: its node's CPUs over the replicas placed there (>= 1).

    Replicas are placed round-robin over ``nodes`` (see :func:`_execute`)."""
    cpus = {n["node_id"]: int(n["resources"].get("CPU", 1)) for n in cluster.nodes}
    placed = [nodes[k % len(nodes)] for k in range(replicas)]
    return [max(1, cpus.get(node, 1) // placed.count(node)) for node in placed]


def _blas_facts(asked: str, used: str, cache: Path) -> dict[str, Any]:
    """What mlx_probe.json says of the BLAS choice: asked, used, and the survey behind it."""
    facts: dict[str, Any] = {
        "blas_config": asked,
        "blas_choice": used,
        "blas_threads": BLAS_THREADS,
    }
    if sys.platform != "linux":
        return facts
    found = survey(BLAS_THREADS, cache)
    facts.update(
        achievable_blas=found["fastest"],
        achievable_gflops=found["fastest_matmul_512_gflops"],
        survey=[
            {k: c.get(k) for k in ("blas", "ok", "gflops", "matmul_512_gflops", "problem")}
            for c in found["candidates"]
        ],
    )
    return facts


def _watch_everything(
    profiling: ProfilingSession,
    replicas: list[dict[str, Any]],
    generators: list[dict[str, Any]],
    embedded: bool,
) -> None:
    """Give each node's agent the roles of the run's processes, from Ray's records."""
    driver_node = ray.get_runtime_context().get_node_id()
    roles: dict[str, dict[int, str]] = {driver_node: {os.getpid(): "driver"}}
    if embedded:
        roles[driver_node].update(head_processes())
    for info in replicas:
        roles.setdefault(info["node"], {})[info["pid"]] = f"replica-{info['replica']}"
    for info in generators:
        roles.setdefault(info["node"], {})[info["pid"]] = f"generator-{info['worker']}"
    profiling.watch(roles)
