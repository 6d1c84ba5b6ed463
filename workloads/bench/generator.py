"""``python -m workloads.bench generator``: the load generator's own ceiling and cost.

A local Ray of ``--nodes`` raylets on this machine (default 1), a no-op replica and a
generator worker on each, driven exactly as a run drives them (drains about every second,
one stage origin, clocks measured): the total rate reached, whether every issued
operation has its record, the lag's p99, the generator's and the driver's CPU per
operation, and the driver's memory (flat when it keeps nothing per record). Records are
written by each worker into its own shards (a run's way) and, interleaved rate by rate,
handed to the driver, which writes them: the two compared in one sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

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


def bench_generator(args: argparse.Namespace) -> None:
    """Highest op rate the generator sustains against a no-op replica, and its CPU; with
    records written by each worker itself and, interleaved, handed to the driver."""
    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine_info())}")
    import psutil
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cluster.clock import node_offsets, offsets_of
    from datamodel.runfolder import RecordWriter, read_run_records
    from workloads.load.fleet import Fleet
    from workloads.load.placement import GENERATOR_CPUS
    from workloads.load.progress import Progress

    cluster = _start(args.nodes)
    driver = psutil.Process()
    root = Path(tempfile.mkdtemp(prefix="loadlens-bench-gen-"))
    fleets: dict[str, Fleet] = {}
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        clock = node_offsets(nodes) if len(nodes) > 1 else {}
        print(
            f"{len(nodes)} raylet(s), {os.cpu_count()} CPUs; clock offsets "
            + (
                ", ".join(
                    f"{k[:8]} {v['offset_s'] * 1e3:+.2f} ms (rtt {v['rtt_s'] * 1e3:.2f})"
                    for k, v in clock.items()
                )
                or "none (one node)"
            )
        )
        noop = _noop_class()
        replicas = [
            noop.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
            for n in nodes
        ]
        writers: dict[str, RecordWriter] = {}
        for mode in args.records:
            folder = root / mode
            writers[mode] = RecordWriter(folder)
            fleets[mode] = Fleet(
                replicas,
                {f"p{k}": k for k in range(len(nodes))},
                f"{root.name}-{mode}",
                placement=nodes,
                pinned=True,
                cpus=GENERATOR_CPUS if len(nodes) > 1 else 0.0,
                offsets=offsets_of(clock),
                results=folder if mode == "worker" else None,
            )
            numbers = fleets[mode].start(len(nodes))
            placed = {i["worker"]: i["node"] for i in fleets[mode].infos(numbers)}
            assert all(placed[k] == nodes[k] for k in numbers), "a worker is not on its node"
        progress = Progress(quiet=True)
        print(f"driver RSS before: {driver.memory_info().rss / 2**20:.0f} MiB")
        for n, rate in enumerate(args.rates):
            for mode in args.records:  # interleaved: the same minute for both ways
                stage = f"bench-{n}"
                _one_rate(fleets[mode], writers[mode], progress, rate, args.seconds, stage, driver)
        for mode, writer in writers.items():
            writer.close()
            total = len(read_run_records(writer.folder, []))
            issued = sum(fleets[mode].issued.values())
            print(f"records by the {mode}: {total} records for {issued} issued operations")
    finally:
        for fleet in fleets.values():
            fleet.close()
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _start(nodes: int) -> Any:
    """A local Ray of ``nodes`` raylets sharing this machine's CPUs (a cluster handle, or
    ``None`` for one node, started as a run starts it)."""
    import ray

    if nodes <= 1:
        from cluster.connect import connect

        connect(None)
        return None
    from ray.cluster_utils import Cluster

    from cluster.connect import enable_token_auth

    enable_token_auth()
    cores = max(1, (os.cpu_count() or 2) // nodes)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cores})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cores)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def _one_rate(
    fleet: Any,
    writer: Any,
    progress: Any,
    rate: float,
    seconds: float,
    stage: str,
    driver: Any,
) -> None:
    """One rate split over the workers (interleaved), driven as a run drives a stage; its
    figures read back from the records on disk."""
    import ray

    from datamodel.runfolder import read_run_records

    numbers = sorted(fleet.workers)
    per = rate / len(numbers)
    issued0 = sum(fleet.issued.values())
    cpu0 = sum(driver.cpu_times()[:2])
    origin = time.time() + 0.1
    refs = []
    for j, k in enumerate(numbers):
        n = int(per * seconds)
        start = j / rate  # the workers' arrivals interleave
        arrivals = [(start + i / per, "analyze", f"p{j}") for i in range(n)]
        refs.append(
            fleet.workers[k].run_open.remote(stage, arrivals=arrivals, seed=j, origin=origin)
        )
    rss: list[float] = []
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        fleet.drain(writer, progress)
        rss.append(driver.memory_info().rss)
    fleet.settle(writer, progress)
    driver_cpu = sum(driver.cpu_times()[:2]) - cpu0
    costs = ray.get(refs)
    rows = read_run_records(writer.folder, [])
    frame = rows.frame
    mine = frame.equals("stage", stage)
    lag = frame.value("lag")[mine]
    ok = int((frame.ok & mine).sum())
    records = int(mine.sum())
    kinds = Counter(error_kind(rows[i]) for i in np.flatnonzero(mine & ~frame.ok).tolist())
    wall = max(c["wall_seconds"] for c in costs)
    issued = sum(fleet.issued.values()) - issued0
    lag = lag if lag.size else np.zeros(1)
    cpu = sum(c["cpu_seconds"] for c in costs)
    by = "worker" if fleet.results is not None else "driver"
    print(
        f"target {rate:>6.0f} ops/s, records by the {by}: achieved {ok / wall:7.1f} ops/s "
        f"({ok} ok / {records} records / {issued} issued in {wall:.2f} s"
        + (f"; errors {dict(kinds)}" if kinds else "")
        + f"), lag p50 {np.quantile(lag, 0.5) * 1e3:.2f} ms "
        f"p99 {np.quantile(lag, 0.99) * 1e3:.2f} ms, "
        f"generator CPU {cpu / max(records, 1) * 1e3:.3f} ms per op, "
        f"driver CPU {driver_cpu / max(records, 1) * 1e3:.3f} ms per op, "
        f"driver RSS {min(rss) / 2**20:.0f}..{max(rss) / 2**20:.0f} MiB"
    )


def add_parser(sub: Any) -> None:
    """The ``generator`` subcommand."""
    g = sub.add_parser("generator", help="the load generator's own ceiling and cost")
    g.add_argument("--rates", type=float, nargs="+", default=None)
    g.add_argument("--seconds", type=float, default=5.0)
    g.add_argument(
        "--records",
        nargs="+",
        choices=("worker", "driver"),
        default=["worker", "driver"],
        help="who writes the records: each worker its own shards (a run's way), or the "
        "driver from drains; both (default) interleave rate by rate",
    )
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
