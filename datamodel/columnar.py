"""The record of :class:`~datamodel.records.OpRecord` as an Arrow schema, and records in
Parquet and CSV.

Every field of the record is a typed column: numbers as float64 or int64, the stage
seconds as a struct with one float64 per stage of :data:`~datamodel.records.STAGES`, the
cache misses as a list of strings. The schema carries its version in its metadata
(``loadlens.records``), so a reader can tell what it was written with. A field a record
lacks is null in its column and absent again when read back.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datamodel.errors import ConfigError
from datamodel.records import STAGES

RECORDS_SCHEMA_VERSION = 2
"""Version of the columnar record layout (``loadlens.records`` in the schema metadata).
2 added ``ttft_planned``, ``itl_p50`` and ``itl_p99``; files of layout 1 read with those
columns missing."""
VERSION_KEY = b"loadlens.records"

_FIELDS: list[tuple[str, pa.DataType]] = [
    ("id", pa.string()),
    ("op", pa.string()),
    ("project", pa.string()),
    ("stage", pa.string()),
    ("worker", pa.int64()),
    ("replica", pa.int64()),
    ("planned", pa.float64()),
    ("sent", pa.float64()),
    ("duration", pa.float64()),
    ("lag", pa.float64()),
    ("wait", pa.float64()),
    ("service", pa.float64()),
    ("stages", pa.struct([(name, pa.float64()) for name in STAGES])),
    ("misses", pa.list_(pa.string())),
    ("flops", pa.float64()),
    ("node", pa.string()),
    ("pid", pa.int64()),
    ("ok", pa.bool_()),
    ("error", pa.string()),
    ("switched", pa.bool_()),
    ("served", pa.string()),
    ("ttft", pa.float64()),
    ("ttft_planned", pa.float64()),
    ("itl", pa.float64()),
    ("itl_p50", pa.float64()),
    ("itl_p99", pa.float64()),
    ("tokens_out", pa.int64()),
    ("http_status", pa.int64()),
]
RECORD_SCHEMA = pa.schema(
    [pa.field(name, kind) for name, kind in _FIELDS],
    metadata={VERSION_KEY: str(RECORDS_SCHEMA_VERSION).encode()},
)
"""The Arrow schema of a record (see the module docstring)."""
NAMES = [name for name, _ in _FIELDS]


def _cell(name: str, value: Any) -> Any:
    if name == "stages":
        if not isinstance(value, Mapping):
            return None
        return {s: float(value[s]) if s in value else None for s in STAGES}
    if name == "misses":
        return [str(v) for v in value] if isinstance(value, list | tuple) else None
    return value


def to_table(records: Iterable[Mapping[str, Any]], misfits: list[str] | None = None) -> pa.Table:
    """``records`` (dicts as in ``records.jsonl``) as an Arrow table of :data:`RECORD_SCHEMA`.

    A value that does not fit its column raises :class:`ConfigError` naming the field; with
    ``misfits`` given it is read as missing instead, and the field is added to ``misfits``
    (a hand-edited or foreign file is still read)."""
    rows = list(records)
    columns = {}
    for name, kind in _FIELDS:
        values = [_cell(name, r.get(name)) for r in rows]
        try:
            columns[name] = pa.array(values, type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            if misfits is None:
                raise ConfigError(f"records: field {name!r} does not fit {kind}: {exc}") from None
            columns[name] = pa.array([_fitted(v, kind) for v in values], type=kind)
            misfits.append(name)
    return pa.Table.from_pydict(columns, schema=RECORD_SCHEMA)


def _fitted(value: Any, kind: pa.DataType) -> Any:
    """``value`` if it fits a column of ``kind`` on its own, else ``None``."""
    try:
        pa.array([value], type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return None
    return value


def from_table(table: pa.Table) -> list[dict[str, Any]]:
    """The records of ``table`` as dicts, a null field left out (as in ``records.jsonl``,
    where a field a writer did not know is absent); a stage no record timed is left out of
    its ``stages``."""
    out = []
    for row in table.to_pylist():
        record = {k: v for k, v in row.items() if v is not None}
        if isinstance(record.get("stages"), dict):
            record["stages"] = {k: v for k, v in record["stages"].items() if v is not None}
        out.append(record)
    return out


def write_parquet(records: Iterable[Mapping[str, Any]], path: Path) -> int:
    """Write ``records`` to a Parquet file at ``path`` (zstd); how many were written."""
    return write_parquet_table(to_table(records), path)


def write_parquet_table(table: pa.Table, path: Path) -> int:
    """Write ``table`` (of :data:`RECORD_SCHEMA`) to a Parquet file at ``path`` (zstd),
    whole or not at all: written beside it and renamed; how many rows were written."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: leave no half file taking space
        raise
    return table.num_rows


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """The records of a Parquet file written by :func:`write_parquet`, as dicts."""
    return from_table(read_parquet_table(path))


TEXTS = ("op", "project", "stage", "node", "error", "served")
"""The text fields that repeat across records (a run has few distinct values of each)."""


def read_parquet_table(path: Path, *, coded: bool = False) -> pa.Table:
    """The table of a Parquet file written by :func:`write_parquet`; :class:`ConfigError`
    when it is not one (unreadable, or a newer layout than this reader knows). ``coded``
    keeps the repeating text fields (:data:`TEXTS`) as Arrow dictionaries, as Parquet
    stores them: a million records' texts then take a few megabytes, not a hundred."""
    try:
        table = pq.read_table(path, read_dictionary=list(TEXTS) if coded else None)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"{path} is not a readable Parquet file: {exc}") from None
    version = (table.schema.metadata or {}).get(VERSION_KEY)
    if version is None:
        raise ConfigError(f"{path} has no {VERSION_KEY.decode()} version: not loadlens records")
    if int(version) > RECORDS_SCHEMA_VERSION:
        raise ConfigError(
            f"{path} holds records of layout {int(version)}; this loadlens reads up to "
            f"{RECORDS_SCHEMA_VERSION}"
        )
    for name in NAMES:  # an older layout: its missing columns read as absent
        if name not in table.column_names:
            kind = RECORD_SCHEMA.field(name).type
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    table = table.select(NAMES)
    if not coded:
        return table.cast(RECORD_SCHEMA)
    schema = pa.schema(
        [
            field.with_type(pa.dictionary(pa.int32(), pa.string()))
            if field.name in TEXTS
            else field
            for field in RECORD_SCHEMA
        ],
        metadata=RECORD_SCHEMA.metadata,
    )
    return table.cast(schema)


def write_csv(records: Sequence[Mapping[str, Any]], path: Path) -> int:
    """Write ``records`` as CSV: one column per field, ``stage_<name>`` per stage, the
    misses joined by ``;``; how many rows were written."""
    header = [n for n in NAMES if n not in ("stages", "misses")]
    header += [f"stage_{s}" for s in STAGES] + ["misses"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in records:
            stages = r.get("stages") if isinstance(r.get("stages"), Mapping) else {}
            misses = r.get("misses") if isinstance(r.get("misses"), list) else []
            writer.writerow(
                [_text(r.get(n)) for n in header[: -len(STAGES) - 1]]
                + [_text(stages.get(s)) for s in STAGES]  # type: ignore[union-attr]
                + [";".join(str(m) for m in misses)]  # type: ignore[union-attr]
            )
    return len(records)


def _text(value: Any) -> str:
    return "" if value is None else str(value)
