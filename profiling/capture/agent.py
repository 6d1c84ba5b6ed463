"""The profiling agent: one Ray actor pinned to each node, sampling and recording there.

It samples psutil timelines in a background thread and runs py-spy against the replicas
on its node. The driver tells it which pid plays which role (from Ray's own records:
actor pids, the driver's node processes) and drains its samples once a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import psutil
import ray

from profiling.capture import pyspy
from profiling.capture.sampler import ProcessSampler


@ray.remote(num_cpus=0)
class ProfilingAgent:
    """Samples every ``interval_s``; full memory every ``full_every`` samples."""

    def __init__(self, node: str, interval_s: float = 1.0, full_every: int = 5) -> None:
        self.node = node
        self.interval_s = interval_s
        self.sampler = ProcessSampler(node, full_every=full_every)
        self._lock = threading.Lock()
        self._samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recordings: dict[str, pyspy.Recording] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="loadlens-pyspy-"))
        self.problems: list[str] = []
        own = {os.getpid(): "agent"}
        parent = psutil.Process(os.getpid()).parent()
        if parent is not None and parent.name() == "raylet":
            own[parent.pid] = "raylet"
        self.sampler.set_roles(own)

    def info(self) -> dict[str, Any]:
        """The agent's own pid and node."""
        return {"node": self.node, "pid": os.getpid(), "roles": dict(self.sampler.roles)}

    def set_roles(self, roles: dict[int, str]) -> None:
        """Watch more processes on this node (``pid -> role``)."""
        with self._lock:
            self.sampler.set_roles({int(k): v for k, v in roles.items()})

    def start(self) -> None:
        """Start sampling in the background."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="loadlens-sampler", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                rows = self.sampler.sample()
                self._samples.extend(rows)
            self._stop.wait(self.interval_s)

    def drain(self) -> list[dict[str, Any]]:
        """Samples taken since the last drain."""
        with self._lock:
            rows, self._samples = self._samples, []
        return rows

    def start_pyspy(self, targets: dict[int, str], rate_hz: int) -> list[str]:
        """Record each ``pid -> role`` with py-spy; returns problems (the run goes on)."""
        problem = pyspy.ptrace_problem()
        if problem:
            self.problems.append(problem)
            return [problem]
        out = []
        for pid, role in targets.items():
            key = f"{role}-{pid}"
            if key in self._recordings:
                continue
            try:
                self._recordings[key] = pyspy.start(role, int(pid), self._dir, rate_hz)
            except OSError as exc:
                out.append(f"py-spy for {role} (pid {pid}) did not start: {exc}")
        self.problems.extend(out)
        return out

    def abort(self) -> None:
        """Stop sampling and kill every py-spy this agent started, without waiting."""
        self._stop.set()
        for rec in self._recordings.values():
            if rec.process.poll() is None:
                rec.process.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def stop(self) -> dict[str, Any]:
        """Stop sampling and py-spy; hand over the rest: samples, stacks by role, problems."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        profiles: dict[str, str] = {}
        for rec in self._recordings.values():
            text, problem = pyspy.stop(rec)
            if problem:
                self.problems.append(problem)
            profiles[rec.role] = profiles.get(rec.role, "") + text
        shutil.rmtree(self._dir, ignore_errors=True)  # py-spy's raw files, read above
        return {
            "samples": self.drain(),
            "profiles": profiles,
            "problems": self.problems,
            "gone": self.sampler.gone,
        }
