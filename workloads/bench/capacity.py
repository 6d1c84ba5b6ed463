"""``python -m workloads.bench capacity``: does the capacity search find a capacity known by
construction, how wide are its intervals, and how long does a search take?

The stack is the test-only ``tests.planted:FixedTimeService`` (one replica; every analyze
holds it for ``FIXED_SERVICE_S`` seconds, one at a time): under evenly spaced arrivals
nothing queues below ``1 / FIXED_SERVICE_S`` operations a second and the backlog grows
without end above it. Each of ``--searches`` searches (seeds 0, 1, ...) runs in one Ray
session with its own run folder; the table gives each answer and interval, whether the
interval holds the capacity by construction, and the time it took. Ray's per-call overhead
makes the real capacity a little lower than by construction; a long closed-loop run at the
end measures it (``--truth-s`` seconds), and the hit rate against it is printed as well.
Needs the repository's ``tests/`` folder on the path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sysconfig
import time
import tomllib
from pathlib import Path
from typing import Any

from datamodel.runfolder import load_records
from workloads.bench.session import bench_session
from workloads.bench.verdicts import SMALL_PROJECTS


def _spec(results: Path, seed: int, level_s: float) -> Any:
    from workloads.load.spec import parse_profile
    from workloads.runs.runner import RunSpec
    from workloads.service.projects import Project
    from workloads.stack import Stack
    from workloads.stack.config import load_config

    text = (
        'projects = 3\nreplicas = 1\n[[stage]]\nname = "s"\nduration_s = '
        f'{level_s}\nmode = "open"\nrate = 5.0\narrival = "constant"\n'
        "mix = { analyze = 1.0 }\n"
    )
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return RunSpec(
        profile=parse_profile(tomllib.loads(text), source="bench", name="capacity"),
        config=load_config("optimized"),
        results_dir=results,
        seed=seed,
        quiet=True,
        extra_projects=tuple(Project(name=f"std-{n}", root=stdlib / n) for n in SMALL_PROJECTS),
        stack=Stack("python", "tests.planted:FixedTimeService"),
    )


def _truth(results: Path, seconds: float) -> float:
    """Operations a second one replica sustains over a long closed-loop stretch."""
    import dataclasses

    from workloads.runs.runner import execute

    spec = _spec(results, 0, seconds)
    stage = dataclasses.replace(spec.profile.stages[0], mode="closed", users=4)
    spec = dataclasses.replace(
        spec, profile=dataclasses.replace(spec.profile, stages=(stage,)), profiling=False
    )
    outcome = execute(spec)
    records = load_records(outcome.run_dir)
    ends = sorted(r["planned"] + r["duration"] for r in records if r["ok"])
    return (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else 0.0


def bench_capacity(args: argparse.Namespace) -> None:
    """Run the searches and print the table."""
    from profiling.verdict.capacity import parse_slo
    from tests.planted import FIXED_SERVICE_S
    from workloads.runs.capacity import CapacitySpec, execute_capacity

    truth = 1.0 / FIXED_SERVICE_S
    rows: list[dict[str, Any]] = []
    with bench_session(args.results_dir, "capacity") as (results, _):
        slo = parse_slo(args.slo, ("analyze",))
        search = CapacitySpec("rate", (slo,), precision=args.precision, level_s=args.level_s)
        for seed in range(args.searches):
            started = time.perf_counter()
            outcome = execute_capacity(_spec(results, seed, args.level_s), search)
            took = time.perf_counter() - started
            found = json.loads((outcome.run_dir / "capacity.json").read_text())
            answer = found["capacity"]
            levels = sum(1 for r in found["levels"] if r["kind"] == "level")
            rows.append({**answer, "seconds": took, "levels": levels})
            print(
                f"  search {seed}: {answer['sentence']}; {levels} levels, {took:.0f} s "
                f"(hit: {_holds(answer, truth)})",
                flush=True,
            )
        sustained = _truth(results, args.truth_s)
    hits = sum(_holds(r, truth) for r in rows)
    real = sum(_holds(r, sustained) for r in rows)
    widths = [
        (r["high"] - r["low"]) / 2 / r["value"]
        for r in rows
        if r["value"] and r["high"] is not None
    ]
    print(
        f"\ncapacity search on FixedTimeService ({FIXED_SERVICE_S:g} s an op, one replica; "
        f"SLO {args.slo}; levels of {args.level_s:g} s; precision {args.precision:.0%}):"
    )
    print(f"  by construction {truth:.3g} ops/s: inside the interval in {hits}/{len(rows)}")
    print(
        f"  sustained over {args.truth_s:g} s closed loop {sustained:.3g} ops/s: inside the "
        f"interval in {real}/{len(rows)}"
    )
    if widths:
        print(
            f"  interval half-width: median {statistics.median(widths):.1%}, "
            f"max {max(widths):.1%} of the value"
        )
    times = [r["seconds"] for r in rows]
    if times:
        print(f"  time a search: median {statistics.median(times):.0f} s, max {max(times):.0f} s")


def _holds(answer: dict[str, Any], value: float) -> bool:
    low, high = answer.get("low"), answer.get("high")
    return low is not None and high is not None and low <= value <= high


def add_parser(sub: Any) -> None:
    """The ``capacity`` subcommand's arguments."""
    c = sub.add_parser("capacity", help="capacity search against a known capacity")
    c.set_defaults(handler=bench_capacity)
    c.add_argument("--searches", type=int, default=10, help="seeded searches")
    c.add_argument("--level-s", type=float, default=5.0, help="seconds of one level")
    c.add_argument("--precision", type=float, default=0.10)
    c.add_argument("--slo", default="analyze:p95<=1")
    c.add_argument("--truth-s", type=float, default=60.0, help="seconds of the sustained run")
    c.add_argument("--results-dir", default=None)
