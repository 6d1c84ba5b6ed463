"""A run against an HTTP stack: a managed ``mlx_lm.server`` or a running OpenAI server.

There are no replicas of loadlens's own: the generator workers call the server directly,
so their own cost per request shows in their CPU figures. The server's process (and its
children) is watched under the role ``server``: psutil timelines and py-spy flame graphs.
MLX's own counters exist only inside processes loadlens hosts, so there are none here. A
managed server is always stopped, also on Ctrl-C and on errors; a server that exits
mid-run leaves error records and a note, not a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import ray

from cluster.connect import connect
from datamodel.cache import default_cache_dir
from datamodel.errors import ConfigError
from datamodel.runfolder import RecordWriter, write_json
from profiling.capture.session import ProfilingSession
from workloads.load.fleet import Fleet
from workloads.load.progress import Progress
from workloads.runs.live import (
    Interrupts,
    Live,
    RunSpec,
    choose_projects,
    end_profiling,
    make_fleet,
    watch_everything,
)
from workloads.service.index import ProjectVectorStoreManager
from workloads.service.projects import Project
from workloads.service.service import ServiceConfig
from workloads.stack.blas import blas_env, resolve
from workloads.stack.http import HttpPlan, Routing, load_routes, offers_embeddings, probe
from workloads.stack.mlx_server import ManagedServer, prepare_adapters, routes_for

SNIPPETS = 40
"""Pieces of each project's code that prompts are built from."""


def snippets(project: Project) -> list[str]:
    """Up to :data:`SNIPPETS` chunks of the project's code (read here, no MLX)."""
    chunks, _ = ProjectVectorStoreManager(Path("/nonexistent")).collect_chunks(
        project.name, project.root, SNIPPETS
    )
    return [c.text for c in chunks]


def listening_pid(url: str) -> int | None:
    """The pid listening on ``url``'s port on this machine, if it can be seen."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in connections:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    return None


def _tree(pid: int) -> list[int]:
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def _routes(spec: RunSpec, names: list[str], url: str) -> dict[str, Routing]:
    if spec.stack.routes:
        return load_routes(Path(spec.stack.routes), names)
    found = probe(url)
    models = found["models"]
    if not models:
        raise ConfigError(
            f"--stack-url {url}: {found['problem']}; give --stack-map FILE to name the "
            "model each project uses"
        )
    return {n: Routing(str(models[0])) for n in names}


@contextlib.contextmanager
def open_http(
    spec: RunSpec,
    run_dir: Path,
    run_info: dict[str, Any],
    writer: RecordWriter,
    progress: Progress,
    interrupts: Interrupts,
) -> Iterator[Live]:
    """The HTTP stack of ``spec`` opened for load: a managed ``mlx_lm.server`` started (or a
    running server found), its routes, generator workers that call it, and its process
    profiled under the role ``server``. On any exit the workers end and a managed server
    is stopped; a server that died during the run is noted in ``run.json``."""
    cache = spec.cache_dir or default_cache_dir()
    cluster = connect(spec.address)
    interrupts.reinstall()
    progress.cluster(cluster)
    projects = choose_projects(spec)
    names = [p.name for p in projects]
    server: ManagedServer | None = None
    profiling: ProfilingSession | None = None
    fleet: Fleet | None = None
    target: dict[str, Any] = {"kind": spec.stack.kind}
    run_info["stack"] = target
    try:
        if spec.stack.kind == "mlx-lm":
            prepared = ray.get(
                ray.remote(prepare_adapters).remote(
                    str(cache),
                    str(spec.base_model) if spec.base_model else None,
                    [(p.name, str(p.adapter) if p.adapter else None) for p in projects],
                    int(spec.config.service.get("adapter_rank", ServiceConfig.adapter_rank)),
                )
            )
            hub = Path(cache) / "huggingface"  # its /v1/models scans this; offline
            hub.mkdir(parents=True, exist_ok=True)
            env = {
                **blas_env(resolve(spec.config.blas, cache)),
                "HF_HUB_CACHE": str(hub),
                "HF_HUB_OFFLINE": "1",
            }
            server = ManagedServer(Path(prepared["model"]), run_dir / "server.log", env)
            progress.say("starting mlx_lm.server ...")
            url = server.start()
            pid = server.pid
            routes = routes_for(
                Path(prepared["model"]), {n: Path(a) for n, a in prepared["adapters"].items()}
            )
        else:
            url = str(spec.stack.url)
            routes = _routes(spec, names, url)
            pid = spec.stack.pid or listening_pid(url)
        ops = {op for stage in spec.profile.stages for op, _ in stage.mix}
        first_model = next(iter(routes.values())).model
        embeddings = "embed" in ops and offers_embeddings(url, first_model)
        if "embed" in ops and not embeddings:
            raise ConfigError(f"the profile sends embed, but {url} has no /v1/embeddings")
        plan = HttpPlan(
            url=url,
            routes={
                n: {"model": r.model, "fields": r.fields, "api": r.api} for n, r in routes.items()
            },
            snippets={p.name: snippets(p) for p in projects},
            embeddings=embeddings,
            read_timeout_s=spec.stack.read_timeout_s,
        )
        target.update(
            url=url,
            pid=pid,
            routes=plan.routes,
            embeddings=embeddings,
            mlx_counters="MLX's own counters (active, peak and cache memory) exist only "
            "in processes loadlens hosts (the builtin and python stacks); see the server "
            "role's CPU and memory in the timeline",
        )
        progress.say(f"stack {spec.stack.label} at {url}" + (f", pid {pid}" if pid else ""))
        nodes = [n["node_id"] for n in cluster.nodes if n["alive"]]
        if spec.profiling:
            profiling = ProfilingSession(run_dir, nodes, pyspy_rate_hz=spec.pyspy_rate_hz)
        fleet, first = make_fleet(cluster, spec, run_dir, run_info, http=dataclasses.asdict(plan))
        run_info.update(
            status="running",
            cluster=dataclasses.asdict(cluster),
            routes={},
            projects=[{"name": p.name, "root": str(p.root)} for p in projects],
        )
        write_json(run_dir / "run.json", run_info)
        live = Live(spec, run_dir, names, [], fleet, writer, progress, interrupts, profiling)
        if profiling is not None:
            watch_everything(profiling, [], fleet.infos(first), cluster.embedded)
            if pid:
                node = ray.get_runtime_context().get_node_id()
                profiling.watch({node: {p: "server" for p in _tree(pid)}})
                profiling.record_pids({node: {pid: "server"}})
            else:
                profiling.problems.append(f"no process to profile for {url}: give --stack-pid")
        yield live
        run_info["generators"] = fleet.facts()
    finally:
        end_profiling(profiling, interrupts)
        if fleet is not None:
            fleet.close()
        if server is not None:
            if server.process is not None and not server.alive() and "url" in target:
                target["exited_mid_run"] = True
            target["exit_code"] = server.stop()
