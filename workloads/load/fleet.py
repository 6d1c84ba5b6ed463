"""The load generator workers of a run: started, drained, and replaced when one dies.

Every record carries an id ``<worker>-<sequence>``. Given the run folder
(:attr:`Fleet.results`), each worker writes its own records there (:mod:`.shards`) and a
drain brings counts; a worker on a node without the driver's file system spools them on
its node, and the driver collects the files at each stage's end. Without it, a drain
hands over every batch of records the worker holds that the driver has not acknowledged;
the driver writes them, then acknowledges them with its next drain, so a drain that
fails or times out loses nothing (the worker sends the batch again).

A worker that answers no drain for ``LOADLENS_DRAIN_TIMEOUT_S`` (30 s), or whose process
died, is lost:

- the operations it had in flight at its last drain and did not write itself become
  error records (``GeneratorLost``);
- its shared-memory ledger (:mod:`.ledger`) says how many ids it issued in all, so the
  ids it issued after its last drain are known by range; the caller turns them into
  records where it knows what they were (an open-loop schedule), else the outage counts
  them;
- its outage is noted for ``run.json``, and a replacement under a new worker number
  carries the rest of the stage on.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from datamodel.errors import ResultsUnwritable
from datamodel.runfolder import SHARDS, RecordWriter, shard_ids, unwritable
from workloads.load.generator import MAX_IN_FLIGHT, GeneratorWorker
from workloads.load.ledger import ledger_dir, read_ledger, remove_ledgers
from workloads.load.progress import Progress
from workloads.load.shards import collect_spool, fetch_spool, marker_name, place_spool

DRAIN_TIMEOUT_S = 30.0
"""Longest a worker may leave drains unanswered before it counts as lost (the environment's
``LOADLENS_DRAIN_TIMEOUT_S`` sets another)."""
DRAIN_WAIT_S = 0.5
"""How long one drain waits for the workers' answers; a later drain takes the rest."""


def drain_timeout() -> float:
    """:data:`DRAIN_TIMEOUT_S`, or the environment's ``LOADLENS_DRAIN_TIMEOUT_S``."""
    try:
        value = float(os.environ.get("LOADLENS_DRAIN_TIMEOUT_S", DRAIN_TIMEOUT_S))
    except ValueError:
        return DRAIN_TIMEOUT_S
    return value if value > 0 else DRAIN_TIMEOUT_S


@ray.remote(num_cpus=0)
def _read_ledger_there(path: str) -> tuple[int, float] | None:
    """A worker's ledger, read on its own node."""
    from pathlib import Path

    return read_ledger(Path(path))


@dataclass
class Lost:
    """What a lost worker leaves: the ids it issued after its last drain, by range."""

    worker: int
    known: int
    """Ids ``<worker>-0`` up to ``<worker>-<known - 1>`` are records (done or lost)."""
    issued: int | None
    """All ids it issued, from its ledger; ``None`` when the ledger could not be read."""
    on_disk: frozenset[int] = frozenset()
    """Sequence numbers past ``known`` whose records the worker wrote itself after its
    last drain (its own shards)."""

    @property
    def unknown(self) -> list[int]:
        """Sequence numbers issued after its last drain and not on disk: their outcome is
        unknown."""
        stop = self.issued if self.issued is not None else self.known
        return [seq for seq in range(self.known, stop) if seq not in self.on_disk]


@dataclass
class Fleet:
    """The live generator workers, by worker number."""

    replicas: list[Any]
    routes: dict[str, int] | None
    run_name: str
    http: dict[str, Any] | None = None
    """An HTTP stack's plan: workers call it directly (no replicas)."""
    max_in_flight: int = MAX_IN_FLIGHT
    """Each worker's cap on operations in flight."""
    placement: list[str] = field(default_factory=list)
    """Nodes to put workers on, in turn (worker ``k`` on ``placement[k % len]``); empty:
    wherever Ray puts them."""
    pinned: bool = False
    """Whether workers must be on their placement's node (a stack reachable only there)."""
    cpus: float = 0.0
    """CPU each worker reserves."""
    offsets: dict[str, float] = field(default_factory=dict)
    """Each node's clock minus the driver's (:mod:`cluster.clock`)."""
    workers: dict[int, Any] = field(default_factory=dict)
    issued: dict[int, int] = field(default_factory=dict)
    """Worker number -> operations it issued: as of its last drain, or, once it is lost,
    as its ledger says."""
    dropped: dict[int, int] = field(default_factory=dict)
    """Worker number -> arrivals it dropped at its cap on operations in flight."""
    pending: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    """Worker number -> operations in flight at its last drain."""
    outages: list[dict[str, Any]] = field(default_factory=list)
    """One entry per worker lost: when, why, what was lost, who replaced it."""
    nodes: dict[int, str] = field(default_factory=dict)
    """Worker number -> its Ray node id, where known."""
    _next: int = 0
    _acked: dict[int, int] = field(default_factory=dict)
    _asked: dict[int, tuple[Any, float]] = field(default_factory=dict)
    _slow: set[int] = field(default_factory=set)
    timeout: float = field(default_factory=drain_timeout)
    """Seconds a worker may leave drains unanswered before it counts as lost."""
    results: Path | None = None
    """The run folder: workers write their records there themselves (:mod:`.shards`).
    ``None``: they hand them over in drains, and the driver writes them."""
    spools: dict[int, str] = field(default_factory=dict)
    """Worker number -> its spool, for a worker on a node that does not see the results
    folder: the driver collects its shards at every stage's end, and while a stage goes
    every :attr:`spool_every_s` without waiting for it."""
    spool_every_s: float = 10.0
    """Seconds between two collections of the spools inside a stage: what a node that dies
    can take with its spool."""
    written: dict[int, int] = field(default_factory=dict)
    """Worker number -> records it has written itself, as of its last drain."""
    _token: str = field(default_factory=lambda: os.urandom(8).hex())
    _info: dict[int, Any] = field(default_factory=dict)
    _gathering: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(node, spool) -> its shards asked for, not yet placed."""
    _gathered_at: float = field(default_factory=time.monotonic)
    _uncollected: dict[int, list[int]] = field(default_factory=dict)
    """Lost worker -> its sequence numbers spooled and not collected at its loss."""

    def __post_init__(self) -> None:
        if self.results is not None:
            marker = self.results / SHARDS / marker_name(self._token)
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError as exc:
                raise unwritable(marker.parent, exc) from None

    def start(self, count: int) -> list[int]:
        """Start ``count`` new workers; returns their numbers."""
        numbers = []
        for _ in range(count):
            k = self._next
            self._next += 1
            options: dict[str, Any] = {"name": f"generator-{k}-{self.run_name}"}
            if self.cpus > 0:
                options["num_cpus"] = self.cpus
            if self.placement:
                node = self.placement[k % len(self.placement)]
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    node, soft=not self.pinned
                )
            self.workers[k] = GeneratorWorker.options(**options).remote(  # type: ignore[attr-defined]
                k,
                self.replicas,
                self.routes,
                self.http,
                ledger=str(ledger_dir(self.run_name) / str(k)),
                max_in_flight=self.max_in_flight,
                offsets=self.offsets,
                results=str(self.results) if self.results is not None else None,
                token=self._token,
                run_name=self.run_name,
            )
            self.issued[k] = 0
            self.written[k] = 0
            self._info[k] = self.workers[k].info.remote()  # where it is, once it is up
            self.dropped[k] = 0
            self.pending[k] = []
            numbers.append(k)
        return numbers

    def facts(self) -> dict[str, Any]:
        """What ``run.json`` says of the generators: issued and dropped per worker, the cap,
        the outages and where the workers went. A lost worker's records not collected at
        its loss are counted again here: a later collection may have brought them."""
        self._recount()
        return {
            "issued_by_worker": self.issued,
            "dropped_by_worker": self.dropped,
            "written_by_worker": self.written,
            "records_written": (
                "by each worker, into its own shards"
                if self.results is not None
                else "by the driver"
            ),
            "spooled_workers": sorted(self.spools),
            "max_in_flight": self.max_in_flight,
            "outages": self.outages,
            "placement": self.placed(),
        }

    def _recount(self) -> None:
        """Count again what each outage says was spooled and not collected."""
        if self.results is None:
            return
        for outage in self.outages:
            k = outage["worker"]
            seqs = self._uncollected.get(k)
            if not seqs:
                continue
            on_disk = shard_ids(self.results, f"g{k}")
            seqs = [seq for seq in seqs if f"{k}-{seq}" not in on_disk]
            self._uncollected[k] = seqs
            outage["spooled_not_collected"] = len(seqs)
            outage["spooled_not_collected_ids"] = _ranges(k, seqs)

    def placed(self) -> dict[str, Any]:
        """Where the workers went (for ``run.json``): each worker's node, and the rule."""
        self.infos([k for k in self.workers if k not in self.nodes])
        return {
            "cpus_per_worker": self.cpus,
            "rule": (
                "pinned to the stack's node"
                if self.pinned
                else "spread over the nodes, fewest replicas first"
                if self.placement
                else "wherever Ray put them"
            ),
            "node_of_worker": {str(k): node for k, node in sorted(self.nodes.items())},
        }

    def _learn(self, wait: float = 5.0) -> None:
        """Take the node and spool of every worker that has said where it is (a worker
        still starting, or hung, is left for later: never waited on for long)."""
        refs = {ref: k for k, ref in self._info.items()}
        if not refs:
            return
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=wait)
        for ref in ready:
            k = refs[ref]
            del self._info[k]
            with contextlib.suppress(Exception):  # died before it said: no spool known
                info = ray.get(ref)
                self.nodes[k] = info["node"]
                if info.get("spool"):
                    self.spools[k] = info["spool"]

    def infos(self, numbers: list[int]) -> list[dict[str, Any]]:
        """pid and node of workers ``numbers`` (for the profiler's roles)."""
        infos = ray.get([self.workers[k].info.remote() for k in numbers])
        self.nodes.update({i["worker"]: i["node"] for i in infos})
        self.spools.update({i["worker"]: i["spool"] for i in infos if i.get("spool")})
        return infos

    def drain(
        self, writer: RecordWriter, progress: Progress, *, wait: float = DRAIN_WAIT_S
    ) -> tuple[list[dict[str, Any]], list[Lost]]:
        """Move every worker's finished records to disk, waiting at most ``wait`` seconds
        for answers. A worker that died, or left drains unanswered for :attr:`timeout`,
        is lost. Returns the records moved and the workers lost.

        A failed write (a full disk) raises before the batch is acknowledged: the worker
        keeps it."""
        now = time.monotonic()
        for k, w in self.workers.items():
            if k not in self._asked:
                self._asked[k] = (w.drain.remote(self._acked.get(k, 0)), now)
        refs = [ref for ref, _ in self._asked.values()]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=wait)[0]) if refs else set()
        moved: list[dict[str, Any]] = []
        lost: list[Lost] = []
        for k, (ref, since) in list(self._asked.items()):
            if ref not in ready:
                silent = time.monotonic() - since
                if silent > self.timeout:
                    del self._asked[k]
                    why = TimeoutError(f"no answer to a drain in {silent:.0f} s")
                    lost.append(self.lose(k, why, writer, progress))
                elif k not in self._slow:
                    self._slow.add(k)
                    progress.say(f"generator {k} is slow to answer; its records wait in it")
                continue
            del self._asked[k]
            self._slow.discard(k)
            try:
                batch = ray.get(ref)
            except Exception as exc:
                lost.append(self.lose(k, exc, writer, progress))
                continue
            fresh: list[dict[str, Any]] = []
            if "written" in batch:  # its own shards: counts only
                if batch["failed"]:
                    writer.failed = batch["failed"]
                    writer.release()
                    raise ResultsUnwritable(batch["failed"])
                writer.count += batch["written"] - self.written.get(k, 0)
                self.written[k] = batch["written"]
                progress.tally(batch["tally"], batch["in_flight"])
            else:
                for number, records in batch["batches"]:
                    if number <= self._acked.get(k, 0):
                        continue  # written already; the acknowledgement was on its way
                    writer.write(records)
                    self._acked[k] = number
                    fresh.extend(records)
                progress.add(fresh, batch["in_flight"])
            self.issued[k] = batch["issued"]
            self.dropped[k] = batch["dropped"]
            self.pending[k] = batch["pending"]
            moved.extend(fresh)
        self._gather()
        return moved, lost

    def _gather(self) -> None:
        """Inside a stage, collect the spools every :attr:`spool_every_s`, never waiting:
        ask each node for its spool's shards, and place them at a later drain once they
        are here. A node that does not answer is left to the stage's end, which says so;
        the others are asked again meanwhile."""
        if self.results is None:
            return
        if self._gathering:
            refs = list(self._gathering.values())
            ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
            for (node, spool), ref in list(self._gathering.items()):
                if ref not in ready:
                    continue
                del self._gathering[(node, spool)]
                try:
                    files = ray.get(ref)
                except Exception:  # the node is gone; the stage's end tries again
                    continue
                place_spool(node, spool, files, self.results)
        if time.monotonic() - self._gathered_at < self.spool_every_s:
            return
        self._gathered_at = time.monotonic()
        self._learn(wait=0)
        for k, place in sorted(self.spools.items()):
            where = self.nodes.get(k)
            if where is not None and k in self.workers and (where, place) not in self._gathering:
                self._gathering[(where, place)] = fetch_spool(where, place)

    def settle(self, writer: RecordWriter, progress: Progress) -> tuple[list[Any], list[Lost]]:
        """Drain until every live worker has answered a drain asked after this call began
        (the end of a stage: every record finished by now is on disk)."""
        moved, lost = self.drain(writer, progress, wait=self.timeout)
        while True:
            more, gone = self.drain(writer, progress, wait=self.timeout)
            moved, lost = moved + more, lost + gone
            if not self._asked:
                self.collect(progress)
                return moved, lost

    def collect(self, progress: Progress, *, workers: list[int] | None = None) -> None:
        """Move the spooled shards of ``workers`` (default all) into the results folder: one
        collection per node. A node that does not answer keeps them, and the run says so."""
        if self.results is None:
            return
        self._gathering.clear()  # what they bring is collected here, now
        self._learn()
        done: set[tuple[str, str]] = set()
        for k, spool in sorted(self.spools.items()):
            node = self.nodes.get(k)
            if node is None or (workers is not None and k not in workers):
                continue
            if (node, spool) in done:
                continue
            done.add((node, spool))
            try:
                collect_spool(node, spool, self.results, timeout=self.timeout)
            except ResultsUnwritable:
                raise
            except Exception as exc:  # the node is gone: its shards with it
                progress.say(f"generator shards on node {node[:8]} not collected: {exc!r}"[:300])

    def lose(self, k: int, why: BaseException, writer: RecordWriter, progress: Progress) -> Lost:
        """Record worker ``k``'s outage: its operations in flight become error records,
        and its ledger gives the ids it issued after its last drain."""
        handle = self.workers.pop(k, None)
        self._asked.pop(k, None)
        known = self.issued.get(k, 0)
        if handle is None:
            return Lost(k, known, known)
        with contextlib.suppress(Exception):  # already gone; a hung one must stop issuing
            ray.kill(handle)
        now = time.time()
        on_disk = self._written_by(k, progress)
        if self.results is not None:
            self.written[k] = len(on_disk)
        error = f"GeneratorLost: generator {k} died before recording it ({type(why).__name__})"
        pending = self.pending.pop(k, [])
        lost = [
            {**r, "ok": False, "error": error, "duration": max(now - r["planned"], 0.0)}
            for r in pending
            if r["id"] not in on_disk
        ]
        # Finished and written by the worker before its last drain, yet not on disk now: its
        # spool could not be collected (its node went down with it). Ids known, records not.
        held = {r["id"] for r in pending}
        vanished = (
            [i for i in range(known) if f"{k}-{i}" not in on_disk and f"{k}-{i}" not in held]
            if self.results is not None
            else []
        )
        self._uncollected[k] = vanished
        writer.write(lost)
        progress.add(lost, 0)
        ledger = self._ledger(k)
        after = frozenset(int(rid.rsplit("-", 1)[1]) for rid in on_disk) - set(range(known))
        gone = Lost(k, known, max(ledger[0], known) if ledger else None, after)
        if gone.issued is not None:
            self.issued[k] = gone.issued
        unknown = len(gone.unknown)
        progress.say(
            f"generator {k} was lost ({type(why).__name__}): {len(lost)} operation(s) in "
            f"flight recorded as errors, {unknown} sent after its last drain with no record"
            + ("" if gone.issued is not None else " (its ledger was unreadable: count unknown)")
            + (
                f"; {len(vanished)} record(s) it wrote to its node's spool were not collected"
                if vanished
                else ""
            )
        )
        self.outages.append(
            {
                "worker": k,
                "lost_utc": now,
                "last_issue_utc": ledger[1] if ledger else None,
                "error": f"{type(why).__name__}: {why}"[:300],
                "in_flight_lost": len(lost),
                "issued_before": self.issued.get(k, 0),
                "sent_after_last_drain": unknown if gone.issued is not None else None,
                "written_after_last_drain": len(gone.on_disk),
                "spooled_not_collected": len(vanished),
                "spooled_not_collected_ids": _ranges(k, vanished),
                "unknown_ids": _ranges(k, gone.unknown),
            }
        )
        return gone

    def _written_by(self, k: int, progress: Progress) -> set[str]:
        """Ids of the records worker ``k`` wrote itself (its spool collected first)."""
        if self.results is None:
            return set()
        if k in self.spools:
            self.collect(progress, workers=[k])
        return shard_ids(self.results, f"g{k}")

    def _ledger(self, k: int) -> tuple[int, float] | None:
        """Worker ``k``'s ledger: here, else on its node."""
        path = ledger_dir(self.run_name) / str(k)
        found = read_ledger(path)
        node = self.nodes.get(k)
        if found is not None or node is None or node == ray.get_runtime_context().get_node_id():
            return found
        there = _read_ledger_there.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
        ).remote(str(path))
        try:
            return ray.get(there, timeout=self.timeout)
        except Exception:  # the node is gone too
            return None

    def close(self) -> None:
        """Close every worker's HTTP session, then end its process (the run is over; a Ray
        session that outlives the run, as an A/B's does, keeps nothing of it)."""
        closing = [w.close.remote() for w in self.workers.values()]
        with contextlib.suppress(Exception):
            ray.wait(closing, num_returns=len(closing), timeout=5.0)
        with contextlib.suppress(Exception):  # what is left in spools stays there, named
            self.collect(Progress(quiet=True))
        for w in list(self.workers.values()):
            with contextlib.suppress(Exception):  # already gone
                ray.kill(w)
        remove_ledgers(self.run_name)

    def stop(self) -> None:
        """Ask every live worker to stop issuing."""
        for w in list(self.workers.values()):
            with contextlib.suppress(Exception):  # a lost one is found by the next drain
                ray.get(w.stop.remote(), timeout=self.timeout)

    def resume(self) -> None:
        """Let every live worker issue again after :meth:`stop` (the next stage)."""
        for w in list(self.workers.values()):
            with contextlib.suppress(Exception):  # a lost one is found by the next drain
                ray.get(w.resume.remote(), timeout=self.timeout)

    def in_flight(self) -> list[dict[str, Any]]:
        """The operations in flight at the last drain (each with its ``planned`` time)."""
        return [r for rows in self.pending.values() for r in rows]


def _ranges(worker: int, seqs: list[int]) -> str:
    """Sorted sequence numbers of one worker as id ranges: ``"3-0..3-9, 3-12"`` (ids
    written after a worker's last drain leave holes in what it sent after it)."""
    spans: list[list[int]] = []
    for seq in seqs:
        if spans and seq == spans[-1][1] + 1:
            spans[-1][1] = seq
        else:
            spans.append([seq, seq])
    return ", ".join(f"{worker}-{a}" if a == b else f"{worker}-{a}..{worker}-{b}" for a, b in spans)
