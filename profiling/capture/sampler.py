"""psutil timelines: every process of the run on one node, by role, plus the node itself.

USS/PSS (``memory_full_info``) costs ~1.7 ms per Ray worker here, so it is read every
``full_every``-th sample; the cheap counters every sample. A process that exits between
samples is dropped from later samples and reported once, not raised.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil


class ProcessSampler:
    """Samples the processes in ``roles`` (pid -> role) and the node, on demand."""

    def __init__(self, node: str, *, full_every: int = 5) -> None:
        self.node = node
        self.full_every = max(1, full_every)
        self.roles: dict[int, str] = {}
        self.gone: list[dict[str, Any]] = []
        self._procs: dict[int, psutil.Process] = {}
        self._count = 0
        psutil.cpu_percent(percpu=True)  # prime the system CPU counters

    def set_roles(self, roles: dict[int, str]) -> None:
        """Watch these processes (replacing roles of pids seen before)."""
        for pid, role in roles.items():
            if pid not in self._procs:
                try:
                    proc = psutil.Process(pid)
                    proc.cpu_percent(None)  # prime
                except psutil.Error:
                    self.gone.append({"pid": pid, "role": role, "t": time.time(), "why": "absent"})
                    continue
                self._procs[pid] = proc
            self.roles[pid] = role

    def sample(self) -> list[dict[str, Any]]:
        """One system line plus one line per live watched process."""
        now = time.time()
        full = self._count % self.full_every == 0
        self._count += 1
        out = [self._system(now)]
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    mem = proc.memory_info()
                    ctx = proc.num_ctx_switches()
                    row: dict[str, Any] = {
                        "t": now,
                        "node": self.node,
                        "pid": pid,
                        "role": self.roles[pid],
                        "cpu_percent": proc.cpu_percent(None),
                        "rss": mem.rss,
                        "threads": proc.num_threads(),
                        "ctx_voluntary": ctx.voluntary,
                        "ctx_involuntary": ctx.involuntary,
                        "uss": None,
                        "pss": None,
                        "read_bytes": None,
                        "write_bytes": None,
                        "fds": None,
                    }
                    with contextlib.suppress(psutil.AccessDenied, AttributeError):  # Windows
                        row["fds"] = proc.num_fds()
                    try:
                        io = proc.io_counters()
                        row["read_bytes"], row["write_bytes"] = io.read_bytes, io.write_bytes
                    except (psutil.AccessDenied, AttributeError):
                        pass
                if full:
                    info = proc.memory_full_info()
                    row["uss"], row["pss"] = info.uss, getattr(info, "pss", None)
                out.append(row)
            except psutil.Error:
                self.gone.append({"pid": pid, "role": self.roles[pid], "t": now, "why": "exited"})
                del self._procs[pid]
        return out

    def _system(self, now: float) -> dict[str, Any]:
        per_core = psutil.cpu_percent(percpu=True)
        vm = psutil.virtual_memory()
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        return {
            "t": now,
            "node": self.node,
            "role": "system",
            "cpu_percent": sum(per_core) / max(len(per_core), 1),
            "cpu_per_core": per_core,
            "mem_used": vm.total - vm.available,
            "mem_total": vm.total,
            "disk_read": disk.read_bytes if disk else None,
            "disk_write": disk.write_bytes if disk else None,
            "net_sent": net.bytes_sent if net else None,
            "net_recv": net.bytes_recv if net else None,
        }
