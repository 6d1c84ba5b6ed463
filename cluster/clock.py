"""One clock for a run on many nodes: each node's offset from the driver's clock.

Records mix times read on different machines: a generator's send time and a replica's start
time make the queue wait. Clocks of two machines differ (NTP keeps them within
milliseconds, a machine without it drifts by seconds), so each node's offset is measured
at the start as NTP does: a task pinned to the node reads its clock between two readings of
the driver's; of several round trips the shortest is kept, and its offset,
``remote - (sent + received) / 2``, is off by at most half that round trip. Generator
workers subtract their own node's offset from every time they record and the replica's
node offset from its start time, so every record is on the driver's clock.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

SAMPLES = 8
"""Round trips per node; the shortest one is kept."""


@ray.remote(num_cpus=0)
def _clock() -> float:
    return time.time()


def node_offsets(nodes: list[str], samples: int = SAMPLES) -> dict[str, dict[str, float]]:
    """Each of ``nodes``: ``offset_s`` (its clock minus the driver's) and ``rtt_s`` (the
    round trip it was measured in; the offset is good to half of it)."""
    pinned = {
        node: _clock.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        for node in nodes
    }
    ray.get([task.remote() for task in pinned.values()], timeout=120)  # start their workers
    out: dict[str, dict[str, float]] = {}
    for node, task in pinned.items():
        best: tuple[float, float] | None = None
        for _ in range(samples):
            sent = time.time()
            remote = ray.get(task.remote(), timeout=30)
            received = time.time()
            rtt = received - sent
            if best is None or rtt < best[1]:
                best = (remote - (sent + received) / 2, rtt)
        assert best is not None
        out[node] = {"offset_s": best[0], "rtt_s": best[1]}
    return out


def offsets_of(clock: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Node -> offset in seconds, from :func:`node_offsets`' answer."""
    return {node: float(row["offset_s"]) for node, row in clock.items()}
