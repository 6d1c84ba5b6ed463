"""Latency attribution: where each operation's end-to-end time went, and the run's budget.

Every record's latency (measured from its planned send time) splits into parts that are
measured for that record and add up to it:

- ``lag``: the generator sent it late (planned -> sent);
- ``queue``: sent -> the replica started it (waiting behind other work, and transport);
- ``adapter``, ``index``, ``embed``, ``search``, ``model``: the service's own stages;
- ``other``: service time outside the named stages;
- ``transport``: what is left, the reply's way back;
- ``failed``: the whole time of an operation that failed or timed out.

The :class:`Budget` sums the parts over all records and over the tail (each op's slowest
:data:`TAIL` share), so that a cause can be ranked by the seconds of user-visible latency
it accounts for, typically and in the tail, in one unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datamodel.frame import STAGE_PREFIX, Frame
from datamodel.quantiles import quantile_sorted
from datamodel.records import STAGES

COMPONENTS = ("lag", "queue", *STAGES, "other", "transport", "failed")
"""The parts of a record's latency, in the order a request meets them."""
SERVICE = (*STAGES, "other")
"""The parts spent inside the service."""
TAIL = 0.05
"""Share of each op's slowest records that make up the tail."""

Vector = NDArray[np.float64]


def split(record: Mapping[str, Any]) -> dict[str, float]:
    """The parts of one record's latency (:data:`COMPONENTS`); they sum to its duration.

    Measured parts are clipped so that rounding between clocks never makes them exceed
    the whole: stages are scaled down to fit the service time, service to fit what lag and
    queue leave. (:func:`split_matrix` splits many at once.)
    """
    row = split_matrix(Frame.of([record]))[0]
    return {name: float(v) for name, v in zip(COMPONENTS, row, strict=True)}


def split_matrix(frame: Frame) -> Vector:
    """:func:`split` of every record of ``frame`` at once: one row per record, one column
    per component of :data:`COMPONENTS`."""
    duration = np.maximum(frame.value("duration"), 0.0)
    lag = np.minimum(np.maximum(frame.value("lag"), 0.0), duration)
    queue = np.minimum(np.maximum(frame.value("wait"), 0.0), duration - lag)
    service = np.minimum(np.maximum(frame.value("service"), 0.0), duration - lag - queue)
    matrix = np.zeros((frame.n, len(COMPONENTS)))  # filled in place: a million rows is 96 MB
    column = {name: k for k, name in enumerate(COMPONENTS)}
    total = np.zeros(frame.n)
    for name in STAGES:
        matrix[:, column[name]] = np.maximum(frame.value(STAGE_PREFIX + name), 0.0)
        total += matrix[:, column[name]]
    fit = (total > service) & (service > 0)
    scale = np.where(fit, service / np.where(fit, total, 1.0), np.where(service <= 0, 0.0, 1.0))
    matrix[:, column["lag"]] = lag
    matrix[:, column["queue"]] = queue
    for name in STAGES:
        matrix[:, column[name]] *= scale
    matrix[:, column["other"]] = np.maximum(service - total * scale, 0.0)
    matrix[:, column["transport"]] = np.maximum(duration - lag - queue - service, 0.0)
    failed = ~frame.ok
    matrix[failed] = 0.0
    matrix[failed, column["failed"]] = duration[failed]
    return matrix


@dataclass(frozen=True)
class Part:
    """One component's seconds in the budget."""

    component: str
    """A name from :data:`COMPONENTS`."""
    seconds: float
    """Summed over every record."""
    share: float
    """``seconds`` over the summed latency of every record."""
    tail_seconds: float
    """Summed over the tail records."""
    tail_share: float
    """``tail_seconds`` over the summed latency of the tail records."""
    by_op: dict[str, float] = field(default_factory=dict)
    """Mean seconds per record of each op."""


@dataclass(frozen=True)
class Budget:
    """Where the latency of a run went, overall and in the tail."""

    records: int
    """Records attributed."""
    seconds: float
    """Their summed latency (user-seconds of waiting)."""
    tail_records: int
    """Records in the tail: the slowest :data:`TAIL` of each op (rounded up)."""
    tail_seconds: float
    """Their summed latency."""
    parts: list[Part]
    """One per component, in :data:`COMPONENTS` order."""
    ops: dict[str, dict[str, float]]
    """Per op: records, failed, p50_s, p95_s, p99_s, mean_s."""

    def part(self, component: str) -> Part:
        """The part of ``component``."""
        return next(p for p in self.parts if p.component == component)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "records": self.records,
            "seconds": self.seconds,
            "tail_records": self.tail_records,
            "tail_seconds": self.tail_seconds,
            "tail_definition": f"slowest {TAIL:.0%} of each op",
            "parts": [p.__dict__ for p in self.parts],
            "ops": self.ops,
        }


class Attribution:
    """The records of a run split into parts, as arrays, with the tail marked.

    Causes claim seconds per record (:meth:`claim`), so that every claim can be summed
    over all records, over the tail and per op in the same way as the budget.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.records = records
        self.frame = Frame.of(records)
        n = self.frame.n
        self.matrix: Vector = split_matrix(self.frame)
        self.duration: Vector = self.matrix.sum(axis=1)
        self.ops = self.frame.labels("op")
        self.tail = np.zeros(n, dtype=bool)
        self._op_rows = {
            op: np.flatnonzero(self.ops == op) for op in sorted(set(self.ops.tolist()))
        }
        for rows in self._op_rows.values():
            slowest = max(1, math.ceil(TAIL * len(rows)))
            order = np.argsort(-self.duration[rows], kind="stable")
            self.tail[rows[order[:slowest]]] = True
        self.total = float(self.duration.sum())
        self.tail_total = float(self.duration[self.tail].sum())
        self.components = frozenset(COMPONENTS)
        self.service: Vector = sum(
            (self.matrix[:, COMPONENTS.index(c)] for c in SERVICE), np.zeros(n)
        )
        """Service seconds per record (the sum of the service parts)."""
        replicas = self.frame.value("replica").astype(int)
        self._by_replica = {
            int(k): np.flatnonzero(replicas == k) for k in sorted(set(replicas.tolist()))
        }

    def by_replica(self) -> dict[int, NDArray[np.intp]]:
        """Row indices of each replica's records."""
        return self._by_replica

    def _window(self, rows: NDArray[np.intp]) -> float:
        starts = self.frame.value("planned")[rows]
        ends = starts + self.duration[rows]
        return float(ends.max() - starts.min()) if len(rows) else 0.0

    def utilisation(self) -> dict[int, float]:
        """Each replica's service seconds over the span of its records (1.0 = always busy)."""
        out = {}
        for k, rows in self._by_replica.items():
            window = self._window(rows)
            out[k] = min(float(self.service[rows].sum()) / window, 1.0) if window > 0 else 0.0
        return out

    def arrival_rates(self) -> dict[int, float]:
        """Operations per second planned for each replica (over the span of their planned
        send times, so a backlog drained after the stage does not dilute it)."""
        out = {}
        for k, rows in self._by_replica.items():
            planned = self.frame.value("planned")[rows]
            window = float(planned.max() - planned.min()) if planned.size else 0.0
            out[k] = (len(rows) - 1) / window if window > 0 else 0.0
        return out

    def capacities(self) -> dict[int, float | None]:
        """Operations per second each replica would serve if always busy (1 / mean service)."""
        out: dict[int, float | None] = {}
        for k, rows in self._by_replica.items():
            busy = float(self.service[rows].sum())
            out[k] = len(rows) / busy if busy > 0 else None
        return out

    def column(self, component: str) -> Vector:
        """Seconds of ``component`` per record."""
        return self.matrix[:, COMPONENTS.index(component)]

    def where(self, key: str, value: Any) -> NDArray[np.bool_]:
        """Records whose ``key`` equals ``value``."""
        return self.frame.equals(key, value)

    def claim(self, seconds: Vector) -> dict[str, Any]:
        """Sums of a per-record claim: seconds, share, tail seconds and share, per op."""
        total = float(seconds.sum())
        tail = float(seconds[self.tail].sum())
        by_op = {op: float(seconds[rows].sum()) for op, rows in self._op_rows.items()}
        return {
            "seconds": total,
            "share": total / self.total if self.total > 0 else 0.0,
            "tail_seconds": tail,
            "tail_share": tail / self.tail_total if self.tail_total > 0 else 0.0,
            "by_op": {op: s for op, s in by_op.items() if s > 0},
        }

    def budget(self) -> Budget:
        """The run's latency budget."""
        parts = []
        for k, component in enumerate(COMPONENTS):
            column = self.matrix[:, k]
            by_op = {op: float(column[rows].mean()) for op, rows in self._op_rows.items()}
            claimed = self.claim(column)
            parts.append(
                Part(
                    component,
                    claimed["seconds"],
                    claimed["share"],
                    claimed["tail_seconds"],
                    claimed["tail_share"],
                    by_op,
                )
            )
        ops: dict[str, dict[str, float]] = {}
        for op, rows in self._op_rows.items():
            values = np.sort(self.duration[rows])
            failed = int((~self.frame.ok[rows]).sum())
            ops[op] = {
                "records": float(len(values)),
                "failed": float(failed),
                "mean_s": float(np.mean(values)),
                "p50_s": quantile_sorted(values, 0.5),
                "p95_s": quantile_sorted(values, 0.95),
                "p99_s": quantile_sorted(values, 0.99),
            }
        return Budget(self.frame.n, self.total, int(self.tail.sum()), self.tail_total, parts, ops)
