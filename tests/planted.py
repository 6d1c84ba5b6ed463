"""Planted bottlenecks: service classes that are slow or leaky on purpose, for the verdict tests.

Test-only. A run loads one with ``--target python:tests.planted:Class`` (or the RunSpec's
``target``); no user path ever reaches this code. Each subclass changes one thing of the
builtin :class:`~workloads.service.service.Service` and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from workloads.service.service import OpResult, Service

HOT_LOOP_S = 0.15
"""Pure-Python work each planted analyze does outside every named stage: about half its
service time. At 0.06 s (a third) two closed-loop users on one replica made the waiting
they cause each other a rival of the same size (one CI run in three ranked it first),
which tests nothing about ranking."""
LEAK_BYTES = 1_000_000
"""Bytes each planted request keeps forever."""
SLOW_READ_S = 0.025
"""Extra seconds each planted read of an adapter or an index from disk takes."""


def spin(seconds: float) -> int:
    """Busy Python arithmetic for ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    total = 0
    while time.thread_time() < end:
        for k in range(2000):
            total += k * k % 7
    return total


class SlowStorageService(Service):
    """Adapters and indexes live on slow storage: every read from disk (a cache miss) takes
    :data:`SLOW_READ_S` longer, as a large adapter or index on a network disk would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for manager in (self.adapters, self.indexes):
            read = manager._read
            manager._read = _slowed(read)  # type: ignore[method-assign]


def _slowed(read: Callable[[str], Any]) -> Callable[[str], Any]:
    def slow_read(name: str) -> Any:
        time.sleep(SLOW_READ_S)
        return read(name)

    return slow_read


class HotLoopService(Service):
    """Every analyze first runs :data:`HOT_LOOP_S` of a Python loop (a planted hot loop)."""

    def analyze(self, name: str, query: str) -> OpResult:
        spin(HOT_LOOP_S)
        return super().analyze(name, query)


class LeakyService(Service):
    """Every search and analyze keeps :data:`LEAK_BYTES` it never frees (a planted leak)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept: list[bytes] = []

    def _keep(self) -> None:
        self.kept.append(b"x" * LEAK_BYTES)  # written, so the pages really are resident

    def analyze(self, name: str, query: str) -> OpResult:
        self._keep()
        return super().analyze(name, query)

    def search(self, name: str, query: str, k: int | None = None) -> OpResult:
        self._keep()
        return super().search(name, query, k)
