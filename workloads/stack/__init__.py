"""The stack: the system a run puts under load, and what it is made of.

This package holds the kinds of stack (below) and the parts that run them: ``replica`` (the
Ray actor that hosts a service, builtin or the user's), ``ingest`` (index builds before
load), ``blas`` (the BLAS choice), ``config`` (named system configurations),
``http``/``mlx_server``/``protocol`` (the HTTP client, the managed ``mlx_lm.server``, and
the calls a service answers). The builtin service itself is :mod:`workloads.service`.

Which system (``--stack``; ``--target`` before, still accepted for a release):

- ``builtin``: :class:`~workloads.service.service.Service` in loadlens's replicas.
- ``python:package.module:Class``: the user's class hosted in those replicas instead, built
  as ``Class(ServiceConfig, projects)`` and answering the same calls as the builtin stack
  (:class:`~workloads.stack.protocol.ServiceProtocol`): ``analyze``, ``search``, ``embed``,
  ``switch`` and ``ingest`` (each op the profile sends), plus ``stats()``. The module is
  imported from the current folder or ``PYTHONPATH``, in the driver first (so a bad name
  fails before the run starts) and then in every replica.
- ``mlx-lm``: a real ``mlx_lm.server`` that loadlens starts on 127.0.0.1 with the run's base
  model, profiles (role ``server``) and always stops; each project's requests carry its
  adapter (:mod:`workloads.stack.mlx_server`).
- ``openai``: an OpenAI-compatible server already running at ``--stack-url``, routed per
  project by ``--stack-map`` (:mod:`workloads.stack.http`); ``--stack-pid`` (or the
  process listening on the URL's port, when it is on this machine) is what is profiled.

A stack serves some ops; a profile that sends another one is refused before the run
starts, naming both.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from datamodel.errors import ConfigError

BUILTIN = "builtin"
KINDS = ("builtin", "python", "mlx-lm", "openai")
"""Every kind of stack."""
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
class Stack:
    """The system under load."""

    kind: str
    """One of :data:`KINDS`."""
    factory: str | None = None
    """``module:Class`` of a ``python`` stack."""
    url: str | None = None
    """Base URL of an ``openai`` stack."""
    routes: str | None = None
    """Mapping file of an ``openai`` stack (project -> model and fields)."""
    pid: int | None = None
    """Process to profile as the ``openai`` stack (else the one listening on its port)."""
    read_timeout_s: float = 60.0
    """HTTP stacks: longest silence in a reply before it counts as stalled (``ReadTimeout``)."""

    @property
    def http(self) -> bool:
        """Whether generator workers call it over HTTP (no replicas of loadlens's own)."""
        return self.kind in ("mlx-lm", "openai")

    @property
    def label(self) -> str:
        """How the stack is written on the command line."""
        return self.kind if self.factory is None else f"{self.kind}:{self.factory}"


def parse_stack(
    text: str, url: str | None = None, routes: str | None = None, pid: int | None = None
) -> Stack:
    """A stack from ``--stack`` (and, for ``openai``, ``--stack-url``, ``--stack-map``,
    ``--stack-pid``); anything else is a :class:`ConfigError` naming what is wrong."""
    if text in (BUILTIN, "mlx-lm"):
        if url or routes or pid:
            raise ConfigError(f"--stack {text}: --stack-url/-map/-pid are for --stack openai")
        return Stack(text)
    if text == "openai":
        if not url:
            raise ConfigError("--stack openai needs --stack-url URL (a running server)")
        if pid is not None and not psutil.pid_exists(pid):
            raise ConfigError(f"--stack-pid {pid}: no such process")
        return Stack("openai", url=url, routes=routes, pid=pid)
    kind, _, factory = text.partition(":")
    if kind == "python" and ":" in factory and all(factory.split(":")):
        return Stack("python", factory)
    raise ConfigError(
        f"--stack {text!r}: expected one of builtin, mlx-lm, openai, python:package.module:Class"
    )


def load_factory(path: str) -> Any:
    """The class named ``module:Class``; a :class:`ConfigError` says what is missing."""
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way the user's code does
        raise ConfigError(
            f"stack python:{path}: cannot import {module_name!r} ({type(exc).__name__}: "
            f"{exc}); is its folder the current one or on PYTHONPATH?"
        ) from exc
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"stack python:{path}: {module_name} has no class {name!r}")
    return factory


def check_stack(stack: Stack, ops: Iterable[str]) -> None:
    """Refuse a stack that cannot serve every op in ``ops`` (before anything starts)."""
    wanted = sorted(set(ops))
    if stack.http:
        from workloads.stack.http import HTTP_OPS, probe

        if stack.url:
            probe(stack.url)
        # mlx_lm.server has no embeddings; other servers may (probed when a run sends them)
        served = HTTP_OPS if stack.kind == "mlx-lm" else HTTP_OPS | {"embed"}
        extra = [op for op in wanted if op not in served]
        if extra:
            raise ConfigError(
                f"stack {stack.label} serves {', '.join(sorted(HTTP_OPS))}"
                f"{'' if stack.kind == 'mlx-lm' else ' (and embed where /v1/embeddings answers)'}"
                f"; the profile also sends {', '.join(extra)}: use a profile without them, or "
                "--stack builtin"
            )
        return
    if stack.factory is None:
        return
    factory = load_factory(stack.factory)
    missing = [
        op for op in sorted(set(ops)) if not callable(getattr(factory, OP_METHODS[op], None))
    ]
    missing += [m for m in REQUIRED if not callable(getattr(factory, m, None))]
    if missing:
        raise ConfigError(
            f"stack {stack.label} lacks {', '.join(missing)}: the profile sends "
            f"{', '.join(sorted(set(ops)))}; implement them or use a profile without them"
        )


def worker_env(stack: Stack) -> dict[str, str]:
    """Environment a replica needs to import the stack: this folder on its PYTHONPATH."""
    if stack.factory is None:
        return {}
    paths = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
