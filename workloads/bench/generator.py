"""``python -m workloads.bench generator``: the load generator's own ceiling and cost.

One node (default): one worker against a no-op replica, rate by rate. ``--nodes N``: a
local cluster of N raylets on this machine, a no-op replica and a generator worker on
each, driven exactly as a run drives them (acknowledged drains into Parquet shards, one
stage origin, clocks measured): the total rate reached, whether every issued operation
has its record, the lag's p99, and the driver's memory after each rate (flat when the
driver keeps nothing per record).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from datamodel.quantiles import summarize
from datamodel.records import error_kind
from workloads.runs.results import machine_info


def _noop_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class NoopReplica:
        def __init__(self) -> None:
            self.node = ray.get_runtime_context().get_node_id()

        async def call(self, request: dict[str, Any]) -> dict[str, Any]:
            return {
                "start": time.time(),
                "node": self.node,
                "pid": os.getpid(),
                "ok": True,
                "error": None,
                "stages": {},
                "switched": False,
                "service": 0.0,
            }

    return NoopReplica


def _records(drained: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for _, batch in drained["batches"] for r in batch]


def bench_generator(args: argparse.Namespace) -> None:
    """Highest op rate the generator sustains against a no-op replica, and its CPU."""
    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine_info())}")
    if args.nodes > 1:
        _bench_nodes(args)
        return
    import ray

    from cluster.connect import connect, disconnect
    from workloads.load.generator import GeneratorWorker

    connect(None)
    try:
        replica = _noop_class().remote()
        worker = GeneratorWorker.remote(0, [replica], {"p": 0})  # type: ignore[attr-defined]
        acked = max((n for n, _ in ray.get(worker.drain.remote())["batches"]), default=0)
        for rate in args.rates:
            n = int(rate * args.seconds)
            arrivals = [(i / rate, "analyze", "p") for i in range(n)]
            wall0 = time.perf_counter()
            cost = ray.get(worker.run_open.remote("bench", arrivals=arrivals, seed=0))
            wall = time.perf_counter() - wall0
            drained = ray.get(worker.drain.remote(acked))
            acked = max((n for n, _ in drained["batches"]), default=acked)
            records = _records(drained)
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


def _bench_nodes(args: argparse.Namespace) -> None:
    import psutil
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cluster.clock import node_offsets, offsets_of
    from cluster.connect import enable_token_auth
    from datamodel.runfolder import RecordWriter, read_run_records
    from workloads.load.fleet import Fleet
    from workloads.load.placement import GENERATOR_CPUS
    from workloads.load.progress import Progress

    enable_token_auth()
    cores = max(1, (os.cpu_count() or 2) // args.nodes)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cores})
    for _ in range(args.nodes - 1):
        cluster.add_node(num_cpus=cores)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    driver = psutil.Process()
    folder = Path(tempfile.mkdtemp(prefix="loadlens-bench-nodes-"))
    fleet: Fleet | None = None
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        clock = node_offsets(nodes)
        print(
            f"{len(nodes)} raylets, {cores} CPU each; clock offsets "
            + ", ".join(
                f"{k[:8]} {v['offset_s'] * 1e3:+.2f} ms (rtt {v['rtt_s'] * 1e3:.2f})"
                for k, v in clock.items()
            )
        )
        noop = _noop_class()
        replicas = [
            noop.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
            for n in nodes
        ]
        fleet = Fleet(
            replicas,
            {f"p{k}": k for k in range(len(nodes))},
            folder.name,
            placement=nodes,
            pinned=True,
            cpus=GENERATOR_CPUS,
            offsets=offsets_of(clock),
        )
        numbers = fleet.start(len(nodes))
        placed = {i["worker"]: i["node"] for i in fleet.infos(numbers)}
        assert all(placed[k] == nodes[k] for k in numbers), "a worker is not on its node"
        writer = RecordWriter(folder)
        progress = Progress(quiet=True)
        rss0 = driver.memory_info().rss
        print(f"driver RSS before: {rss0 / 2**20:.0f} MiB")
        for rate in args.rates:
            _one_rate(fleet, numbers, writer, progress, rate, args.seconds, driver)
        writer.close()
        total = len(read_run_records(folder, []))
        issued = sum(fleet.issued.values())
        print(f"all rates: {total} records for {issued} issued operations")
    finally:
        if fleet is not None:
            fleet.close()
        ray.shutdown()
        cluster.shutdown()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def _one_rate(
    fleet: Any,
    numbers: list[int],
    writer: Any,
    progress: Any,
    rate: float,
    seconds: float,
    driver: Any,
) -> None:
    """One rate split over the workers (interleaved), driven as a run drives a stage."""
    import ray

    per = rate / len(numbers)
    issued0 = sum(fleet.issued.values())
    origin = time.time() + 0.1
    refs = []
    for j, k in enumerate(numbers):
        n = int(per * seconds)
        start = j / rate  # the workers' arrivals interleave
        arrivals = [(start + i / per, "analyze", f"p{j}") for i in range(n)]
        refs.append(
            fleet.workers[k].run_open.remote("bench", arrivals=arrivals, seed=j, origin=origin)
        )
    lags = array("d")  # eight bytes a record: the bench's own figures, not the driver's
    errors: Counter[str] = Counter()
    rss: list[float] = []
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        got, _ = fleet.drain(writer, progress)
        lags.extend(r["lag"] for r in got)
        errors.update(error_kind(r) for r in got if not r["ok"])
        rss.append(driver.memory_info().rss)
    got, _ = fleet.settle(writer, progress)
    lags.extend(r["lag"] for r in got)
    errors.update(error_kind(r) for r in got if not r["ok"])
    costs = ray.get(refs)
    wall = max(c["wall_seconds"] for c in costs)
    ok = len(lags) - sum(errors.values())
    issued = sum(fleet.issued.values()) - issued0
    lag = np.frombuffer(lags, dtype=np.float64) if lags else np.zeros(1)
    cpu = sum(c["cpu_seconds"] for c in costs)
    print(
        f"target {rate:>6.0f} ops/s over {len(numbers)} nodes: achieved {ok / wall:7.1f} ops/s "
        f"({ok} ok / {len(lags)} records / {issued} issued in {wall:.2f} s"
        + (f"; errors {dict(errors)}" if errors else "")
        + f"), lag p50 {np.quantile(lag, 0.5) * 1e3:.2f} ms "
        f"p99 {np.quantile(lag, 0.99) * 1e3:.2f} ms, "
        f"generator CPU {cpu / max(len(lags), 1) * 1e3:.2f} ms per op, "
        f"driver RSS {min(rss) / 2**20:.0f}..{max(rss) / 2**20:.0f} MiB"
    )


def add_parser(sub: Any) -> None:
    """The ``generator`` subcommand."""
    g = sub.add_parser("generator", help="the load generator's own ceiling and cost")
    g.add_argument("--rates", type=float, nargs="+", default=None)
    g.add_argument("--seconds", type=float, default=5.0)
    g.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="raylets on this machine, a worker and a no-op replica on each (default 1)",
    )
    g.set_defaults(handler=_with_default_rates)


def _with_default_rates(args: argparse.Namespace) -> None:
    if args.rates is None:
        args.rates = [1000, 2000, 3000] if args.nodes > 1 else [100, 500, 1000, 2000, 4000]
    if args.nodes < 1:
        raise SystemExit("--nodes must be >= 1")
    bench_generator(args)
