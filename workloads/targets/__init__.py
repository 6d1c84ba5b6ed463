"""Which system a run puts under load: the builtin stack, or the user's own service class.

``builtin`` is :class:`~workloads.service.service.Service`. ``python:package.module:Class``
hosts the user's class in loadlens's replicas instead: it is built as
``Class(ServiceConfig, projects)`` and must answer the same calls as the builtin stack,
``analyze``, ``search``, ``embed``, ``switch`` and ``ingest`` (each op the profile sends),
plus ``stats()``. The module is imported from the current folder or ``PYTHONPATH``, in the
driver first (so a bad name fails before the run starts) and then in every replica.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from datamodel.errors import ConfigError

BUILTIN = "builtin"
OP_METHODS = {
    "analyze": "analyze",
    "search": "search",
    "embed": "embed",
    "switch": "switch",
    "ingest": "ingest",
}
"""The method of the service class that serves each op."""
REQUIRED = ("stats",)
"""Methods every service class needs whatever the profile sends."""


@dataclass(frozen=True)
class Target:
    """The system under load."""

    kind: str
    """``builtin`` or ``python``."""
    factory: str | None = None
    """``module:Class`` of a ``python`` target."""

    @property
    def label(self) -> str:
        """How the target is written on the command line."""
        return self.kind if self.factory is None else f"{self.kind}:{self.factory}"


def parse_target(text: str) -> Target:
    """``builtin`` or ``python:module:Class``; anything else is a :class:`ConfigError`."""
    if text == BUILTIN:
        return Target(BUILTIN)
    kind, _, factory = text.partition(":")
    if kind == "python" and ":" in factory and all(factory.split(":")):
        return Target("python", factory)
    raise ConfigError(f"--target {text!r}: expected 'builtin' or 'python:package.module:Class'")


def load_factory(path: str) -> Any:
    """The class named ``module:Class``; a :class:`ConfigError` says what is missing."""
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way the user's code does
        raise ConfigError(
            f"target python:{path}: cannot import {module_name!r} ({type(exc).__name__}: "
            f"{exc}); is its folder the current one or on PYTHONPATH?"
        ) from exc
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"target python:{path}: {module_name} has no class {name!r}")
    return factory


def check_target(target: Target, ops: Iterable[str]) -> None:
    """Refuse a target that cannot serve every op in ``ops`` (before anything starts)."""
    if target.factory is None:
        return
    factory = load_factory(target.factory)
    missing = [
        op for op in sorted(set(ops)) if not callable(getattr(factory, OP_METHODS[op], None))
    ]
    missing += [m for m in REQUIRED if not callable(getattr(factory, m, None))]
    if missing:
        raise ConfigError(
            f"target {target.label} lacks {', '.join(missing)}: the profile sends "
            f"{', '.join(sorted(set(ops)))}; implement them or use a profile without them"
        )


def worker_env(target: Target) -> dict[str, str]:
    """Environment a replica needs to import the target: this folder on its PYTHONPATH."""
    if target.factory is None:
        return {}
    paths = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
