"""``python -m workloads.bench soak --minutes 30``: a long sustained run, then what it kept.

Runs the ``sustained`` profile for the given time through the CLI, then reports from its run
folder: each replica's USS slope after warm-up (MB/min, from the timeline's USS samples),
records lost or doubled (the ids each generator worker says it issued against the ids
recorded), and errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from datamodel.records import number
from datamodel.runfolder import RunData
from workloads.runs.results import machine_info

WARMUP = 0.25
"""Share of the run left out before the USS slope is fitted."""


def uss_slopes(run: RunData) -> dict[str, float]:
    """MB per minute of each replica's USS after :data:`WARMUP` of the run."""
    out = {}
    samples = [s for s in run.samples("replica") if s.get("uss")]
    roles = sorted({str(s.get("role")) for s in samples})
    for role in roles:
        mine = [s for s in samples if s.get("role") == role]
        t = np.array([number(s.get("t")) for s in mine])
        if len(t) < 4:
            continue
        keep = t >= t.min() + WARMUP * (t.max() - t.min())
        uss = np.array([number(s.get("uss")) for s in mine]) / 1e6
        out[role] = float(np.polyfit(t[keep], uss[keep], 1)[0] * 60) if keep.sum() >= 3 else 0.0
    return out


def ledger(run: RunData) -> dict[str, Any]:
    """Operations issued, recorded, lost and recorded twice, by id."""
    issued = (run.run.get("generators") or {}).get("issued_by_worker") or {}
    expected = {f"{w}-{k}" for w, n in issued.items() for k in range(int(n))}
    ids = [str(r.get("id")) for r in run.records]
    lost_in_outages = sum(
        int(o.get("in_flight_lost", 0))
        for o in (run.run.get("generators") or {}).get("outages") or []
    )
    return {
        "issued": len(expected),
        "recorded": len(ids),
        "lost": len(expected - set(ids)),
        "doubled": len(ids) - len(set(ids)),
        "errors": sum(1 for r in run.records if not r.get("ok")),
        "generator_lost": lost_in_outages,
    }


def bench_soak(args: argparse.Namespace) -> None:
    """The soak benchmark (see the module docstring)."""
    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine_info())}", flush=True)
    results = Path(args.results_dir or tempfile.mkdtemp(prefix="loadlens-soak-"))
    from workloads.bench.profiling import cli_run

    folder, proc = cli_run(args.profile, args.minutes * 60, results, [])
    if proc.returncode != 0:
        print(f"the run ended with {proc.returncode}: {proc.stderr[-1500:]}")
    run = RunData.load(folder)
    print(f"run: {folder} ({run.run.get('status')}, {args.minutes:g} min of {args.profile})")
    for role, slope in uss_slopes(run).items():
        verdict = "ok" if slope < 1.0 else "over the goal of 1 MB/min"
        print(f"  {role}: USS {slope:+.2f} MB/min after the first {WARMUP:.0%} ({verdict})")
    counts = ledger(run)
    print(
        f"  operations: {counts['issued']:,} issued, {counts['recorded']:,} recorded, "
        f"{counts['lost']} lost, {counts['doubled']} recorded twice, {counts['errors']} "
        f"errors"
    )


def add_parser(sub: Any) -> None:
    """The ``soak`` subcommand's arguments."""
    s = sub.add_parser("soak", help="a long sustained run: memory slope, lost records, errors")
    s.set_defaults(handler=bench_soak)
    s.add_argument("--minutes", type=float, default=30.0)
    s.add_argument("--profile", default="sustained")
    s.add_argument("--results-dir", default=None)
