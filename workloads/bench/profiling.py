"""``python -m workloads.bench profiling``: what profiling costs, runs with and without it
(interleaved); and :func:`cli_run`, one run through the CLI, shared with the soak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from datamodel.quantiles import summarize
from workloads.runs.results import machine_info


def cli_run(
    profile: str, duration: float, results: Path, extra: list[str]
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One quiet run through the CLI in a fresh process: its folder and the process."""
    before = set(results.glob("*")) if results.exists() else set()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workloads.run",
            "--profile",
            profile,
            "--duration",
            str(duration),
            "--results-dir",
            str(results),
            "--quiet",
            "--no-fail-on-targets",
            *extra,
        ],
        capture_output=True,
        text=True,
    )
    (run,) = set(results.glob("*")) - before
    return run, proc


def _cli_run(profile: str, duration: float, results: Path, extra: list[str]) -> dict[str, Any]:
    """One run through the CLI in a fresh process; returns its summary."""
    run, proc = cli_run(profile, duration, results, extra)
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({proc.returncode}): {proc.stderr[-1500:]}")
    summary: dict[str, Any] = json.loads((run / "summary.json").read_text())
    summary["run_dir"] = str(run)
    return summary


def bench_profiling(args: argparse.Namespace) -> None:
    """The same profile with and without profiling, interleaved (off, on, off, on, ...)."""
    from datamodel.runfolder import load_records

    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine_info())}")
    results = Path(args.results_dir or tempfile.mkdtemp(prefix="loadlens-bench-prof-"))
    sides: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for round_no in range(args.rounds):
        for side in ("off", "on"):
            extra = ["--no-profile"] if side == "off" else []
            summary = _cli_run(args.profile, args.duration, results, extra)
            sides[side].append(summary)
            print(
                f"round {round_no + 1} profiling {side:>3}: "
                f"{summary['throughput_ops_s']:.2f} ops/s, {summary['records']} ops, "
                f"{summary['errors']} errors ({summary['run_dir']})"
            )
    tput = {k: sum(s["throughput_ops_s"] for s in v) / len(v) for k, v in sides.items()}
    p95 = {}
    for side, runs in sides.items():
        merged = [
            r["duration"]
            for s in runs
            for r in load_records(Path(s["run_dir"]))
            if r["ok"] and r["op"] == args.op
        ]
        p95[side] = summarize(merged).p95
    print(
        f"throughput ratio (profiled / unprofiled, mean of {args.rounds} rounds): "
        f"{tput['on'] / tput['off']:.3f}"
    )
    if p95["on"] and p95["off"]:
        print(
            f"{args.op} p95 ratio (profiled / unprofiled, merged records): "
            f"{p95['on'] / p95['off']:.3f} ({p95['on'] * 1e3:.1f} vs {p95['off'] * 1e3:.1f} ms)"
        )


def add_parser(sub: Any) -> None:
    """The ``profiling`` subcommand."""
    pr = sub.add_parser("profiling", help="what profiling costs: runs with and without it")
    pr.add_argument("--profile", default="smoke")
    pr.add_argument("--duration", type=float, default=25.0)
    pr.add_argument("--rounds", type=int, default=2)
    pr.add_argument("--op", default="analyze", help="operation whose p95 is compared")
    pr.add_argument("--results-dir", default=None)
    pr.set_defaults(handler=bench_profiling)
