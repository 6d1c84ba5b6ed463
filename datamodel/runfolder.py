"""Run folders, ``results/<run-id>/``: written as a run goes, read back once as plain data.

JSON files are written atomically (temporary file + rename). Records are appended as JSON
lines and flushed as they arrive, so an interrupted run keeps every finished one.

Only ``run.json`` and ``records.jsonl`` must exist. Every other file is optional: a missing
one is ``None`` here (and later means fewer findings), an unreadable one is ``None`` plus a
note in :attr:`RunData.notes`. A torn line in a ``.jsonl`` file (a crash mid-write) is
skipped and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from datamodel.columnar import (
    NAMES,
    RECORD_SCHEMA,
    read_parquet_table,
    to_table,
    write_parquet_table,
)
from datamodel.errors import ConfigError, ResultsUnwritable
from datamodel.frame import Frame, Records, infer_switches
from datamodel.records import number
from datamodel.stacks import Stacks, read_collapsed

SCHEMA_VERSION = 2
"""Version of the run folder's layout (records gained ids, planned send times and lag in 2)."""
RUN_JSON = "run.json"
RECORDS = "records.jsonl"
RECORDS_PARQUET = "records.parquet"
"""The records as one Parquet file (:mod:`datamodel.columnar`), in place of ``records.jsonl``."""
SHARDS = "records"
"""A folder of Parquet shards of records, each written whole by the process that issued them."""
INGEST = "ingest.json"
TIMELINE = "timeline.jsonl"
GAUGES = "gauges.jsonl"
SNAPSHOTS = "snapshots.json"
MLX_PROBE = "mlx_probe.json"
PROFILES = "profiles"


@dataclass(frozen=True)
class RunData:
    """Everything a run folder holds, parsed; optional files are ``None`` when absent."""

    path: Path
    """The run folder."""
    run: dict[str, Any]
    """``run.json``: spec, replicas, stages, replica_stats, machine."""
    records: Sequence[Mapping[str, Any]]
    """One mapping per issued operation: dicts read from ``records.jsonl``, or rows of
    columns (:class:`~datamodel.frame.Records`) read from Parquet."""
    ingest: list[dict[str, Any]] | None = None
    """``ingest.json``: one entry per project ingest."""
    timeline: list[dict[str, Any]] | None = None
    """``timeline.jsonl``: process and system samples."""
    gauges: list[dict[str, Any]] | None = None
    """``gauges.jsonl``: each replica's own figures every second (cache bytes, MLX memory)."""
    profiles: dict[str, Stacks] | None = None
    """``profiles/<role>.collapsed``: collapsed stacks by role (file stem)."""
    wall: dict[str, Stacks] | None = None
    """``profiles/<role>.wall``: wall-clock milliseconds of request threads by role, per
    stack ending in a state (``[cpu]``, ``[native]``, ``[wait:threads]``, ``[wait]``)."""
    snapshots: list[dict[str, Any]] | None = None
    """``snapshots.json``: memory snapshots per replica and label."""
    mlx_probe: list[dict[str, Any]] | None = None
    """``mlx_probe.json``: MLX device, BLAS and matmul speed per replica."""
    notes: list[str] = field(default_factory=list)
    """What could not be read, and how many torn lines were skipped."""

    @classmethod
    def load(cls, path: str | Path) -> RunData:
        """Read the run folder at ``path``.

        Raises :class:`ConfigError` when the folder, ``run.json`` or ``records.jsonl`` is
        missing or unreadable; optional files only add notes.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise ConfigError(f"run folder {folder} does not exist (expected results/<run-id>/)")
        run = _read_json(folder / RUN_JSON)
        if not isinstance(run, dict):
            raise ConfigError(f"{folder / RUN_JSON} is not a JSON object")
        notes: list[str] = []
        records = read_run_records(folder, notes)
        infer_switches(records)
        return cls(
            path=folder,
            run=run,
            records=records,
            ingest=_optional_list(folder / INGEST, notes),
            timeline=_read_jsonl(folder / TIMELINE, notes, required=False),
            gauges=_read_jsonl(folder / GAUGES, notes, required=False),
            profiles=_read_profiles(folder / PROFILES, notes),
            wall=_read_profiles(folder / PROFILES, notes, "*.wall"),
            snapshots=_optional_list(folder / SNAPSHOTS, notes),
            mlx_probe=_optional_list(folder / MLX_PROBE, notes),
            notes=notes,
        )

    @property
    def run_id(self) -> str:
        """The run id from ``run.json``, else the folder name."""
        return str(self.run.get("run_id") or self.path.name)

    def section(self, key: str) -> list[dict[str, Any]]:
        """A list section of ``run.json`` (``replicas``, ``stages``, ``replica_stats``)."""
        value = self.run.get(key)
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    @property
    def cpus(self) -> int | None:
        """Logical CPUs of the machine the run was started on, if recorded."""
        machine = self.run.get("machine")
        cpus = machine.get("cpus_logical") if isinstance(machine, dict) else None
        return int(cpus) if isinstance(cpus, int | float) and cpus > 0 else None

    @property
    def stack(self) -> dict[str, Any]:
        """``run.json``'s facts of an HTTP stack (kind, url, pid, exit code; ``target`` in
        folders written before the rename), empty when there are none."""
        found = self.run.get("stack", self.run.get("target"))
        return found if isinstance(found, dict) else {}

    def server_samples(self) -> list[dict[str, Any]]:
        """Timeline samples of an HTTP stack's server process (role ``server``; ``target`` in
        folders written before the rename)."""
        return self.samples("server") or self.samples("target")

    def server_stacks(self) -> dict[str, int] | None:
        """py-spy stacks of an HTTP stack's server process (``None`` when not profiled)."""
        profiles = self.profiles or {}
        return profiles.get("server") or profiles.get("target")

    def service_config(self) -> dict[str, Any]:
        """``spec.config.service`` from ``run.json`` (empty when not recorded)."""
        node: Any = self.run
        for key in ("spec", "config", "service"):
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    def ok_records(self, op: str | None = None) -> list[Mapping[str, Any]]:
        """Records that completed, optionally only those of ``op``."""
        frame = Frame.of(self.records)
        mask = frame.ok if op is None else frame.ok & frame.equals("op", op)
        return [self.records[i] for i in np.flatnonzero(mask).tolist()]

    def stage_windows(self) -> dict[str, tuple[float, float]]:
        """``stage -> (first issue, last completion)`` in UNIX seconds, from the records."""
        frame = Frame.of(self.records)
        start = frame.value("planned")
        end = start + frame.value("duration")
        return {
            str(stage): (float(start[rows].min()), float(end[rows].max()))
            for stage, rows in frame.groups("stage", start > 0)
        }

    def samples(self, role_prefix: str) -> list[dict[str, Any]]:
        """Timeline samples whose role starts with ``role_prefix``, by time."""
        rows = [s for s in self.timeline or [] if str(s.get("role", "")).startswith(role_prefix)]
        return sorted(rows, key=lambda s: number(s.get("t")))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: not a finished loadlens run folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is unreadable: {exc}") from None


def _optional_list(path: Path, notes: list[str]) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    try:
        data = _read_json(path)
    except ConfigError as exc:
        notes.append(f"ignored {path.name}: {exc}")
        return None
    if not isinstance(data, list):
        notes.append(f"ignored {path.name}: expected a JSON list")
        return None
    return [d for d in data if isinstance(d, dict)]


def read_run_records(folder: Path, notes: list[str]) -> Records:
    """The records of the run folder, as columns (:class:`~datamodel.frame.Records`).

    They are its ``records.parquet`` when it has one (a finished run); else its shards
    under ``records/`` (a run still going, or one that crashed before compacting them);
    else its ``records.jsonl`` (runs written before records were columnar). A shard that
    cannot be read (torn by a crash while it was written) is left out with a note; a
    ``records.jsonl`` value that is not of its field's type is read as missing, with a
    note. :class:`ConfigError` when there are no records at all.
    """
    parquet = folder / RECORDS_PARQUET
    if parquet.exists():
        return Records(read_parquet_table(parquet, coded=True))
    shards = sorted((folder / SHARDS).glob("*.parquet")) if (folder / SHARDS).is_dir() else []
    if shards:
        tables = []
        for path in shards:
            try:
                tables.append(read_parquet_table(path, coded=True))
            except ConfigError as exc:
                notes.append(f"skipped shard {path.name}: {exc}")
        return Records(pa.concat_tables(tables) if tables else to_table([]))
    fast = _read_jsonl_table(folder / RECORDS)
    if fast is not None:
        return Records(fast)
    lines = _read_jsonl(folder / RECORDS, notes, required=not (folder / SHARDS).is_dir())
    misfits: list[str] = []
    table = to_table(lines or [], misfits)
    if misfits:
        notes.append(
            f"{RECORDS}: values of {', '.join(misfits)} that are not of their type were "
            "read as missing"
        )
    return Records(table)


def _read_jsonl_table(path: Path) -> pa.Table | None:
    """``records.jsonl`` parsed by Arrow's JSON reader straight into the record schema (a
    million lines in seconds); ``None`` when it cannot be (a torn line, a value not of its
    type, no file), and the line-by-line reader, which says why, takes over."""
    import pyarrow.json as pj

    options = pj.ParseOptions(explicit_schema=RECORD_SCHEMA, unexpected_field_behavior="ignore")
    try:
        table = pj.read_json(path, parse_options=options)
    except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table.select(NAMES).cast(RECORD_SCHEMA)


def _read_jsonl(path: Path, notes: list[str], *, required: bool) -> list[dict[str, Any]] | None:
    try:
        rows, torn = read_jsonl(path)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path} is missing: not a finished loadlens run folder") from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        if required:
            raise ConfigError(f"{path} is unreadable: {exc}") from None
        notes.append(f"ignored {path.name}: {exc}")
        return None
    if torn:
        notes.append(f"{path.name}: skipped {torn} unreadable line(s)")
    return rows


def _parse_lines(lines: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
    rows: list[dict[str, Any]] = []
    torn = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            torn += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            torn += 1
    return rows, torn


def _read_profiles(
    folder: Path, notes: list[str], pattern: str = "*.collapsed"
) -> dict[str, Stacks] | None:
    if not folder.is_dir():
        return None
    profiles: dict[str, Stacks] = {}
    for path in sorted(folder.glob(pattern)):
        try:
            profiles[path.stem] = read_collapsed(path)
        except OSError as exc:
            notes.append(f"ignored {PROFILES}/{path.name}: {exc}")
    return profiles or None


def utc_now() -> str:
    """The current time, UTC, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors of a write that say the results folder cannot take more (not a bug)."""
RESERVE = ".space-reserve"
"""A file of :data:`RESERVE_BYTES` a run keeps in its folder while it runs: freed when a
write fails for want of space, it leaves room to close the run (its summary, ``run.json``)."""
RESERVE_BYTES = 1 << 20


def unwritable(path: Path, exc: OSError) -> ResultsUnwritable:
    """The error for a failed write of ``path``: what the system said, in words."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = " (free some space)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return ResultsUnwritable(f"cannot write {path}: {reason}{hint}")


class RecordWriter:
    """Writes a run's records as Parquet shards under ``records/``, one per batch (a drain,
    about every second), each written whole and renamed into place, so a crash loses at
    most the batch being written. :meth:`close` compacts the shards into
    ``records.parquet``.

    A write that fails (a full disk, a read-only folder) raises :class:`ResultsUnwritable`
    naming the folder and the reason; the shards written before stay, and the folder's
    space reserve (:data:`RESERVE`) is freed so the run can still be closed."""

    def __init__(self, folder: Path, *, prefix: str | None = None, reserve: bool = True) -> None:
        """``prefix`` names this writer's shards (default: its process id), so that many
        writers share one folder; ``reserve``: keep the folder's space reserve (the run's
        own writer does; a generator worker writing beside it does not)."""
        self.folder = folder
        self.shards = folder / SHARDS
        self.prefix = prefix or str(os.getpid())
        self.count = 0
        self._next = 0
        self.failed: str | None = None
        """Why a write failed, once one has."""
        try:
            self.shards.mkdir(parents=True, exist_ok=True)
            if reserve:
                _reserve(folder / RESERVE)
        except OSError as exc:
            raise unwritable(self.shards, exc) from None

    def write(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` as one shard (nothing when there are none)."""
        if not records:
            return
        shard = self.shards / f"{self.prefix}-{self._next:07d}.parquet"
        try:
            write_parquet_table(to_table(records), shard)
        except OSError as exc:
            error = unwritable(shard.parent, exc)
            self.failed = str(error)
            self.release()
            raise error from None
        self._next += 1
        self.count += len(records)

    def release(self) -> None:
        """Free the space reserve (where the folder still lets it be removed)."""
        with contextlib.suppress(OSError):
            (self.folder / RESERVE).unlink(missing_ok=True)

    def close(self) -> None:
        """Compact the shards into ``records.parquet``; after a failed write, or when the
        compacted file does not fit, the shards stay (every reader takes them)."""
        self.release()
        if self.failed is not None:
            return
        try:
            compact(self.folder)
        except OSError as exc:
            self.failed = str(unwritable(self.folder / RECORDS_PARQUET, exc))


def shard_ids(folder: Path, prefix: str) -> set[str]:
    """The record ids in the shards of ``folder/records/`` named ``<prefix>-*`` (a torn
    shard holds none): which of one writer's records reached the disk."""
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for path in sorted((folder / SHARDS).glob(f"{prefix}-*.parquet")):
        with contextlib.suppress(OSError, pa.ArrowException):
            ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


def _reserve(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    except OSError:  # a file system without fallocate: zeros take the space as well
        os.write(fd, bytes(RESERVE_BYTES))
    finally:
        os.close(fd)


def compact(folder: Path) -> int:
    """Merge the shards under ``folder/records/`` into ``folder/records.parquet`` (a torn
    shard is left out) and remove them; how many records it holds. The file is complete
    before a shard is removed, and a reader ignores shards beside it, so a crash in
    between loses and doubles nothing."""
    shards = folder / SHARDS
    if not shards.is_dir() or (folder / RECORDS_PARQUET).exists():
        return 0
    tables = []
    for path in sorted(shards.glob("*.parquet")):
        with contextlib.suppress(ConfigError):  # torn: the reader says so while it is there
            tables.append(read_parquet_table(path))
    table = pa.concat_tables(tables) if tables else to_table([])
    write_parquet_table(table, folder / RECORDS_PARQUET)
    shutil.rmtree(shards, ignore_errors=True)
    return table.num_rows


class JsonlWriter:
    """Appends rows to a ``.jsonl`` file (the gauges) and flushes after every batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = path.open("a")
        self.count = 0

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append ``records``."""
        for record in records:
            self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        self.count += len(records)

    def close(self) -> None:
        """Flush to disk and close."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a ``.jsonl`` file and how many lines were unreadable.

    A torn line (a crash mid-write) or a line that is not an object is skipped and counted.
    Raises ``OSError`` / ``UnicodeDecodeError`` when the file itself cannot be read.
    """
    return _parse_lines(path.read_text().splitlines())


def load_records(folder: Path) -> list[dict[str, Any]]:
    """A run folder's records as dicts with every field of the record (``None`` where a
    record has none, as :class:`~datamodel.records.OpRecord` writes it), read as
    :func:`read_run_records` reads them."""
    records = read_run_records(folder, [])
    infer_switches(records)
    out = records.frame.table.to_pylist()
    for record in out:
        if isinstance(record.get("stages"), dict):
            record["stages"] = {k: v for k, v in record["stages"].items() if v is not None}
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``records.jsonl`` (torn lines skipped; for an HTTP target, which
    of them changed the served adapter is inferred: :func:`infer_switches`)."""
    records = read_jsonl(path)[0]
    infer_switches(records)
    return records
