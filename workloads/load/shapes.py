"""Load shapes: when ops arrive, which op, which project, and which worker sends it.

Everything here is pure and driven by a seeded :class:`random.Random`, so a plan is the
same for the same seed. Open-loop stages are planned in full up front (every arrival with
its op and project); closed-loop stages only get users and a seed per worker, because a
closed-loop user's next op starts when its previous one ends.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from datamodel.errors import ConfigError
from workloads.load.spec import OPS, Mode, Stage

T = TypeVar("T")


def _poisson(duration_s: float, rate: float, rng: random.Random) -> list[float]:
    offsets: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s:
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def _constant(duration_s: float, rate: float, rng: random.Random) -> list[float]:
    count = math.ceil(duration_s * rate)
    return [k / rate for k in range(count) if k / rate < duration_s]


_ARRIVALS: dict[str, Callable[[float, float, random.Random], list[float]]] = {
    "poisson": _poisson,
    "constant": _constant,
}
"""Arrival process by name: (duration_s, rate, rng) -> sorted offsets in [0, duration_s)."""


def arrival_offsets(stage: Stage, rng: random.Random) -> list[float]:
    """Open-loop arrival times, in seconds from the start of ``stage``, sorted.

    ``poisson``: exponential gaps with mean ``1 / rate``; ``constant``: one arrival every
    ``1 / rate`` seconds from 0. Every offset is ``< stage.duration_s``.
    """
    if stage.mode != "open":
        raise ConfigError(f"stage {stage.name!r} is {stage.mode}-loop: it has no arrival schedule")
    return _ARRIVALS[stage.arrival](stage.duration_s, stage.rate, rng)


class WeightedChoice:
    """Picks one of ``items`` with probability proportional to its weight."""

    def __init__(self, items: Sequence[str], weights: Sequence[float], what: str) -> None:
        """``what`` names the items in error messages (e.g. ``"mix"``)."""
        if not items:
            raise ConfigError(f"{what} must have at least one entry")
        if len(items) != len(weights):
            raise ConfigError(f"{what}: {len(items)} entries but {len(weights)} weights")
        if len(set(items)) != len(items):
            raise ConfigError(f"{what} has repeated entries: {sorted(items)}")
        for item, weight in zip(items, weights, strict=True):
            if not 0 < weight < math.inf:
                raise ConfigError(f"{what}: weight of {item!r} must be > 0, got {weight}")
        self.items = tuple(items)
        """The candidates, in the order given."""
        self._cumulative = list(itertools.accumulate(weights))
        self._total = self._cumulative[-1]

    @property
    def probabilities(self) -> dict[str, float]:
        """Each item's probability of being picked (weights normalised to sum to 1)."""
        previous = [0.0, *self._cumulative[:-1]]
        return {
            item: (c - p) / self._total
            for item, c, p in zip(self.items, self._cumulative, previous, strict=True)
        }

    def pick(self, rng: random.Random) -> str:
        """One item, drawn with ``rng`` (one ``rng.random()`` call)."""
        index = bisect.bisect_right(self._cumulative, rng.random() * self._total)
        return self.items[min(index, len(self.items) - 1)]


class OpPicker(WeightedChoice):
    """Weighted choice of an op from a stage's mix."""

    def __init__(self, mix: Mapping[str, float] | Iterable[tuple[str, float]]) -> None:
        """``mix``: op -> weight, as a mapping or (op, weight) pairs; ops from ``OPS``."""
        pairs = list(mix.items()) if isinstance(mix, Mapping) else list(mix)
        for op, _ in pairs:
            if op not in OPS:
                raise ConfigError(f"mix has unknown op {op!r} (known: {', '.join(OPS)})")
        super().__init__([op for op, _ in pairs], [w for _, w in pairs], "mix")


_POPULARITY: dict[str, Callable[[int, float], list[float]]] = {
    "uniform": lambda n, s: [1.0] * n,
    "zipf": lambda n, s: [1.0 / rank**s for rank in range(1, n + 1)],
}
"""Project weights by popularity name: (number of projects, zipf_s) -> weights by rank."""


class ProjectPicker(WeightedChoice):
    """Choice of a project by popularity; Zipf ranks ``names`` in order (first = hottest)."""

    def __init__(
        self, names: Sequence[str], popularity: str = "uniform", zipf_s: float = 1.1
    ) -> None:
        """``popularity``: ``uniform`` or ``zipf`` (weight ``1 / rank**zipf_s``)."""
        weights_for = _POPULARITY.get(popularity)
        if weights_for is None:
            known = ", ".join(_POPULARITY)
            raise ConfigError(f"unknown popularity {popularity!r} (known: {known})")
        if not zipf_s > 0:
            raise ConfigError(f"zipf_s must be > 0, got {zipf_s}")
        super().__init__(names, weights_for(len(names), zipf_s), "projects")


def active_projects(stage: Stage, projects: Sequence[str]) -> list[str]:
    """The projects ``stage`` touches: the first ``stage.projects`` of ``projects`` (or all)."""
    if not projects:
        raise ConfigError(f"stage {stage.name!r}: no projects to send load to")
    if stage.projects is None:
        return list(projects)
    if stage.projects > len(projects):
        raise ConfigError(
            f"stage {stage.name!r}: needs {stage.projects} projects, the run has {len(projects)}"
        )
    return list(projects[: stage.projects])


class StageChooser:
    """Picks the (op, project) of a stage's next operation; shared by open and closed loops."""

    def __init__(self, stage: Stage, projects: Sequence[str]) -> None:
        """``projects``: the run's project names, most popular first."""
        self.ops = OpPicker(stage.mix)
        """The stage's op picker."""
        self.projects = ProjectPicker(
            active_projects(stage, projects), stage.popularity, stage.zipf_s
        )
        """The stage's project picker (over its active projects only)."""

    def pick(self, rng: random.Random) -> tuple[str, str]:
        """The next (op, project), drawn with ``rng``."""
        return self.ops.pick(rng), self.projects.pick(rng)


def split_users(users: int, workers: int) -> list[int]:
    """Spread ``users`` over ``workers`` as evenly as possible, the first workers getting more.

    Always returns ``workers`` entries (some are 0 when there are fewer users than workers).
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if users < 0:
        raise ConfigError(f"users must be >= 0, got {users}")
    base, extra = divmod(users, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def split_arrivals(offsets: Sequence[T], workers: int) -> list[list[T]]:
    """Deal ``offsets`` round-robin to ``workers`` lists; each item lands in exactly one.

    Sorted input gives sorted lists, and each worker gets every ``workers``-th arrival, so
    load is spread evenly over time.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    return [list(offsets[i::workers]) for i in range(workers)]


@dataclass(frozen=True)
class PlannedOp:
    """One open-loop operation, fixed before the stage starts."""

    at_s: float
    """When to send it, in seconds from the start of the stage."""
    op: str
    """Which op (one of ``OPS``)."""
    project: str
    """Which project it is for."""


@dataclass(frozen=True)
class WorkerPlan:
    """What one load-generator worker does during one stage."""

    worker: int
    """Index of the worker, from 0."""
    stage: str
    """Name of the stage."""
    mode: Mode
    """``open``: send ``ops`` on schedule; ``closed``: run ``users`` loops."""
    seed: int
    """Seed for this worker's own ``random.Random`` (closed-loop picks, payload choices)."""
    users: int = 0
    """Closed loop: how many concurrent users this worker runs (0 for open loop)."""
    ops: tuple[PlannedOp, ...] = ()
    """Open loop: this worker's arrivals, sorted by ``at_s`` (empty for closed loop)."""


def plan_stage(stage: Stage, projects: Sequence[str], seed: int, workers: int) -> list[WorkerPlan]:
    """Plan ``stage`` over ``workers`` generator workers; the same inputs give the same plan.

    Random streams are derived from ``seed`` and the stage name, so two stages of a run do
    not repeat each other. The open-loop schedule (times, ops, projects) does not depend on
    ``workers``: it is drawn in full, then dealt round-robin. Returns one plan per worker.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    chooser = StageChooser(stage, projects)
    seeds_rng = random.Random(f"{seed}:{stage.name}:workers")
    seeds = [seeds_rng.getrandbits(63) for _ in range(workers)]
    if stage.mode == "closed":
        return [
            WorkerPlan(worker=i, stage=stage.name, mode="closed", seed=seeds[i], users=users)
            for i, users in enumerate(split_users(stage.users, workers))
        ]
    rng = random.Random(f"{seed}:{stage.name}:arrivals")
    planned = [PlannedOp(at, *chooser.pick(rng)) for at in arrival_offsets(stage, rng)]
    return [
        WorkerPlan(worker=i, stage=stage.name, mode="open", seed=seeds[i], ops=tuple(ops))
        for i, ops in enumerate(split_arrivals(planned, workers))
    ]
