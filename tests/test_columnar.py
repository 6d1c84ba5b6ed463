"""Records as Arrow columns: the Parquet round trip, a torn file, a newer layout, and the
export command on a real run folder (the stored fixture)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamodel.columnar import (
    NAMES,
    RECORD_SCHEMA,
    RECORDS_SCHEMA_VERSION,
    VERSION_KEY,
    read_parquet,
    to_table,
    write_parquet,
)
from datamodel.errors import ConfigError
from datamodel.frame import Frame, Records
from datamodel.runfolder import (
    SHARDS,
    RecordWriter,
    compact,
    load_records,
    read_records,
    read_run_records,
)
from workloads.export import main as export_main

FIXTURE = Path(__file__).parent / "data" / "run_fixture"


def given(records: list[dict]) -> list[dict]:
    """``records`` without their null fields: to a reader a null field and an absent one
    are the same (``record.get``), and Parquet keeps no difference between them."""
    return [{k: v for k, v in r.items() if v is not None} for r in records]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_every_field_of_a_record_has_a_typed_column_and_round_trips(tmp_path: Path) -> None:
    records = read_records(FIXTURE / "records.jsonl")
    assert records and all(set(r) <= set(NAMES) for r in records), "a field has no column"
    path = tmp_path / "r.parquet"
    assert write_parquet(records, path) == len(records)
    assert read_parquet(path) == given(records)
    schema = pq.read_schema(path)
    assert schema.field("duration").type == pa.float64() and schema.field("ok").type == pa.bool_()
    assert schema.metadata[VERSION_KEY] == str(RECORDS_SCHEMA_VERSION).encode()


def test_a_file_of_the_first_layout_reads_with_the_later_fields_absent(tmp_path: Path) -> None:
    records = read_records(FIXTURE / "records.jsonl")
    added = ("ttft_planned", "itl_p50", "itl_p99")  # layout 2's fields
    first = to_table(records).drop_columns(list(added))
    first = first.replace_schema_metadata({VERSION_KEY: b"1"})
    path = tmp_path / "layout1.parquet"
    pq.write_table(first, path)
    back = read_parquet(path)
    assert back == given(records) and not any(f in r for r in back for f in added)


def test_a_value_that_does_not_fit_its_column_is_named() -> None:
    with pytest.raises(ConfigError, match="field 'duration'"):
        to_table([{"id": "0-0", "duration": "slow"}])


def test_a_torn_file_and_a_newer_layout_are_clear_errors(tmp_path: Path) -> None:
    records = read_records(FIXTURE / "records.jsonl")
    whole = tmp_path / "whole.parquet"
    write_parquet(records, whole)
    torn = tmp_path / "torn.parquet"
    torn.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"torn\.parquet is not a readable Parquet file"):
        read_parquet(torn)
    newer = tmp_path / "newer.parquet"
    table = to_table(records).replace_schema_metadata({VERSION_KEY: b"99"})
    pq.write_table(table, newer)
    with pytest.raises(ConfigError, match="layout 99"):
        read_parquet(newer)
    assert RECORD_SCHEMA.metadata[VERSION_KEY] == str(RECORDS_SCHEMA_VERSION).encode()


def test_export_writes_each_format_and_never_the_runs_own_records(run: Path, capsys) -> None:
    records = read_records(run / "records.jsonl")
    assert export_main([str(run), "--format", "parquet"]) == 0
    assert read_parquet(run / "records.parquet") == given(records)
    assert export_main([str(run), "--format", "csv"]) == 0
    with (run / "records.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(records) and "stage_model" in rows[0] and "misses" in rows[0]
    assert [float(r["duration"]) for r in rows] == [r["duration"] for r in records]
    out = run / "again.jsonl"
    assert export_main([str(run), "--format", "jsonl", "--out", str(out)]) == 0
    # The run now has records.parquet (written above), which a reader takes first.
    assert [json.loads(x) for x in out.read_text().splitlines()] == given(records)
    assert f"{len(records)} records" in capsys.readouterr().out
    # A Parquet-only run folder exports back to JSON lines.
    (run / "records.jsonl").unlink()
    assert export_main([str(run), "--format", "jsonl", "--out", str(run / "back.jsonl")]) == 0
    back = [json.loads(x) for x in (run / "back.jsonl").read_text().splitlines()]
    assert back == given(records)
    assert export_main([str(run), "--format", "parquet"]) == 2  # its own records
    assert "the run's own records" in capsys.readouterr().err
    assert export_main([str(run / "nope"), "--format", "csv"]) == 2


def test_records_written_as_shards_survive_a_torn_one_and_compact_once(tmp_path: Path) -> None:
    records = given(read_records(FIXTURE / "records.jsonl"))
    folder = tmp_path / "live"
    writer = RecordWriter(folder)
    writer.write(records[:15])
    writer.write([])  # an empty drain writes no shard
    writer.write(records[15:])
    shards = sorted((folder / SHARDS).glob("*.parquet"))
    assert len(shards) == 2 and writer.count == len(records)
    # While the run goes (or after a crash), the shards are the records.
    assert given(load_records(folder)) == records
    # A shard torn by a crash mid-write is left out and said, never fatal.
    torn = folder / SHARDS / "9-0000000.parquet"
    torn.write_bytes(shards[0].read_bytes()[:100])
    notes: list[str] = []
    assert len(read_run_records(folder, notes)) == len(records)
    assert any("skipped shard 9-0000000.parquet" in n for n in notes)
    writer.close()
    assert not (folder / SHARDS).exists()
    assert given(load_records(folder)) == records
    assert compact(folder) == 0  # compacted once; a second close adds nothing


def test_rows_read_like_the_dicts_they_came_from() -> None:
    records = given(read_records(FIXTURE / "records.jsonl"))
    rows = Records(to_table(records))
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert dict(row) == record
        assert row.get("no such field", 7) == 7 and "no such field" not in row
        assert (row.get("error") is None) == ("error" not in record)
    assert dict(rows[-1]) == records[-1] and len(rows[1:3]) == 2
    with pytest.raises(TypeError, match="read-only"):
        rows[0]["duration"] = 1.0  # type: ignore[index]
    frame = Frame.of(rows)
    assert frame is rows.frame
    assert Frame.of([rows[2], rows[0]]).column("id") == [records[2]["id"], records[0]["id"]]
    assert frame.equals("op", "analyze").sum() == sum(r["op"] == "analyze" for r in records)
    assert frame.ok.sum() == sum(bool(r.get("ok")) for r in records)
