"""Causes in the load rather than the service: queue wait no service cause explains
(overload, users outnumbering replicas, routing imbalance, bursts), the load generator's
own lateness, and replies slow to come back."""

from __future__ import annotations

import numpy as np

from datamodel.records import number
from datamodel.runfolder import RECORDS, RUN_JSON, TIMELINE, RunData
from profiling.verdict.attribution import Attribution
from profiling.verdict.causes import BUSY, ServiceClaims
from profiling.verdict.findings import Finding, latency_finding, material


def cpu_by_node(run: RunData) -> dict[str, dict[str, float]]:
    """Per node (id shortened): mean CPU percent and the share of samples at >= 90%."""
    by_node: dict[str, list[float]] = {}
    for s in run.samples("system"):
        by_node.setdefault(str(s.get("node"))[:12], []).append(number(s.get("cpu_percent")))
    return {
        node: {
            "mean_cpu_percent": float(np.mean(v)),
            "saturated_share": sum(1 for c in v if c >= 90) / len(v),
        }
        for node, v in by_node.items()
        if v
    }


def queueing(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Queue wait that no service cause explains: the load on the replicas itself."""
    left = np.maximum(claims.unclaimed_queue(), 0.0)
    claim = att.claim(left)
    if not material(claim):
        return []
    busy = att.utilisation()
    rates = att.arrival_rates()
    capacity = att.capacities()
    queue = att.column("queue")
    replicas = {
        str(k): {
            "utilisation": busy.get(k, 0.0),
            "arrivals_per_s": rates.get(k, 0.0),
            "capacity_per_s": capacity.get(k),
            "queue_s": float(queue[rows].sum()),
            "records": len(rows),
        }
        for k, rows in sorted(att.by_replica().items())
    }
    hot = max(busy, key=lambda k: busy[k]) if busy else 0
    cold = min(busy, key=lambda k: busy[k]) if busy else 0
    cpu = cpu_by_node(run)
    share = f"{claim['share']:.0%} of latency ({claim['tail_share']:.0%} of the tail)"
    if len(busy) > 1 and busy[hot] >= 0.7 and busy[cold] <= 0.5 * busy[hot]:
        kind = "routing_imbalance"
        title = (
            f"routing imbalance: replica {hot} busy {busy[hot]:.0%} while replica {cold} "
            f"is busy {busy[cold]:.0%}; waiting for replica {hot} is {share}"
        )
        advice = (
            "spread the hottest projects over replicas (affinity routing by traffic), "
            f"or give replica {hot}'s projects more replicas"
        )
    elif busy and busy[hot] >= BUSY and _closed_loop(run):
        kind = "concurrency"
        title = (
            f"users outnumber replicas: replica {hot} is busy {busy[hot]:.0%} serving "
            f"concurrent users who wait for one another; waiting is {share}"
        )
        advice = "add replicas (or fewer concurrent users per replica) to cut the waiting"
    elif busy and busy[hot] >= BUSY:
        kind = "overload"
        arrivals, cap = rates.get(hot, 0.0), capacity.get(hot) or 0.0
        title = (
            f"overload: {arrivals:.1f} arrivals/s planned for replica {hot} against a "
            f"capacity of {cap:.1f}/s (busy {busy[hot]:.0%}); waiting in queue is {share}"
        )
        saturated = [n for n, v in cpu.items() if v["saturated_share"] > 0.5]
        advice = "lower the arrival rate, or add replicas" + (
            " on other nodes (this node's CPU is saturated)" if saturated else ""
        )
    else:
        kind = "queueing"
        title = f"queueing: requests wait behind one another in bursts; {share}"
        advice = "add replicas or smooth the arrivals; replicas are not saturated on average"
    return [
        latency_finding(
            kind,
            title,
            ["queue"],
            claim,
            int(np.count_nonzero(left > 0)),
            {
                "replicas": replicas,
                "cpu_by_node": cpu,
                "queue_s": float(queue.sum()),
                "explained_by_service_causes_s": float(queue.sum() - left.sum()),
            },
            [RECORDS, TIMELINE],
            advice,
        )
    ]


def _closed_loop(run: RunData) -> bool:
    """Whether every stage of the run was closed loop (users wait for their replies)."""
    profile = (run.run.get("spec") or {}).get("profile") or {}
    modes = {str(s.get("mode")) for s in profile.get("stages") or [] if isinstance(s, dict)}
    return modes == {"closed"}


def generator_lag(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Operations the load generator sent later than planned (open loop)."""
    lag = att.column("lag")
    claim = att.claim(lag)
    if not material(claim):
        return []
    stages = run.section("stages")
    cores = {
        str(s.get("stage")): number(s.get("cpu_seconds")) / number(s.get("wall_seconds"))
        for s in stages
        if number(s.get("wall_seconds")) > 0
    }
    late = lag[lag > 0.001]
    return [
        latency_finding(
            "generator_lag",
            f"the load generator fell behind its schedule: sending late is {claim['share']:.0%} "
            "of latency (counted, not hidden: latency starts at the planned time)",
            ["lag"],
            claim,
            int(late.size),
            {
                "lag_p50_s": float(np.median(lag)),
                "lag_max_s": float(lag.max()),
                "late_records": int(late.size),
                "generator_cores_by_stage": cores,
            },
            [RECORDS, RUN_JSON],
            "use more generator workers (--workers), or run them on a node the service does "
            "not use",
        )
    ]


def transport(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Time between the service finishing and the generator having the reply."""
    back = att.column("transport")
    claim = att.claim(back)
    if max(claim["share"], claim["tail_share"]) < 0.1:
        return []
    return [
        latency_finding(
            "transport",
            f"replies take long to come back: {claim['share']:.0%} of latency after the service "
            "finished",
            ["transport"],
            claim,
            int(np.count_nonzero(back)),
            {"transport_p50_s": float(np.median(back)), "transport_max_s": float(back.max())},
            [RECORDS],
            "a busy generator or raylet delays replies: fewer generator workers per node, or "
            "smaller replies",
        )
    ]
