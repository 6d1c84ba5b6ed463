"""``python -m workloads.bench verdicts --interleaved``: how well interleaved A/B
comparisons see changes on this machine, and how often they cry wolf.

One real interleaved A/A session (both sides the same configuration, each with its own
replicas, in one Ray session) of many block pairs. Trials then draw ``k`` of its pairs at
random (seeded) and compare them: as they are (A/A: any flagged row is a false alarm),
and with side B's every operation made 10% and 5% slower (power). The load a trial stands
for is ``2 * k * block_s`` seconds. Each trial's pairs overlap other trials' (one session
is the source), so the shares are estimates from one stretch of this machine's life, not
independent sessions.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
from pathlib import Path
from typing import Any

from datamodel.records import number
from datamodel.runfolder import RunData
from profiling.verdict.compare import compare_runs

CHANGES = {"10%": 1.10, "5%": 1.05}
"""Planted slowdowns of every operation of side B."""


def record_session(args: argparse.Namespace, results: Path) -> Path:
    """One interleaved A/A session; its A/B folder."""
    from workloads.load.spec import load_profile
    from workloads.runs.interleave import execute_interleaved
    from workloads.runs.runner import RunSpec
    from workloads.stack.config import load_config

    profile = load_profile(args.profile).with_overrides(duration_s=args.duration)
    spec = RunSpec(
        profile=profile, config=load_config(args.config), results_dir=results, quiet=True
    )
    outcome = execute_interleaved(spec, spec, block_s=args.block_s)
    if outcome.status != "completed":
        raise RuntimeError(f"interleaved A/A {outcome.ab_dir} ended {outcome.status}")
    return outcome.ab_dir


def sides(ab_dir: Path) -> tuple[RunData, RunData]:
    """The baseline and candidate sides of an interleaved A/B folder."""
    import json

    info = json.loads((ab_dir / "ab.json").read_text())
    return (
        RunData.load(ab_dir / info["sides"]["baseline"]),
        RunData.load(ab_dir / info["sides"]["candidate"]),
    )


def keep(run: RunData, pairs: set[int], slower: float = 1.0) -> RunData:
    """``run`` with only the blocks of ``pairs`` (and every duration x ``slower``)."""
    info = {**run.run, "blocks": [b for b in run.run["blocks"] if b["pair"] in pairs]}
    records = run.records
    if slower != 1.0:
        records = [{**r, "duration": number(r.get("duration")) * slower} for r in records]
    return dataclasses.replace(run, run=info, records=records)


def evaluate(a: RunData, b: RunData, k: int, trials: int) -> dict[str, float]:
    """Shares of ``trials`` comparisons of ``k`` random pairs that flag any row (A/A), and
    that see each planted slowdown as a regression."""
    pairs = sorted({x["pair"] for x in a.run["blocks"]} & {x["pair"] for x in b.run["blocks"]})
    draw = random.Random(k)
    counts = {"aa": 0, **{name: 0 for name in CHANGES}}
    for _ in range(trials):
        chosen = set(draw.sample(pairs, k))
        ka = keep(a, chosen)
        same = compare_runs([ka], [keep(b, chosen)], priors={})
        counts["aa"] += bool(same.regressions or same.improvements)
        for name, factor in CHANGES.items():
            slow = compare_runs([ka], [keep(b, chosen, factor)], priors={})
            counts[name] += bool(slow.regressions)
    return {key: value / trials for key, value in counts.items()}


LATENCY_ROWS = ("p50_s", "p95_s", "p99_s")
"""The rows :func:`stated_pairs` sizes a slowdown by."""


def stated_pairs(a: RunData, b: RunData, factor: float) -> tuple[int, str] | None:
    """What the comparison of every recorded pair says: about how many block pairs would
    see a ``factor``-sized change of every op, and in which row first (the rows' detectable
    changes scaled as one over the square root of the pairs, as the comparison's warning
    does); ``None`` when no row could."""
    compared = compare_runs([a], [b], priors={}, factor=factor)
    best: tuple[int, str] | None = None
    for row in compared.rows:
        d = row.detectable
        # Only the rows a slowdown of every op moves: latency. (Throughput and memory rows
        # can be sized too, but the change planted here leaves them as they are.)
        if row.metric not in LATENCY_ROWS:
            continue
        if row.interval != "ratio" or d is None or not math.isfinite(d) or d <= 1:
            continue
        k = max(1, math.ceil(row.runs_a * (math.log(d) / math.log(factor)) ** 2))
        if best is None or k < best[0]:
            best = (k, f"{row.name} {row.metric}")
    return best


def table(ab_dir: Path, ks: list[int], trials: int) -> list[dict[str, Any]]:
    """The interleaved table: per ``k`` pairs, its load and its shares; then, for each
    planted change, the pairs the comparison of the whole session says would see it, and
    how often that many pairs did."""
    a, b = sides(ab_dir)
    total = len(a.run["blocks"])
    block_s = sum(number(x["end"]) - number(x["start"]) for x in a.run["blocks"]) / total
    stated = {name: stated_pairs(a, b, factor) for name, factor in CHANGES.items()}
    for name, said in stated.items():
        if said is None:
            print(f"  {name} slower: no row of {total} pairs could size it", flush=True)
            continue
        print(
            f"  {name} slower: the comparison of {total} pairs says about {said[0]} pairs "
            f"({2 * said[0] * block_s / 60:.1f} min of load), first in {said[1]}",
            flush=True,
        )
        if said[0] <= total and said[0] not in ks:
            ks = [*ks, said[0]]
    rows = []
    for k in sorted(ks):
        if k > total:
            print(f"  {k} pairs: only {total} recorded", flush=True)
            continue
        shares = evaluate(a, b, k, trials)
        rows.append({"pairs": k, "load_min": 2 * k * block_s / 60, **shares})
        print(
            f"  {k:>3} pairs ({2 * k * block_s / 60:4.1f} min of load), {trials} trials: A/A "
            f"flagged {shares['aa']:.0%}; 10% slower seen {shares['10%']:.0%}; 5% slower "
            f"seen {shares['5%']:.0%}",
            flush=True,
        )
    return rows
