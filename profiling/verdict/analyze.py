"""The verdict on one run: its latency budget, the ranked causes, context, and targets.

:func:`analyze` splits every record's latency into parts (:mod:`.attribution`), lets each
cause claim the parts it explains (:mod:`.causes`, :mod:`.health`), ranks the findings
(:func:`.findings.rank`) and checks the targets. It reads a run folder and needs no Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datamodel.records import number
from datamodel.runfolder import MLX_PROBE, PROFILES, RECORDS, RUN_JSON, TIMELINE, RunData
from datamodel.stacks import self_time, strip_line_numbers
from profiling.verdict import causes, health, load, waiting
from profiling.verdict.attribution import SERVICE, Attribution, Budget
from profiling.verdict.causes import IDLE_LEAVES, ServiceClaims
from profiling.verdict.findings import Fact, Finding, rank
from profiling.verdict.goodput import goodput_table, run_slos
from profiling.verdict.server import server_queue
from profiling.verdict.targets import Target, TargetResult, check_targets
from profiling.verdict.waiting import wall_split

DEFAULT_MEMORY_LIMIT_MB = 500.0
"""Memory a replica may reach when neither the profile's budget nor a target says."""

Cause = Callable[[RunData, Attribution, ServiceClaims], list[Finding]]
CAUSES: dict[str, Cause] = {
    "adapter_thrash": causes.adapter_thrash,
    "index_thrash": causes.index_thrash,
    "slow_blas": causes.slow_blas,
    "oversubscription": causes.oversubscription,
    "hot_code": causes.hot_code,
    "waiting": waiting.waiting,
    "adapter_change": causes.adapter_change,
    "server_queue": server_queue,
    "queueing": load.queueing,
    "generator_lag": load.generator_lag,
    "transport": load.transport,
}
"""Latency causes, in the order they claim: service causes first (the queue is shared out
by the service time they claim), then what is left of the queue, then lag and transport."""
FRAME_CAUSES = frozenset({"hot_code", "waiting"})
"""Causes that claim one frame's seconds of a part, not the whole part: a part they touch
stays open to the others (a frame that runs and another that waits in the same part)."""
HEALTH = {
    "errors": health.errors,
    "memory_growth": health.memory_growth,
    "memory_budget": health.memory_budget,
}
"""Findings about errors and memory."""


@dataclass(frozen=True)
class Analysis:
    """Everything :func:`analyze` concluded about one run."""

    run_id: str
    """The run analysed."""
    budget: Budget | None
    """Where the latency went; ``None`` when the run has no records."""
    findings: list[Finding]
    """Causes, ranked: errors, then stability, then latency by the seconds they explain."""
    facts: list[Fact]
    """Context that explains no latency by itself."""
    targets: list[TargetResult]
    """Each target checked against the run."""
    notes: list[str] = field(default_factory=list)
    """What could not be analysed, and why."""
    unexplained: dict[str, Any] = field(default_factory=dict)
    """The latency no finding claims: seconds, share, tail_seconds, tail_share, and the
    budget parts no finding touches (``parts``, seconds each)."""
    goodput: dict[str, Any] = field(default_factory=dict)
    """Ops a second that kept every latency SLO, over the run, per op and per project
    (:func:`~profiling.verdict.goodput.goodput_table`)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the layout of ``analysis.json``)."""
        return {
            "run_id": self.run_id,
            "budget": self.budget.as_dict() if self.budget else None,
            "unexplained": dict(self.unexplained),
            "findings": [f.as_dict() for f in self.findings],
            "facts": [f.as_dict() for f in self.facts],
            "targets": [t.as_dict() for t in self.targets],
            "goodput": dict(self.goodput),
            "notes": list(self.notes),
        }


def _memory_limit(run: RunData, targets: list[Target]) -> float:
    budget = number(((run.run.get("spec") or {}).get("profile") or {}).get("memory_budget_mb"))
    if budget:
        return budget * 1.048576  # MiB -> MB
    limits = [t.threshold for t in targets if t.metric == "service_uss_mb_max"]
    return min(limits) if limits else DEFAULT_MEMORY_LIMIT_MB


def _hot_frames(run: RunData) -> list[Fact]:
    out = []
    for role, all_stacks in sorted((run.profiles or {}).items()):
        stacks = {
            s: n
            for s, n in strip_line_numbers(all_stacks).items()
            if not s.rsplit(";", 1)[-1].startswith(IDLE_LEAVES)
        }
        ranked = self_time(stacks)
        if not role.startswith("replica") or not ranked:
            continue
        top = ranked[:5]
        out.append(
            Fact(
                "hot_frames",
                f"{role}: {top[0].share:.0%} of busy samples in {top[0].frame}",
                {
                    "role": role,
                    "busy_samples": sum(stacks.values()),
                    "idle_samples": sum(all_stacks.values()) - sum(stacks.values()),
                    "top": [f._asdict() for f in top],
                },
                [f"{PROFILES}/{role}.collapsed"],
            )
        )
    return out


def unexplained(run: RunData, att: Attribution, found: list[Finding]) -> dict[str, Any]:
    """The latency no latency finding claims (findings' claims are capped at the whole),
    and the budget parts none of them touches."""
    latency = [f for f in found if f.tier == "latency"]
    seconds = max(att.total - sum(f.seconds for f in latency), 0.0)
    tail = max(att.tail_total - sum(f.tail_seconds for f in latency), 0.0)
    touched = {part for f in latency for part in f.explains}
    return {
        "seconds": seconds,
        "share": seconds / att.total if att.total > 0 else 0.0,
        "tail_seconds": tail,
        "tail_share": tail / att.tail_total if att.tail_total > 0 else 0.0,
        "parts": {
            p.component: p.seconds
            for p in att.budget().parts
            if p.component not in touched and p.seconds > 0
        },
    }


def _running(split: dict[str, float]) -> str:
    """How a part's request time was spent, from its wall samples ("" without them)."""
    total = sum(split.values())
    if total <= 0:
        return ""
    ran = (split.get("[cpu]", 0.0) + split.get("[native]", 0.0)) / total
    return f"; its requests ran (or had compute done for them) {ran:.0%} of that time"


def _context(run: RunData, att: Attribution, found: list[Finding]) -> list[Fact]:
    facts: list[Fact] = []
    explained = {part for f in found for part in f.explains}
    budget = att.budget()
    split = wall_split(run)
    for part in SERVICE:
        p = budget.part(part)
        if part not in explained and max(p.share, p.tail_share) >= 0.2:
            facts.append(
                Fact(
                    "unexplained",
                    f"{part} is {p.share:.0%} of latency ({p.tail_share:.0%} of the tail) "
                    f"and no cause was found in it{_running(split.get(part, {}))}",
                    {
                        "component": part,
                        "seconds": p.seconds,
                        "share": p.share,
                        "tail_share": p.tail_share,
                        "mean_s_by_op": p.by_op,
                        "wall_s_by_state": split.get(part),
                    },
                    [RECORDS],
                )
            )
    first = np.zeros(att.frame.n)
    seen: set[tuple[Any, Any, str]] = set()
    frame = att.frame
    replicas, projects = frame.column("replica"), frame.column("project")
    for i, misses in enumerate(frame.column("misses")):
        for cache in misses or []:
            key = (replicas[i], projects[i], cache)
            if key not in seen and cache in att.components:
                seen.add(key)
                first[i] += att.column(cache)[i]
    if first.any():
        facts.append(
            Fact(
                "cold_start",
                f"first loads of adapters and indexes took {float(first.sum()):.2f} s "
                f"({len(seen)} loads): the cost of a cold cache, paid once",
                {"loads": len(seen), "seconds": float(first.sum())},
                [RECORDS],
            )
        )
    for node, cpu in load.cpu_by_node(run).items():
        facts.append(
            Fact(
                "cpu",
                f"node {node}: CPU {cpu['mean_cpu_percent']:.0f}% on average, >= 90% in "
                f"{cpu['saturated_share']:.0%} of samples",
                {"node": node, **cpu},
                [TIMELINE],
            )
        )
    for stage in run.section("stages"):
        wall, used = number(stage.get("wall_seconds")), number(stage.get("cpu_seconds"))
        # CPU is known for the workers that finished the stage: per op of theirs.
        issued = number(stage.get("cpu_issued", stage.get("issued")))
        if wall > 0:
            per_op = used / issued * 1000 if issued else None
            facts.append(
                Fact(
                    "generator_cost",
                    f"stage {stage.get('stage')}: the load generator used {used / wall:.2f} "
                    "cores" + (f", {per_op:.2f} ms of CPU per operation" if per_op else ""),
                    {"stage": stage.get("stage"), "cores": used / wall, "cpu_ms_per_op": per_op},
                    [RUN_JSON],
                )
            )
    return facts + _hot_frames(run)


def analyze(run: RunData, targets: list[Target], targets_name: str = "file") -> Analysis:
    """The budget, ranked findings, context and targets of ``run`` (``targets_name``:
    which targets file, for the goodput table's source)."""
    notes = list(run.notes)
    kind = run.stack.get("kind")
    http = kind in ("mlx-lm", "openai")
    if http:
        notes.append(
            f"stack {kind} is a process loadlens did not host: no MLX counters "
            "(active/peak/cache memory) or mlx_probe.json; its CPU and memory are in the "
            "timeline under the role 'server'"
        )
    for missing, what in (
        (run.mlx_probe, MLX_PROBE),
        (run.timeline, TIMELINE),
        (run.profiles, f"{PROFILES}/*.collapsed"),
    ):
        if missing is None and not (http and what == MLX_PROBE):
            notes.append(f"no {what} in the run folder: findings that need it were skipped")
    slos = run_slos(run.run, targets, targets_name)
    good = goodput_table(run.records, slos, run.run.get("blocks"))
    if not run.records:
        return Analysis(run.run_id, None, [], [], check_targets(run, targets), notes, {}, good)
    att = Attribution(run.records)
    claims = ServiceClaims(att)
    found: list[Finding] = []
    facts: list[Fact] = []
    for cause in CAUSES.values():
        for finding in cause(run, att, claims):
            found.append(finding)
            if finding.kind not in FRAME_CAUSES:
                claims.explained.update(p for p in finding.explains if p != "queue")
    limit = _memory_limit(run, targets)
    for check in HEALTH.values():
        for item in check(run, att, limit):
            (found if isinstance(item, Finding) else facts).append(item)  # type: ignore[arg-type]
    facts += _context(run, att, found)
    return Analysis(
        run.run_id,
        att.budget(),
        rank(found),
        facts,
        check_targets(run, targets),
        notes,
        unexplained(run, att, found),
        good,
    )
