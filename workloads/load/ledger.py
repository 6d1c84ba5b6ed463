"""A generator worker's issue counter in shared memory: the one number a dead worker leaves.

Each worker bumps the count of operations it issued in a 16-byte file mapped into memory
(count and the time of the last bump) every time it issues one, a store of a few hundred
nanoseconds with no system call. When the worker dies, the driver reads the file (on the
worker's node) and knows exactly which ids were issued after the worker's last drain: the
operations lost in transit are counted by id range, never unknown.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
import time
from pathlib import Path

_LAYOUT = struct.Struct("<qd")


def ledger_dir(run_name: str) -> Path:
    """Where the ledgers of run ``run_name`` live on every node (its temp folder)."""
    return Path(tempfile.gettempdir()) / "loadlens-ledgers" / run_name


class Ledger:
    """The writing side, held by one worker."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _LAYOUT.size)
            self._map = mmap.mmap(fd, _LAYOUT.size)
        finally:
            os.close(fd)
        self.set(0)

    def set(self, issued: int) -> None:
        """Record that ``issued`` operations have been issued, as of now."""
        _LAYOUT.pack_into(self._map, 0, issued, time.time())


def read_ledger(path: Path) -> tuple[int, float] | None:
    """``(issued, when)`` from a worker's ledger, or ``None`` when there is none here."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < _LAYOUT.size:
        return None
    issued, when = _LAYOUT.unpack_from(data)
    return int(issued), float(when)


def remove_ledgers(run_name: str) -> None:
    """Remove this node's ledgers of run ``run_name`` (its end)."""
    folder = ledger_dir(run_name)
    for path in folder.glob("*"):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()
