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
