"""Interleaved A/B: the block schedule, the pairs' order, and block pairs as the units.

Pure: the schedule and order need no Ray; the comparison runs on hand-built sides of an
interleaved A/B (records in blocks, whole-pair drift) and on synthetic pairs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datamodel.runfolder import RunData
from profiling.verdict.compare import compare_runs
from profiling.verdict.pairs import block_pairs
from profiling.verdict.statistics import compare_pairs
from workloads.load.spec import load_profile
from workloads.runs.interleave import pair_order, schedule

BLOCK_S = 10.0
GAP = 0.1
MACHINE = {"hostname": "h", "os": "Linux", "machine": "x86_64", "cpus_logical": 2}


def test_the_schedule_cuts_every_stage_into_pairs_of_equal_blocks() -> None:
    profile = load_profile("multi-project")
    blocks = schedule(profile, 20.0)
    assert [b.pair for b in blocks] == list(range(len(blocks)))
    for index, stage in enumerate(profile.stages):
        mine = [b for b in blocks if b.stage_index == index]
        assert [b.number for b in mine] == list(range(len(mine)))
        assert sum(b.stage.duration_s for b in mine) == pytest.approx(stage.duration_s)
        assert all(abs(b.stage.duration_s - 20.0) <= 10.0 for b in mine)
    assert len(schedule(profile, 1e6)) == len(profile.stages)  # at least one a stage


def test_pairs_take_their_order_at_random_and_repeatably() -> None:
    orders = pair_order("smoke-ab-1", 60)
    assert all(sorted(o) == ["baseline", "candidate"] for o in orders)
    assert 15 <= [o[0] for o in orders].count("candidate") <= 45
    assert pair_order("smoke-ab-1", 60) == orders != pair_order("smoke-ab-2", 60)


def test_paired_t_on_the_pairs_differences() -> None:
    rng = np.random.default_rng(3)
    drift = rng.normal(0, 1.0, 12)  # large drift, shared within each pair
    a = drift + rng.normal(0, 0.05, 12)
    shifted = compare_pairs(a, a + 0.1 + rng.normal(0, 0.05, 12))
    assert shifted.testable and shifted.p < 1e-3 and shifted.df == 11
    assert shifted.low < 0.1 < shifted.high
    same = compare_pairs(a, a + rng.normal(0, 0.05, 12))
    assert same.p > 0.01
    assert not compare_pairs([1.0, 2.0], [1.0, 2.0]).testable  # nothing differs
    assert not compare_pairs([1.0], [2.0]).testable  # one pair: no spread to judge by
    every = compare_pairs([0.0] * 5, [1.0] * 5)  # all pairs agree exactly: sign-flip p
    assert every.testable and every.p == pytest.approx(2.0**-4)
    with pytest.raises(ValueError, match="one figure a side per pair"):
        compare_pairs([1.0], [1.0, 2.0])


def side(
    ab: str, name: str, pairs: int, seed: int, drifts: list[float], slower: float = 1.0
) -> RunData:
    """One side of an interleaved A/B: per pair a block of open-loop analyze and search,
    durations log-normal x the pair's drift (shared by both sides) x ``slower``."""
    rng = np.random.default_rng(seed)
    records: list[dict[str, Any]] = []
    blocks = []
    for pair in range(pairs):
        start = 1_000_000.0 + (2 * pair + (name == "candidate")) * BLOCK_S
        end = start + BLOCK_S
        blocks.append({"pair": pair, "stage": "s", "block": pair, "start": start, "end": end})
        for i in range(int(BLOCK_S / GAP)):
            records.append(
                {
                    "id": f"{pair}-{i}",
                    "op": ("analyze", "search")[i % 2],
                    "stage": "s",
                    "planned": start + i * GAP,
                    "duration": float(rng.lognormal(-2.0, 0.4)) * drifts[pair] * slower,
                    "ok": True,
                }
            )
    run = {
        "run_id": f"{ab}-{name}",
        "status": "completed",
        "spec": {"profile": {"name": "smoke"}, "config": {"name": "optimized"}},
        "machine": MACHINE,
        "ab": {"id": ab, "side": name, "mode": "interleaved"},
        "blocks": blocks,
    }
    return RunData(path=Path(f"/nowhere/{ab}/{name}"), run=run, records=records)


def flagged(pairs: int, seed: int, slower: float) -> tuple[bool, Any]:
    drifts = list(np.exp(np.random.default_rng(seed).normal(0, 0.25, pairs)))
    a = side(f"ab{seed}", "baseline", pairs, 2 * seed, drifts)
    b = side(f"ab{seed}", "candidate", pairs, 2 * seed + 1, drifts, slower)
    comparison = compare_runs([a], [b], priors={})
    return bool(comparison.regressions or comparison.improvements), comparison


def test_block_pairs_cut_each_side_into_its_blocks() -> None:
    drifts = [1.0] * 4
    a, b = side("x", "baseline", 4, 1, drifts), side("x", "candidate", 4, 2, drifts)
    pairs = block_pairs(a, b)
    assert pairs is not None and pairs.pairs == [0, 1, 2, 3]
    assert pairs.seconds == pytest.approx(BLOCK_S)
    assert [len(r.records) for r in pairs.a] == [int(BLOCK_S / GAP)] * 4
    starts = [1_000_000.0 + 2 * k * BLOCK_S for k in range(4)]
    assert all(
        t0 <= r["planned"] < t0 + BLOCK_S
        for t0, blk in zip(starts, pairs.a, strict=True)
        for r in blk.records
    )
    other = side("y", "candidate", 4, 2, drifts)  # another A/B: not paired
    assert block_pairs(a, other) is None


def test_drift_between_pairs_cancels_and_a_10_percent_slowdown_is_seen() -> None:
    """Whole pairs drift by 25% (sd of the log); A/A comparisons of 12 pairs rarely flag
    anything, and every op 10% slower is seen in nearly all of 20 pairs."""
    aa = sum(flagged(12, seed, 1.0)[0] for seed in range(60))
    assert aa <= 6, f"A/A flagged {aa} of 60"
    seen = sum(flagged(20, 100 + seed, 1.10)[0] for seed in range(20))
    assert seen >= 17, f"10% slowdown seen in {seen} of 20"
    _, comparison = flagged(20, 7, 1.10)
    assert comparison.units == "block pairs" and "none needed" in comparison.drift
    p50 = next(r for r in comparison.rows if r.name == "analyze" and r.metric == "p50_s")
    assert p50.runs_a == p50.runs_b == 20 and "paired t" in p50.reason
    assert p50.verdict == "regression" and p50.ci_low is not None and p50.ci_low > 1
    rate = next(r for r in comparison.rows if r.name == "all" and r.metric == "throughput_ops_s")
    assert rate.a == pytest.approx(rate.b, rel=0.01) and rate.a == pytest.approx(1 / GAP, rel=0.05)
    assert not math.isnan(rate.p_value or 0.0)


def test_an_interleaved_no_change_says_how_many_pairs_would_see_the_factor() -> None:
    _, comparison = flagged(6, 11, 1.0)
    (warning,) = [w for w in comparison.warnings if "could have missed" in w]
    assert "with 6 block pairs" in warning and "block pairs of 10 s a side" in warning
    assert "would show first in" in warning and "minutes of load" in warning


def test_goodput_is_a_row_of_its_own_against_the_latency_targets() -> None:
    """Every op 50% slower pushes many past a 0.2 s p95 target: goodput, tested on the
    block pairs, falls; each side's goodput table says against what it counted."""
    from profiling.verdict.targets import Target

    targets = [Target("analyze p95", "p95_s:analyze", "<", 0.2, "s")]
    drifts = [1.0] * 12
    a = side("gp", "baseline", 12, 3, drifts)
    b = side("gp", "candidate", 12, 4, drifts, 1.5)
    comparison = compare_runs([a], [b], priors={}, targets=targets)
    row = next(r for r in comparison.rows if r.metric == "goodput_ops_s")
    assert row.verdict == "regression" and row.b < row.a, row
    assert comparison.goodput["a"]["slos"] == ["analyze:p95<=0.2"]
    # search is not bounded by the target: all of it counts on both sides.
    assert comparison.goodput["b"]["by_op"]["search"]["share"] == 1.0
    assert comparison.goodput["b"]["by_op"]["analyze"]["share"] < 0.8
    untargeted = compare_runs([a], [b], priors={})
    assert not any(r.metric == "goodput_ops_s" for r in untargeted.rows)
    assert untargeted.goodput["a"]["share"] == 1.0  # no latency SLO: every completed op
