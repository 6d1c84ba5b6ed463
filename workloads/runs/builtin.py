"""The builtin stack or a user's Python service under load: replicas of loadlens's own
(probed one at a time), their indexes, generator workers calling them through Ray, and
profiling of every process. :func:`open_builtin` starts it and always ends it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.connect import Cluster, connect
from datamodel.cache import default_cache_dir
from datamodel.errors import ConfigError
from datamodel.runfolder import (
    GAUGES,
    PROFILES,
    JsonlWriter,
    RecordWriter,
    write_json,
)
from profiling.capture.session import ProfilingSession
from workloads.load.fleet import Fleet
from workloads.load.progress import Progress
from workloads.load.routing import assign
from workloads.runs.live import (
    Interrupts,
    Live,
    RunSpec,
    choose_projects,
    end_profiling,
    make_fleet,
    watch_everything,
)
from workloads.service.service import STAGE_FRAMES
from workloads.stack import worker_env
from workloads.stack.allocator import allocator_env
from workloads.stack.blas import BLAS_THREADS, blas_env, resolve, survey
from workloads.stack.ingest import ingest_all
from workloads.stack.replica import ServiceReplica


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


@contextlib.contextmanager
def open_builtin(
    spec: RunSpec,
    run_dir: Path,
    run_info: dict[str, Any],
    writer: RecordWriter,
    progress: Progress,
    interrupts: Interrupts,
) -> Iterator[Live]:
    """The builtin or Python-service stack of ``spec``, started and ready for load: its
    replicas (probed one at a time), generator workers, profiling and indexes. On a normal
    exit it records the replicas' final figures and profiles; on any exit it ends them.
    An interleaved A/B holds two of these at once and runs blocks of load on each."""
    cache = spec.cache_dir or default_cache_dir()
    blas = resolve(spec.config.blas, cache)
    env = {**blas_env(blas), **worker_env(spec.stack), **allocator_env(spec.config.allocator)}
    blas_facts = _blas_facts(spec.config.blas, blas, cache)
    others = {**worker_env(spec.stack), **allocator_env(spec.config.allocator)}
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
    envs = _blas_by_node(spec.config.blas, cache, nodes, (blas, env), others)
    run_info["blas_by_node"] = {node: used for node, (used, _) in envs.items()}
    profiling = (
        ProfilingSession(run_dir, nodes, pyspy_rate_hz=spec.pyspy_rate_hz)
        if spec.profiling
        else None
    )
    live: Live | None = None
    replicas: list[Any] = []
    fleet: Fleet | None = None
    try:
        replicas = [
            ServiceReplica.options(  # type: ignore[attr-defined]
                name=f"replica-{k}-{run_dir.name}",
                runtime_env={"env_vars": envs[nodes[k % len(nodes)]][1]} if env else None,
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
                factory=spec.stack.factory,
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
        fleet, first = make_fleet(
            cluster,
            spec,
            run_dir,
            run_info,
            replicas=replicas,
            routes=routes if spec.config.affinity else None,
            replica_nodes=[i["node"] for i in infos],
        )
        gauges = JsonlWriter(run_dir / GAUGES) if profiling is not None else None
        live = Live(
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
            watch_everything(profiling, infos, fleet.infos(first), cluster.embedded)
            profiling.record_flames(infos)
            profiling.snapshot(replicas, "start")
        if spec.profile.ingest_at_start:
            _ingest(live, routes, run_info)
        yield live
        run_info["generators"] = fleet.facts()
        run_info["replica_stats"] = _replica_stats(replicas, progress)
        if profiling is not None:
            profiling.snapshot(replicas, "end")
            _write_wall_profiles(replicas, run_dir / PROFILES)
    finally:
        end_profiling(profiling, interrupts)
        if live is not None and live.gauges is not None:
            live.gauges.close()
        release(replicas, fleet)


def _ingest(live: Live, routes: dict[str, int], run_info: dict[str, Any]) -> None:
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


@ray.remote(num_cpus=0)
def _blas_there(choice: str, cache: str) -> tuple[str, dict[str, str]] | str:
    """``choice`` resolved on this node (its own CPU, its own libraries), or why not."""
    try:
        used = resolve(choice, Path(cache))
        return used, blas_env(used)
    except ConfigError as exc:
        return str(exc)


def _blas_by_node(
    choice: str,
    cache: Path,
    nodes: list[str],
    here: tuple[str, dict[str, str]],
    others: dict[str, str],
) -> dict[str, tuple[str, dict[str, str]]]:
    """Each node's BLAS and replica environment: ``here`` (resolved on the driver) for the
    driver's node; every other node resolves ``choice`` itself, as its CPU and libraries
    differ (a preload path of the driver's machine means nothing there)."""
    driver = ray.get_runtime_context().get_node_id()
    out = {driver: (here[0], here[1])}
    away = [n for n in nodes if n != driver]
    answers = ray.get(
        [
            _blas_there.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)
            ).remote(choice, str(cache))
            for n in away
        ],
        timeout=600,
    )
    for node, answer in zip(away, answers, strict=True):
        if isinstance(answer, str):
            raise ConfigError(f"node {node[:12]}: {answer}")
        out[node] = (answer[0], {**answer[1], **others})
    return out


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
