"""Queueing inside a server loadlens reaches over HTTP, estimated from what the client sees.

For ``mlx-lm`` and ``openai`` targets a request's whole client-side time is recorded as its
``model`` (or ``embed``) part and its queue wait as zero: the server's own queue is hidden
in it. This cause estimates that queue from the outside. A request's first token (its whole
reply where nothing streams) comes later than an idle server's by the time it waited behind
the requests in flight at its send. The idle server's time is the median first-token time
of the op among requests sent with no other in flight (the lowest at the fewest in flight,
at most one other, where too few were sent alone). The estimate counts only when it is
driven by load: first-token time rises with the number of requests in flight (a
significant Spearman rank correlation). What changing adapters already claimed for a
request (:func:`~profiling.verdict.causes.adapter_change`) is taken out of its estimate.

Little's law over the span then says what kind of limit it is: requests sent faster than
the server completes them, so that the number in flight grows over the run, are
**overload**; a server that streams about one request at a time while several are in
flight has a **batching** limit; otherwise requests meet one another in bursts:
**queueing**.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from datamodel.frame import Frame
from datamodel.runfolder import RECORDS, RunData
from profiling.verdict.attribution import Attribution, Vector
from profiling.verdict.causes import ServiceClaims, _batching
from profiling.verdict.findings import Finding, latency_finding, material

HTTP_KINDS = ("mlx-lm", "openai")
"""Target kinds whose server loadlens reaches over HTTP."""
IDLE_IN_FLIGHT = 1
"""Most other requests in flight at a request's send for it to count as served idle."""
MIN_IDLE = 3
"""Records an op needs for an idle first-token time, and sent with no other in flight for
it to be their median."""
MIN_RECORDS = 10
"""Records of HTTP stacks a server finding needs."""
LOAD_CORRELATION = 0.3
"""Rank correlation of first-token time with the requests in flight (of the requests in
flight with time) at or above which the queue is load-driven (the backlog grows)."""
LOAD_P = 0.01
"""Two-sided p-value under which such a correlation counts."""
OVERLOAD_RATIO = 1.1
"""Arrivals per second above this multiple of completions per second are overload."""
ONE_AT_A_TIME = 1.5
"""Requests streamed at a time, on average, below which a server does not batch."""
BATCH_IN_FLIGHT = 2.0
"""Requests in flight, on average, from which streaming one at a time is a batching limit."""


@dataclass(frozen=True)
class QueueEstimate:
    """The server's queue per record, as the client sees it, and the figures behind it."""

    queue: Vector
    """Seconds each record waited inside the server (zero for records it does not cover)."""
    in_flight: Vector
    """Other requests in flight when each record was sent."""
    idle_first_token: dict[str, float]
    """Per op: the first-token time of an idle server (:func:`idle_first_token`)."""
    idle_records: dict[str, int]
    """Per op: records behind that figure."""
    idle_alone: dict[str, bool]
    """Per op: whether that figure is the median of requests sent alone (else the lowest at
    the fewest in flight, an upper bound: the first requests of a run pay for connections
    and warm-up too)."""
    load_correlation: float
    """Rank correlation of first-token time (over the op's idle time) with in-flight count."""
    load_p: float
    """Its two-sided p-value."""
    subtracted: float = 0.0
    """Seconds already claimed by adapter changes, taken out of the estimate."""
    rows: NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    """The records covered: those of an HTTP stack."""

    @property
    def load_driven(self) -> bool:
        """Whether first-token time rises with the requests in flight."""
        return self.load_correlation >= LOAD_CORRELATION and self.load_p < LOAD_P


def http_rows(run: RunData, records: Sequence[Mapping[str, Any]]) -> NDArray[np.intp]:
    """Indices of the records of an HTTP stack: all of them for an ``mlx-lm`` or ``openai``
    run, else those that say what they asked a server to serve."""
    if run.stack.get("kind") in HTTP_KINDS:
        return np.arange(len(records), dtype=np.intp)
    return np.flatnonzero(Frame.of(records).served()).astype(np.intp)


def in_flight_at_send(sent: Vector, end: Vector) -> Vector:
    """For each request, how many others were in flight when it was sent: those sent at or
    before it whose reply had not ended."""
    started = np.searchsorted(np.sort(sent), sent, side="right")
    ended = np.searchsorted(np.sort(end), sent, side="right")
    mine_ended = (end <= sent).astype(np.int64)  # a request of no duration ended at its send
    return np.maximum(started - 1 - (ended - mine_ended), 0).astype(np.float64)


def idle_first_token(first: Vector, in_flight: Vector) -> tuple[float, int] | None:
    """The first-token time of an idle server and the records behind it.

    The median among requests sent with no other in flight, where there are
    :data:`MIN_IDLE` of them; else the lowest among those sent with the fewest in flight
    (at most :data:`IDLE_IN_FLIGHT` where there are any): each of those waited for some of
    the others, so the lowest is the closest to an idle server's. ``None`` with fewer than
    :data:`MIN_IDLE` requests in all.
    """
    if len(first) < MIN_IDLE:
        return None
    idle = first[in_flight == 0]
    if len(idle) >= MIN_IDLE:
        return float(np.median(idle)), len(idle)
    near = first[in_flight <= max(IDLE_IN_FLIGHT, float(in_flight.min()))]
    return float(near.min()), len(near)


def rank_correlation(x: Vector, y: Vector) -> tuple[float, float]:
    """Spearman's rank correlation of ``x`` and ``y`` and its two-sided p-value; ``(0.0,
    1.0)`` where either does not vary."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0, 1.0
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def estimate_queue(
    records: Sequence[Mapping[str, Any]],
    rows: NDArray[np.intp],
    *,
    adapter: Vector | None = None,
) -> QueueEstimate:
    """The server's queue per record of ``rows``: how much later than an idle server's its
    first token came (its whole reply where nothing streamed), within its service time,
    less what ``adapter`` (adapter changes) already claimed for it."""
    n = len(records)
    queue, in_flight = np.zeros(n), np.zeros(n)
    if len(rows) == 0:
        return QueueEstimate(queue, in_flight, {}, {}, {}, 0.0, 1.0, rows=rows)
    frame = Frame.of(records)
    sent = frame.value("sent")[rows]
    service = np.maximum(frame.value("service")[rows], 0.0)
    replied = (frame.value("planned") + frame.value("duration"))[rows]
    end = np.maximum(sent + service, replied)
    in_flight[rows] = in_flight_at_send(sent, end)
    ttft = frame.value("ttft")[rows]
    first = np.where(ttft != 0, ttft, frame.value("service")[rows])
    ok = frame.ok[rows] & (first > 0)
    ops = frame.labels("op")[rows]
    loaded, relative = [], []
    bases: dict[str, float] = {}
    counts: dict[str, int] = {}
    alone: dict[str, bool] = {}
    for op in sorted(set(ops[ok].tolist())):
        sel = ok & (ops == op)
        idle = idle_first_token(first[sel], in_flight[rows][sel])
        if idle is None or idle[0] <= 0:
            continue
        bases[op], counts[op] = idle
        alone[op] = int(np.count_nonzero(in_flight[rows][sel] == 0)) >= MIN_IDLE
        queue[rows[sel]] = np.minimum(np.maximum(first[sel] - idle[0], 0.0), service[sel])
        loaded.append(in_flight[rows][sel])
        relative.append(first[sel] / idle[0])
    correlation, p = (
        rank_correlation(np.concatenate(loaded), np.concatenate(relative)) if loaded else (0.0, 1.0)
    )
    subtracted = 0.0
    if adapter is not None:
        subtracted = float(np.minimum(queue, adapter).sum())
        queue = np.maximum(queue - adapter, 0.0)
    return QueueEstimate(queue, in_flight, bases, counts, alone, correlation, p, subtracted, rows)


def _rates(records: Sequence[Mapping[str, Any]], rows: NDArray[np.intp]) -> dict[str, float]:
    """Arrivals per second (planned sends), completions per second (ok replies), the mean
    latency and the in-flight count Little's law gives from them."""
    frame = Frame.of(records)
    planned, duration = frame.value("planned")[rows], frame.value("duration")[rows]
    done = np.sort((planned + duration)[frame.ok[rows]])
    sent_span = float(planned.max() - planned.min()) if len(rows) else 0.0
    done_span = float(done[-1] - done[0]) if len(done) > 1 else 0.0
    arrivals = (len(rows) - 1) / sent_span if sent_span > 0 else 0.0
    completions = (len(done) - 1) / done_span if done_span > 0 else 0.0
    latency = float(duration.mean()) if len(rows) else 0.0
    return {
        "arrivals_per_s": arrivals,
        "completions_per_s": completions,
        "mean_latency_s": latency,
        "little_in_flight": arrivals * latency,
    }


def backlog_trend(sent: Vector, in_flight: Vector) -> dict[str, float]:
    """Whether the requests in flight grow over the run: the rank correlation of the
    in-flight count with send time (and its p-value), and its growth per second from the
    first third of the requests (in send order) to the last."""
    order = np.argsort(sent, kind="stable")
    thirds = np.array_split(order, 3) if len(order) >= 3 else []
    growth = 0.0
    if thirds:
        first, last = thirds[0], thirds[2]
        dt = float(sent[last].mean() - sent[first].mean())
        rise = float(in_flight[last].mean() - in_flight[first].mean())
        growth = rise / dt if dt > 0 else 0.0
    correlation, p = rank_correlation(sent, in_flight)
    return {"correlation": correlation, "p": p, "growth_per_s": growth}


def server_queue(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Requests that waited inside a server loadlens reaches over HTTP: overload, a
    batching limit, or queueing, with the seconds of their ``model`` (or ``embed``) time
    that were waiting (see the module docstring)."""
    records = att.records
    rows = http_rows(run, records)
    if len(rows) < MIN_RECORDS:
        return []
    est = estimate_queue(records, rows, adapter=claims.by_cause.get("adapter_change"))
    compute = att.column("model") + att.column("embed")
    vec = np.minimum(est.queue, compute) if est.load_driven else np.zeros(len(records))
    claims.add("server_queue", vec)
    claim = att.claim(vec + claims.queue_share("server_queue"))
    if not est.load_driven or not material(claim):
        return []
    rates = _rates(records, rows)
    sent = att.frame.value("sent")[rows]
    trend = backlog_trend(sent, est.in_flight[rows])
    batch = _batching(att.frame, rows.tolist())
    streaming = batch["streaming"] if batch else None
    in_flight = batch["in_flight"] if batch else float(est.in_flight[rows].mean())
    ops = att.ops[rows]
    by_op = {
        op: {
            "idle_first_token_s": est.idle_first_token[op],
            "idle_records": est.idle_records[op],
            "idle_sent_alone": est.idle_alone[op],
            "records": int(np.count_nonzero(ops == op)),
            "mean_queue_s": float(vec[rows[ops == op]].mean()),
            "p50_in_flight": float(np.median(est.in_flight[rows[ops == op]])),
        }
        for op in sorted(est.idle_first_token)
    }
    main = max(by_op, key=lambda op: float(vec[rows[ops == op]].sum()))
    wait, idle = by_op[main]["mean_queue_s"], by_op[main]["idle_first_token_s"]
    share = f"{claim['share']:.0%} of latency ({claim['tail_share']:.0%} of the tail)"
    baseline = (
        "an idle server takes"
        if by_op[main]["idle_sent_alone"]
        else "it took with the fewest in flight"
    )
    waited = (
        f"{main} requests waited {wait:.2f} s on average for their first token beyond the "
        f"{idle:.2f} s {baseline}: {share}"
    )
    one_at_a_time = streaming is not None and streaming < ONE_AT_A_TIME
    streams = (
        f"it streamed {streaming:.1f} requests at a time while {in_flight:.1f} were in flight"
        if streaming is not None
        else f"{in_flight:.1f} requests were in flight on average"
    )
    arrivals, completions = rates["arrivals_per_s"], rates["completions_per_s"]
    if (
        arrivals > OVERLOAD_RATIO * completions
        and trend["correlation"] >= LOAD_CORRELATION
        and trend["p"] < LOAD_P
        and trend["growth_per_s"] > 0
    ):
        kind = "server_overload"
        title = (
            f"server overload: {arrivals:.1f} requests/s sent against {completions:.1f}/s "
            f"completed, requests in flight growing {trend['growth_per_s']:.1f}/s; {waited}"
        )
        advice = (
            f"send fewer than {completions:.1f} requests/s to this server, or add capacity: "
            "more server processes behind a router"
            + (f", or a server that batches requests ({streams})" if one_at_a_time else "")
        )
    elif one_at_a_time and in_flight >= BATCH_IN_FLIGHT:
        kind = "server_batching"
        title = f"server batching limit: {streams}; {waited}"
        advice = (
            "use a server that batches concurrent requests (continuous batching), or run "
            "more server processes behind a router"
        )
    else:
        kind = "server_queueing"
        title = f"server queueing: requests wait for one another in bursts ({streams}); {waited}"
        advice = "smooth the arrivals, or add server capacity for the bursts"
    explains = [c for c in ("embed", "model") if float(att.column(c)[vec > 0].sum()) > 0]
    return [
        latency_finding(
            kind,
            title,
            explains,
            claim,
            int(np.count_nonzero(vec > 0)),
            {
                "by_op": by_op,
                "requests": len(rows),
                "load_correlation": est.load_correlation,
                "load_p": est.load_p,
                "in_flight_mean": in_flight,
                "in_flight_max": float(est.in_flight[rows].max()),
                "streaming_mean": streaming,
                **rates,
                "backlog_correlation": trend["correlation"],
                "backlog_p": trend["p"],
                "backlog_growth_per_s": trend["growth_per_s"],
                "adapter_change_s_subtracted": est.subtracted,
                "queue_s": float(vec.sum()),
            },
            [RECORDS],
            advice,
            gain_s=claim["seconds"],
        )
    ]
