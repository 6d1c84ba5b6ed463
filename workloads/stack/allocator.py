"""How a replica's C allocator hands freed memory back: ``allocator`` in a configuration.

MLX's CPU backend allocates its arrays with ``malloc``. glibc serves a large request from
``mmap`` only while it is above a threshold that it raises each time such a block is freed
(up to 32 MiB), so after the first batches of activations nearly every array comes from
the heap, and a heap keeps what was freed in it: a replica's unique memory (USS) stays at
the high-water mark of its largest batch long after MLX's own active memory fell back
(measured: MLX active 128 MiB, USS 500-590 MB, after a warm-up whose peak was 367 MiB).

``return``: the thresholds are fixed (``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` at 1 MiB)
and arenas are at most two, so any array over 1 MiB is its own mapping, given back when
freed, and the heap's free top is trimmed; MLX's buffer cache (``mlx_cache_limit_mb``)
still keeps recently freed arrays for reuse. ``keep``: glibc's defaults. Set through the
environment before the replica's process starts (glibc reads it once); only on Linux with
glibc, elsewhere nothing changes.
"""

from __future__ import annotations

import platform
import sys

ALLOCATORS = ("keep", "return")
THRESHOLD = 1024 * 1024
"""Bytes over which an allocation is its own mapping, and free heap top is trimmed."""
ARENAS = 2
"""Most malloc arenas: each thread's arena otherwise keeps its own freed memory."""


def allocator_env(choice: str) -> dict[str, str]:
    """Environment variables of a replica process for ``choice`` (see the module doc)."""
    if choice == "keep" or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return {}
    return {
        "MALLOC_MMAP_THRESHOLD_": str(THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(THRESHOLD),
        "MALLOC_ARENA_MAX": str(ARENAS),
    }
