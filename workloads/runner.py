"""One run, start to end: cluster, replicas, ingest, stages, records, summary.

The driver never busy-waits: it blocks in ``ray.wait`` with a one-second timeout, and
drains finished records from the generator workers each time it wakes.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.connect import Cluster, connect, disconnect
from workloads.blas import blas_env
from workloads.generator import GeneratorWorker
from workloads.progress import Progress
from workloads.replica import ServiceReplica
from workloads.results import (
    SCHEMA_VERSION,
    RecordWriter,
    machine_info,
    new_run_id,
    read_records,
    utc_now,
    write_json,
)
from workloads.routing import assign
from workloads.service.projects import Project, default_projects
from workloads.shapes import active_projects, plan_stage
from workloads.spec import Profile, Stage
from workloads.stats import group_summaries
from workloads.system_config import SystemConfig


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


class _Interrupts:
    """First Ctrl-C: stop gracefully. Second: raise KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.count = 0
        self._old: Any = None

    def __enter__(self) -> _Interrupts:
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)


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
    for key in ("adapter_cache_count", "index_cache_count", "max_chunks_per_project"):
        value = getattr(profile, key, None)
        if value is not None:
            config[key] = value
    if spec.cache_dir is not None:
        config["cache_dir"] = spec.cache_dir
    if spec.base_model is not None:
        config["base_model"] = spec.base_model
    return config


def _run_stage(
    stage: Stage, index: int, spec: RunSpec, workers: list[Any], names: list[str],
    writer: RecordWriter, progress: Progress, interrupts: _Interrupts,
) -> dict[str, Any]:  # fmt: skip
    plans = plan_stage(stage, names, spec.seed + index, len(workers))
    refs = []
    for worker, plan in zip(workers, plans, strict=True):
        if stage.mode == "closed":
            if plan.users == 0:
                continue
            refs.append(worker.run_closed.remote(
                stage.name, users=plan.users, duration_s=stage.duration_s,
                think_time_s=stage.think_time_s, mix=list(stage.mix),
                projects=active_projects(stage, names), popularity=stage.popularity,
                zipf_s=stage.zipf_s,
                seed=plan.seed,
            ))  # fmt: skip
        else:
            arrivals = [(o.at_s, o.op, o.project) for o in plan.ops]
            refs.append(worker.run_open.remote(stage.name, arrivals=arrivals, seed=plan.seed))
    progress.start_stage(stage, index)
    pending = list(refs)
    stopped = False
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        if interrupts.count and not stopped:
            ray.get([w.stop.remote() for w in workers])
            stopped = True
        _drain(workers, writer, progress)
    _drain(workers, writer, progress)
    costs = ray.get(refs)
    return {
        "stage": stage.name,
        "cpu_seconds": sum(c["cpu_seconds"] for c in costs),
        "issued": sum(c["issued"] for c in costs),
        "wall_seconds": max((c["wall_seconds"] for c in costs), default=0.0),
        "interrupted": stopped,
    }


def _drain(workers: list[Any], writer: RecordWriter, progress: Progress) -> None:
    for batch in ray.get([w.drain.remote() for w in workers]):
        writer.write(batch["records"])
        progress.add(batch["records"], batch["in_flight"])


def execute(spec: RunSpec) -> RunOutcome:
    """Run ``spec`` end to end; always leaves a consistent ``results/<run-id>/``."""
    run_id = new_run_id(spec.profile.name)
    run_dir = spec.results_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    run_info: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "starting",
        "started_utc": utc_now(), "ended_utc": None, "spec": spec.as_dict(),
        "machine": machine_info(),
    }  # fmt: skip
    write_json(run_dir / "run.json", run_info)
    progress = Progress(quiet=spec.quiet)
    writer = RecordWriter(run_dir / "records.jsonl")
    status = "failed"
    try:
        with _Interrupts() as interrupts:
            status = _execute(spec, run_dir, run_info, writer, progress, interrupts)
    except KeyboardInterrupt:
        status = "interrupted"
        progress.say("second Ctrl-C: stopped at once; records so far are kept")
    finally:
        writer.close()
        disconnect()
        records = read_records(run_dir / "records.jsonl")
        summary = summarize(records)
        write_json(run_dir / "summary.json", summary)
        run_info.update(status=status, ended_utc=utc_now(), records=len(records))
        write_json(run_dir / "run.json", run_info)
    progress.final(summary, run_dir, status)
    return RunOutcome(run_dir=run_dir, status=status, records=len(records), summary=summary)


def _execute(
    spec: RunSpec, run_dir: Path, run_info: dict[str, Any], writer: RecordWriter,
    progress: Progress, interrupts: _Interrupts,
) -> str:  # fmt: skip
    env = blas_env(spec.config.blas)
    cluster: Cluster = connect(spec.address, env_vars=env)
    progress.cluster(cluster)
    projects = choose_projects(spec)
    names = [p.name for p in projects]
    routes = assign(names, spec.profile.replicas)
    config = _service_config(spec)
    nodes = [n["node_id"] for n in cluster.nodes if n["alive"] and n["resources"].get("CPU", 0) > 0]
    replicas = [
        ServiceReplica.options(  # type: ignore[attr-defined]
            name=f"replica-{k}-{run_dir.name}",
            # Round-robin over nodes so replicas spread; soft, so a full node is no dead end.
            scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[k % len(nodes)], soft=True),
        ).remote(k, config, [(p.name, str(p.root), str(p.adapter) if p.adapter else None)
                             for p in projects if routes[p.name] == k])
        for k in range(spec.profile.replicas)
    ]  # fmt: skip
    infos = ray.get([r.info.remote() for r in replicas])
    run_info.update(
        status="running", cluster=asdict(cluster), replicas=infos, routes=routes,
        projects=[{"name": p.name, "root": str(p.root)} for p in projects],
    )  # fmt: skip
    write_json(run_dir / "run.json", run_info)
    progress.say(f"{len(replicas)} replicas ready; {len(projects)} projects: {', '.join(names)}")
    if spec.profile.ingest_at_start:
        start = time.perf_counter()
        ingests = ray.get([replicas[routes[n]].ingest.remote(n) for n in names])
        write_json(run_dir / "ingest.json", ingests)
        built = sum(1 for i in ingests if i.get("built"))
        progress.say(f"indexes ready in {time.perf_counter() - start:.1f} s ({built} built)")
    workers = [
        GeneratorWorker.options(  # type: ignore[attr-defined]
            name=f"generator-{w}-{run_dir.name}"
        ).remote(w, replicas, routes)
        for w in range(spec.workers)
    ]
    stages = []
    for index, stage in enumerate(spec.profile.stages):
        if interrupts.count:
            break
        stages.append(_run_stage(stage, index, spec, workers, names, writer, progress, interrupts))
    run_info["stages"] = stages
    run_info["replica_stats"] = ray.get([r.stats.remote() for r in replicas])
    return "interrupted" if interrupts.count else "completed"


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles per op, per project and per stage, from all records merged."""
    ok = [r for r in records if r["ok"]]
    errors = [r for r in records if not r["ok"]]
    span = (
        max(r["issued"] + r["duration"] for r in records) - min(r["issued"] for r in records)
        if records else 0.0
    )  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "records": len(records),
        "errors": len(errors),
        "error_rate": len(errors) / len(records) if records else 0.0,
        "throughput_ops_s": len(ok) / span if span > 0 else 0.0,
        "switches": sum(1 for r in records if r.get("switched")),
        "by_op": {k: v.as_dict() for k, v in group_summaries(ok, lambda r: r["op"]).items()},
        "by_project": {
            k: v.as_dict() for k, v in group_summaries(ok, lambda r: r["project"]).items()
        },
        "by_stage": {k: v.as_dict() for k, v in group_summaries(ok, lambda r: r["stage"]).items()},
        "wait_by_op": {
            k: v.as_dict()
            for k, v in group_summaries(
                [{**r, "duration": r["wait"]} for r in ok], lambda r: r["op"]
            ).items()
        },
        "error_kinds": _count(str(r["error"]).split(":")[0] for r in errors),
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out
