"""Findings about the run's health rather than its speed: errors and memory that keeps growing.

Errors rank first when their rate is material: a failing op's latency is not a latency.
Memory growth ranks next when it looks like a leak that reaches the memory limit soon: it
is measured on the replica's resident memory minus what its caches and MLX report holding
(from ``gauges.jsonl``), after a warm-up, and must still be growing at the end. The trend is
a Theil-Sen slope whose lower confidence bound must clear the leak rate: MLX's active memory
jumps by a whole buffer between two samples, so "net of caches" is a noisy, two-valued
series whose least-squares slope over a short run reads as a leak by chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from datamodel.frame import Frame, error_counts, span
from datamodel.records import error_kind, number
from datamodel.runfolder import GAUGES, RECORDS, RUN_JSON, TIMELINE, RunData
from profiling.verdict.attribution import Attribution
from profiling.verdict.findings import Fact, Finding, stability_finding

MATERIAL_ERROR_RATE = 0.01
"""Error rate from which errors get their own tier, ranked before every latency cause."""
WARMUP = 0.25
"""Share of the run's span left out before memory slopes are fitted (caches filling)."""
LEAK_MB_PER_MIN = 5.0
"""Growth rate (unexplained by caches) from which memory growth counts as a leak: the lower
bound of the slope's one-sided 99% confidence interval must reach it."""
LEAK_MIN_GROWTH_MB = 20.0
"""Growth (last quarter against first, both net of caches and resident) below which memory
is not called a leak however steady: allocators and imports creep by a few MB in any run."""
TREND_CONFIDENCE = 0.98
"""Two-sided confidence of the Theil-Sen interval whose lower end is the one-sided 99% bound
of the slope."""
HORIZON_MIN = 60.0
"""A leak that reaches the memory limit within this many minutes ranks as a stability risk."""
MB = 1_000_000


SERVER_LOG = "server.log"
"""A managed server's output in the run folder (``target.log`` before the rename)."""
OLD_SERVER_LOG = "target.log"


def errors(run: RunData, att: Attribution, limit_mb: float) -> list[Finding | Fact]:
    """Failed operations: a finding of their own tier when the rate is material (and always
    when the target's server exited mid-run)."""
    frame = Frame.of(run.records)
    failed_rows = np.flatnonzero(~frame.ok)
    failed = [run.records[i] for i in failed_rows.tolist()]
    target = run.stack
    exited = bool(target.get("exited_mid_run"))
    if not failed and not exited:
        return []
    rate = len(failed) / len(run.records) if run.records else 0.0
    kinds = error_counts(run.records)
    by_op: dict[str, int] = {}
    for r in failed:
        by_op[str(r.get("op"))] = by_op.get(str(r.get("op")), 0) + 1
    top = max(kinds.items(), key=lambda kv: (kv[1], kv[0]))[0] if kinds else "none"
    example = next((str(r.get("error")) for r in failed if error_kind(r) == top), "")
    evidence = {
        "records": len(run.records),
        "errors": len(failed),
        "error_rate": rate,
        "by_kind": kinds,
        "by_op": by_op,
        "example": example[:300],
    }
    title = f"{len(failed)} of {len(run.records)} ops failed ({rate:.1%}), mostly {top}"
    suggestion = f"read the {top} errors in {RECORDS} (e.g. {example[:120]})"
    files = [RECORDS]
    if exited:
        evidence["server_exit_code"] = target.get("exit_code")
        log = (
            SERVER_LOG
            if (run.path / SERVER_LOG).exists() or not (run.path / OLD_SERVER_LOG).exists()
            else OLD_SERVER_LOG
        )
        title = (
            f"the stack's server exited mid-run (exit code {target.get('exit_code')}): "
            f"{title[0].lower()}{title[1:]}"
        )
        suggestion = f"read why it stopped in {log}; {suggestion}"
        files = [RECORDS, log]
    elif rate < MATERIAL_ERROR_RATE:
        return [Fact("errors", title, evidence, [RECORDS])]
    failed_s = att.column("failed")
    claim = att.claim(failed_s)
    return [
        Finding(
            kind="errors",
            title=title,
            tier="errors",
            explains=["failed"],
            seconds=claim["seconds"],
            share=claim["share"],
            tail_seconds=claim["tail_seconds"],
            tail_share=claim["tail_share"],
            support=len(failed),
            evidence=evidence,
            files=files,
            suggestion=suggestion,
            by_op=claim["by_op"],
        )
    ]


def memory_budget(run: RunData, att: Attribution, limit_mb: float) -> list[Finding | Fact]:
    """Each replica's peak memory against the profile's budget, when it sets one."""
    profile = (run.run.get("spec") or {}).get("profile") or {}
    budget = number(profile.get("memory_budget_mb")) * 1.048576  # MiB -> MB
    if not budget:
        return []
    out: list[Finding | Fact] = []
    peaks: dict[str, float] = {}
    for s in run.samples("replica"):
        value = number(s.get("uss")) or number(s.get("rss"))
        role = str(s.get("role"))
        peaks[role] = max(peaks.get(role, 0.0), value / MB)
    shares = {
        str(st.get("replica")): (st.get("memory_budget") or {})
        for st in run.section("replica_stats")
    }
    for role, peak in sorted(peaks.items()):
        evidence = {
            "role": role,
            "peak_mb": peak,
            "budget_mb": budget,
            "caches": shares.get(role.removeprefix("replica-"), {}),
        }
        title = f"{role}: peak memory {peak:.0f} MB against a budget of {budget:.0f} MB"
        if peak <= budget:
            out.append(Fact("memory_budget", title + " (within)", evidence, [TIMELINE]))
            continue
        out.append(
            stability_finding(
                "memory_over_budget",
                title,
                1,
                evidence,
                [TIMELINE, RUN_JSON],
                "the base model and embedder alone may not fit: raise memory_budget_mb, "
                "or lower the caches (adapter_cache_bytes, index_cache_count)",
            )
        )
    return out


def _slope_per_min(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Theil-Sen slope of ``v`` against ``t`` (per minute) and the lower bound of its one-sided
    99% confidence interval (Sen 1968: ranks of the pairwise slopes, Kendall's S variance
    with its correction for ties, as ``scipy.stats.theilslopes`` computes it)."""
    if len(t) < 3 or float(np.ptp(t)) <= 0:
        return 0.0, 0.0
    fit = stats.theilslopes(v, t, alpha=TREND_CONFIDENCE)
    low = float(fit.low_slope)
    return float(fit.slope) * 60, (low * 60 if np.isfinite(low) else -np.inf)


def _growth(v: np.ndarray) -> float:
    """The last quarter's mean less the first quarter's."""
    quarter = max(len(v) // 4, 1)
    return float(v[-quarter:].mean() - v[:quarter].mean())


def _explained_mb(gauges: list[dict[str, Any]], t: np.ndarray) -> np.ndarray:
    """Bytes the replica's caches and MLX account for, at each time in ``t`` (nearest before)."""
    if not gauges:
        return np.zeros(len(t))
    times = np.array([number(g.get("t")) for g in gauges])
    held = (
        np.array(
            [
                number(g.get("mlx_active"))
                + number(g.get("mlx_cache"))
                + number(g.get("index_bytes"))
                for g in gauges
            ]
        )
        / MB
    )
    at = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1)
    return held[at]


def memory_growth(run: RunData, att: Attribution, limit_mb: float) -> list[Finding | Fact]:
    """Replicas whose memory, less what caches hold, grows through the run and still grows."""
    window = span(run.records)
    if run.timeline is None or window is None:
        return []
    start = window[0] + WARMUP * (window[1] - window[0])
    out: list[Finding | Fact] = []
    by_role: dict[str, list[dict[str, Any]]] = {}
    for s in run.samples("replica"):
        if s.get("rss") is not None and start <= number(s.get("t")) <= window[1]:
            by_role.setdefault(str(s.get("role")), []).append(s)
    for role, samples in sorted(by_role.items()):
        t = np.array([number(s.get("t")) for s in samples])
        rss = np.array([number(s.get("rss")) for s in samples]) / MB
        if len(t) < 8 or float(np.ptp(t)) < 10:
            continue
        gauges = [g for g in run.gauges or [] if f"replica-{g.get('replica')}" == role]
        unexplained = rss - _explained_mb(sorted(gauges, key=lambda g: number(g.get("t"))), t)
        slope, low = _slope_per_min(t, unexplained)
        half = len(t) // 2
        late, _ = _slope_per_min(t[half:], unexplained[half:])
        growth = _growth(unexplained)
        if (
            low < LEAK_MB_PER_MIN
            or growth < LEAK_MIN_GROWTH_MB
            or _growth(rss) < LEAK_MIN_GROWTH_MB
        ):
            continue
        still = late >= 0.5 * slope
        minutes = (limit_mb - float(rss[-1])) / slope if slope > 0 else float("inf")
        evidence = {
            "role": role,
            "samples": len(t),
            "span_s": float(np.ptp(t)),
            "slope_mb_per_min": slope,
            "late_slope_mb_per_min": late,
            "growth_mb": growth,
            "slope_low_mb_per_min": low,
            "rss_last_mb": float(rss[-1]),
            "limit_mb": limit_mb,
            "minutes_to_limit": max(minutes, 0.0),
            "net_of_caches": bool(gauges),
        }
        verdict = "and is still growing" if still else "but flattens late (warm-up?)"
        title = (
            f"{role}: memory beyond its caches grows {slope:.0f} MB/min {verdict}; "
            f"{float(rss[-1]):.0f} MB now, limit {limit_mb:.0f} MB"
        )
        if not still or minutes > HORIZON_MIN:
            out.append(Fact("memory_growth", title, evidence, [TIMELINE, GAUGES]))
            continue
        out.append(
            stability_finding(
                "memory_leak",
                title + f" (reached in {max(minutes, 0):.0f} min)",
                len(t),
                evidence,
                [TIMELINE, GAUGES],
                "compare tracemalloc diffs between snapshots (--trace-python) to find "
                "what keeps allocating; caches are already subtracted here",
            )
        )
    return out
