"""Bottleneck analysis of a finished run: ranked findings with evidence, and targets.

Each detector is a small pure function ``RunData -> list[Finding | str]``: findings, plus
notes (strings) where its input file is missing. :data:`DETECTORS` lists them by name;
:func:`analyze` runs them all and ranks the findings by ``severity_share`` — the share of
latency or of a resource the finding accounts for.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from profiling.flamegraph import self_time, strip_line_numbers
from profiling.rundata import MLX_PROBE, PROFILES, RECORDS, RUN_JSON, TIMELINE, RunData, number
from profiling.targets import MB, Target, TargetResult, check_targets

CPU_SATURATED = 90.0
"""System cpu_percent at or above which a sample counts as saturated."""
SERVICE_STAGES = ("switch", "embed", "search", "model")
"""Service-side stages of a record, in order."""
SLOW_GFLOPS = 20.0
"""Matmul speed below which the BLAS counts as slow."""
GROWTH_MB_PER_MIN = 5.0
"""Memory slope above which a replica counts as growing."""


@dataclass(frozen=True)
class Finding:
    """One bottleneck or fact about a run, with the numbers behind it."""

    kind: str
    """Detector name, e.g. ``queueing``."""
    title: str
    """One line saying what was found."""
    severity_share: float
    """Share (0..1) of latency or of a resource this accounts for; the ranking key."""
    evidence: dict[str, Any]
    """The numbers behind it."""
    files: list[str]
    """Run-folder files the numbers came from."""
    suggestion: str
    """What to try."""


@dataclass(frozen=True)
class Analysis:
    """Everything :func:`analyze` concluded about one run."""

    run_id: str
    """The run analysed."""
    findings: list[Finding]
    """Findings, most severe first."""
    targets: list[TargetResult]
    """Each target checked against the run."""
    notes: list[str] = field(default_factory=list)
    """What could not be analysed, and why."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run_id": self.run_id,
            "findings": [asdict(f) for f in self.findings],
            "targets": [t.as_dict() for t in self.targets],
            "notes": list(self.notes),
        }


Detector = Callable[[RunData], list[Finding | str]]


def _missing(detector: str, file: str) -> str:
    return f"{detector}: skipped, no {file} in the run folder"


def _module(frame: str) -> str:
    _, sep, rest = frame.rpartition(" (")
    return rest.rstrip(")") if sep else frame


IDLE_LEAVES = ("Worker.main_loop (ray/_private/worker.py",)
"""Leaf frames where a Ray worker waits for work: py-spy cannot tell this blocking C++ call
from work, so these samples are left out of the hot-frame ranking (and counted as idle)."""


def _busy(stacks: dict[str, int]) -> dict[str, int]:
    return {s: n for s, n in stacks.items() if not s.rsplit(";", 1)[-1].startswith(IDLE_LEAVES)}


def hot_frames(run: RunData) -> list[Finding | str]:
    """Top self-time frames of each replica's py-spy profile (idle waiting left out)."""
    if run.profiles is None:
        return [_missing("hot frames", f"{PROFILES}/*.collapsed")]
    out: list[Finding | str] = []
    for role, all_stacks in sorted(run.profiles.items()):
        stacks = _busy(strip_line_numbers(all_stacks))
        idle = sum(all_stacks.values()) - sum(stacks.values())
        ranked = self_time(stacks)
        if not role.startswith("replica") or not ranked:
            continue
        top = ranked[:5]
        lead = top[0]
        out.append(Finding(
            kind="hot_frames",
            title=f"{role}: {lead.share:.0%} of samples in {lead.frame}",
            severity_share=lead.share,
            evidence={"role": role, "samples": sum(stacks.values()), "idle_samples": idle,
                      "top": [f._asdict() for f in top]},
            files=[f"{PROFILES}/{role}.collapsed"],
            suggestion=f"look at {_module(lead.frame)}: it holds the most self time",
        ))  # fmt: skip
    return out


def cpu_saturation(run: RunData) -> list[Finding | str]:
    """Nodes whose CPUs were at or above 90% for more than half of the samples."""
    if run.timeline is None:
        return [_missing("cpu saturation", TIMELINE)]
    by_node: dict[str, list[float]] = {}
    for s in run.samples("system"):
        by_node.setdefault(str(s.get("node")), []).append(number(s.get("cpu_percent")))
    out: list[Finding | str] = []
    for node, cpu in sorted(by_node.items()):
        share = sum(1 for c in cpu if c >= CPU_SATURATED) / len(cpu)
        if share > 0.5:
            out.append(Finding(
                kind="cpu_saturation",
                title=f"node {node[:12]}: CPU >= {CPU_SATURATED:.0f}% in {share:.0%} of samples",
                severity_share=share,
                evidence={"node": node, "samples": len(cpu), "saturated_share": share,
                          "mean_cpu_percent": statistics.fmean(cpu)},
                files=[TIMELINE],
                suggestion="run fewer replicas or generator workers per node, or add nodes",
            ))  # fmt: skip
    return out


def queueing(run: RunData) -> list[Finding | str]:
    """Ops that spend more than 30% of their end-to-end time queueing."""
    sums: dict[str, list[float]] = {}
    for r in run.ok_records():
        wait_duration = sums.setdefault(str(r.get("op")), [0.0, 0.0, 0])
        wait_duration[0] += number(r.get("wait"))
        wait_duration[1] += number(r.get("duration"))
        wait_duration[2] += 1
    out: list[Finding | str] = []
    for op, (wait, duration, count) in sorted(sums.items()):
        share = wait / duration if duration > 0 else 0.0
        if share > 0.3:
            out.append(Finding(
                kind="queueing",
                title=f"{op}: {share:.0%} of end-to-end time is queue wait",
                severity_share=min(share, 1.0),
                evidence={"op": op, "records": int(count), "wait_s": wait,
                          "duration_s": duration, "wait_share": share},
                files=[RECORDS],
                suggestion="add replicas, lower the request rate, or route projects by affinity "
                           "so fewer requests wait behind a busy replica",
            ))  # fmt: skip
    return out


def adapter_thrash(run: RunData) -> list[Finding | str]:
    """Replicas whose adapter cache misses often enough to cost service time."""
    stats = run.section("replica_stats")
    if not stats:
        return [f"adapter thrash: skipped, no replica_stats in {RUN_JSON}"]
    out: list[Finding | str] = []
    config = run.service_config()
    for entry in stats:
        adapters = entry.get("adapters") or {}
        hits, misses = number(adapters.get("hits")), number(adapters.get("misses"))
        lookups = hits + misses
        if lookups < 10 or misses / lookups <= 0.2:
            continue
        loads = [number(s) for s in adapters.get("load_seconds") or []]
        cost = misses * (statistics.median(loads) if loads else 0.0)
        replica = entry.get("replica")
        service = sum(number(r.get("service")) for r in run.records if r.get("replica") == replica)
        out.append(Finding(
            kind="adapter_thrash",
            title=f"replica {replica}: adapter cache misses {misses / lookups:.0%} of lookups",
            severity_share=min(cost / service, 1.0) if service > 0 else 0.0,
            evidence={"replica": replica, "hits": int(hits), "misses": int(misses),
                      "miss_ratio": misses / lookups, "evictions": adapters.get("evictions"),
                      "median_load_s": cost / misses, "miss_cost_s": cost, "service_s": service,
                      "adapter_cache_count": config.get("adapter_cache_count"),
                      "adapter_cache_bytes": config.get("adapter_cache_bytes")},
            files=[RUN_JSON, RECORDS],
            suggestion="raise adapter_cache_count / adapter_cache_bytes so the working set of "
                       "projects stays resident, or route fewer projects to each replica",
        ))  # fmt: skip
    return out


def _slope_per_min(points: list[tuple[float, float]]) -> float:
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60 if var > 0 else 0.0


def _memory_series(samples: list[dict[str, Any]]) -> tuple[str, list[tuple[float, float]]]:
    uss = [(number(s.get("t")), number(s["uss"]) / MB) for s in samples if s.get("uss") is not None]
    if len(uss) >= 3:
        return "uss", uss
    return "rss", [(number(s.get("t")), number(s.get("rss")) / MB) for s in samples]


def memory_growth(run: RunData) -> list[Finding | str]:
    """Replicas whose memory keeps growing through the longest stage."""
    if run.timeline is None:
        return [_missing("memory growth", TIMELINE)]
    windows = run.stage_windows()
    stage, (lo, hi) = max(windows.items(), key=lambda kv: kv[1][1] - kv[1][0],
                          default=("whole run", (float("-inf"), float("inf"))))  # fmt: skip
    by_role: dict[str, list[dict[str, Any]]] = {}
    for s in run.samples("replica"):
        if lo <= number(s.get("t")) <= hi:
            by_role.setdefault(f"{s.get('role')} pid {s.get('pid')}", []).append(s)
    out: list[Finding | str] = []
    for role, samples in sorted(by_role.items()):
        kind, points = _memory_series(samples)
        span = points[-1][0] - points[0][0] if points else 0.0
        if len(points) < 3 or span < 60:
            continue
        third = max(len(points) // 3, 1)
        first = statistics.fmean(v for _, v in points[:third])
        last = statistics.fmean(v for _, v in points[-third:])
        slope, tail_slope = _slope_per_min(points), _slope_per_min(points[len(points) // 2 :])
        growth = (last - first) / first if first > 0 else 0.0
        if slope <= GROWTH_MB_PER_MIN or growth <= 0.05:
            continue
        verdict = "possible leak" if tail_slope >= slope / 2 else "warm-up"
        out.append(Finding(
            kind="memory_growth",
            title=f"{role}: {kind.upper()} grows {slope:.1f} MB/min in stage {stage} ({verdict})",
            severity_share=min(growth, 1.0),
            evidence={"role": role, "stage": stage, "metric": kind, "samples": len(points),
                      "span_s": span, "slope_mb_per_min": slope,
                      "second_half_slope_mb_per_min": tail_slope, "first_third_mb": first,
                      "last_third_mb": last, "growth": growth, "verdict": verdict},
            files=[TIMELINE, RECORDS],
            suggestion="compare tracemalloc diffs in snapshots.json across stages; check caches "
                       "that never evict" if verdict == "possible leak" else
                       "memory flattens late in the stage: likely caches filling; confirm with a "
                       "longer stage",
        ))  # fmt: skip
    return out


def _stage_totals(records: list[dict[str, Any]]) -> dict[str, float]:
    totals = dict.fromkeys(SERVICE_STAGES, 0.0)
    for r in records:
        for name, seconds in (r.get("stages") or {}).items():
            if name in totals:
                totals[name] += number(seconds)
    return totals


def slow_blas(run: RunData) -> list[Finding | str]:
    """Replicas whose MLX matmul runs on reference BLAS or below 20 GFLOP/s."""
    if run.mlx_probe is None:
        return [_missing("slow BLAS", MLX_PROBE)]
    slow = [p for p in run.mlx_probe if p.get("blas_kind") == "reference"
            or number(p.get("matmul_gflops")) < SLOW_GFLOPS]  # fmt: skip
    if not slow:
        return []
    ok = run.ok_records()
    totals, service = _stage_totals(ok), sum(number(r.get("service")) for r in ok)
    share = (totals["model"] + totals["embed"]) / service if service > 0 else 0.0
    gflops = min(number(p.get("matmul_gflops")) for p in slow)
    return [Finding(
        kind="slow_blas",
        title=f"MLX matmul at {gflops:.1f} GFLOP/s ({slow[0].get('blas_kind')} BLAS)",
        severity_share=min(share, 1.0),
        evidence={"replicas": [p.get("replica") for p in slow], "matmul_gflops": gflops,
                  "blas_kind": sorted({str(p.get("blas_kind")) for p in slow}),
                  "blas": sorted({b for p in slow for b in p.get("blas") or []}),
                  "model_embed_share": share},
        files=[MLX_PROBE, RECORDS],
        suggestion="use the `optimized` configuration (OpenBLAS via LD_PRELOAD, "
                   "`--config optimized`); on Debian/Ubuntu: apt-get install libopenblas0-pthread",
    )]  # fmt: skip


def generator_cost(run: RunData) -> list[Finding | str]:
    """Stages whose load generator burned more than a tenth of a core."""
    stages = run.section("stages")
    if not stages:
        return [f"generator cost: skipped, no stages in {RUN_JSON}"]
    cores = {str(s.get("stage")): number(s.get("cpu_seconds")) / number(s.get("wall_seconds"))
             for s in stages if number(s.get("wall_seconds")) > 0}  # fmt: skip
    busy = {stage: c for stage, c in cores.items() if c > 0.1}
    if not busy:
        return []
    stage, worst = max(busy.items(), key=lambda kv: (kv[1], kv[0]))
    cpus = run.cpus or 1
    return [Finding(
        kind="generator_cost",
        title=f"load generator used {worst:.2f} cores in stage {stage}",
        severity_share=min(worst / cpus, 1.0),
        evidence={"stage": stage, "cores": worst, "cpus": cpus, "cores_by_stage": cores},
        files=[RUN_JSON],
        suggestion="the generator competes with the service for CPU: use fewer generator "
                   "workers, a longer think time, or run the generator on another node",
    )]  # fmt: skip


def errors(run: RunData) -> list[Finding | str]:
    """Failed operations, by error kind and op."""
    failed = [r for r in run.records if not r.get("ok")]
    if not failed:
        return []
    by_kind: dict[str, int] = {}
    by_op: dict[str, int] = {}
    for r in failed:
        kind = str(r.get("error") or "unknown").split(":", 1)[0]
        by_kind[kind] = by_kind.get(kind, 0) + 1
        by_op[str(r.get("op"))] = by_op.get(str(r.get("op")), 0) + 1
    rate = len(failed) / len(run.records)
    top = max(by_kind.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return [Finding(
        kind="errors",
        title=f"{len(failed)} of {len(run.records)} ops failed ({rate:.1%}), mostly {top}",
        severity_share=rate,
        evidence={"records": len(run.records), "errors": len(failed), "error_rate": rate,
                  "by_kind": dict(sorted(by_kind.items())), "by_op": dict(sorted(by_op.items()))},
        files=[RECORDS],
        suggestion=f"read the {top} errors in {RECORDS}; a failing op also skews its latency",
    )]  # fmt: skip


def stage_breakdown(run: RunData) -> list[Finding | str]:
    """Where the service time of ok analyze ops goes (switch/embed/search/model)."""
    records = run.ok_records("analyze")
    service = sum(number(r.get("service")) for r in records)
    if not records or service <= 0:
        return []
    shares = {k: v / service for k, v in _stage_totals(records).items()}
    dominant = max(SERVICE_STAGES, key=lambda k: shares[k])
    return [Finding(
        kind="stage_breakdown",
        title=f"analyze: {shares[dominant]:.0%} of service time is in {dominant}",
        severity_share=min(shares[dominant], 1.0),
        evidence={"records": len(records), "service_s": service, "shares": shares},
        files=[RECORDS],
        suggestion=f"speed up {dominant} first: it dominates analyze service time",
    )]  # fmt: skip


DETECTORS: dict[str, Detector] = {
    "hot_frames": hot_frames,
    "cpu_saturation": cpu_saturation,
    "queueing": queueing,
    "adapter_thrash": adapter_thrash,
    "memory_growth": memory_growth,
    "slow_blas": slow_blas,
    "generator_cost": generator_cost,
    "errors": errors,
    "stage_breakdown": stage_breakdown,
}
"""Every detector :func:`analyze` runs, by name."""


def rank(findings: list[Finding]) -> list[Finding]:
    """Findings by ``severity_share`` descending, ties by kind then title."""
    return sorted(findings, key=lambda f: (-f.severity_share, f.kind, f.title))


def analyze(run: RunData, targets: list[Target]) -> Analysis:
    """Run every detector on ``run`` and check ``targets``."""
    findings: list[Finding] = []
    notes = list(run.notes)
    for detector in DETECTORS.values():
        for item in detector(run):
            if isinstance(item, Finding):
                findings.append(item)
            else:
                notes.append(item)
    return Analysis(run.run_id, rank(findings), check_targets(run, targets), notes)
