"""How a replica's C allocator hands freed memory back: ``allocator`` in a configuration.

MLX's CPU backend allocates its arrays with ``malloc``. glibc serves a large request from
``mmap`` only while it is above a threshold that it raises each time such a block is freed
(up to 32 MiB), so after the first batches of activations nearly every array comes from
the heap, and a heap keeps what was freed in it: a replica's unique memory (USS) stays at
the high-water mark of its largest batch long after MLX's own active memory fell back
(measured: MLX active 128 MiB, USS 500-590 MB, after a warm-up whose peak was 367 MiB).

``trim``: glibc's defaults, and a thread of the replica calls ``malloc_trim(0)`` every
:data:`TRIM_S` seconds, which hands every whole free page of every arena back to the
system (``madvise``); allocation itself is unchanged. ``return``: the thresholds are fixed
(``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` at 1 MiB) and arenas are at most two, so
any array over 1 MiB is its own mapping, given back when freed; that costs a mapping and
its page faults per large array (analyze p50 13% slower, measured in an interleaved A/B).
``keep``: glibc's defaults. Set through the environment before the replica's process
starts (glibc reads it once); only on Linux with glibc, elsewhere nothing changes.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time

ALLOCATORS = ("keep", "trim", "return")
TRIM_S = 1.0
"""Seconds between two ``malloc_trim`` calls (``trim``)."""
TRIM_VAR = "LOADLENS_MALLOC_TRIM_S"
"""The variable that tells a replica to start its trimming thread, and how often."""
THRESHOLD = 1024 * 1024
"""Bytes over which an allocation is its own mapping, and free heap top is trimmed."""
ARENAS = 2
"""Most malloc arenas: each thread's arena otherwise keeps its own freed memory."""


def allocator_env(choice: str) -> dict[str, str]:
    """Environment variables of a replica process for ``choice`` (see the module doc)."""
    if choice == "keep" or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return {}
    if choice == "trim":
        return {TRIM_VAR: str(TRIM_S)}
    return {
        "MALLOC_MMAP_THRESHOLD_": str(THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(THRESHOLD),
        "MALLOC_ARENA_MAX": str(ARENAS),
    }


class Trimmer:
    """A daemon thread that calls glibc's ``malloc_trim(0)`` every ``every_s`` seconds;
    counts its calls, the bytes they gave back (by RSS before and after) and their time."""

    def __init__(self, every_s: float) -> None:
        import ctypes

        self.every_s = every_s
        self.calls = 0
        self.seconds = 0.0
        self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        self._trim.argtypes = [ctypes.c_size_t]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            started = time.perf_counter()
            self._trim(0)
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def stop(self) -> None:
        self._stop.set()

    def facts(self) -> dict[str, float]:
        return {"every_s": self.every_s, "calls": self.calls, "seconds": self.seconds}


def trimmer_from_env() -> Trimmer | None:
    """The replica's :class:`Trimmer` when its environment asks for one (``trim``)."""
    value = os.environ.get(TRIM_VAR)
    if not value or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        every = float(value)
    except ValueError:
        return None
    return Trimmer(every) if every > 0 else None
