"""``python -m workloads.bench results --records N [N ...]``: how reading and judging a run
scale with its number of operations.

1. A real run is the source: ``--from RUN``, else a smoke run made now in a temporary
   results folder.
2. Its records are copied until there are N: copy k has ``~k`` added to every id and its
   times moved on by k run spans, so ids and times stay unique and every copy looks like
   the run went on. ``run.json``'s stage totals are scaled with them; the timeline, the
   snapshots and the profiles are the source's.
3. Each path gets its own run folder: ``jsonl`` (``records.jsonl``, the layout written
   before columnar records) and ``parquet`` (``records.parquet``, written with
   :mod:`datamodel.columnar`).
4. In a fresh process per path: read, summary, analysis and report one after another, each
   step's seconds and the process's peak memory after it (cumulative, as a run pays it).
   Then ``workloads.compare`` of the folder against a second one like it, in a process of
   its own (its seconds include starting Python). Peak memory is each process's own
   ``VmHWM``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workloads.runs.results import machine_info

PATHS = ("jsonl", "parquet")
STEPS = ("read", "summary", "analysis", "report")


def _source(args: argparse.Namespace, scratch: Path) -> Path:
    if args.source is not None:
        return Path(args.source)
    results = scratch / "source"
    cmd = [sys.executable, "-m", "workloads.run", "--profile", "smoke", "--quiet"]
    cmd += ["--results-dir", str(results), "--no-fail-on-targets"]
    print(f"source: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    (run,) = [p for p in results.iterdir() if (p / "run.json").is_file()]
    return run


def _replicated(source: Path, n: int) -> Any:
    """The source's records copied up to ``n`` rows (see the module docstring), a table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from datamodel.columnar import to_table
    from datamodel.runfolder import RunData

    base = to_table(RunData.load(source).records)
    planned = base.column("planned")
    ends = pc.add(planned, pc.fill_null(base.column("duration"), 0.0))
    span = float(pc.max(ends).as_py() - pc.min(planned).as_py()) + 1.0
    parts = []
    for k in range(-(-n // base.num_rows)):
        part = base.slice(0, min(base.num_rows, n - k * base.num_rows))
        shift = k * span
        for name in ("planned", "sent"):
            i = part.schema.get_field_index(name)
            part = part.set_column(i, name, pc.add(part.column(name), shift))
        i = part.schema.get_field_index("id")
        part = part.set_column(i, "id", pc.binary_join_element_wise(part.column("id"), f"~{k}", ""))
        parts.append(part)
    return pa.concat_tables(parts).combine_chunks(), n / base.num_rows


def _folder(source: Path, into: Path, table: Any, path: str, copies: float) -> Path:
    """A run folder at ``into``: the source's files and ``table`` as ``path`` records."""
    from datamodel.columnar import from_table, write_parquet_table
    from datamodel.runfolder import RECORDS, RECORDS_PARQUET, write_json

    shutil.copytree(source, into, ignore=shutil.ignore_patterns("records.*", "*.html"))
    run = json.loads((source / "run.json").read_text())
    for stage in run.get("stages") or []:
        for key in ("cpu_seconds", "issued", "wall_seconds"):
            if isinstance(stage.get(key), int | float):
                stage[key] = stage[key] * copies
    run["records"] = table.num_rows
    write_json(into / "run.json", run)
    if path == "parquet":
        write_parquet_table(table, into / RECORDS_PARQUET)
    else:
        with (into / RECORDS).open("w") as fh:
            for start in range(0, table.num_rows, 100_000):
                for record in from_table(table.slice(start, 100_000)):
                    fh.write(json.dumps(record) + "\n")
    return into


def _peak_mb() -> float:
    """This process's peak resident memory (``VmHWM``: its own address space's, unlike
    ``ru_maxrss``, which keeps the forking parent's peak across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def compare_child(a: str, b: str, out: str) -> None:
    """In a fresh process: ``workloads.compare A B``, then one JSON line with its peak."""
    from workloads.compare import main

    try:
        code = main([a, b, "--calibration", "none", "--out", out])
    finally:
        print(json.dumps({"step": "compare", "peak_mb": _peak_mb()}))
    print(json.dumps({"exit": code}))


def child(folder: str) -> None:
    """In a fresh process: read, summary, analysis and report of ``folder``, one JSON line
    per step (seconds, peak MB so far)."""
    from datamodel.runfolder import RunData, write_json
    from profiling.render.html import write_report
    from profiling.render.terminal import write_analysis
    from profiling.verdict.analyze import analyze
    from profiling.verdict.goodput import summary_with_goodput
    from profiling.verdict.targets import known_targets, load_targets

    run_dir = Path(folder)

    def step(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        out = fn()
        print(json.dumps({"step": name, "s": time.perf_counter() - start, "peak_mb": _peak_mb()}))
        sys.stdout.flush()
        return out

    held = {"data": step("read", lambda: RunData.load(run_dir))}
    data = held["data"]
    profile = str(data.run.get("spec", {}).get("profile", {}).get("name", ""))
    name = profile if profile in known_targets() else "default"
    targets = load_targets(name)
    summary = summary_with_goodput  # the run's closing step, then its judging steps
    step(
        "summary",
        lambda: write_json(
            run_dir / "summary.json", summary(held["data"].records, held["data"].run, targets, name)
        ),
    )
    step("analysis", lambda: write_analysis(analyze(held.pop("data"), targets, name), run_dir))
    del data
    step("report", lambda: write_report(run_dir))


def _measured(call: str) -> tuple[int, float, list[dict[str, Any]]]:
    """Run ``call`` (a function of this module) in a fresh Python: its exit code, seconds
    and the JSON lines it printed."""
    start = time.perf_counter()
    cmd = [sys.executable, "-c", f"from {__name__} import *; {call}"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, time.perf_counter() - start, lines


def bench_results(args: argparse.Namespace) -> None:
    """The results benchmark (see the module docstring)."""
    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine_info())}")
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="loadlens-bench-results-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        source = _source(args, scratch)
        print(f"source run: {source}")
        rows = []
        for n in args.records:
            table, copies = _replicated(source, n)
            for path in args.paths.split(","):
                folder = _folder(source, scratch / f"{path}-{n}-a", table, path, copies)
                other = _folder(source, scratch / f"{path}-{n}-b", table, path, copies)
                size = sum(f.stat().st_size for f in folder.glob("records.*"))
                code, _, steps = _measured(f"child({str(folder)!r})")
                if code != 0:
                    print(f"{path} {n}: the child exited {code} after {[s['step'] for s in steps]}")
                out = str(scratch / f"cmp-{path}-{n}")
                code, seconds, lines = _measured(
                    f"compare_child({str(folder)!r}, {str(other)!r}, {out!r})"
                )
                peak = next((x["peak_mb"] for x in lines if "peak_mb" in x), float("nan"))
                steps.append({"step": "compare", "s": seconds, "peak_mb": peak, "exit": code})
                rows.append({"records": n, "path": path, "bytes": size, "steps": steps})
                print(_row(rows[-1]), flush=True)
                shutil.rmtree(folder, ignore_errors=True)
                shutil.rmtree(other, ignore_errors=True)
            del table
        print(json.dumps({"results": rows}))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


def _row(row: dict[str, Any]) -> str:
    parts = [f"{row['records']:>10,} {row['path']:<8} {row['bytes'] / 1e6:8.1f} MB on disk"]
    total = 0.0
    for s in row["steps"]:
        if s["step"] in STEPS:
            total += s["s"]
        parts.append(f"{s['step']} {s['s']:.1f} s ({s['peak_mb']:.0f} MB)")
    parts.append(f"read..report {total:.1f} s")
    return " | ".join(parts)


def add_parser(sub: Any) -> None:
    """The ``results`` subcommand's arguments."""
    r = sub.add_parser("results", help="read, summary, analysis, report, compare at N records")
    r.set_defaults(handler=bench_results)
    r.add_argument("--records", type=int, nargs="+", default=[100_000], help="sizes N")
    r.add_argument("--from", dest="source", default=None, help="source run folder (else smoke)")
    r.add_argument("--paths", default=",".join(PATHS), help="jsonl,parquet")
    r.add_argument("--keep", default=None, help="keep the folders built under this path")
