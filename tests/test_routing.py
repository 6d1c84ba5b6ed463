"""Project -> replica affinity: complete, balanced, stable, and strict about bad input."""

from __future__ import annotations

import random

import pytest

from datamodel.errors import ConfigError, ProjectError
from workloads.load.routing import Router, assign

PROJECTS = [f"p{i}" for i in range(10)]


def loads(assignment: dict[str, int], replicas: int, weights: dict[str, float]) -> list[float]:
    out = [0.0] * replicas
    for project, replica in assignment.items():
        out[replica] += weights[project]
    return out


def test_every_project_goes_to_exactly_one_valid_replica():
    result = assign(PROJECTS, 3)
    assert list(result) == PROJECTS
    assert all(0 <= r < 3 for r in result.values())


def test_equal_weights_deal_round_robin():
    result = assign(PROJECTS, 3)
    assert [result[p] for p in PROJECTS] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    counts = [list(result.values()).count(r) for r in range(3)]
    assert counts == [4, 3, 3]


def test_weighted_assignment_is_balanced():
    rng = random.Random(3)
    weights = {p: rng.uniform(1, 100) for p in PROJECTS}
    result = assign(PROJECTS, 3, weights)
    per_replica = loads(result, 3, weights)
    # Greedy heaviest-first: no replica exceeds another by more than the heaviest project.
    assert max(per_replica) - min(per_replica) <= max(weights.values())
    assert sum(per_replica) == pytest.approx(sum(weights.values()))


def test_heavy_projects_are_spread_first():
    weights = {"big1": 100.0, "big2": 90.0, "s1": 10.0, "s2": 10.0, "s3": 10.0}
    result = assign(list(weights), 2, weights)
    assert result["big1"] != result["big2"]
    # big1 -> 0, big2 -> 1, then each small one onto the lighter replica (ties to 0).
    assert [result[p] for p in weights] == [0, 1, 1, 0, 1]
    assert loads(result, 2, weights) == [110.0, 110.0]


def test_assignment_is_stable():
    weights = {p: float(len(p) + i % 3) for i, p in enumerate(PROJECTS)}
    first = assign(PROJECTS, 4, weights)
    shuffled = dict(sorted(weights.items(), key=lambda kv: random.Random(1).random()))
    assert assign(PROJECTS, 4, shuffled) == first
    assert all(assign(PROJECTS, 4, weights) == first for _ in range(5))


def test_more_replicas_than_projects_leaves_some_empty():
    router = Router.build(["a", "b"], 4)
    assert [router.replica_for("a"), router.replica_for("b")] == [0, 1]
    assert router.projects_of(3) == []


@pytest.mark.parametrize(
    ("projects", "replicas", "weights", "message"),
    [
        (PROJECTS, 0, None, "replicas must be >= 1, got 0"),
        ([], 2, None, "no projects"),
        (["a", "b", "a"], 2, None, "more than once: a"),
        (["a", "b"], 2, {"a": 1.0}, "no weight given for projects: b"),
        (["a", "b"], 2, {"a": 1.0, "b": -1.0}, "weight of project 'b' must be >= 0"),
    ],
)
def test_bad_input_is_a_config_error(projects, replicas, weights, message):
    with pytest.raises(ConfigError, match=message):
        assign(projects, replicas, weights)


def test_router_looks_up_both_ways():
    router = Router.build(PROJECTS, 2)
    for project in PROJECTS:
        assert project in router.projects_of(router.replica_for(project))
    assert router.projects_of(0) == ["p0", "p2", "p4", "p6", "p8"]
    assert sorted(router.projects_of(0) + router.projects_of(1)) == sorted(PROJECTS)


def test_router_rejects_unknown_projects_and_replicas():
    router = Router({"a": 0, "b": 1}, 2)
    with pytest.raises(ProjectError, match="unknown project 'c'"):
        router.replica_for("c")
    with pytest.raises(ConfigError, match="no replica 2"):
        router.projects_of(2)
    with pytest.raises(ConfigError, match="assigned to replica 5"):
        Router({"a": 5}, 2)
    with pytest.raises(ConfigError, match="no projects"):
        Router({}, 2)


def test_router_keeps_its_own_copy_of_the_assignment():
    given = {"a": 0, "b": 1}
    router = Router(given, 2)
    given["a"] = 1
    assert router.replica_for("a") == 0
