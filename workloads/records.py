"""The typed record every operation yields, success or failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OpRecord:
    """One issued operation, as the generator saw it and the replica reported it.

    Times are UNIX seconds (``time.time()``) so records from several processes line up;
    durations are seconds. A failure is a record with ``ok=False`` and ``error`` set.
    """

    op: str
    """Operation name (analyze, search, embed, switch, ingest)."""
    project: str | None
    """Project the operation was for (``None`` for embed)."""
    stage: str
    """Profile stage it was issued in."""
    worker: int
    """Generator worker that issued it."""
    replica: int
    """Replica it was routed to."""
    issued: float
    """When the generator sent it."""
    duration: float = 0.0
    """End-to-end seconds seen by the generator (queue + service + transport)."""
    wait: float = 0.0
    """Seconds between sending and the replica starting it (queueing)."""
    service: float = 0.0
    """Seconds the replica spent on it."""
    stages: dict[str, float] = field(default_factory=dict)
    """Service-side seconds per stage: switch, embed, search, model."""
    node: str = ""
    """Ray node id of the replica that served it ('' if it never reached one)."""
    pid: int = 0
    """Process id of the replica that served it."""
    ok: bool = False
    """Whether it completed without error."""
    error: str | None = None
    """Error type and message when it failed."""
    switched: bool = False
    """Whether it changed the replica's active project (an adapter swap)."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (shallow but for ``stages``; faster than ``asdict``)."""
        out = dict(self.__dict__)
        out["stages"] = dict(self.stages)
        return out
