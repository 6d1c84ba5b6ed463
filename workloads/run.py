"""``python -m workloads.run --profile NAME``: drive real multi-project load, record it.

Precedence: command-line flags > environment (``RAY_ADDRESS``, ``LOADLENS_CACHE``) >
profile and config files. Bad input exits with code 2 and a message naming the problem;
an interrupted run exits 130 with everything measured so far written; a run that misses
a target exits 3 (``--no-fail-on-targets`` reports it and exits 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from datamodel.errors import ConfigError, LoadlensError
from datamodel.names import check_folder
from workloads.load.spec import OPS, list_profiles, load_profile
from workloads.service.projects import parse_project_arg
from workloads.stack import BUILTIN, check_stack, parse_stack
from workloads.stack.config import list_configs, load_config

if TYPE_CHECKING:
    from workloads.runs.ab import ABOutcome
    from workloads.runs.live import RunOutcome
    from workloads.runs.runner import RunSpec

DEFAULT_RESULTS = Path("results")
EXIT_TARGETS_MISSED = 3
MAX_DEFAULT_ROUNDS = 5
"""Most A/B rounds a side run by default, however many the calibration asks for."""


def default_rounds(profile: str, cache_dir: Path | None) -> int:
    """A/B rounds a side from the calibration that fits this machine and profile.

    The calibration says how many runs a side tell a 10% change of p95 from run-to-run
    drift here; the default follows it (at least 2, at most :data:`MAX_DEFAULT_ROUNDS`) and
    says so, and when it needs more, the comparison warns that a 'no change' may be a
    change too small to see.
    """
    from datamodel.cache import default_cache_dir
    from profiling.verdict import calibration
    from workloads.runs.results import machine_info

    cal, source = calibration.find(machine_info(), profile, cache_dir or default_cache_dir())
    needed = cal.rounds.get("p95")
    rounds = max(2, min(needed or MAX_DEFAULT_ROUNDS, MAX_DEFAULT_ROUNDS))
    wanted = f"{needed}" if needed else f"more than {MAX_DEFAULT_ROUNDS}"
    print(
        f"A/B rounds: {rounds} a side ({source} says a 10% change of p95 needs {wanted}; "
        "--rounds N to choose)",
        file=sys.stderr,
    )
    return rounds


def _ab(spec: RunSpec, base_spec: RunSpec, args: argparse.Namespace) -> ABOutcome:
    """Interleaved blocks in one session where both sides can share it, else rounds."""
    from workloads.runs.ab import execute_ab
    from workloads.runs.interleave import BLOCK_S, NoRoom, execute_interleaved

    http = spec.stack.http or base_spec.stack.http
    if args.rounds is None and not http:
        try:
            return execute_interleaved(spec, base_spec, block_s=args.block_s or BLOCK_S)
        except NoRoom as exc:
            print(f"{exc}: whole-run rounds instead", file=sys.stderr)
    return execute_ab(
        spec, base_spec, rounds=args.rounds or default_rounds(spec.profile.name, args.cache_dir)
    )


OLD_FLAGS = {
    "--target": "--stack",
    "--target-url": "--stack-url",
    "--target-map": "--stack-map",
    "--target-pid": "--stack-pid",
    "--baseline-target": "--baseline-stack",
}
"""Flags renamed so that "target" means one thing (the thresholds of ``--targets``): each
old one still works for this release, with a note."""


def _old_flags(args: argparse.Namespace) -> None:
    """Carry each old flag given over to its new name, with a note on stderr; both given is
    a :class:`ConfigError`."""
    for old, new in OLD_FLAGS.items():
        value = getattr(args, old.removeprefix("--").replace("-", "_"))
        if value is None:
            continue
        attr = new.removeprefix("--").replace("-", "_")
        if getattr(args, attr) is not None:
            raise ConfigError(f"{old} and {new} are the same flag; give only {new}")
        setattr(args, attr, value)
        print(
            f"note: {old} is now {new} (the system under load; --targets stays the "
            f"thresholds); {old} will go in a later release",
            file=sys.stderr,
        )


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m workloads.run",
        description="Load-test a local AI stack (base model + per-project LoRA adapters + "
        "embeddings + vector indexes) with Ray users of many projects at once.",
    )
    p.add_argument("--profile", default="sustained", help="profile name or .toml path")
    p.add_argument("--list-profiles", action="store_true", help="list profiles and exit")
    p.add_argument("--config", default="optimized", help="system configuration name or .toml path")
    p.add_argument(
        "--stack",
        default=None,
        help="the system under load: builtin (default), mlx-lm (a managed mlx_lm.server), "
        "openai (a running server at --stack-url), or python:package.module:Class (your "
        "service class)",
    )
    p.add_argument("--stack-url", default=None, help="base URL of an openai stack")
    p.add_argument(
        "--stack-map", default=None, help="TOML: each project's model and fields (openai)"
    )
    p.add_argument("--stack-pid", type=int, default=None, help="process to profile (openai)")
    p.add_argument(
        "--read-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="HTTP stacks: a reply silent this long is stalled (ReadTimeout; default 60)",
    )
    p.add_argument(
        "--baseline-stack",
        default=None,
        help="also run this stack (with the same config) and compare: interleaved blocks in "
        "one session for builtin and python stacks, whole-run rounds for HTTP stacks",
    )
    for old in OLD_FLAGS:  # accepted for one release, not offered
        p.add_argument(
            old, default=None, type=int if old.endswith("pid") else str, help=argparse.SUPPRESS
        )
    p.add_argument(
        "--address", default=None, help="join this Ray cluster (else $RAY_ADDRESS, else embedded)"
    )
    p.add_argument("--duration", type=float, default=None, help="total seconds (stages scaled)")
    p.add_argument("--projects", type=int, default=None, help="number of projects")
    p.add_argument("--replicas", type=int, default=None, help="number of service replicas")
    p.add_argument("--workers", type=int, default=2, help="load generator workers")
    p.add_argument("--seed", type=int, default=0, help="seed of arrivals, ops and projects")
    p.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="NAME=PATH[:ADAPTER]",
        help="add your own repository (and optionally its mlx-lm adapter folder); repeatable",
    )
    p.add_argument("--base-model", type=Path, default=None, help="an mlx-lm model folder")
    p.add_argument("--cache-dir", type=Path, default=None, help="models/adapters/indexes cache")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="where runs land")
    p.add_argument("--quiet", action="store_true", help="no live display")
    p.add_argument(
        "--baseline",
        default=None,
        metavar="CONFIG",
        help="also run this configuration and compare: both alive in one session, short "
        "blocks of the same load alternating between them (whole-run rounds where both do "
        "not fit in memory, or with --rounds)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="A/B in whole-run rounds, this many per side, instead of interleaved blocks; "
        "default for HTTP stacks: what this machine's A/A calibration says a 10%% change of "
        f"p95 needs, at most {MAX_DEFAULT_ROUNDS}",
    )
    p.add_argument(
        "--block-s",
        type=float,
        default=None,
        help="seconds of one block of an interleaved A/B (default 20)",
    )
    p.add_argument(
        "--targets", default=None, help="targets name or .toml path (default: by profile)"
    )
    p.add_argument(
        "--no-fail-on-targets",
        action="store_true",
        help="report missed targets but exit 0",
    )
    p.add_argument(
        "--trace-python",
        action="store_true",
        help="tracemalloc in replicas: Python allocation top-N and diffs in memory snapshots",
    )
    p.add_argument("--pyspy-rate", type=int, default=20, help="py-spy samples per second")
    p.add_argument(
        "--capacity",
        nargs="?",
        const="rate",
        default=None,
        metavar="AXIS",
        help="search the highest load that meets every SLO: 'rate' (open-loop arrivals a "
        "second, the default), 'users' (concurrent users) or 'projects' (active projects at "
        "--project-rate each); writes capacity.json",
    )
    p.add_argument(
        "--project-rate",
        type=float,
        default=None,
        metavar="R",
        help="capacity search (projects): ops/s of each active project (default: the "
        "--demand's, else the profile's last stage's load over its projects)",
    )
    p.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="OP:METRIC<=VALUE",
        help="an SLO of the capacity search (repeatable), e.g. 'analyze:p95<=2', "
        "'all:p99<=500ms', 'errors:rate<=0.01', 'analyze:ttft_p95<=0.5'; the targets "
        "file's latency targets count too",
    )
    p.add_argument(
        "--precision",
        type=float,
        default=0.10,
        help="capacity search: stop when the interval is within this share of the value",
    )
    p.add_argument(
        "--level-s", type=float, default=None, help="capacity search: seconds of one level"
    )
    p.add_argument(
        "--demand",
        default=None,
        metavar="'N projects x R ops/s'",
        help="capacity search (rate, projects): how many machines like this one serve this demand",
    )
    p.add_argument(
        "--no-profile",
        action="store_true",
        help="no timelines, flame graphs or memory snapshots (records only)",
    )
    return p


def _capacity(spec: RunSpec, args: argparse.Namespace, ops: Collection[str]) -> RunOutcome:
    """``--capacity``: the SLOs from ``--slo`` and the targets file, then the search."""
    from profiling.verdict.capacity import parse_demand, parse_slo, slos_from_targets
    from profiling.verdict.targets import load_targets
    from workloads.runs.capacity import LEVEL_S, CapacitySpec, execute_capacity
    from workloads.runs.runner import targets_name

    known = tuple(dict.fromkeys((*sorted(ops), *OPS)))
    slos = [parse_slo(text, known) for text in args.slo]
    name = targets_name(spec)
    taken = {s.text for s in slos}
    for slo in slos_from_targets(load_targets(name), name):
        if slo.op not in ops:
            print(
                f"capacity: the targets' {slo.text} is left out: the profile's mix has no {slo.op}",
                file=sys.stderr,
            )
        elif slo.text not in taken:
            slos.append(slo)
    search = CapacitySpec(
        axis=args.capacity,
        slos=tuple(slos),
        precision=args.precision,
        level_s=args.level_s or LEVEL_S,
        demand=parse_demand(args.demand) if args.demand else None,
        project_rate=args.project_rate,
    )
    if not (args.baseline or args.baseline_stack):
        return execute_capacity(spec, search)
    base_stack = parse_stack(args.baseline_stack) if args.baseline_stack else spec.stack
    check_stack(base_stack, ops)
    base_spec = dataclasses.replace(
        spec, config=load_config(args.baseline or args.config), stack=base_stack
    )
    base = execute_capacity(base_spec, search)
    if base.status != "completed":
        return base
    outcome = execute_capacity(spec, search)
    if outcome.status == "completed":
        _compare_capacities(base.run_dir, outcome.run_dir)
    return outcome


def _compare_capacities(base_dir: Path, run_dir: Path) -> None:
    """Write and print the ratio of the two searches' capacities."""
    import json

    from datamodel.runfolder import write_json
    from profiling.verdict.capacity import compare_capacities

    found = [json.loads((d / "capacity.json").read_text()) for d in (base_dir, run_dir)]
    ratio = compare_capacities(*found)
    ratio.update(a_run=str(base_dir), b_run=str(run_dir))
    write_json(run_dir / "capacity_comparison.json", ratio)
    print(f"capacity, baseline (A) {base_dir.name} vs {run_dir.name} (B): {ratio['sentence']}")


def _exit_now() -> None:
    """Exit 130 without the interpreter's teardown: a second interrupt means now, and
    everything measured is on disk and Ray is stopped already."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn a :class:`LoadlensError` into its exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.list_profiles:
            for name, description in list_profiles():
                print(f"{name:<20} {description}")
            print(f"\nconfigs: {', '.join(list_configs())}")
            return 0
        if args.workers < 1:
            raise ConfigError("--workers must be >= 1")
        profile = load_profile(args.profile).with_overrides(
            duration_s=args.duration, projects=args.projects, replicas=args.replicas
        )
        from workloads.runs.runner import RunSpec, execute

        _old_flags(args)
        stack = parse_stack(args.stack or BUILTIN, args.stack_url, args.stack_map, args.stack_pid)
        if args.read_timeout is not None:
            if not 0 < args.read_timeout < 3600:
                raise ConfigError("--read-timeout must be > 0 and < 3600 seconds")
            stack = dataclasses.replace(stack, read_timeout_s=args.read_timeout)
        check_stack(stack, profile.ops)

        spec = RunSpec(
            profile=profile,
            config=load_config(args.config),
            results_dir=check_folder(args.results_dir, "--results-dir"),
            seed=args.seed,
            address=args.address,
            workers=args.workers,
            extra_projects=tuple(parse_project_arg(a) for a in args.project),
            base_model=args.base_model,
            cache_dir=check_folder(args.cache_dir, "--cache-dir") if args.cache_dir else None,
            quiet=args.quiet,
            profiling=not args.no_profile,
            targets=args.targets,
            trace_python=args.trace_python,
            pyspy_rate_hz=args.pyspy_rate,
            stack=stack,
        )
        if args.capacity is not None:
            outcome = _capacity(spec, args, profile.ops)
            codes = {"interrupted": 130, "completed": 0}
            return codes.get(outcome.status, 1)
        if args.baseline or args.baseline_stack:
            if args.rounds is not None and args.rounds < 1:
                raise ConfigError("--rounds must be >= 1")
            if args.block_s is not None and not args.block_s > 0:
                raise ConfigError(f"--block-s must be > 0, got {args.block_s}")
            base_stack = parse_stack(args.baseline_stack) if args.baseline_stack else stack
            check_stack(base_stack, profile.ops)
            base_spec = dataclasses.replace(
                spec, config=load_config(args.baseline or args.config), stack=base_stack
            )
            ab = _ab(spec, base_spec, args)
            if any(r.stopped_at_once for r in ab.rounds):
                _exit_now()
            if ab.status == "interrupted":
                return 130
            if ab.regressions:
                print(f"regressions: {', '.join(ab.regressions)}", file=sys.stderr)
                return 1
            return 0 if ab.status == "completed" else 1
        outcome = execute(spec)
    except LoadlensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if outcome.stopped_at_once:
        _exit_now()
    if outcome.status == "interrupted":
        return 130
    if outcome.status != "completed":
        return 1
    if outcome.targets_failed and not args.no_fail_on_targets:
        print(f"targets missed: {', '.join(outcome.targets_failed)}", file=sys.stderr)
        return EXIT_TARGETS_MISSED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
