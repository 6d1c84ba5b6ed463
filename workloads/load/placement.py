"""Where a run's generator workers go, and what they reserve.

A load generator that shares cores with the replicas it loads measures its own contention:
on a cluster, workers go to nodes that host no replica when there are such nodes, else
round-robin over every node, fewest replicas first. Each reserves a slice of a CPU, so
Ray counts them and a node is not handed out to replicas as if they were not there. A
stack reachable only from the driver's machine (a server bound to loopback) pins every
worker to the driver's node.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

GENERATOR_CPUS = 0.1
"""CPU a worker reserves (less when many workers would take a quarter of the cluster)."""


def spread(nodes: list[dict[str, Any]], replica_nodes: list[str]) -> list[str]:
    """Nodes for generator workers, in turn: the alive nodes with CPUs that host no replica,
    or, when every one hosts some, all of them, fewest replicas first."""
    usable = [n["node_id"] for n in nodes if n.get("alive") and n["resources"].get("CPU", 0) > 0]
    hosting = Counter(replica_nodes)
    free = [n for n in usable if not hosting[n]]
    if free:
        return free
    return sorted(usable, key=lambda n: (hosting[n], usable.index(n)))


def worker_cpus(nodes: list[dict[str, Any]], workers: int) -> float:
    """CPU each of ``workers`` reserves: :data:`GENERATOR_CPUS`, or less, so that together
    they never take more than a quarter of the cluster's CPUs."""
    total = sum(n["resources"].get("CPU", 0) for n in nodes if n.get("alive"))
    share = total / (4 * max(workers, 1)) if total else GENERATOR_CPUS
    return math.floor(min(GENERATOR_CPUS, share) * 1e4) / 1e4  # Ray counts to 1e-4, down


def loopback(url: str) -> bool:
    """Whether ``url`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
