"""Load shapes: arrival processes, weighted picks, splitting over workers, stage plans."""

from __future__ import annotations

import itertools
import random
import statistics
from collections import Counter

import pytest

from datamodel.errors import ConfigError
from workloads.load.shapes import (
    OpPicker,
    PlannedOp,
    ProjectPicker,
    StageChooser,
    arrival_offsets,
    plan_stage,
    split_arrivals,
    split_users,
)
from workloads.load.spec import Stage

PROJECTS = [f"p{i}" for i in range(10)]


def open_stage(**kw) -> Stage:
    fields = {
        "name": "o",
        "duration_s": 100.0,
        "mode": "open",
        "rate": 5.0,
        "mix": (("analyze", 0.7), ("search", 0.3)),
    }
    return Stage(**{**fields, **kw})


def closed_stage(**kw) -> Stage:
    fields = {
        "name": "c",
        "duration_s": 10.0,
        "mode": "closed",
        "users": 5,
        "mix": (("analyze", 1.0),),
    }
    return Stage(**{**fields, **kw})


def test_poisson_gaps_average_one_over_rate():
    stage = open_stage(duration_s=2000.0, rate=4.0)
    offsets = arrival_offsets(stage, random.Random(7))
    gaps = [b - a for a, b in itertools.pairwise([0.0, *offsets])]
    assert statistics.fmean(gaps) == pytest.approx(1 / 4.0, rel=0.05)
    assert len(offsets) == pytest.approx(8000, rel=0.05)
    # Exponential gaps: the standard deviation is about the mean (constant gaps would give 0).
    assert statistics.stdev(gaps) == pytest.approx(1 / 4.0, rel=0.1)


@pytest.mark.parametrize("arrival", ["poisson", "constant"])
def test_arrivals_are_sorted_and_inside_the_stage(arrival):
    stage = open_stage(duration_s=30.0, rate=3.0, arrival=arrival)
    offsets = arrival_offsets(stage, random.Random(1))
    assert offsets == sorted(offsets)
    assert offsets and all(0 <= t < 30.0 for t in offsets)


def test_constant_arrivals_are_evenly_spaced():
    offsets = arrival_offsets(
        open_stage(duration_s=10.0, rate=2.0, arrival="constant"), random.Random()
    )
    assert offsets == pytest.approx([k * 0.5 for k in range(20)])
    short = arrival_offsets(
        open_stage(duration_s=1.1, rate=2.0, arrival="constant"), random.Random()
    )
    assert short == pytest.approx([0.0, 0.5, 1.0])


def test_arrivals_are_deterministic_per_seed():
    stage = open_stage()
    assert arrival_offsets(stage, random.Random(3)) == arrival_offsets(stage, random.Random(3))
    assert arrival_offsets(stage, random.Random(3)) != arrival_offsets(stage, random.Random(4))


def test_closed_stage_has_no_arrivals():
    with pytest.raises(ConfigError, match="closed-loop"):
        arrival_offsets(closed_stage(), random.Random())


def test_op_picker_follows_the_weights():
    picker = OpPicker({"analyze": 6, "search": 3, "embed": 1})
    assert picker.probabilities == pytest.approx({"analyze": 0.6, "search": 0.3, "embed": 0.1})
    rng = random.Random(11)
    counts = Counter(picker.pick(rng) for _ in range(20_000))
    for op, p in picker.probabilities.items():
        assert counts[op] / 20_000 == pytest.approx(p, abs=0.015)


def test_op_picker_accepts_pairs_and_rejects_bad_mixes():
    assert OpPicker([("switch", 1.0)]).pick(random.Random()) == "switch"
    with pytest.raises(ConfigError, match="unknown op 'analyse'"):
        OpPicker({"analyse": 1.0})
    with pytest.raises(ConfigError, match="at least one"):
        OpPicker({})
    with pytest.raises(ConfigError, match="must be > 0"):
        OpPicker({"analyze": 1.0, "search": 0.0})


def test_zipf_makes_the_first_project_the_most_frequent():
    picker = ProjectPicker(PROJECTS, "zipf", 1.1)
    rng = random.Random(5)
    counts = Counter(picker.pick(rng) for _ in range(20_000))
    ranked = [name for name, _ in counts.most_common()]
    assert ranked[0] == "p0"
    assert counts["p0"] > 2 * counts["p2"] > 2 * counts["p9"]
    weights = list(picker.probabilities.values())
    assert weights == sorted(weights, reverse=True)
    assert weights[0] / weights[1] == pytest.approx(2**1.1)


def test_uniform_picks_every_project_about_equally():
    picker = ProjectPicker(PROJECTS, "uniform")
    rng = random.Random(9)
    counts = Counter(picker.pick(rng) for _ in range(20_000))
    assert set(counts) == set(PROJECTS)
    assert max(counts.values()) - min(counts.values()) < 400  # expected 2000 each


def test_project_picker_rejects_bad_input():
    with pytest.raises(ConfigError, match="unknown popularity 'pareto'"):
        ProjectPicker(PROJECTS, "pareto")
    with pytest.raises(ConfigError, match="at least one"):
        ProjectPicker([], "uniform")
    with pytest.raises(ConfigError, match="repeated"):
        ProjectPicker(["a", "a"], "uniform")
    with pytest.raises(ConfigError, match="zipf_s"):
        ProjectPicker(PROJECTS, "zipf", 0)


@pytest.mark.parametrize(
    ("users", "workers", "expected"),
    [(5, 2, [3, 2]), (6, 3, [2, 2, 2]), (1, 3, [1, 0, 0]), (0, 2, [0, 0])],
)
def test_split_users_is_even_and_complete(users, workers, expected):
    assert split_users(users, workers) == expected


def test_split_arrivals_loses_and_duplicates_nothing():
    offsets = sorted(random.Random(2).uniform(0, 60) for _ in range(1001))
    for workers in (1, 2, 3, 7, 2000):
        parts = split_arrivals(offsets, workers)
        assert len(parts) == workers
        assert sorted(t for part in parts for t in part) == offsets
        assert all(part == sorted(part) for part in parts)
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_splitting_rejects_zero_workers():
    with pytest.raises(ConfigError, match="workers"):
        split_users(3, 0)
    with pytest.raises(ConfigError, match="workers"):
        split_arrivals([1.0], 0)


def test_open_plan_is_deterministic_and_independent_of_worker_count():
    stage = open_stage(duration_s=20.0, rate=5.0, popularity="zipf")
    plans = plan_stage(stage, PROJECTS, seed=42, workers=3)
    assert plans == plan_stage(stage, PROJECTS, seed=42, workers=3)
    assert plans != plan_stage(stage, PROJECTS, seed=43, workers=3)
    merged = sorted((op for p in plans for op in p.ops), key=lambda o: o.at_s)
    (single,) = plan_stage(stage, PROJECTS, seed=42, workers=1)
    assert list(single.ops) == merged
    assert [p.worker for p in plans] == [0, 1, 2]
    assert all(p.mode == "open" and p.users == 0 for p in plans)
    assert len({p.seed for p in plans}) == 3
    assert {o.op for o in merged} == {"analyze", "search"}
    assert all(isinstance(o, PlannedOp) and o.project in PROJECTS for o in merged)


def test_plans_differ_between_stages_of_one_run():
    a = plan_stage(open_stage(name="a"), PROJECTS, seed=1, workers=1)[0].ops
    b = plan_stage(open_stage(name="b"), PROJECTS, seed=1, workers=1)[0].ops
    assert a != b


def test_closed_plan_splits_users_and_seeds_each_worker():
    plans = plan_stage(closed_stage(users=5), PROJECTS, seed=42, workers=2)
    assert [p.users for p in plans] == [3, 2]
    assert all(p.mode == "closed" and p.ops == () for p in plans)
    assert len({p.seed for p in plans}) == 2
    assert plans == plan_stage(closed_stage(users=5), PROJECTS, seed=42, workers=2)


def test_stage_projects_limits_the_projects_used():
    stage = open_stage(projects=3)
    ops = plan_stage(stage, PROJECTS, seed=0, workers=1)[0].ops
    assert {o.project for o in ops} == {"p0", "p1", "p2"}
    with pytest.raises(ConfigError, match="needs 3 projects, the run has 2"):
        plan_stage(stage, PROJECTS[:2], seed=0, workers=1)


def test_stage_chooser_picks_from_the_mix_and_the_active_projects():
    chooser = StageChooser(closed_stage(mix=(("embed", 1.0),), projects=2), PROJECTS)
    rng = random.Random(0)
    picks = {chooser.pick(rng) for _ in range(200)}
    assert picks == {("embed", "p0"), ("embed", "p1")}
