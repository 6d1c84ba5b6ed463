"""Project -> replica affinity: each project is served by exactly one replica.

Keeping a project on one replica keeps its adapter and index warm there instead of loading
them on every replica. The assignment is balanced by weight (e.g. chunks or expected
traffic) and stable: the same inputs always give the same assignment.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from datamodel.errors import ConfigError, ProjectError


def _check_projects(projects: Sequence[str]) -> None:
    if not projects:
        raise ConfigError("routing: no projects to assign")
    repeated = sorted(p for p, n in Counter(projects).items() if n > 1)
    if repeated:
        raise ConfigError(f"routing: projects listed more than once: {', '.join(repeated)}")


def _check_replicas(replicas: int) -> None:
    if replicas < 1:
        raise ConfigError(f"routing: replicas must be >= 1, got {replicas}")


def assign(
    projects: Sequence[str], replicas: int, weights: Mapping[str, float] | None = None
) -> dict[str, int]:
    """Assign every project to exactly one replica (0 .. replicas-1), balancing weight.

    Greedy: projects are taken heaviest first (ties in the order given) and each goes to
    the replica with the least weight so far (ties to the lowest index). Without
    ``weights`` every project weighs 1, which deals them round-robin. ``weights`` must
    cover every project (extra names are ignored). The result is in ``projects`` order.
    """
    _check_projects(projects)
    _check_replicas(replicas)
    if weights is None:
        weights = dict.fromkeys(projects, 1.0)
    missing = [p for p in projects if p not in weights]
    if missing:
        raise ConfigError(f"routing: no weight given for projects: {', '.join(missing)}")
    for project in projects:
        if not 0 <= weights[project] < math.inf:
            raise ConfigError(
                f"routing: weight of project {project!r} must be >= 0, got {weights[project]}"
            )
    order = sorted(range(len(projects)), key=lambda i: (-weights[projects[i]], i))
    load = [0.0] * replicas
    chosen: dict[str, int] = {}
    for i in order:
        replica = min(range(replicas), key=lambda r: (load[r], r))
        chosen[projects[i]] = replica
        load[replica] += weights[projects[i]]
    return {p: chosen[p] for p in projects}


class Router:
    """Looks up which replica serves a project, from a fixed assignment."""

    def __init__(self, assignment: Mapping[str, int], replicas: int) -> None:
        """``assignment``: project -> replica index, each in ``0 .. replicas-1``."""
        _check_projects(list(assignment))
        _check_replicas(replicas)
        for project, replica in assignment.items():
            if not 0 <= replica < replicas:
                raise ConfigError(
                    f"routing: project {project!r} assigned to replica {replica}, "
                    f"but there are {replicas} replicas (0..{replicas - 1})"
                )
        self.replicas = replicas
        """Number of replicas."""
        self.assignment: dict[str, int] = dict(assignment)
        """Project -> replica index (a copy of what was given)."""

    @classmethod
    def build(
        cls, projects: Sequence[str], replicas: int, weights: Mapping[str, float] | None = None
    ) -> Router:
        """A router over :func:`assign` ``(projects, replicas, weights)``."""
        return cls(assign(projects, replicas, weights), replicas)

    def replica_for(self, project: str) -> int:
        """The replica that serves ``project``; an unknown project is a ProjectError."""
        try:
            return self.assignment[project]
        except KeyError:
            known = ", ".join(self.assignment)
            raise ProjectError(f"routing: unknown project {project!r} (known: {known})") from None

    def projects_of(self, replica: int) -> list[str]:
        """The projects ``replica`` serves, in assignment order (empty if it serves none)."""
        if not 0 <= replica < self.replicas:
            raise ConfigError(
                f"routing: no replica {replica}; there are {self.replicas} (0..{self.replicas - 1})"
            )
        return [p for p, r in self.assignment.items() if r == replica]
