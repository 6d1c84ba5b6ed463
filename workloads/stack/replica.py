"""The Ray actor around one :class:`Service`: one MLX owner per process.

Requests and replies are plain dicts of Python numbers and strings; no ``mx.array`` ever
leaves the process. A failed request is a reply with ``ok=False``, never an exception
that would cost the generator its record.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlx.core as mx
import ray
from ray.util import metrics

from workloads.service.projects import Project
from workloads.service.service import (
    STAGE_FRAMES,
    OpResult,
    Service,
    ServiceConfig,
    StageTimings,
)
from workloads.stack import load_factory
from workloads.stack.allocator import trimmer_from_env

LATENCY_BOUNDARIES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30]


class _Metrics:
    """The replica's Ray metrics, shown by the dashboard and its Prometheus endpoint."""

    def __init__(self, replica: int) -> None:
        tags = {"replica": str(replica)}
        self.latency = metrics.Histogram(
            "loadlens_op_latency_seconds",
            "Service time of one operation",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("replica", "op"),
        )
        self.ops = metrics.Counter("loadlens_ops_total", "Operations served", ("replica", "op"))
        self.errors = metrics.Counter(
            "loadlens_errors_total", "Failed operations", ("replica", "op")
        )
        self.swaps = metrics.Counter(
            "loadlens_adapter_swaps_total", "Active project changes", ("replica",)
        )
        self.hits = metrics.Gauge(
            "loadlens_adapter_hits", "Adapter cache hits so far", ("replica",)
        )
        self.misses = metrics.Gauge(
            "loadlens_adapter_misses", "Adapter cache misses so far", ("replica",)
        )
        self.cache_bytes = metrics.Gauge(
            "loadlens_cache_bytes", "Adapter + index bytes resident", ("replica",)
        )
        self.memory = metrics.Gauge(
            "loadlens_replica_rss_bytes", "Replica resident memory", ("replica",)
        )
        self.uss = metrics.Gauge(
            "loadlens_replica_uss_bytes", "Replica unique memory (sampled every 5 s)", ("replica",)
        )
        self.index_hits = metrics.Gauge(
            "loadlens_index_hits", "Index cache hits so far", ("replica",)
        )
        self.index_misses = metrics.Gauge(
            "loadlens_index_misses", "Index cache misses so far", ("replica",)
        )
        self.mlx_active = metrics.Gauge(
            "loadlens_mlx_active_bytes", "MLX active memory", ("replica",)
        )
        gauges = (
            self.swaps,
            self.hits,
            self.misses,
            self.cache_bytes,
            self.memory,
            self.uss,
            self.index_hits,
            self.index_misses,
            self.mlx_active,
        )
        for m in gauges:
            m.set_default_tags(tags)


@ray.remote(max_restarts=1, max_task_retries=0, concurrency_groups={"ctl": 1})  # type: ignore[call-overload]
class ServiceReplica:
    """Replica ``index``: a Service over the projects routed to it (and only those).

    Requests run one at a time (the default group); ``info``, ``stats``, ``snapshot`` and
    ``probe`` run in the ``ctl`` group, so watching a replica never queues behind its load.
    """

    def __init__(
        self,
        index: int,
        config: dict[str, Any],
        projects: list[tuple[str, str, str | None]],
        trace_python: bool = False,
        factory: str | None = None,
        wall_clock: bool = False,
    ) -> None:
        """``factory`` (``module:Class``) builds the service instead of :class:`Service`: the
        class is called like it, ``(ServiceConfig, projects)``, and answers the same calls.
        ``wall_clock`` samples the request threads' stacks, running or waiting
        (:mod:`profiling.capture.wallclock`); :meth:`wall_profile` returns them."""
        import psutil

        from profiling.capture.memory import MemoryWatcher
        from profiling.capture.wallclock import WallSampler

        self.index = index
        self._process = psutil.Process()
        # Process-wide MLX limits: this actor is the process's only MLX owner.
        mb = 1024 * 1024
        if config.get("mlx_cache_limit_mb") is not None:
            mx.set_cache_limit(int(config["mlx_cache_limit_mb"]) * mb)
        if config.get("mlx_memory_limit_mb") is not None:
            mx.set_memory_limit(int(config["mlx_memory_limit_mb"]) * mb)
        # Before the service loads its models: loading churns the heap too.
        self._trimmer = trimmer_from_env()
        build = load_factory(factory) if factory else Service
        self.service = build(
            ServiceConfig(**config),
            [Project(name=n, root=Path(r), adapter=Path(a) if a else None) for n, r, a in projects],
        )
        self._gauge_calls = 0
        # Python allocation tracing starts once the service is built: tracing imports and
        # model loading made start-up ~2x slower here and bloated every later snapshot.
        self._memory = MemoryWatcher(trace_python=trace_python)
        self._metrics = _Metrics(index)
        self._node = ray.get_runtime_context().get_node_id()
        self._wall = WallSampler(STAGE_FRAMES["request"]) if wall_clock else None
        if self._wall is not None:
            self._wall.start()

    @ray.method(concurrency_group="ctl")
    def wall_profile(self) -> dict[str, int]:
        """Milliseconds of request threads per stack and state (running, waiting), since
        start; empty when not sampled."""
        return self._wall.collapsed() if self._wall is not None else {}

    @ray.method(concurrency_group="ctl")
    def gauges(self) -> dict[str, Any]:
        """This replica's own figures now (memory, caches, MLX), and the dashboard's gauges
        set from them. Cheap enough to call every second while the run goes."""
        stats = self.service.stats()
        adapters, indexes = stats["adapters"], stats["indexes"]
        self._gauge_calls += 1
        uss = self._process.memory_full_info().uss if self._gauge_calls % 5 == 1 else None
        row = {
            "t": time.time(),
            "replica": self.index,
            "pid": os.getpid(),
            "rss": self._process.memory_info().rss,
            "uss": uss,
            "adapter_bytes": adapters["bytes_resident"],
            "index_bytes": indexes["bytes_loaded"],
            "adapter_hits": adapters["hits"],
            "adapter_misses": adapters["misses"],
            "index_hits": indexes["hits"],
            "index_misses": indexes["misses"],
            "mlx_active": mx.get_active_memory(),
            "mlx_cache": mx.get_cache_memory(),
            "mlx_peak": self._memory.peak_since_start(),
        }
        m = self._metrics
        m.memory.set(row["rss"])
        if uss is not None:
            m.uss.set(uss)
        m.hits.set(row["adapter_hits"])
        m.misses.set(row["adapter_misses"])
        m.index_hits.set(row["index_hits"])
        m.index_misses.set(row["index_misses"])
        m.cache_bytes.set(row["adapter_bytes"] + row["index_bytes"])
        m.mlx_active.set(row["mlx_active"])
        return row

    @ray.method(concurrency_group="ctl")
    def snapshot(self, label: str) -> dict[str, Any]:
        """A memory snapshot (process, MLX, caches, Python allocations); resets MLX's peak."""
        stats = self.service.stats()
        return self._memory.snapshot(
            label,
            {
                "replica": self.index,
                "pid": os.getpid(),
                "adapter_bytes": stats["adapters"]["bytes_resident"],
                "index_bytes": stats["indexes"]["bytes_loaded"],
                "adapter_hits": stats["adapters"]["hits"],
                "adapter_misses": stats["adapters"]["misses"],
                "adapter_evictions": stats["adapters"]["evictions"],
                "index_hits": stats["indexes"]["hits"],
                "index_misses": stats["indexes"]["misses"],
                "index_evictions": stats["indexes"]["evictions"],
            },
        )

    def probe(self) -> dict[str, Any]:
        """MLX's own facts in this process (device, limits, BLAS loaded and its speed).

        In the default group, as it runs MLX work: one MLX user at a time per process.
        """
        from profiling.capture.mlx_probe import probe

        streams = getattr(getattr(self.service, "embedder", None), "stream_count", 1)
        return {"replica": self.index, "pid": os.getpid(), "streams": streams, **probe()}

    @ray.method(concurrency_group="ctl")
    def info(self) -> dict[str, Any]:
        """Who and where this replica is, and what starting it cost."""
        from profiling.capture.libraries import loaded_blas

        return {
            "replica": self.index,
            "pid": os.getpid(),
            "node": self._node,
            "init_seconds": dict(self.service.init_seconds),
            "projects": sorted(self.service.projects.projects),
            "blas": loaded_blas(),
            "restarted": ray.get_runtime_context().was_current_actor_reconstructed,
        }

    def ingest(self, project: str, rebuild: bool = False) -> dict[str, Any]:
        """Build ``project``'s index if needed; errors come back as data."""
        start = time.perf_counter()
        try:
            report = self.service.ingest(project, rebuild=rebuild)
            # A fresh index on disk was reused: report what it holds, from its metadata.
            facts = asdict(report) if report else self.service.indexes.describe(project)
        except Exception as exc:
            return {"project": project, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {
            "project": project,
            "ok": True,
            "built": report is not None,
            "seconds": time.perf_counter() - start,
            "report": facts,
        }

    def ingest_plan(self, project: str) -> dict[str, Any]:
        """What is left to embed before ``project``'s index can be built; errors as data."""
        try:
            keys, texts, chunks = self.service.ingest_plan(project)
        except Exception as exc:
            return {"project": project, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"project": project, "ok": True, "keys": keys, "texts": texts, "chunks": chunks}

    def embed_into_store(self, keys: list[bytes], texts: list[str]) -> int:
        """Embed ``texts`` for any project into the shared store (a share of an ingest)."""
        return int(self.service.embed_into_store(keys, texts))

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Serve one request ``{op, project, query, texts}``; never raises."""
        if self._wall is not None:
            self._wall.enter()
        start = time.time()
        t0 = time.perf_counter()
        op = str(request.get("op"))
        reply: dict[str, Any] = {"start": start, "node": self._node, "pid": os.getpid()}
        try:
            result = self._dispatch(op, request)
            reply.update(
                ok=True,
                error=None,
                stages=asdict(result.stages),
                switched=result.switched,
                misses=result.misses,
                flops=result.flops,
            )
        except Exception as exc:
            reply.update(ok=False, error=f"{type(exc).__name__}: {exc}", stages={}, switched=False)
            self._metrics.errors.inc(tags={"replica": str(self.index), "op": op})
        reply["service"] = time.perf_counter() - t0
        tags = {"replica": str(self.index), "op": op}
        self._metrics.ops.inc(tags=tags)
        self._metrics.latency.observe(reply["service"], tags=tags)
        if reply["switched"]:
            self._metrics.swaps.inc()
        return reply

    def _dispatch(self, op: str, request: dict[str, Any]) -> OpResult:
        project = request.get("project")
        svc = self.service
        if op == "embed":
            return svc.embed(list(request.get("texts") or [request.get("query", "")]))[1]
        if op == "ingest":
            start = time.perf_counter()
            svc.ingest(str(project), rebuild=True)
            return OpResult("ingest", project, StageTimings(embed=time.perf_counter() - start))
        handlers = {
            "analyze": lambda: svc.analyze(str(project), str(request.get("query", ""))),
            "search": lambda: svc.search(str(project), str(request.get("query", ""))),
            "switch": lambda: svc.switch(str(project)),
        }
        if op not in handlers:
            raise ValueError(
                f"unknown operation {op!r} (known: analyze, embed, ingest, search, switch)"
            )
        return handlers[op]()

    @ray.method(concurrency_group="ctl")
    def stats(self) -> dict[str, Any]:
        """Cache counters, memory and MLX figures; also refreshes the dashboard gauges."""
        stats = self.service.stats()
        rss = self._process.memory_info().rss
        stats["rss_bytes"] = rss
        stats["replica"] = self.index
        stats["pid"] = os.getpid()
        # The run's peak, not the peak since the last snapshot reset it.
        stats["mlx"]["peak_bytes"] = self._memory.peak_since_start()
        if self._trimmer is not None:
            stats["malloc_trim"] = self._trimmer.facts()
        self._metrics.memory.set(rss)
        self._metrics.hits.set(stats["adapters"]["hits"])
        self._metrics.misses.set(stats["adapters"]["misses"])
        self._metrics.cache_bytes.set(
            stats["adapters"]["bytes_resident"] + stats["indexes"]["bytes_loaded"]
        )
        return stats
