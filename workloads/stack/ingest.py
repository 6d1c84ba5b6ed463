"""Building every project's index at the start of a run, spread over every replica.

Each project's owner replica says which of its chunks the shared embedding store lacks
(:meth:`ServiceReplica.ingest_plan`). The chunks of all projects are pooled, deduplicated
by content, and dealt in slices to every replica, each embedding its slice into the store
(at most two slices in flight per replica, so the fastest ones get more). Then each owner
builds its project's index from the store, once. Progress (chunks done, chunks/s, time
left) is shown while it goes; a stop request ends it between slices, and what was embedded
stays in the store for the next run to resume from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

SLICE = 64
"""Chunks per slice handed to a replica."""
IN_FLIGHT = 2
"""Slices each replica holds at once."""


@dataclass
class IngestSummary:
    """What the ingest at the start of a run did."""

    projects: int = 0
    chunks: int = 0
    """Chunks of every project."""
    embedded: int = 0
    """Distinct chunks embedded now (the rest were in the store already)."""
    seconds: float = 0.0
    embed_seconds: float = 0.0
    """Seconds spent embedding (the spread-out part)."""
    by_replica: dict[int, int] = field(default_factory=dict)
    """Chunks each replica embedded."""
    interrupted: bool = False
    reports: list[dict[str, Any]] = field(default_factory=list)
    """Each owner's ingest result, as ``ingest.json`` keeps them."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``run.json``'s ``ingest``)."""
        rate = self.embedded / self.embed_seconds if self.embed_seconds > 0 else None
        return {
            "projects": self.projects,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "reused": self.chunks - self.embedded,
            "seconds": self.seconds,
            "embed_seconds": self.embed_seconds,
            "chunks_per_s": rate,
            "by_replica": {str(k): v for k, v in self.by_replica.items()},
            "interrupted": self.interrupted,
        }


Report = Callable[[int, int, float], None]
"""``(done, total, seconds so far)``: called as slices finish."""


def ingest_all(
    replicas: list[Any],
    owners: dict[str, int],
    *,
    stopped: Callable[[], bool],
    report: Report,
    every_replica: bool = False,
) -> IngestSummary:
    """Index every project of ``owners`` (project -> replica index) using every replica.

    ``every_replica`` also asks the other replicas to load each index (when any replica may
    serve any project); they find it built. A failed plan or build is an entry with
    ``ok: false`` in the reports, never an exception.
    """
    start = time.perf_counter()
    summary = IngestSummary(projects=len(owners))
    plans = ray.get([replicas[k].ingest_plan.remote(p) for p, k in owners.items()])
    todo: dict[bytes, str] = {}
    for plan in plans:
        if plan.get("ok"):
            summary.chunks += int(plan["chunks"])
            todo.update(zip(plan["keys"], plan["texts"], strict=True))
    items = list(todo.items())
    slices = [items[i : i + SLICE] for i in range(0, len(items), SLICE)]
    embed_start = time.perf_counter()
    pending: dict[Any, tuple[int, int]] = {}
    in_flight = [0] * len(replicas)
    next_slice = 0
    done = 0
    report(0, len(items), 0.0)
    while next_slice < len(slices) or pending:
        if not stopped():
            for k, replica in enumerate(replicas):
                while next_slice < len(slices) and in_flight[k] < IN_FLIGHT:
                    keys, texts = zip(*slices[next_slice], strict=True)
                    pending[replica.embed_into_store.remote(list(keys), list(texts))] = (
                        k,
                        len(keys),
                    )
                    in_flight[k] += 1
                    next_slice += 1
        elif next_slice < len(slices):
            summary.interrupted = True
            next_slice = len(slices)
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            k, count = pending.pop(ref)
            in_flight[k] -= 1
            try:
                ray.get(ref)
            except Exception:  # a replica that died: its slice is embedded again next time
                continue
            done += count
            summary.by_replica[k] = summary.by_replica.get(k, 0) + count
        report(done, len(items), time.perf_counter() - embed_start)
    summary.embedded = done
    summary.embed_seconds = time.perf_counter() - embed_start
    if not summary.interrupted:
        summary.reports = ray.get([replicas[k].ingest.remote(p) for p, k in owners.items()])
        if every_replica:
            ray.get([r.ingest.remote(p) for r in replicas for p in owners])
    summary.reports += [
        {"project": plan["project"], "ok": False, "error": plan["error"]}
        for plan in plans
        if not plan.get("ok")
    ]
    summary.seconds = time.perf_counter() - start
    return summary
