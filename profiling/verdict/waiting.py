"""Waiting inside a request: time a request spent neither running nor having work done for
it, placed in the frame it waited in.

The replicas' wall-clock profiles (``profiles/<role>.wall``, see
:mod:`profiling.capture.wallclock`) split each request thread's time per stack into running
(``[cpu]``), compute done for it by native threads (``[native]``), waiting while other
Python threads ran (``[wait:threads]``: a lock, the GIL, a Python pool) and waiting while
nothing in the process ran (``[wait]``: I/O, a remote call, a sleep, a subprocess). A frame
whose waiting holds a large share of a replica's service time is a cause: it claims those
seconds of the budget part it waited in, and the queue its slowness makes others wait
(like hot code, through :meth:`ServiceClaims.queue_share`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datamodel.runfolder import PROFILES, RECORDS, RunData
from datamodel.stacks import WAITING, strip_frame_line
from datamodel.stacks import WALL_STATES as STATES
from profiling.verdict.attribution import Attribution
from profiling.verdict.causes import ServiceClaims, claim_frame, component_of
from profiling.verdict.findings import Finding, latency_finding


def _replica(role: str) -> int | None:
    head, _, tail = role.partition("-")
    return int(tail) if head == "replica" and tail.isdigit() else None


def wall_split(run: RunData) -> dict[str, dict[str, float]]:
    """Seconds of request threads per budget part and state (``[cpu]``, ``[wait]``, ...),
    over every replica's wall profile; empty without them."""
    markers = run.run.get("stage_frames")
    out: dict[str, dict[str, float]] = {}
    if not run.wall or not isinstance(markers, dict):
        return out
    for stacks in run.wall.values():
        for text, ms in stacks.items():
            *stack, state = text.split(";")
            component = component_of(stack, markers)
            if component is not None and state in STATES:
                by_state = out.setdefault(component, dict.fromkeys(STATES, 0.0))
                by_state[state] += ms / 1000
    return out


def waiting(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Frames a request waited in for a large share of its replica's service time."""
    markers = run.run.get("stage_frames")
    if not run.wall or not isinstance(markers, dict):
        return []
    per_frame: dict[tuple[str, str], dict[str, Any]] = {}
    for role, stacks in run.wall.items():
        replica = _replica(role)
        if replica is None:
            continue
        for text, ms in stacks.items():
            *stack, state = text.split(";")
            if state not in WAITING or not stack:
                continue
            component = component_of(stack, markers)
            if component is None:
                continue
            entry = per_frame.setdefault(
                (component, strip_frame_line(stack[-1])),
                {"by_replica": {}, "states": dict.fromkeys(WAITING, 0.0)},
            )
            entry["by_replica"][replica] = entry["by_replica"].get(replica, 0.0) + ms / 1000
            entry["states"][state] += ms / 1000
    out = []
    for (component, frame), entry in sorted(per_frame.items()):
        claimed = claim_frame(att, claims, f"waiting:{frame}", component, entry["by_replica"])
        if claimed is None:
            continue
        vec, claim = claimed
        requests = int(np.count_nonzero(vec))
        per_request = float(vec.sum()) / requests
        states = entry["states"]
        contended = states["[wait:threads]"] > states["[wait]"]
        on = (
            "while other Python threads ran (a lock, the GIL or a pool it hands work to)"
            if contended
            else "while nothing in the process ran (I/O, a remote call, a sleep, a subprocess)"
        )
        op = max(claim["by_op"], key=lambda o: claim["by_op"][o]) if claim["by_op"] else "a"
        out.append(
            latency_finding(
                "waiting",
                f"{op} requests wait {per_request * 1000:.0f} ms each in {frame}, {on}: "
                f"{claim['share']:.0%} of latency with the queue it causes "
                f"({claim['tail_share']:.0%} of the tail)",
                [component, "queue"],
                claim,
                requests,
                {
                    "frame": frame,
                    "component": component,
                    "wait_s": float(sum(states.values())),
                    "wait_external_s": states["[wait]"],
                    "wait_on_threads_s": states["[wait:threads]"],
                    "per_request_s": per_request,
                    "seconds_by_replica": {str(k): v for k, v in entry["by_replica"].items()},
                },
                [f"{PROFILES}/*.wall", RECORDS],
                (
                    f"look at what {frame} waits for: shorten the lock's hold or take it "
                    "less often, or move the work it waits on off the request path"
                    if contended
                    else f"look at what {frame} waits for: cache it, batch it, make it "
                    "asynchronous or move it off the request path; more replicas only hide "
                    "the wait"
                ),
                gain_s=claim["seconds"],
            )
        )
    return out
