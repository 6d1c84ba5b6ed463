"""A two-node Ray cluster on one machine (two raylets): spread, metrics, and a killed replica."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest
import ray
from ray.cluster_utils import Cluster
from runs import finish, only_run, read_jsonl, records_written, run_records, start, wait_for


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def replica_pids() -> dict[str, int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "ServiceReplica"), ("state", "=", "ALIVE")])
    return {a.name: a.pid for a in actors}


def test_smoke_across_two_nodes_survives_a_killed_replica(two_nodes, tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(
        results,
        cache_dir,
        "--profile",
        "smoke",
        "--address",
        two_nodes.address,
        "--replicas",
        "2",
        "--projects",
        "4",
        "--duration",
        "40",
    )
    try:
        wait_for(records_written(results, 6), proc)
        ports = {n["NodeID"]: n["MetricsExportPort"] for n in ray.nodes() if n["Alive"]}
        live = (
            "loadlens_ops_total",
            "loadlens_op_latency_seconds_bucket",
            "loadlens_replica_rss_bytes",
            "loadlens_mlx_active_bytes",
            "loadlens_index_hits",
            "loadlens_cache_bytes",
        )
        seen = ""
        for _ in range(40):  # scraped while the run goes: the gauges are set every second
            seen = "".join(scrape(p) for p in ports.values())
            if all(name in seen for name in live):
                break
            time.sleep(1)
        assert all(name in seen for name in live), [n for n in live if n not in seen]
        victim_name, victim_pid = sorted(replica_pids().items())[0]
        killed_at = time.time()
        os.kill(victim_pid, signal.SIGKILL)
        _, err = finish(proc, timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    records = run_records(run)
    assert len(records) == sum(s["issued"] for s in info["stages"])
    assert len({i["node"] for i in info["replicas"]}) == 2
    assert len({r["node"] for r in records if r["ok"]}) == 2
    victim = int(victim_name.split("-")[1])
    failed = [r for r in records if not r["ok"]]
    assert failed and all(r["replica"] == victim for r in failed)
    assert any("Actor" in r["error"] or "died" in r["error"] for r in failed)
    served_again = [
        r for r in records if r["replica"] == victim and r["ok"] and r["sent"] > killed_at
    ]
    assert served_again and all(r["pid"] != victim_pid for r in served_again)
    # Profiling followed the restart: the victim's role has samples from both processes,
    # and the other replica's capture went on.
    timeline = read_jsonl(run / "timeline.jsonl")
    victim_pids = {row["pid"] for row in timeline if row["role"] == f"replica-{victim}"}
    assert victim_pid in victim_pids and len(victim_pids) >= 2
    other = f"replica-{1 - victim}"
    assert any(row["role"] == other and row["t"] > killed_at for row in timeline)
    assert (run / "profiles" / f"{other}.collapsed").read_text().strip()


def test_each_nodes_clock_offset_is_taken_out_of_the_times_a_worker_records(two_nodes):
    """Offsets as :mod:`cluster.clock` would give them for a generator node 2 s ahead and a
    replica node 1 s behind (one machine has one clock, so they are declared here): the
    worker's times, its schedule and the queue wait all come out on the driver's clock."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cluster.clock import node_offsets
    from workloads.bench.generator import _noop_class
    from workloads.load.generator import GeneratorWorker

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    measured = node_offsets(nodes)
    assert all(abs(m["offset_s"]) <= m["rtt_s"] / 2 + 0.002 for m in measured.values())
    gen_node, rep_node = nodes[0], nodes[1]

    def on(node: str) -> NodeAffinitySchedulingStrategy:
        return NodeAffinitySchedulingStrategy(node, soft=False)

    replica = _noop_class().options(scheduling_strategy=on(rep_node)).remote()
    offsets = {gen_node: 2.0, rep_node: -1.0}
    worker = GeneratorWorker.options(scheduling_strategy=on(gen_node)).remote(
        0, [replica], {"p": 0}, offsets=offsets
    )
    ray.get([replica.__ray_ready__.remote(), worker.__ray_ready__.remote()])
    origin = time.time() + 0.3  # the driver's clock
    arrivals = [(0.05 * i, "analyze", "p") for i in range(10)]
    ray.get(worker.run_open.remote("s", arrivals=arrivals, seed=0, origin=origin))
    records = [r for _, batch in ray.get(worker.drain.remote())["batches"] for r in batch]
    assert len(records) == 10 and all(r["ok"] for r in records)
    for record, (at_s, _, _) in zip(
        sorted(records, key=lambda r: r["planned"]), arrivals, strict=True
    ):
        assert abs(record["planned"] - (origin + at_s)) < 1e-4  # on the schedule's clock
        assert record["lag"] < 0.1
    # Its clock read 2 s ahead: it waited until the driver's origin, 2 s later in truth.
    assert min(r["sent"] for r in records) >= origin - 0.01
    # Replica start +1 s, send -2 s: a true wait of milliseconds reads as 3 s, as it must
    # when the clocks really differ by that much.
    assert all(2.95 < r["wait"] < 3.5 for r in records)
    ray.kill(worker)
    ray.kill(replica)
