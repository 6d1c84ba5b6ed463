"""What every run holds while it runs, whatever is under load: its spec, the interrupts
that stop it, the live set of actors and sinks (:class:`Live`), and how one stage of load
is issued on the generator workers and drained (:func:`run_stage`).

The driver never busy-waits: it blocks in ``ray.wait`` with a one-second timeout, and
drains finished records from the generator workers each time it wakes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import ray

from cluster.clock import node_offsets, offsets_of
from cluster.connect import Cluster
from datamodel.columnar import read_parquet
from datamodel.errors import ConfigError
from datamodel.records import OpRecord
from datamodel.runfolder import (
    SHARDS,
    JsonlWriter,
    RecordWriter,
)
from profiling.capture.session import ProfilingSession, head_processes
from workloads.load.fleet import Fleet, Lost
from workloads.load.placement import loopback, spread, worker_cpus
from workloads.load.progress import Progress
from workloads.load.shapes import WorkerPlan, active_projects, plan_stage
from workloads.load.spec import Profile, Stage
from workloads.service.projects import Project, default_projects
from workloads.stack import BUILTIN, Stack
from workloads.stack.config import SystemConfig


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
    stack: Stack = field(default_factory=lambda: Stack(BUILTIN))
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


class Interrupts:
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

    def __enter__(self) -> Interrupts:
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


@dataclass
class Live:
    """What a running run holds: the actors, the sinks, and how to stop."""

    spec: RunSpec
    run_dir: Path
    names: list[str]
    replicas: list[Any]
    fleet: Fleet
    writer: RecordWriter
    progress: Progress
    interrupts: Interrupts
    profiling: ProfilingSession | None = None
    replica_pids: dict[int, int] = field(default_factory=dict)
    gauges: JsonlWriter | None = None
    tap: Callable[[list[dict[str, Any]]], None] | None = None
    """Called with each batch of finished records (a capacity search reads its levels):
    where the workers write their own shards, with the shards new at a stage's end."""
    _pending_gauges: list[Any] = field(default_factory=list)
    _tapped: set[str] = field(default_factory=set)

    def drain(self, *, final: bool = False) -> list[Lost]:
        """Move finished records (and profiling samples) to disk and the display; the
        generator workers found lost. ``final``: wait until every live worker has handed
        over everything it finished (the end of a stage)."""
        if final:
            records, lost = self.fleet.settle(self.writer, self.progress)
        else:
            records, lost = self.fleet.drain(self.writer, self.progress)
        if self.tap is not None and records:
            self.tap(records)
        if self.tap is not None and final and self.fleet.results is not None:
            self.tap(self._new_shard_records())
        if self.profiling is not None:
            self.profiling.drain()
        self.poll_gauges()
        return lost

    def _new_shard_records(self) -> list[dict[str, Any]]:
        """The records of the shards under ``records/`` not tapped yet."""
        rows: list[dict[str, Any]] = []
        for path in sorted((self.run_dir / SHARDS).glob("*.parquet")):
            if path.name in self._tapped:
                continue
            self._tapped.add(path.name)
            with contextlib.suppress(ConfigError):  # torn: the run's reader says so
                rows.extend(read_parquet(path))
        return rows

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


DISPATCH_LEAD_S = 0.05
"""A stage's origin is this far after the driver starts it: the time its start takes to
reach the workers, so their first arrivals are not late by construction."""


def start_plan(
    worker: Any,
    stage: Stage,
    plan: WorkerPlan,
    names: list[str],
    origin: float,
    *,
    first: int = 0,
    seed_shift: int = 0,
) -> Any:
    """Start ``plan`` on ``worker`` against the stage's ``origin`` (a Unix time, the same
    for every worker). A replacement takes the open-loop arrivals from index ``first``
    on (those already due fire at once, late, and their lag shows), or what is left of a
    closed-loop stage's time (its users drawn with ``seed_shift``). ``None`` if nothing is
    left."""
    if stage.mode == "closed":
        if plan.users == 0 or origin + stage.duration_s - time.time() <= 0.5:
            return None
        return worker.run_closed.remote(
            stage.name,
            users=plan.users,
            duration_s=stage.duration_s,
            think_time_s=stage.think_time_s,
            mix=list(stage.mix),
            projects=active_projects(stage, names),
            popularity=stage.popularity,
            zipf_s=stage.zipf_s,
            seed=plan.seed + seed_shift,
            origin=origin,
            think=stage.think,
        )
    arrivals = [(o.at_s, o.op, o.project) for o in plan.ops[first:]]
    if not arrivals:
        return None
    return worker.run_open.remote(stage.name, arrivals=arrivals, seed=plan.seed, origin=origin)


@dataclass
class _Share:
    """One worker's part of a stage: its plan, from which arrival it began (a replacement
    begins where the worker it replaces stopped), and its issue count then."""

    worker: int
    plan: WorkerPlan
    first: int
    base: int


def _unknown_records(
    stage: Stage, share: _Share, gone: Lost, origin: float
) -> list[dict[str, Any]]:
    """Records for the open-loop arrivals a lost worker issued after its last drain: the
    schedule says what each was; its outcome is unknown."""
    now = time.time()
    rows = []
    for seq in gone.unknown:
        index = share.first + seq - share.base
        if not 0 <= index < len(share.plan.ops):
            continue
        arrival = share.plan.ops[index]
        planned = origin + arrival.at_s
        rows.append(
            OpRecord(
                id=f"{gone.worker}-{seq}",
                op=arrival.op,
                project=arrival.project,
                stage=stage.name,
                worker=gone.worker,
                replica=-1,
                planned=planned,
                duration=max(now - planned, 0.0),
                error=(
                    f"GeneratorLost: generator {gone.worker} died after its turn to send "
                    "it came and before its next drain: its outcome is unknown"
                ),
            ).as_dict()
        )
    return rows


def run_stage(
    live: Live,
    stage: Stage,
    index: int,
    *,
    seed_index: int | None = None,
    snapshot: bool = True,
    watch: Callable[[float], str | None] | None = None,
) -> dict[str, Any]:
    """Run ``stage`` (the ``index``-th of the profile) on every generator worker; its
    plans are drawn from the run's seed plus ``seed_index`` (default ``index``: two
    blocks given one ``seed_index`` issue the same load). ``snapshot``: take a memory
    snapshot at its end. ``watch`` is called about once a second with the seconds since
    the start; a reason it returns stops the stage early (``stopped_early`` says why;
    the workers stay stopped until ``fleet.resume()``).

    A worker lost mid-stage is replaced: in open loop the replacement takes the schedule
    from the first arrival the lost one had not issued (its ledger says which), so the
    arrivals that fell due during the outage are issued late, with their lag; the ones it
    issued after its last drain become ``GeneratorLost`` records."""
    spec, names, fleet = live.spec, live.names, live.fleet
    numbers = sorted(fleet.workers)
    plans = plan_stage(
        stage, names, spec.seed + (index if seed_index is None else seed_index), len(numbers)
    )
    origin = time.time() + DISPATCH_LEAD_S
    started = time.perf_counter()
    base_issued = {k: fleet.issued[k] for k in numbers}
    runs: dict[Any, _Share] = {}
    for k, plan in zip(numbers, plans, strict=True):
        ref = start_plan(fleet.workers[k], stage, plan, names, origin)
        if ref is not None:
            runs[ref] = _Share(k, plan, 0, fleet.issued[k])
    live.progress.start_stage(stage, index)
    costs: list[dict[str, Any]] = []
    stopped = False
    early: str | None = None
    found: dict[int, Lost] = {}

    def carry_on(share: _Share, gone: Lost) -> None:
        unknown = _unknown_records(stage, share, gone, origin) if stage.mode == "open" else []
        live.writer.write(unknown)
        live.progress.add(unknown, 0)
        if stopped or early is not None:
            return
        (new,) = fleet.start(1)
        live.watch_generators([new])
        for outage in fleet.outages:
            if outage["worker"] == share.worker:
                outage["replaced_by"] = new
        base_issued[new] = 0
        if gone.issued is not None:
            first = share.first + gone.issued - share.base
        else:  # no ledger: from the first arrival not yet due
            late = time.time() - origin
            ops = share.plan.ops
            first = next((i for i, o in enumerate(ops) if o.at_s > late), len(ops))
        shift = int((time.time() - origin) * 1000)
        ref = start_plan(
            fleet.workers[new], stage, share.plan, names, origin, first=first, seed_shift=shift
        )
        if ref is not None:
            runs[ref] = _Share(new, share.plan, first, 0)

    while runs:
        ready, _ = ray.wait(list(runs), num_returns=len(runs), timeout=1.0)
        if live.interrupts.count and not stopped:
            fleet.stop()
            stopped = True
        found.update({g.worker: g for g in live.drain()})
        if watch is not None and early is None and not stopped:
            early = watch(time.perf_counter() - started)
            if early is not None:
                fleet.stop()
        for ref in ready:
            share = runs.pop(ref)
            try:
                costs.append(ray.get(ref))
            except Exception as exc:  # the worker died: record its loss, carry its plan on
                gone = found.pop(share.worker, None)
                if gone is None:
                    gone = fleet.lose(share.worker, exc, live.writer, live.progress)
                carry_on(share, gone)
    live.drain(final=True)
    if live.profiling is not None:
        live.rewatch_replicas()
        if snapshot:
            live.profiling.snapshot(live.replicas, f"stage:{stage.name}:end")
    return {
        "stage": stage.name,
        "cpu_seconds": sum(c["cpu_seconds"] for c in costs),
        "issued": sum(
            n - base_issued.get(k, 0) for k, n in fleet.issued.items() if k in base_issued
        ),
        "cpu_issued": sum(c["issued"] for c in costs),
        "dropped": sum(c.get("dropped", 0) for c in costs),
        "wall_seconds": max((c["wall_seconds"] for c in costs), default=0.0),
        "interrupted": stopped,
        "stopped_early": early,
    }


def watch_everything(
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


def make_fleet(
    cluster: Cluster,
    spec: RunSpec,
    run_dir: Path,
    run_info: dict[str, Any],
    *,
    replicas: list[Any] | None = None,
    routes: dict[str, int] | None = None,
    replica_nodes: list[str] | None = None,
    http: dict[str, Any] | None = None,
) -> tuple[Fleet, list[int]]:
    """The run's generator workers, started: placed apart from the replicas where the
    cluster allows (:mod:`~workloads.load.placement`), or on the driver's node for an HTTP
    stack at a loopback address, each reserving a slice of a CPU; on a cluster of several
    nodes, every node's clock offset measured first (:mod:`cluster.clock`), so that their
    records are on one clock. ``run.json`` gets the offsets."""
    alive = [n["node_id"] for n in cluster.nodes if n["alive"]]
    driver = ray.get_runtime_context().get_node_id()
    clock = node_offsets(alive) if len(alive) > 1 else {}
    run_info["clock"] = {
        "driver_node": driver,
        "method": "per node, the shortest of 8 round trips: remote - (sent + received) / 2",
        "nodes": clock,
    }
    pinned = http is not None and loopback(str(http.get("url", ""))) and len(alive) > 1
    fleet = Fleet(
        replicas or [],
        routes,
        run_dir.name,
        http=http,
        placement=[driver] if pinned else spread(cluster.nodes, replica_nodes or []),
        pinned=pinned,
        cpus=worker_cpus(cluster.nodes, spec.workers),
        offsets=offsets_of(clock),
        results=run_dir,
    )
    return fleet, fleet.start(spec.workers)


def end_profiling(profiling: ProfilingSession | None, interrupts: Interrupts) -> None:
    """Stop the run's profiler: collect what it holds, or, after a second interrupt, drop
    it at once with a note."""
    if profiling is None:
        return
    try:
        if interrupts.count > 1:
            profiling.abort("a second interrupt stopped the run at once")
        else:
            profiling.finish()
    except OSError as exc:  # a full disk: the run's own error says so; go on closing
        print(f"profiling: its files could not be written ({exc})", file=sys.stderr)
