"""Causes of latency, each attached to the budget parts it explains.

Service-side causes claim seconds of service stages per record: cache thrash claims the
adapter or index loads that an evicted entry forced, a slow BLAS the matmul time a faster
one would save, oversubscribed threads the slowdown of model and embed, hot Python code
the samples py-spy saw in it. Queue wait on a replica is then shared among those causes in
proportion to the service time each claims there (faster service drains the queue), and
what is left of it is the load itself: arrivals above what the replicas serve, or routed
unevenly. Generator lag is the load generator's own lateness. Each function returns its
findings plus the per-record service claims they made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datamodel.frame import Frame
from datamodel.records import number
from datamodel.runfolder import MLX_PROBE, PROFILES, RECORDS, RUN_JSON, RunData
from datamodel.stacks import NATIVE, RUNNING, strip_frame_line
from profiling.verdict.attribution import Attribution, Vector
from profiling.verdict.findings import Finding, latency_finding, material

SLOW_BLAS_RATIO = 0.5
"""A BLAS slower than this share of the fastest one measured on the machine counts as slow."""
HOT_FRAME_SHARE = 0.05
"""A Python frame holding at least this share of a replica's service time is hot code."""
BUSY = 0.9
"""Utilisation at or above which a replica counts as saturated."""
IDLE_LEAVES = ("Worker.main_loop (ray/_private/worker.py",)
"""Leaf frames where a Ray worker waits for work (py-spy cannot tell this blocking call
from work); such samples are idle, never hot code."""


@dataclass
class ServiceClaims:
    """Per-record service seconds claimed by each cause, for sharing out queue wait."""

    att: Attribution
    by_cause: dict[str, Vector] = field(default_factory=dict)
    explained: set[str] = field(default_factory=set)
    """Service parts that a reported finding already explains."""

    def add(self, kind: str, seconds: Vector) -> None:
        """Record that cause ``kind`` claims ``seconds`` of service per record."""
        self.by_cause[kind] = self.by_cause.get(kind, 0) + seconds

    def queue_share(self, kind: str) -> Vector:
        """Queue seconds per record owed to ``kind``: each replica's queue wait times the
        share of that replica's service time the cause claims."""
        return self._shared(self.by_cause.get(kind, np.zeros(len(self.att.records))))

    def unclaimed_queue(self) -> Vector:
        """Queue seconds per record no service cause accounts for."""
        queue = self.att.column("queue")
        claimed = sum((self._shared(v) for v in self.by_cause.values()), np.zeros(len(queue)))
        return queue - claimed

    def _shared(self, claim: Vector) -> Vector:
        queue = self.att.column("queue")
        service = self.att.service
        out = np.zeros(len(queue))
        for rows in self.att.by_replica().values():
            total = float(service[rows].sum())
            if total > 0:
                out[rows] = queue[rows] * min(float(claim[rows].sum()) / total, 1.0)
        return out


def _replica_stats(run: RunData) -> dict[int, dict[str, Any]]:
    return {int(number(s.get("replica"))): s for s in run.section("replica_stats")}


def _thrash(run: RunData, att: Attribution, claims: ServiceClaims, cache: str) -> list[Finding]:
    """Loads of ``cache`` (``adapter`` or ``index``) forced by an earlier eviction."""
    seen: set[tuple[Any, Any]] = set()
    capacity = np.zeros(att.frame.n)
    compulsory = 0
    working: dict[int, set[str]] = {}
    frame = att.frame
    projects, replicas = frame.column("project"), frame.column("replica")
    ok, misses = frame.ok.tolist(), frame.column("misses")
    for i in range(frame.n):
        if projects[i] is not None and ok[i]:
            working.setdefault(int(replicas[i] or 0), set()).add(str(projects[i]))
        if cache not in (misses[i] or []) or not ok[i]:
            continue
        key = (replicas[i], projects[i])
        if key in seen:
            capacity[i] = att.column(cache)[i]
        else:
            seen.add(key)
            compulsory += 1
    events = int(np.count_nonzero(capacity))
    claims.add(f"{cache}_thrash", capacity)
    claim = att.claim(capacity + claims.queue_share(f"{cache}_thrash"))
    if events < 3 or not material(claim):
        return []
    setting = f"{cache}_cache_count"
    config = run.service_config()
    stats = _replica_stats(run)
    per_replica = {
        str(k): {
            "working_set": len(projects),
            "hits": (stats.get(k, {}).get(f"{cache}s") or {}).get("hits"),
            "misses": (stats.get(k, {}).get(f"{cache}s") or {}).get("misses"),
            "evictions": (stats.get(k, {}).get(f"{cache}s") or {}).get("evictions"),
        }
        for k, projects in sorted(working.items())
    }
    need = max(len(p) for p in working.values())
    loads = capacity[capacity > 0]
    what = "adapters" if cache == "adapter" else "indexes"
    return [
        latency_finding(
            f"{cache}_thrash",
            f"{cache} cache thrash: {events} reloads of evicted {what} cost {claim['share']:.0%} "
            f"of latency ({claim['tail_share']:.0%} of the tail)",
            [cache, "queue"],
            claim,
            events,
            {
                "capacity_misses": events,
                "compulsory_misses": compulsory,
                "median_reload_s": float(np.median(loads)),
                "direct_s": float(capacity.sum()),
                setting: config.get(setting),
                "largest_working_set": need,
                "replicas": per_replica,
            },
            [RECORDS, RUN_JSON],
            f"raise {setting} to at least {need} (the most projects one replica serves) so the "
            f"working set stays resident, or spread projects over more replicas",
            gain_s=claim["seconds"],
        )
    ]


def adapter_thrash(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Adapter loads forced by evictions (not the first load of each project)."""
    return _thrash(run, att, claims, "adapter")


def index_thrash(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Index loads forced by evictions (not the first load of each project)."""
    return _thrash(run, att, claims, "index")


def _probes(run: RunData) -> dict[int, dict[str, Any]]:
    return {int(number(p.get("replica"))): p for p in run.mlx_probe or []}


def slow_blas(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Matmul time a BLAS as fast as the best one measured on this machine would save.

    Per record: its estimated matmul FLOPs at the replica's probed GFLOP/s (capped at its
    embed + model time) minus the same FLOPs at the achievable GFLOP/s. A replica that
    already loaded the fastest BLAS measured here is never slow BLAS: a low probe there
    means the machine was busy while it ran (seen: MKL probed at 44 GFLOP/s of its 96).
    """
    probes = _probes(run)
    if not probes:
        return []
    best = max((number(p.get("achievable_gflops")) for p in probes.values()), default=0.0)
    saved = np.zeros(att.frame.n)
    slow: dict[int, dict[str, Any]] = {}
    compute = att.column("embed") + att.column("model")
    flops = att.frame.value("flops")
    for replica, rows in att.by_replica().items():
        probe = probes.get(replica)
        gflops = number(probe.get("matmul_gflops")) if probe else 0.0
        if probe is None or gflops <= 0:
            continue
        reference = probe.get("blas_kind") == "reference"
        if not reference and not (best and gflops < SLOW_BLAS_RATIO * best):
            continue
        if not reference and probe.get("blas_kind") == probe.get("achievable_blas"):
            continue  # the fastest BLAS is loaded: a slow probe was a busy machine, not it
        slow[replica] = probe
        now = np.minimum(compute[rows], flops[rows] / (gflops * 1e9))
        saved[rows] = np.maximum(now - (flops[rows] / (best * 1e9) if best else 0.0), 0.0)
    claims.add("slow_blas", saved)
    claim = att.claim(saved + claims.queue_share("slow_blas"))
    if not slow or not material(claim):
        return []
    worst = min(number(p.get("matmul_gflops")) for p in slow.values())
    kinds = sorted({str(p.get("blas_kind")) for p in slow.values()})
    bound = "" if best else " (no faster BLAS was measured here: an upper bound)"
    return [
        latency_finding(
            "slow_blas",
            f"slow BLAS: MLX matmul at {worst:.1f} GFLOP/s ({', '.join(kinds)}) where "
            f"{best:.0f} is achievable; {claim['share']:.0%} of latency{bound}",
            ["embed", "model", "queue"],
            claim,
            int(np.count_nonzero(saved)),
            {
                "matmul_gflops": worst,
                "achievable_gflops": best or None,
                "blas_kind": kinds,
                "achievable_blas": next((p.get("achievable_blas") for p in slow.values()), None),
                "replicas": sorted(slow),
                "matmul_saved_s": float(saved.sum()),
                "embed_model_s": float(compute.sum()),
            },
            [MLX_PROBE, RECORDS],
            "preload the fastest BLAS measured on this machine (the `optimized` configuration "
            "does; see mlx_probe.json for the candidates and their speed)",
            gain_s=claim["seconds"],
        )
    ]


def _blas_threads(probe: Mapping[str, Any]) -> int:
    threads = probe.get("blas_threads")
    if isinstance(threads, int) and threads > 0:
        return threads
    env = probe.get("env") or {}
    for key in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = str(env.get(key) or "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return int(number(probe.get("cpu_count"))) or 1


def oversubscription(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Replicas on one node whose BLAS threads add up to more than its cores.

    While the others are busy, a replica's matmuls share cores with theirs: its embed and
    model time stretches by up to ``threads / cores``. The claim is that stretch times how
    busy the node's other replicas were.
    """
    probes = _probes(run)
    nodes: dict[str, list[int]] = {}
    for info in run.section("replicas"):
        nodes.setdefault(str(info.get("node")), []).append(int(number(info.get("replica"))))
    claim_vec = np.zeros(len(att.records))
    crowded = {}
    busy = att.utilisation()
    compute = att.column("embed") + att.column("model")
    for node, replicas in nodes.items():
        known = [probes[k] for k in replicas if k in probes]
        if not known:
            continue
        threads = sum(_blas_threads(p) for p in known)
        cores = max(int(number(p.get("cpus_available") or p.get("cpu_count"))) for p in known)
        if cores <= 0 or threads <= cores:
            continue
        crowded[node[:12]] = {"replicas": replicas, "blas_threads": threads, "cores": cores}
        for k in replicas:
            rows = att.by_replica().get(k)
            if rows is None:
                continue
            others = sum(busy.get(j, 0.0) for j in replicas if j != k)
            claim_vec[rows] = compute[rows] * (1 - cores / threads) * min(others, 1.0)
    claims.add("oversubscription", claim_vec)
    claim = att.claim(claim_vec + claims.queue_share("oversubscription"))
    if not crowded or not material(claim):
        return []
    counts = ", ".join(f"{v['blas_threads']} on {v['cores']}" for v in crowded.values())
    return [
        latency_finding(
            "oversubscription",
            f"oversubscribed cores: replicas run more BLAS threads than the node has cores "
            f"({counts})",
            ["embed", "model", "queue"],
            claim,
            int(np.count_nonzero(claim_vec)),
            {"nodes": crowded, "utilisation": busy},
            [MLX_PROBE, RECORDS],
            "give each replica cores / replicas-per-node BLAS threads (the default), or fewer "
            "replicas per node",
        )
    ]


def component_of(stack: list[str], markers: Mapping[str, Iterable[str]]) -> str | None:
    """The budget part a sampled stack is in: the innermost stage marker under a request
    root (``markers["request"]``), ``other`` under a root with no marker, ``None`` outside
    any request (control calls, idle waiting)."""
    roots = set(markers.get("request", ()))
    stages = {name: part for part, names in markers.items() if part != "request" for name in names}
    found: str | None = None
    for frame in stack:
        name = frame.split(" (", 1)[0]
        if name in roots:
            found = "other"
        elif found is not None and name in stages:
            found = stages[name]
    return found


def frame_claim(
    att: Attribution, component: str, seconds_by_replica: Mapping[int, float]
) -> Vector:
    """Per-record seconds of ``component`` that one frame holds: on each replica where the
    frame's seconds reach :data:`HOT_FRAME_SHARE` of its service time, they are spread
    over its records in proportion to their ``component`` time (never more than it)."""
    vec = np.zeros(len(att.records))
    col = att.column(component)
    for replica, seconds in seconds_by_replica.items():
        rows = att.by_replica().get(replica)
        busy = float(att.service[rows].sum()) if rows is not None else 0.0
        if rows is None or busy <= 0 or seconds < HOT_FRAME_SHARE * busy:
            continue
        weights = col[rows]
        if weights.sum() > 0:
            vec[rows] = np.minimum(weights, seconds * weights / weights.sum())
    return vec


def _replica_of(role: str) -> int | None:
    head, _, tail = role.partition("-")
    return int(tail) if head == "replica" and tail.isdigit() else None


def _running_seconds(
    run: RunData, markers: Mapping[str, Iterable[str]]
) -> tuple[dict[tuple[str, str], dict[int, float]], dict[tuple[str, str], float], str]:
    """Seconds each (budget part, leaf frame) ran on a CPU, per replica; of them, the
    seconds in calls into native compute; and their source.

    The replicas' wall-clock profiles are used where the run has them: their seconds are
    measured tick lengths, so a sampler that falls behind on a busy machine undercounts
    nothing. A line that is a call into native compute (:func:`_running_and_native`) is
    the work of a named part where it is in one (the model's ``mx.eval`` is the model's
    compute); in code outside every named part it is a hot spot of that code, and holds
    its native threads' time too. Without wall-clock profiles: busy py-spy samples over
    py-spy's nominal rate.
    """
    per_frame: dict[tuple[str, str], dict[int, float]] = {}
    native_of: dict[tuple[str, str], float] = {}

    def add(replica: int, stack: list[str], seconds: float, native: float = 0.0) -> None:
        component = component_of(stack, markers)
        if component is None or (native and component != "other"):
            return
        key = (component, strip_frame_line(stack[-1]))
        entry = per_frame.setdefault(key, {})
        entry[replica] = entry.get(replica, 0.0) + seconds + native
        if native:
            native_of[key] = native_of.get(key, 0.0) + native

    walls = {
        k: stacks
        for role, stacks in (run.wall or {}).items()
        if (k := _replica_of(role)) is not None
    }
    if walls:
        for replica, stacks in walls.items():
            for line, (running, native) in _running_and_native(stacks).items():
                if running > native:
                    add(replica, list(line), running / 1000)
                else:
                    add(replica, list(line), running / 1000, native / 1000)
        return (
            per_frame,
            native_of,
            (
                "wall-clock samples of request threads running or ready to run, and of native "
                "threads computing for calls outside every named part"
            ),
        )
    rate = number((run.run.get("spec") or {}).get("pyspy_rate_hz")) or 20.0
    for role, stacks in (run.profiles or {}).items():
        index = _replica_of(role)
        if index is None:
            continue
        for text, count in stacks.items():
            stack = text.split(";")
            if not stack[-1].startswith(IDLE_LEAVES):
                add(index, stack, count / rate)
    return per_frame, native_of, f"busy py-spy samples at {rate:g} Hz"


def _running_and_native(stacks: Mapping[str, float]) -> dict[tuple[str, ...], list[float]]:
    """Milliseconds each wall-clock stack (a leaf line) ran or was ready to run, and
    milliseconds its thread waited while native threads computed for it.

    A line where the thread mostly waits on native compute (``mx.eval`` while MLX's and the
    BLAS library's pools run the graph) is a call into native code: the thread's own CPU
    there builds, schedules and collects that work, and belongs to it, not to Python code
    of its own. A hot Python line has next to no native time; compute the thread does itself
    (a NumPy call on the request's thread) counts as running too.
    """
    out: dict[tuple[str, ...], list[float]] = {}
    for text, ms in stacks.items():
        *stack, state = text.split(";")
        if not stack:
            continue
        entry = out.setdefault(tuple(stack), [0.0, 0.0])
        if state in RUNNING:
            entry[0] += ms
        elif state == NATIVE:
            entry[1] += ms
    return out


def claim_frame(
    att: Attribution,
    claims: ServiceClaims,
    kind: str,
    component: str,
    seconds_by_replica: Mapping[int, float],
) -> tuple[Vector, dict[str, Any]] | None:
    """One frame's seconds of ``component`` per record (:func:`frame_claim`), recorded as
    cause ``kind``, and their claim with the queue they cause; ``None`` when the part is
    another cause's, the frame holds too little of it, or the claim is not material."""
    if component in claims.explained or component not in att.components:
        return None
    vec = frame_claim(att, component, seconds_by_replica)
    if not vec.any():
        return None
    claims.add(kind, vec)
    claim = att.claim(vec + claims.queue_share(kind))
    return (vec, claim) if material(claim) else None


def hot_code(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """Frames of the service's code that hold a large share of a replica's service time.

    The time each replica's request threads ran on a CPU is placed in the budget part it
    was in (by the stage markers the run recorded) and in its leaf frame, with the native
    compute a frame outside every named part waits on (:func:`_running_seconds`). Parts
    already explained by another cause keep their hot frames as its evidence.
    """
    markers = run.run.get("stage_frames")
    if not (run.profiles or run.wall) or not isinstance(markers, dict):
        return []
    per_frame, native_of, source = _running_seconds(run, markers)
    out = []
    for (component, frame), seconds_by_replica in sorted(per_frame.items()):
        claimed = claim_frame(att, claims, f"hot_code:{frame}", component, seconds_by_replica)
        if claimed is None:
            continue
        vec, claim = claimed
        requests = int(np.count_nonzero(vec))
        running = float(sum(seconds_by_replica.values()))
        native = native_of.get((component, frame), 0.0)
        how = "in Python" if native < running / 2 else "in native code it calls"
        out.append(
            latency_finding(
                "hot_code",
                f"hot code: {frame} holds {float(vec.sum()):.1f} s of {component} time "
                f"({claim['share']:.0%} of latency with the queue it causes)",
                [component, "queue"],
                claim,
                requests,
                {
                    "frame": frame,
                    "component": component,
                    "running_s": running,
                    "native_s": native,
                    "source": source,
                    "requests": requests,
                    "seconds_by_replica": {str(k): v for k, v in seconds_by_replica.items()},
                },
                [f"{PROFILES}/*.wall" if run.wall else f"{PROFILES}/*.collapsed", RECORDS],
                f"look at {frame}: it runs {how} on every request, in the {component} part",
            )
        )
    return out


LOAD_FRAMES = ("load", "_load", "load_model", "load_adapters", "load_weights")
"""Function names (as py-spy names them, class prefix dropped) of model and adapter loading."""


def _load_share(run: RunData) -> tuple[float, int] | None:
    """Share of the server's busy py-spy samples inside model or adapter loading."""
    stacks = run.server_stacks()
    if not stacks:
        return None
    busy = loading = 0
    for stack, count in stacks.items():
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        busy += count
        names = [f.split(" (", 1)[0].rsplit(".", 1)[-1] for f in frames]
        if any(n in LOAD_FRAMES for n in names):
            loading += count
    return (loading / busy if busy else 0.0), busy


def _batching(frame: Frame, rows: list[int]) -> dict[str, float] | None:
    """Requests in flight and requests streaming tokens, each averaged over the run's span
    (Little's law: the sum of their times over the span): a server that could batch every
    request in flight streams about as many as are in flight."""
    sent = frame.value("sent")[rows]
    service = frame.value("service")[rows]
    ttft = frame.value("ttft")[rows]
    window = float((sent + service).max() - sent.min()) if rows else 0.0
    streaming = ttft > 0
    if window <= 0 or not streaming.any():
        return None
    return {
        "in_flight": float(service.sum() / window),
        "streaming": float((service[streaming] - ttft[streaming]).sum() / window),
    }


def adapter_change(run: RunData, att: Attribution, claims: ServiceClaims) -> list[Finding]:
    """What changing the served adapter costs a server loadlens reaches over HTTP.

    The server is asked for a (model, adapter) per request; a request changed it when the
    one sent just before asked for another (``switched``, inferred in that order when the
    records are read). Its claim is how much longer it waited for its first token than the
    median request of its op that did not change it. The evidence adds the share of the
    server's busy py-spy samples in loading, and how many requests it streamed at a time
    against how many were in flight (what it could batch).
    """
    frame = att.frame
    served = frame.served()
    rows = np.flatnonzero(served).tolist()
    if len(rows) < 10:
        return []
    changed = frame.flag("switched")
    ttft = frame.value("ttft")
    wait = np.where(ttft != 0, ttft, frame.value("duration"))
    ok = frame.ok
    claim_vec = np.zeros(frame.n)
    by_op: dict[str, dict[str, Any]] = {}
    for op in sorted(set(att.ops[served].tolist())):
        mine = (att.ops == op) & ok
        same, other = wait[mine & ~changed], wait[mine & changed]
        if len(same) < 3 or len(other) < 3:
            continue
        base = float(np.median(same))
        sel = mine & changed
        claim_vec[sel] = np.minimum(np.maximum(wait[sel] - base, 0.0), att.service[sel])
        by_op[op] = {
            "changed": len(other),
            "unchanged": len(same),
            "p50_first_token_changed_s": float(np.median(other)),
            "p50_first_token_unchanged_s": base,
        }
    claims.add("adapter_change", claim_vec)
    claim = att.claim(claim_vec + claims.queue_share("adapter_change"))
    if not by_op or not material(claim):
        return []
    flags = changed[rows]
    batch = _batching(frame, rows)
    load = _load_share(run)
    main = max(by_op, key=lambda op: by_op[op]["changed"])
    figures = by_op[main]
    share = f"; {load[0]:.0%} of the server's busy samples were in loading" if load else ""
    batching = ""
    if batch is not None:
        batching = (
            f"; it streamed {batch['streaming']:.1f} requests at a time on average while "
            f"{batch['in_flight']:.1f} were in flight"
        )
    return [
        latency_finding(
            "adapter_change",
            f"adapter changes cost the server: {main} requests that changed adapter waited "
            f"{figures['p50_first_token_changed_s'] * 1000:.0f} ms for their first token at p50, "
            f"{figures['p50_first_token_unchanged_s'] * 1000:.0f} ms when they did not "
            f"({int(flags.sum())} of {len(rows)} requests changed it){share}{batching}",
            ["model", "queue"],
            claim,
            int(flags.sum()),
            {
                "by_op": by_op,
                "changed": int(flags.sum()),
                "requests": len(rows),
                "batching": batch,
                "server_load_share": load[0] if load else None,
                "server_busy_samples": load[1] if load else None,
            },
            [RECORDS, f"{PROFILES}/target.collapsed"],
            "route each project to a server (or replica) of its own so adapters stay loaded, "
            "group requests by adapter, or use a server that keeps several adapters resident "
            "and applies them per request",
            gain_s=claim["seconds"],
        )
    ]
