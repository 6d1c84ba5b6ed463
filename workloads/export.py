"""``python -m workloads.export RUN --format jsonl|csv|parquet [--out PATH]``: a run's
records in another format.

The records are read from the run folder (``records.parquet``, its shards under
``records/`` while a run is going, or the ``records.jsonl`` of older runs) and written
typed (:mod:`datamodel.columnar`): Parquet with the Arrow schema of a record and its
version, CSV with one column per field, or JSON lines. The output goes to ``--out``
(default: ``RUN/records.<format>``); a run's own records file is never overwritten. Exit
codes: 0 written, 2 bad input (no run folder, an unreadable records file, an output that
would replace the input).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from datamodel.columnar import write_csv, write_parquet
from datamodel.errors import ConfigError, LoadlensError
from datamodel.runfolder import RECORDS, RECORDS_PARQUET, load_records

FORMATS = ("jsonl", "csv", "parquet")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m workloads.export", description="Write a run's records in a format."
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    p.add_argument("--format", choices=FORMATS, required=True, help="jsonl, csv or parquet")
    p.add_argument("--out", type=Path, default=None, help="output file (RUN/records.FORMAT)")
    return p


def export(run: Path, fmt: str, out: Path | None = None) -> tuple[Path, int]:
    """Write ``run``'s records as ``fmt``; the file written and how many records."""
    if not run.is_dir():
        raise ConfigError(f"run folder {run} does not exist")
    records = [{k: v for k, v in r.items() if v is not None} for r in load_records(run)]
    target = out or run / f"records.{fmt}"
    own = [(run / name).resolve() for name in (RECORDS, RECORDS_PARQUET) if (run / name).exists()]
    if target.resolve() in own:
        raise ConfigError(f"--out {target} is the run's own records: give another path")
    if fmt == "parquet":
        count = write_parquet(records, target)
    elif fmt == "csv":
        count = write_csv(records, target)
    else:
        with target.open("w") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
        count = len(records)
    return target, count


def main(argv: list[str] | None = None) -> int:
    """Parse, export, and turn a :class:`LoadlensError` into its exit code."""
    args = build_parser().parse_args(argv)
    try:
        target, count = export(args.run, args.format, args.out)
    except LoadlensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: cannot write {args.out or args.run}: {exc}", file=sys.stderr)
        return 2
    print(f"{count} records -> {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
