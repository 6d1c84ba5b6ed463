"""Records written where they happen: each generator worker writes its own Parquet shards.

A worker given the run's results folder writes its finished records there itself, as
shards named ``g<worker>-<n>.parquet`` under ``records/``, at least every
:data:`FLUSH_S` and at every drain; the driver receives counts and a bounded sample for
the live display (:class:`Tally`), never the records. A worker on a node that does not
see the results folder (no shared file system: the folder's marker file is not there)
writes to a spool on its own node instead, and the driver collects the spool's shards
as files at the end of every stage (:func:`collect_spool`), and every 10 s while a stage
goes without waiting for them (:func:`fetch_spool`, :func:`place_spool`).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from datamodel.errors import ResultsUnwritable
from datamodel.runfolder import SHARDS, RecordWriter, unwritable

FLUSH_S = 1.0
"""Longest a finished record waits in a worker before it is on disk."""
SAMPLE = 200
"""Most finished records a drain samples for the live display, per worker."""


def marker_name(token: str) -> str:
    """The file a fleet leaves in the results folder's ``records/``: a worker that sees it
    shares the driver's file system."""
    return f".fleet-{token}"


def spool_dir(run_name: str) -> Path:
    """Where a worker that cannot see the results folder writes its shards, on its node."""
    return Path(tempfile.gettempdir()) / "loadlens-spool" / run_name


class Tally:
    """What a worker tells the driver of the records it finished since the last drain:
    counts, and a uniform sample of at most :data:`SAMPLE` (op, duration, ok)."""

    def __init__(self) -> None:
        self._rng = random.Random(0)
        self._served: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.done = 0
        self.errors = 0
        self.swaps = 0
        self.sample: list[tuple[str, float, bool]] = []

    def add(self, record: dict[str, Any]) -> None:
        """Count one finished record (a reservoir keeps the sample uniform)."""
        self.done += 1
        self.errors += 0 if record["ok"] else 1
        self.swaps += 1 if record.get("switched") else 0
        served = record.get("served")
        if served:  # an HTTP stack: a change of the served adapter, in finishing order
            self.swaps += self._served is not None and served != self._served
            self._served = served
        item = (str(record["op"]), float(record["duration"] or 0.0), bool(record["ok"]))
        if len(self.sample) < SAMPLE:
            self.sample.append(item)
        else:
            slot = self._rng.randrange(self.done)
            if slot < SAMPLE:
                self.sample[slot] = item

    def take(self) -> dict[str, Any]:
        """The tally since the last take, and start again."""
        out = {
            "done": self.done,
            "errors": self.errors,
            "swaps": self.swaps,
            "sample": self.sample,
        }
        self._reset()
        return out


class WorkerShards:
    """One worker's shard writer: in the results folder when this node sees it, else in
    this node's spool."""

    def __init__(self, worker: int, results: str, token: str, run_name: str) -> None:
        folder = Path(results)
        self.shared = (folder / SHARDS / marker_name(token)).exists()
        if not self.shared:
            folder = spool_dir(run_name)
        self.folder = folder
        self.prefix = f"g{worker}"
        self.written = 0
        self.failed: str | None = None
        """Why a write failed (a full disk); the records not written stay with the worker."""
        self._writer: RecordWriter | None = None

    def flush(self, records: list[dict[str, Any]]) -> bool:
        """Write ``records`` as one shard; whether they are on disk (if not, the caller
        keeps them and :attr:`failed` says why). After a failed write nothing more is
        tried: the run stops, and what room is left is the run's to close with."""
        if not records or self.failed is not None:
            return not records
        try:
            if self._writer is None:
                self._writer = RecordWriter(self.folder, prefix=self.prefix, reserve=False)
            self._writer.write(records)
        except ResultsUnwritable as exc:
            self.failed = str(exc)
            return False
        self.written += len(records)
        return True


@ray.remote(num_cpus=0)
def _spool_files(folder: str) -> list[tuple[str, bytes]]:
    """The finished shards of a spool, read on its node."""
    out = []
    for path in sorted((Path(folder) / SHARDS).glob("*.parquet")):
        with contextlib.suppress(OSError):
            out.append((path.name, path.read_bytes()))
    return out


@ray.remote(num_cpus=0)
def _spool_remove(folder: str, names: list[str]) -> None:
    """Remove the shards of a spool the driver has written."""
    for name in names:
        (Path(folder) / SHARDS / name).unlink(missing_ok=True)


def fetch_spool(node: str, folder: str) -> Any:
    """Ask ``node`` for the finished shards of its spool ``folder``: a reference to
    ``[(name, bytes)]`` for :func:`place_spool`."""
    there = NodeAffinitySchedulingStrategy(node, soft=False)
    return _spool_files.options(scheduling_strategy=there).remote(folder)


def collect_spool(node: str, folder: str, results: Path, *, timeout: float) -> int:
    """Move the shards of the spool ``folder`` on ``node`` into ``results/records/``, each
    written whole and renamed into place before it is removed there; how many files.
    Raises what Ray raises when the node does not answer."""
    files = ray.get(fetch_spool(node, folder), timeout=timeout)
    removed = place_spool(node, folder, files, results)
    if removed is not None:
        ray.get(removed, timeout=timeout)
    return len(files)


def place_spool(node: str, folder: str, files: list[tuple[str, bytes]], results: Path) -> Any:
    """Write fetched spool shards into ``results/records/`` (each whole, then renamed in;
    a shard placed twice is the same file), then have ``node`` remove them from its spool:
    the removal's reference, or ``None`` when there were none."""
    target = results / SHARDS
    target.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        tmp = target / f".{name}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target / name)
        except OSError as exc:  # a full disk: the shard stays in the spool
            tmp.unlink(missing_ok=True)
            raise unwritable(target, exc) from None
    if not files:
        return None
    names = [name for name, _ in files]
    there = NodeAffinitySchedulingStrategy(node, soft=False)
    return _spool_remove.options(scheduling_strategy=there).remote(folder, names)
