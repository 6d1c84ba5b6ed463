"""The driver's side of profiling: agents per node, roles, snapshots, files in the run folder.

Every capture problem (no ptrace permission, py-spy missing, a replica that died, a
process that exited between samples) becomes a line in ``profiling.json``; none of them
stops the run or the other captures.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from datamodel.runfolder import write_json
from profiling.capture.agent import ProfilingAgent
from profiling.capture.pyspy import DEFAULT_RATE_HZ

STOP_TIMEOUT_S = 20.0
"""Longest an agent may take to stop and hand over its flame graphs."""


def head_processes() -> dict[int, str]:
    """Ray's own processes of an embedded cluster, from Ray's records (not process names)."""
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    names = {
        "gcs_server": "gcs",
        "dashboard": "dashboard",
        "raylet": "raylet",
        "monitor": "monitor",
        "log_monitor": "log-monitor",
    }
    roles: dict[int, str] = {}
    for kind, infos in (getattr(node, "all_processes", None) or {}).items():
        for info in infos:
            if kind in names and info.process is not None:
                roles[info.process.pid] = names[kind]
    return roles


class ProfilingSession:
    """Starts one agent per node, routes roles to them, and writes what they capture."""

    def __init__(
        self,
        run_dir: Path,
        nodes: list[str],
        *,
        interval_s: float = 1.0,
        pyspy_rate_hz: int = DEFAULT_RATE_HZ,
        flame_graphs: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.pyspy_rate_hz = pyspy_rate_hz
        self.flame_graphs = flame_graphs
        self.problems: list[str] = []
        self.snapshots: list[dict[str, Any]] = []
        self.agents: dict[str, Any] = {
            node: ProfilingAgent.options(  # type: ignore[attr-defined]
                name=f"profiler-{node[:8]}-{run_dir.name}",
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(node, interval_s)
            for node in nodes
        }
        self._timeline = (run_dir / "timeline.jsonl").open("a")
        ray.get([a.start.remote() for a in self.agents.values()])

    def watch(self, roles_by_node: dict[str, dict[int, str]]) -> None:
        """Add ``pid -> role`` for processes on each node."""
        refs = [
            self.agents[node].set_roles.remote(roles)
            for node, roles in roles_by_node.items()
            if node in self.agents
        ]
        ray.get(refs)

    def record_flames(self, replicas: list[dict[str, Any]]) -> None:
        """Start py-spy on each replica (from its info: replica, pid, node)."""
        by_node: dict[str, dict[int, str]] = {}
        for info in replicas:
            by_node.setdefault(info["node"], {})[info["pid"]] = f"replica-{info['replica']}"
        self.record_pids(by_node)

    def record_pids(self, by_node: dict[str, dict[int, str]]) -> None:
        """Start py-spy on each ``pid -> role`` of each node (any Python process)."""
        if not self.flame_graphs:
            return
        refs = [
            self.agents[node].start_pyspy.remote(targets, self.pyspy_rate_hz)
            for node, targets in by_node.items()
            if node in self.agents
        ]
        for problems in ray.get(refs):
            self.problems.extend(problems)

    def drain(self) -> None:
        """Append the agents' new samples to ``timeline.jsonl``.

        An agent that died is dropped with a line in ``profiling.json`` saying what was
        lost; the run and the other agents go on.
        """
        refs = {node: a.drain.remote() for node, a in self.agents.items()}
        for node, ref in refs.items():
            try:
                self._write(ray.get(ref, timeout=30))
            except Exception as exc:
                self.problems.append(
                    f"profiling agent on node {node[:8]} was lost mid-run ({type(exc).__name__}):"
                    " that node's timeline and flame graphs stop here"
                )
                del self.agents[node]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._timeline.write(json.dumps(row) + "\n")
        self._timeline.flush()

    def snapshot(self, replicas: list[Any], label: str) -> None:
        """A memory snapshot in every replica; a dead replica is a problem line."""
        for k, ref in enumerate([r.snapshot.remote(label) for r in replicas]):
            try:
                self.snapshots.append(ray.get(ref, timeout=60))
            except Exception as exc:
                self.problems.append(f"snapshot {label!r} of replica {k} failed: {exc!r}"[:300])

    def abort(self, why: str) -> None:
        """Stop every agent and its py-spy at once (a second interrupt): no flame graphs,
        the timeline drained so far stays, ``profiling.json`` says why."""
        refs = [a.abort.remote() for a in self.agents.values()]
        try:
            ray.get(refs, timeout=0.5)
        except Exception as exc:
            self.problems.append(f"stopping the profiling agents: {type(exc).__name__}")
        self.problems.append(f"capture cut short: {why}; no flame graphs were written")
        self._timeline.close()
        write_json(self.run_dir / "snapshots.json", self.snapshots)
        write_json(
            self.run_dir / "profiling.json",
            {
                "problems": self.problems,
                "exited": [],
                "pyspy_rate_hz": self.pyspy_rate_hz,
                "driver_pid": os.getpid(),
            },
        )

    def _end_agents(self) -> None:
        """End the agents' processes once they have stopped: a Ray session that outlives the
        run (an A/B's rounds, a test session) must not keep them sampling."""
        for agent in self.agents.values():
            with contextlib.suppress(Exception):  # already gone
                ray.kill(agent)

    def finish(self) -> None:
        """Stop agents; write timelines, flame graphs (collapsed, SVG, speedscope), snapshots."""
        from datamodel.stacks import read_collapsed
        from profiling.render import flamegraph

        profiles_dir = self.run_dir / "profiles"
        gone: list[dict[str, Any]] = []
        for node, agent in self.agents.items():
            try:
                result = ray.get(agent.stop.remote(), timeout=STOP_TIMEOUT_S)
            except Exception as exc:
                self.problems.append(f"profiling agent on node {node[:8]} failed: {exc!r}"[:300])
                continue
            self._write(result["samples"])
            self.problems.extend(result["problems"])
            gone.extend(result["gone"])
            for role, text in result["profiles"].items():
                if not text.strip():
                    continue
                profiles_dir.mkdir(exist_ok=True)
                collapsed = profiles_dir / f"{role}.collapsed"
                collapsed.write_text(text)
                stacks = read_collapsed(collapsed)
                (profiles_dir / f"{role}.svg").write_text(
                    flamegraph.render_svg(stacks, f"{role} — {self.run_dir.name}")
                )
                write_json(
                    profiles_dir / f"{role}.speedscope.json", flamegraph.to_speedscope(stacks, role)
                )
        self._end_agents()
        self._timeline.close()
        write_json(self.run_dir / "snapshots.json", self.snapshots)
        write_json(
            self.run_dir / "profiling.json",
            {
                "problems": self.problems,
                "exited": gone,
                "pyspy_rate_hz": self.pyspy_rate_hz,
                "driver_pid": os.getpid(),
            },
        )
