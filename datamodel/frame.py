"""A run's records as numpy columns, and as rows that read those columns.

The summary, the analysis, the comparison and the report each walk every record several
times. As Python dicts a million records take gigabytes and every walk takes seconds, so
the walks that touch every record read :class:`Frame` columns instead: one float64 array
per number (NaN where a record lacks the field), one int8 array per flag (-1 where it is
absent) and one code array per text field (the texts themselves kept once).

:class:`Records` is the same columns seen as a sequence of read-only mappings, for the
code that looks at a few records at a time: a row converts a field to a Python value when
it is read, so no dict per record is ever held. A row behaves like the dict of
``records.jsonl`` (a field the record lacks is absent), except that it cannot be changed
but for ``switched``, which :func:`~datamodel.records.infer_switches` sets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datamodel.columnar import NAMES, RECORD_SCHEMA, to_table
from datamodel.quantiles import Summary, summarize
from datamodel.records import STAGES, error_kind, number

pa.set_memory_pool(pa.system_memory_pool())
"""Arrow allocates through the C library's malloc: building a million records' frame, the
default mimalloc pool kept ~190 MB more than it (peak 1.04 GB against 0.86 GB for read +
analysis, measured on a 2-core Xeon; jemalloc did as well as malloc but is not in every
build)."""

FLOATS = (
    "planned",
    "sent",
    "duration",
    "lag",
    "wait",
    "service",
    "flops",
    "ttft",
    "ttft_planned",
    "itl",
    "itl_p50",
    "itl_p99",
)
INTS = ("worker", "replica", "pid", "tokens_out", "http_status")
FLAGS = ("ok", "switched")
TEXTS = ("op", "project", "stage", "node", "error", "served")
STAGE_PREFIX = "stage:"
"""Per-stage seconds are the float columns ``stage:<name>``."""


class Frame:
    """The columns of ``n`` records (see the module docstring)."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self.n = table.num_rows
        # Each column is built on first use and kept: a step that reads a few columns of
        # ten million records holds those, not all of them. The builders hold the table,
        # never the frame, so a frame let go is freed at once (no reference cycle).
        coded: dict[str, tuple[np.ndarray, list[str]]] = {}
        self.floats: dict[str, np.ndarray] = _Lazy(
            functools.partial(_float_column, table),
            (*FLOATS, *INTS, *(STAGE_PREFIX + s for s in STAGES)),
        )
        self.flags: dict[str, np.ndarray] = _Lazy(lambda n: _flags(table.column(n)), FLAGS)
        self.codes: dict[str, np.ndarray] = _Lazy(lambda n: _coded_once(table, coded, n)[0], TEXTS)
        self.texts: dict[str, list[str]] = _Lazy(lambda n: _coded_once(table, coded, n)[1], TEXTS)
        self._timed_rows: np.ndarray | None = None
        self._ids = table.column("id")
        self._misses = table.column("misses")
        self._lists: dict[str, list[Any]] = {}

    @property
    def _timed(self) -> np.ndarray:
        """Which records have stage times."""
        if self._timed_rows is None:
            stages = self._table.column("stages")
            self._timed_rows = np.asarray(
                stages.is_valid().to_numpy(zero_copy_only=False), dtype=bool
            )
        return self._timed_rows

    @classmethod
    def of(cls, records: Sequence[Mapping[str, Any]]) -> Frame:
        """The frame of ``records``: their own when they are :class:`Records`, the rows
        taken from it when they are rows of one frame, else built from the dicts (one
        pass)."""
        if isinstance(records, Records):
            return records.frame
        first = records[0] if len(records) else None
        if isinstance(first, Row):
            source = first._frame
            if all(isinstance(r, Row) and r._frame is source for r in records):
                taken = np.fromiter((r._i for r in records), dtype=np.int64)  # type: ignore[attr-defined]
                return cls(source.rows(taken))
        return cls(to_table(records))

    @property
    def table(self) -> pa.Table:
        """The records as an Arrow table of the record schema (``switched`` as now set)."""
        return self.rows(None)

    def rows(self, indices: np.ndarray | None) -> pa.Table:
        """Records ``indices`` (all when ``None``) as an Arrow table of the record schema
        (``switched`` as now set)."""
        flags = self.flags["switched"]
        switched = pa.array(flags == 1, mask=flags < 0)
        i = self._table.schema.get_field_index("switched")
        table = self._table.set_column(i, "switched", switched)
        if indices is not None:
            table = table.take(pa.array(indices, type=pa.int64()))
        return table.cast(RECORD_SCHEMA)

    # -- columns ------------------------------------------------------------------------
    def value(self, name: str) -> np.ndarray:
        """A number column with a missing value read as 0 (as
        :func:`~datamodel.records.number` reads it)."""
        return np.nan_to_num(self.floats[name], nan=0.0)

    def flag(self, name: str) -> np.ndarray:
        """A flag column as booleans (absent is false)."""
        return self.flags[name] == 1

    @property
    def ok(self) -> np.ndarray:
        """Which records completed."""
        return self.flag("ok")

    def text(self, name: str) -> np.ndarray:
        """A text column as an object array (``None`` where absent)."""
        values = np.array([*self.texts[name], None], dtype=object)
        return values[self.codes[name]]

    def labels(self, name: str) -> np.ndarray:
        """A text column as an object array of ``str`` (``"None"`` where absent, as
        ``str(record.get(name))`` reads it)."""
        values = np.array([*self.texts[name], "None"], dtype=object)
        return values[self.codes[name]]

    def served(self) -> np.ndarray:
        """Which records carry what an HTTP server was asked to serve (a non-empty
        ``served``)."""
        empty = [k for k, text in enumerate(self.texts["served"]) if not text]
        codes = self.codes["served"]
        return (codes >= 0) & ~np.isin(codes, empty)

    def equals(self, name: str, value: Any) -> np.ndarray:
        """Which records' field ``name`` equals ``value`` (as ``record.get(name) == value``)."""
        if name in self.codes:
            texts = self.texts[name]
            code = texts.index(value) if isinstance(value, str) and value in texts else None
            if value is None:
                return self.codes[name] == -1
            return self.codes[name] == code if code is not None else np.zeros(self.n, bool)
        if name in self.flags:
            flags = self.flags[name]
            return flags == -1 if value is None else (flags == (1 if value else 0)) & (flags >= 0)
        if name in self.floats:
            column = self.floats[name]
            if value is None:
                return np.isnan(column)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return np.zeros(self.n, bool)
            return column == float(value)
        return np.array([self.get(i, name) == value for i in range(self.n)], dtype=bool)

    def groups(self, name: str, mask: np.ndarray | None = None) -> list[tuple[Any, np.ndarray]]:
        """``(text, indices)`` per distinct value of a text column among ``mask``'s
        records, in first-seen order (``None`` for records that lack it)."""
        codes = self.codes[name] if mask is None else np.where(mask, self.codes[name], -2)
        present = np.flatnonzero(codes != -2)
        if not present.size:
            return []
        kept = codes[present]
        order = np.argsort(kept, kind="stable")
        sorted_codes = kept[order]
        cuts = np.flatnonzero(np.diff(sorted_codes)) + 1
        out = []
        for chunk in np.split(order, cuts):
            code = int(kept[chunk[0]])
            label = None if code == -1 else self.texts[name][code]
            out.append((label, present[chunk]))
        return sorted(out, key=lambda group: int(group[1][0]))

    def column(self, name: str) -> list[Any]:
        """A column as Python values (``None`` where absent), kept once built."""
        if name not in self._lists:
            if name == "id":
                self._lists[name] = self._ids.to_pylist()
            elif name == "misses":
                self._lists[name] = self._misses.to_pylist()
            elif name in self.codes:
                self._lists[name] = self.text(name).tolist()
            elif name in self.floats:
                column = self.floats[name]
                missing = np.isnan(column)
                kind = np.int64 if name in INTS else np.float64
                values = np.where(missing, 0, column).astype(kind).astype(object)
                values[missing] = None
                self._lists[name] = values.tolist()
            elif name in self.flags:
                flags = self.flags[name]
                values = (flags == 1).astype(object)
                values[flags < 0] = None
                return values.tolist()  # flags change (``switched``): never kept
            else:
                raise KeyError(name)
        return self._lists[name]

    def get(self, i: int, name: str) -> Any:
        """Field ``name`` of record ``i`` as a Python value, ``None`` when it lacks it."""
        if name in self.floats:
            v = self.floats[name][i]
            if math.isnan(v):
                return None
            return int(v) if name in INTS else float(v)
        if name in self.flags:
            f = self.flags[name][i]
            return None if f < 0 else bool(f)
        if name in self.codes:
            code = self.codes[name][i]
            return None if code < 0 else self.texts[name][code]
        if name == "stages":
            if not self._timed[i]:
                return None
            stages = {s: self.floats[STAGE_PREFIX + s][i] for s in STAGES}
            return {s: float(v) for s, v in stages.items() if not math.isnan(v)}
        return self.column(name)[i]


class _Lazy(dict):
    """A dict of columns that builds each of ``names`` on first use, and keeps it."""

    def __init__(self, build: Any, names: Iterable[str]) -> None:
        super().__init__()
        self._build = build
        self._names = frozenset(names)

    def __missing__(self, key: str) -> Any:
        if key not in self._names:
            raise KeyError(key)
        value = self._build(key)
        self[key] = value
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._names or dict.__contains__(self, key)


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    if not name.startswith(STAGE_PREFIX):
        return _floats(table.column(name))
    stages = table.column("stages")  # one field's chunks taken, not the whole struct's
    return _floats(pc.struct_field(stages, name.removeprefix(STAGE_PREFIX)))


def _coded_once(
    table: pa.Table, coded: dict[str, tuple[np.ndarray, list[str]]], name: str
) -> tuple[np.ndarray, list[str]]:
    if name not in coded:
        coded[name] = _coded(table.column(name))
    return coded[name]


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    array = column.cast(pa.float64())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)


def _flags(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    out = np.where(np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False)), 1, 0)
    out = out.astype(np.int8)
    out[np.asarray(array.is_null().to_numpy(zero_copy_only=False))] = -1
    return out


def _coded(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string()) if column.num_chunks > 1 else column
    encoded = column.combine_chunks()
    if not pa.types.is_dictionary(encoded.type):
        encoded = pc.dictionary_encode(encoded)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    return codes, [str(v) for v in encoded.dictionary.to_pylist()]


class Row(Mapping[str, Any]):
    """Record ``i`` of a :class:`Records`, read from its columns when a field is asked for."""

    __slots__ = ("_frame", "_i")

    def __init__(self, frame: Frame, i: int) -> None:
        self._frame = frame
        self._i = i

    def __getitem__(self, key: str) -> Any:
        if key not in _KNOWN:
            raise KeyError(key)
        value = self._frame.get(self._i, key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The field, or ``default`` when the record lacks it."""
        if key not in _KNOWN:
            return default
        value = self._frame.get(self._i, key)
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        return key in _KNOWN and self._frame.get(self._i, str(key)) is not None

    def __iter__(self) -> Iterator[str]:
        return (k for k in NAMES if self._frame.get(self._i, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, key: str, value: Any) -> None:
        if key != "switched":
            raise TypeError(f"a record read from columns is read-only (set {key!r})")
        self._frame.flags["switched"][self._i] = 1 if value else 0

    def __repr__(self) -> str:
        return f"Row({dict(self)!r})"


_KNOWN = frozenset(NAMES)


class Records(Sequence[Mapping[str, Any]]):
    """Records held as a :class:`Frame`, seen as a sequence of :class:`Row`."""

    def __init__(self, table: pa.Table) -> None:
        self.frame = Frame(table)

    def __len__(self) -> int:
        return self.frame.n

    @overload
    def __getitem__(self, i: int) -> Mapping[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[Mapping[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> Mapping[str, Any] | list[Mapping[str, Any]]:
        if isinstance(i, slice):
            return [Row(self.frame, k) for k in range(*i.indices(self.frame.n))]
        k = int(i) + (self.frame.n if int(i) < 0 else 0)
        if not 0 <= k < self.frame.n:
            raise IndexError(i)
        return Row(self.frame, k)

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        frame = self.frame
        return (Row(frame, i) for i in range(frame.n))


# -- what many records add up to (one pass over columns) --------------------------------------


def span(records: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    """``(first planned send, last reply)`` of ``records`` in UNIX seconds, if any."""
    return _span(Frame.of(records))


def _span(frame: Frame) -> tuple[float, float] | None:
    planned = frame.value("planned")
    sent = planned > 0
    if not sent.any():
        return None
    ends = planned + frame.value("duration")
    return float(planned[sent].min()), float(ends[sent].max())


def throughput(
    records: Sequence[Mapping[str, Any]],
    window: tuple[float, float] | None = None,
    *,
    blocks: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[float, int, float] | None:
    """``(ok ops per second, ok ops, seconds)`` over ``window`` (default: the records' own
    span), or over the seconds of ``blocks`` when a run was loaded only in blocks (one
    side of an interleaved A/B: the other side's blocks in between are not its time);
    ``None`` when there is no time."""
    frame = Frame.of(records)
    if blocks:
        seconds = sum(max(number(b.get("end")) - number(b.get("start")), 0.0) for b in blocks)
    else:
        window = window or _span(frame)
        if window is None:
            return None
        seconds = window[1] - window[0]
    if seconds <= 0:
        return None
    ok = int(frame.ok.sum())
    return ok / seconds, ok, seconds


def error_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Failed records counted by :func:`~datamodel.records.error_kind`, sorted by kind."""
    frame = Frame.of(records)
    codes = frame.codes["error"][~frame.ok]
    counts: dict[str, int] = {}
    for code, count in zip(*np.unique(codes, return_counts=True), strict=True):
        kind = error_kind({"error": frame.texts["error"][code] if code >= 0 else None})
        counts[kind] = counts.get(kind, 0) + int(count)
    return dict(sorted(counts.items()))


def infer_switches(records: Sequence[Mapping[str, Any]]) -> int:
    """Mark which records of an HTTP stack changed what the server served.

    Such records carry ``served`` (the model and adapter asked for); taken in the order they
    were sent, a record changed it when the one sent just before asked for another. Sets
    ``switched`` on those records (in place) and returns how many changed it.
    """
    frame = Frame.of(records)
    served = np.flatnonzero(frame.served())
    served = served[np.argsort(frame.value("sent")[served], kind="stable")]
    codes = frame.codes["served"][served]
    changed = np.zeros(served.size, dtype=bool)
    changed[1:] = codes[1:] != codes[:-1]
    if isinstance(records, Records):
        records.frame.flags["switched"][served] = changed.astype(np.int8)
    else:
        for i, flag in zip(served.tolist(), changed.tolist(), strict=True):
            records[i]["switched"] = flag  # type: ignore[index]
    return int(changed.sum())


def adapter_changes(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per op, end-to-end seconds of the ok records that changed the adapter and of those
    that did not (medians and counts); ops where either group is empty are left out."""
    frame = Frame.of(records)
    out: dict[str, dict[str, Any]] = {}
    duration, switched = frame.value("duration"), frame.flag("switched")
    for op, rows in sorted(frame.groups("op", frame.ok), key=lambda g: str(g[0])):
        changed, same = duration[rows[switched[rows]]], duration[rows[~switched[rows]]]
        if changed.size and same.size:
            out[str(op)] = {
                "changed": int(changed.size),
                "unchanged": int(same.size),
                "p50_changed_s": summarize(changed).p50,
                "p50_unchanged_s": summarize(same).p50,
            }
    return out


def grouped(
    frame: Frame, by: str, value: str = "duration", mask: np.ndarray | None = None
) -> dict[Any, Summary]:
    """Summaries of column ``value`` (missing read as 0) per value of text column ``by``
    among ``mask``'s records, groups in first-seen order."""
    values = frame.value(value)
    return {label: summarize(values[rows]) for label, rows in frame.groups(by, mask)}


def shifted(records: Sequence[Mapping[str, Any]], offset: float) -> pa.Table:
    """``records`` as a table with every planned and sent time moved on by ``offset``
    seconds (a time that was never set stays unset)."""
    table = Frame.of(records).table
    if not offset:
        return table
    for name in ("planned", "sent"):
        column = table.column(name)
        moved = pc.if_else(pc.greater(column, 0.0), pc.add(column, offset), column)
        table = table.set_column(table.schema.get_field_index(name), name, moved)
    return table
