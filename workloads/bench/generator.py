"""``python -m workloads.bench generator``: the load generator's own ceiling and cost."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from datamodel.quantiles import summarize
from workloads.runs.results import machine_info


def bench_generator(args: argparse.Namespace) -> None:
    """Highest op rate one generator worker sustains against a no-op replica, and its CPU."""
    import ray

    from cluster.connect import connect, disconnect
    from workloads.load.generator import GeneratorWorker

    @ray.remote(num_cpus=0)
    class NoopReplica:
        async def call(self, request: dict[str, Any]) -> dict[str, Any]:
            return {
                "start": time.time(),
                "node": "",
                "pid": os.getpid(),
                "ok": True,
                "error": None,
                "stages": {},
                "switched": False,
                "service": 0.0,
            }

    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine_info())}")
    connect(None)
    try:
        replica = NoopReplica.remote()  # type: ignore[attr-defined]
        worker = GeneratorWorker.remote(0, [replica], {"p": 0})  # type: ignore[attr-defined]
        ray.get(worker.drain.remote())
        for rate in args.rates:
            n = int(rate * args.seconds)
            arrivals = [(i / rate, "analyze", "p") for i in range(n)]
            wall0 = time.perf_counter()
            cost = ray.get(worker.run_open.remote("bench", arrivals=arrivals, seed=0))
            wall = time.perf_counter() - wall0
            records = ray.get(worker.drain.remote())["records"]
            ok = sum(1 for r in records if r["ok"])
            achieved = ok / cost["wall_seconds"]
            lat = summarize([r["duration"] for r in records])
            print(
                f"target {rate:>6.0f} ops/s: achieved {achieved:7.1f} ops/s "
                f"({ok}/{n} ok in {cost['wall_seconds']:.2f} s, driver saw {wall:.2f} s), "
                f"generator CPU {cost['cpu_seconds'] / max(ok, 1) * 1000:.2f} s per 1000 ops = "
                f"{cost['cpu_seconds'] / cost['wall_seconds'] * 100:.1f}% of one core, "
                f"round trip p50 {lat.p50 * 1e3 if lat.p50 else 0:.2f} ms "
                f"p99 {lat.p99 * 1e3 if lat.p99 else 0:.2f} ms"
            )
    finally:
        disconnect()


def add_parser(sub: Any) -> None:
    """The ``generator`` subcommand."""
    g = sub.add_parser("generator", help="the load generator's own ceiling and cost")
    g.add_argument("--rates", type=float, nargs="+", default=[100, 500, 1000, 2000, 4000])
    g.add_argument("--seconds", type=float, default=5.0)
    g.set_defaults(handler=bench_generator)
