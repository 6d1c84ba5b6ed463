"""Planted bottlenecks: service classes that are slow or leaky on purpose, for the verdict tests.

Test-only. A run loads one with ``--stack python:tests.planted:Class`` (or the RunSpec's
``stack``); no user path ever reaches this code. Each subclass changes one thing of the
builtin :class:`~workloads.service.service.Service` and nothing else.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from workloads.service.service import OpResult, Service, StageTimings

HOT_LOOP_S = 0.3
"""Pure-Python work each planted analyze does outside every named stage: about two thirds
of its service time. Two closed-loop users on one replica make each other wait, and that
queue, shared by the service time each cause claims, leaves "users outnumber replicas" a
rival: at 0.06 s (a third) it was of the same size, at 0.15 s (half) the hot loop led it
by 1.36-1.65x in ten runs, short of the 1.5x margin the tests ask."""
NATIVE_S = 0.3
"""Seconds of MLX matrix products each planted analyze waits on outside every named stage
(as long as the planted hot loop: the same queue and rivals)."""
LEAK_BYTES = 1_000_000
"""Bytes each planted request keeps forever."""
SLOW_READ_S = 0.025
"""Extra seconds each planted read of an adapter or an index from disk takes."""
REMOTE_WAIT_S = 0.08
"""Seconds each planted search waits for a remote store's reply (several times its work)."""
FIXED_SERVICE_S = 0.1
"""Seconds every analyze and search of :class:`FixedTimeService` takes, one at a time: one
replica of it serves at most 1 / 0.1 = 10 operations a second, its capacity by
construction."""
LOCK_HOLD_S = 0.25
"""Seconds a planted background refresher holds the lock that every analyze needs: about
as long as the analyze itself (at 0.1 s the wait was 15-18% of latency, within reach of
noise-made rivals)."""


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
            manager._read = _slowed(read)  # type: ignore[method-assign,assignment]


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


def rerank(seconds: float) -> None:
    """Native compute on each request: MLX matrix products (run by MLX's own threads while
    this one waits in ``mx.eval``) for ``seconds`` of wall time."""
    scores = mx.ones((512, 512)) / 512
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        scores = scores @ scores
        mx.eval(scores)


class NativeHotSpotService(Service):
    """Every analyze first reranks with :data:`NATIVE_S` of MLX compute that no named stage
    holds (a planted hot spot of native code in the user's own code)."""

    def analyze(self, name: str, query: str) -> OpResult:
        rerank(NATIVE_S)
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


def load_rows(seconds: float) -> bytes:
    """A read from a slow remote store: a socket whose reply comes after ``seconds``."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reply = threading.Timer(seconds, theirs.sendall, (b"rows",))
        reply.start()
        rows = ours.recv(16)
        reply.join()
    return rows


class RemoteStoreService(Service):
    """Every search first fetches rows from a remote store that answers after
    :data:`REMOTE_WAIT_S` (a blocking socket read in the request path)."""

    def search(self, name: str, query: str, k: int | None = None) -> OpResult:
        load_rows(REMOTE_WAIT_S)
        return super().search(name, query, k)


class ContendedLockService(Service):
    """Each analyze leaves a table refresh to a background thread (:data:`LOCK_HOLD_S` of
    Python under the table's lock, a write-behind) and the next analyze needs that lock
    before it starts: it waits while the refresher runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[None] = queue.SimpleQueue()
        threading.Thread(target=self._refresh, name="planted-refresher", daemon=True).start()

    def _refresh(self) -> None:
        while True:
            self._jobs.get()
            with self.table_lock:
                spin(LOCK_HOLD_S)

    def analyze(self, name: str, query: str) -> OpResult:
        with self.table_lock:
            pass
        result = super().analyze(name, query)
        self._jobs.put(None)
        return result


class FixedTimeService(Service):
    """A service whose capacity is known: every analyze and search holds the replica for
    :data:`FIXED_SERVICE_S` (one at a time, by a lock) and does nothing else. Under
    evenly spaced arrivals nothing queues below 1 / FIXED_SERVICE_S operations a second
    and the backlog grows without end above it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.one_at_a_time = threading.Lock()

    def _hold(self, op: str, name: str) -> OpResult:
        with self.one_at_a_time:
            time.sleep(FIXED_SERVICE_S)
        return OpResult(op, name, StageTimings())

    def analyze(self, name: str, query: str) -> OpResult:
        return self._hold("analyze", name)

    def search(self, name: str, query: str, k: int | None = None) -> OpResult:
        return self._hold("search", name)
