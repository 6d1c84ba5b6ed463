"""The typed record every operation yields, success or failure, and what one reads off many.

Times are UNIX seconds (``time.time()``) so that records of several processes line up;
durations are seconds. A failure is a record with ``ok=False`` and ``error`` set.

Latency is measured from the **planned** send time, not the actual one: an open-loop
generator that falls behind its schedule would otherwise hide its own lag (coordinated
omission). ``duration = lag + wait + service + transport``, each part measured per record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STAGES = ("adapter", "index", "embed", "search", "model")
"""Service-side stages an operation reports, in the order a request meets them: adapter
activation or load, index load, embedding, vector search, base model."""


@dataclass
class OpRecord:
    """One issued operation, as the generator saw it and the replica reported it."""

    id: str
    """Unique within the run: ``<worker>-<sequence>``."""
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
    planned: float
    """When it was due to be sent: its arrival time in an open-loop schedule, or the moment a
    closed-loop user sent it. The origin of ``duration``."""
    sent: float = 0.0
    """When the generator actually sent it."""
    duration: float = 0.0
    """End-to-end seconds from ``planned`` to the reply (lag + wait + service + transport)."""
    lag: float = 0.0
    """Seconds the generator sent it late (``sent - planned``)."""
    wait: float = 0.0
    """Seconds between sending and the replica starting it (queueing and transport there)."""
    service: float = 0.0
    """Seconds the replica spent on it."""
    stages: dict[str, float] = field(default_factory=dict)
    """Service-side seconds per stage (:data:`STAGES`); service time outside them is other."""
    misses: list[str] = field(default_factory=list)
    """Caches that missed for it: ``adapter`` and/or ``index`` (each loaded from disk)."""
    flops: float = 0.0
    """Estimated matmul floating-point operations of its embed and model stages."""
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
    served: str = ""
    """HTTP stacks: what the server was asked to serve (model and adapter fields)."""
    ttft: float = 0.0
    """HTTP stacks: seconds from sending to the first token of the reply."""
    ttft_planned: float = 0.0
    """HTTP stacks: seconds from the planned send to the first token (``ttft`` plus lag)."""
    itl: float = 0.0
    """HTTP stacks: mean seconds between tokens after the first."""
    itl_p50: float = 0.0
    """HTTP stacks: median gap between two tokens of the reply."""
    itl_p99: float = 0.0
    """HTTP stacks: 99th percentile of the gaps between tokens of the reply."""
    tokens_out: int = 0
    """HTTP stacks: tokens received."""
    http_status: int = 0
    """HTTP stacks: the reply's status code (0: no reply)."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (shallow but for ``stages``; faster than ``asdict``)."""
        out = dict(self.__dict__)
        out["stages"] = dict(self.stages)
        out["misses"] = list(self.misses)
        return out


def number(value: Any) -> float:
    """``value`` as a float when it is a number (not a bool), else 0.0."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def error_kind(record: Mapping[str, Any]) -> str:
    """The kind of a failed record's error: the text before its first ``:``."""
    return str(record.get("error") or "unknown").split(":", 1)[0]
