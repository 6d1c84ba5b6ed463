"""``python -m workloads.bench ingest``: index 100k+ lines from an empty cache, then again.

1. The default projects (no chunk cap) indexed from an empty cache by ``--replicas``
   replicas in a local Ray, the way a run builds its indexes (spread over every replica).
2. The same ingest again with nothing changed (the indexes are found fresh).
3. One project copied, indexed, one of its files changed, indexed again: only the chunks
   of that file are embedded; everything else is found by content.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workloads.runs.results import machine_info


def _replicas(
    count: int, config: dict[str, Any], projects: list[Any], env: dict[str, str], streams: int
) -> list[Any]:
    import ray

    from workloads.stack.replica import ServiceReplica

    specs = [(p.name, str(p.root), None) for p in projects]
    replicas = [
        ServiceReplica.options(runtime_env={"env_vars": env} if env else None).remote(  # type: ignore[attr-defined]
            k, {**config, "cpu_streams": streams}, specs
        )
        for k in range(count)
    ]
    ray.get([r.info.remote() for r in replicas])
    return replicas


def _ingest(replicas: list[Any], owners: dict[str, int]) -> tuple[Any, float]:
    from workloads.stack.ingest import ingest_all

    start = time.perf_counter()
    summary = ingest_all(replicas, owners, stopped=lambda: False, report=lambda *_: None)
    return summary, time.perf_counter() - start


def bench_ingest(args: argparse.Namespace) -> None:
    """The ingest benchmark (see the module docstring)."""
    import ray

    from workloads.service.projects import Project, default_projects
    from workloads.stack.blas import blas_env, resolve
    from workloads.stack.config import load_config

    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine_info())}")
    cache = Path(tempfile.mkdtemp(prefix="loadlens-bench-ingest-"))
    config = load_config(args.config)
    blas = resolve(config.blas)
    env = blas_env(blas)
    service = {**config.service, "cache_dir": str(cache)}
    service.pop("max_chunks_per_project", None)
    cpus = len(__import__("os").sched_getaffinity(0))
    streams = max(1, cpus // args.replicas)
    print(f"config {config.name}: blas {blas}, {args.replicas} replica(s) x {streams} stream(s)")
    projects = default_projects(args.projects)
    temp = Path(tempfile.mkdtemp(prefix="ll-ray-", dir="/tmp"))
    copy: Path | None = None
    ray.init(address="local", include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    try:
        replicas = _replicas(args.replicas, service, projects, env, streams)
        owners = {p.name: k % args.replicas for k, p in enumerate(projects)}
        summary, seconds = _ingest(replicas, owners)
        lines = sum(int((r.get("report") or {}).get("lines") or 0) for r in summary.reports)
        print(
            f"1. empty cache: {lines:,} lines, {summary.chunks:,} chunks of {len(projects)} "
            f"projects indexed in {seconds:.1f} s ({summary.embedded / summary.embed_seconds:.1f} "
            f"chunks/s embedding; by replica {summary.by_replica})"
        )
        summary, seconds = _ingest(replicas, owners)
        print(f"2. nothing changed: {seconds:.2f} s ({summary.embedded} chunks embedded)")
        for replica in replicas:
            ray.kill(replica)
        copy = Path(tempfile.mkdtemp(prefix="loadlens-bench-tree-")) / "copy"
        source = projects[0]
        shutil.copytree(source.root, copy, ignore=shutil.ignore_patterns("__pycache__"))
        mine = [Project(name="changed-copy", root=copy)]
        replicas = _replicas(args.replicas, service, mine, env, streams)
        first, _ = _ingest(replicas, {"changed-copy": 0})
        target = max(copy.rglob("*.py"), key=lambda p: p.stat().st_size)
        text = target.read_text()
        target.write_text(text.replace("def ", "def  ", 1) + "\n# changed by the benchmark\n")
        from workloads.service.index import ProjectVectorStoreManager

        store = ProjectVectorStoreManager(cache / "x")
        chunks = [
            c for c in store.collect_chunks("c", copy)[0] if c.path == str(target.relative_to(copy))
        ]
        again, seconds = _ingest(replicas, {"changed-copy": 0})
        print(
            f"3. one file changed ({target.name}, {len(chunks)} chunks) in a copy of "
            f"{source.name} ({first.chunks} chunks, {first.embedded} embedded when new): "
            f"{again.embedded} chunk(s) embedded again in {seconds:.2f} s"
        )
    finally:
        ray.shutdown()
        for folder in (cache, temp, copy.parent if copy else None):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def add_parser(sub: Any) -> None:
    """The ``ingest`` subcommand's arguments."""
    i = sub.add_parser("ingest", help="index 100k lines from an empty cache; re-ingest")
    i.set_defaults(handler=bench_ingest)
    i.add_argument("--config", default="optimized")
    i.add_argument("--projects", type=int, default=10)
    i.add_argument("--replicas", type=int, default=2)
