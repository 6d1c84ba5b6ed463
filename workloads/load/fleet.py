"""The load generator workers of a run: started, drained, and replaced when one dies.

Every record carries an id ``<worker>-<sequence>``; a worker hands over, with each batch of
records, the operations it has sent and not recorded yet. When a worker dies (its drain or
its stage call fails), those operations become error records ("GeneratorLost"), its outage
is noted for ``run.json``, and a replacement under a new worker number carries the rest of
the stage on: the remaining time of a closed-loop stage, or the open-loop arrivals not yet
due. Operations the dead worker sent after its last drain (at most a second's worth) cannot
be known; the outage says so.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from datamodel.runfolder import RecordWriter
from workloads.load.generator import GeneratorWorker
from workloads.load.progress import Progress

DRAIN_TIMEOUT_S = 30.0
"""Longest a worker may take to hand over its records before it counts as lost."""


@dataclass
class Fleet:
    """The live generator workers, by worker number."""

    replicas: list[Any]
    routes: dict[str, int] | None
    run_name: str
    http: dict[str, Any] | None = None
    """An HTTP stack's plan: workers call it directly (no replicas)."""
    workers: dict[int, Any] = field(default_factory=dict)
    issued: dict[int, int] = field(default_factory=dict)
    """Worker number -> operations it issued, as of its last drain."""
    pending: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    """Worker number -> operations in flight at its last drain."""
    outages: list[dict[str, Any]] = field(default_factory=list)
    """One entry per worker lost: when, why, what was lost, who replaced it."""
    _next: int = 0

    def start(self, count: int) -> list[int]:
        """Start ``count`` new workers; returns their numbers."""
        numbers = []
        for _ in range(count):
            k = self._next
            self._next += 1
            self.workers[k] = GeneratorWorker.options(  # type: ignore[attr-defined]
                name=f"generator-{k}-{self.run_name}"
            ).remote(k, self.replicas, self.routes, self.http)
            self.issued[k] = 0
            self.pending[k] = []
            numbers.append(k)
        return numbers

    def infos(self, numbers: list[int]) -> list[dict[str, Any]]:
        """pid and node of workers ``numbers`` (for the profiler's roles)."""
        return ray.get([self.workers[k].info.remote() for k in numbers])

    def drain(self, writer: RecordWriter, progress: Progress) -> list[dict[str, Any]]:
        """Move every worker's finished records to disk; a worker that fails is lost.
        Returns the records moved."""
        moved: list[dict[str, Any]] = []
        refs = {k: w.drain.remote() for k, w in self.workers.items()}
        for k, ref in refs.items():
            try:
                batch = ray.get(ref, timeout=DRAIN_TIMEOUT_S)
            except Exception as exc:
                self.lose(k, exc, writer, progress)
                continue
            writer.write(batch["records"])
            progress.add(batch["records"], batch["in_flight"])
            self.issued[k] = batch["issued"]
            self.pending[k] = batch["pending"]
            moved.extend(batch["records"])
        return moved

    def lose(self, k: int, why: BaseException, writer: RecordWriter, progress: Progress) -> None:
        """Record worker ``k``'s outage; its operations in flight become error records."""
        handle = self.workers.pop(k, None)
        if handle is None:
            return
        now = time.time()
        error = f"GeneratorLost: generator {k} died before recording it ({type(why).__name__})"
        lost = [
            {**r, "ok": False, "error": error, "duration": max(now - r["planned"], 0.0)}
            for r in self.pending.pop(k, [])
        ]
        writer.write(lost)
        progress.add(lost, 0)
        progress.say(
            f"generator {k} was lost ({type(why).__name__}): {len(lost)} operation(s) "
            "in flight recorded as errors"
        )
        self.outages.append(
            {
                "worker": k,
                "lost_utc": now,
                "error": f"{type(why).__name__}: {why}"[:300],
                "in_flight_lost": len(lost),
                "issued_before": self.issued.get(k, 0),
                "note": "operations sent after its last drain (under a second's worth) are unknown",
            }
        )
        with contextlib.suppress(Exception):  # already gone
            ray.kill(handle)

    def close(self) -> None:
        """End every worker's process (the run is over; a Ray session that outlives the run,
        as an A/B's does, keeps nothing of it)."""
        for w in list(self.workers.values()):
            with contextlib.suppress(Exception):  # already gone
                ray.kill(w)

    def stop(self) -> None:
        """Ask every live worker to stop issuing."""
        for w in list(self.workers.values()):
            with contextlib.suppress(Exception):  # a lost one is found by the next drain
                ray.get(w.stop.remote(), timeout=DRAIN_TIMEOUT_S)

    def resume(self) -> None:
        """Let every live worker issue again after :meth:`stop` (the next stage)."""
        for w in list(self.workers.values()):
            with contextlib.suppress(Exception):  # a lost one is found by the next drain
                ray.get(w.resume.remote(), timeout=DRAIN_TIMEOUT_S)

    def in_flight(self) -> list[dict[str, Any]]:
        """The operations in flight at the last drain (each with its ``planned`` time)."""
        return [r for rows in self.pending.values() for r in rows]
