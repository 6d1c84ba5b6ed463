"""``python -m workloads.bench verdicts``: are loadlens's verdicts calibrated on this machine?

(a) **A/A**: several real runs of one configuration (half with one seed, half with others);
    every pair compared one run a side, and disjoint groups of runs compared as A/B rounds.
    It prints the share of comparisons that flag any change (goal: at most 5%).
(b) **Power**: real recorded runs with a planted change, a 10% slowdown of every operation
    and, separately, the slowest 3% of each op made 3x slower; how often each is detected.
(c) **Rounds**: from the A/A spread, how many runs a side an A/B needs here to detect a 10%
    change, written as this machine's calibration (used by every later comparison).
(d) **Planted bottlenecks**: short runs of each planted cause (builtin stack, test-only
    services and a test-only queueing HTTP server), what ranked first and by what margin.

Every comparison in (a) and (b) uses a drift prior calibrated on the *other* runs only
(leave-out), so no run is judged with a prior fitted to itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from datamodel.cache import default_cache_dir
from datamodel.quantiles import quantile
from datamodel.records import number
from datamodel.runfolder import RunData, utc_now
from profiling.verdict import calibration
from profiling.verdict.compare import Comparison, compare_runs
from profiling.verdict.figures import RunFigures
from profiling.verdict.statistics import Prior

TAIL_SHARE = 0.03
TAIL_FACTOR = 3.0
SLOWDOWN = 1.10


def _peak_mb(run: RunData) -> float:
    peaks = [number(s.get("uss")) for s in run.samples("replica") if s.get("uss")]
    return max(peaks) / 1e6 if peaks else 0.0


def _priors(runs: Sequence[RunData], source: str) -> dict[str, Prior]:
    """Drift priors calibrated on ``runs``, pooled with the shipped default as comparisons
    pool this machine's own calibration (:func:`calibration.find_calibration`)."""
    cal = calibration.build(
        runs[0].run.get("machine") or {},
        "aa",
        [RunFigures.of(r) for r in runs],
        [_peak_mb(r) for r in runs],
    )
    default = calibration.read_calibration(calibration.DEFAULT_FILE)
    return (calibration.with_prior(cal, default) if default else cal).priors(source)


def _flagged(c: Comparison) -> bool:
    return any(r.verdict in ("regression", "improvement") for r in c.rows)


def _planted(
    run: RunData, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> RunData:
    return dataclasses.replace(run, records=change([dict(r) for r in run.records]))


def slower(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every operation 10% slower."""
    for r in records:
        r["duration"] = number(r.get("duration")) * SLOWDOWN
    return records


def slower_tail(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The slowest 3% of each op 3x slower; the rest untouched."""
    for op in {str(r.get("op")) for r in records}:
        mine = [r for r in records if r.get("op") == op]
        cut = quantile([number(r.get("duration")) for r in mine], 1 - TAIL_SHARE)
        for r in mine:
            if number(r.get("duration")) >= cut:
                r["duration"] = number(r.get("duration")) * TAIL_FACTOR
    return records


def _groups(n: int, k: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Pairs of disjoint groups of ``k`` run indices (each unordered pair of groups once)."""
    out = []
    for a in itertools.combinations(range(n), k):
        rest = [i for i in range(n) if i not in a]
        for b in itertools.combinations(rest, k):
            if a < b:
                out.append((a, b))
    return out


def evaluate(runs: Sequence[RunData], k: int, *, limit: int = 150) -> dict[str, float]:
    """A/A false alarms and planted-change detection with ``k`` runs a side, over up to
    ``limit`` pairs of disjoint groups drawn at random (seeded) from all of them."""
    trials = _groups(len(runs), k)
    trials = random.Random(k).sample(trials, min(limit, len(trials)))
    counts = {"aa": 0, "slower": 0, "tail": 0, "tail_p99": 0}
    for a_idx, b_idx in trials:
        others = [r for i, r in enumerate(runs) if i not in a_idx + b_idx]
        priors = _priors(others, f"leave-out calibration on {len(others)} other runs")
        a, b = [runs[i] for i in a_idx], [runs[i] for i in b_idx]
        counts["aa"] += _flagged(compare_runs(a, b, priors=priors))
        slow = compare_runs(a, [_planted(r, slower) for r in b], priors=priors)
        counts["slower"] += bool(slow.regressions)
        tail = compare_runs(a, [_planted(r, slower_tail) for r in b], priors=priors)
        counts["tail"] += bool(tail.regressions)
        counts["tail_p99"] += any(r.metric == "p99_s" for r in tail.regressions)
    return {key: value / len(trials) for key, value in counts.items()} | {"trials": len(trials)}


def _run(spec: Any) -> Path:
    from workloads.runs.runner import execute

    outcome = execute(spec)
    if outcome.status != "completed":
        raise RuntimeError(f"run {outcome.run_dir} ended {outcome.status}")
    return outcome.run_dir


def aa_runs(args: argparse.Namespace, results: Path) -> list[Path]:
    """``args.runs`` runs of one profile and configuration (seeds: half 0, half 1, 2, ...)."""
    from workloads.load.spec import load_profile
    from workloads.runs.runner import RunSpec
    from workloads.stack.config import load_config

    profile = load_profile(args.profile).with_overrides(duration_s=args.duration)
    warm = RunSpec(
        profile=profile.with_overrides(duration_s=5),
        config=load_config(args.config),
        results_dir=results / "warm-up",
        quiet=True,
    )
    print("  warm-up run (builds the indexes; not counted)", flush=True)
    _run(warm)
    paths = []
    for n in range(args.runs):
        seed = 0 if n % 2 == 0 else n
        spec = RunSpec(
            profile=profile,
            config=load_config(args.config),
            results_dir=results,
            seed=seed,
            quiet=True,
        )
        start = time.perf_counter()
        paths.append(_run(spec))
        print(
            f"  A/A run {n + 1}/{args.runs} (seed {seed}): {paths[-1].name} "
            f"in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return paths


PLANTED: dict[str, tuple[str, dict[str, Any], str | None, dict[str, Any]]] = {
    "adapter cache thrash": (
        "adapter_thrash",
        {"service": {"adapter_cache_count": 1}},
        "tests.planted:SlowStorageService",
        {"mix": {"switch": 0.5, "search": 0.5}, "users": 2},
    ),
    "slow BLAS": (
        "slow_blas",
        {"blas": "bundled"},
        None,
        {"mix": {"embed": 0.5, "search": 0.5}, "users": 1},
    ),
    "index cache thrash": (
        "index_thrash",
        {"service": {"index_cache_count": 1}},
        "tests.planted:SlowStorageService",
        {"mix": {"search": 1.0}, "users": 2},
    ),
    "overload (open loop above capacity)": (
        "overload",
        {},
        None,
        {"mode": "open", "rate": 40.0, "mix": {"analyze": 1.0}},
    ),
    "hot Python loop": (
        "hot_code",
        {},
        "tests.planted:HotLoopService",
        {"mix": {"analyze": 1.0}, "users": 2},
    ),
    "native compute in user code (MLX rerank)": (
        "hot_code",
        {},
        "tests.planted:NativeHotSpotService",
        {"mix": {"analyze": 1.0}, "users": 2},
    ),
    "blocking wait (remote store)": (
        "waiting",
        {},
        "tests.planted:RemoteStoreService",
        {"mix": {"search": 1.0}, "users": 2},
    ),
    "lock held by a background thread": (
        "waiting",
        {},
        "tests.planted:ContendedLockService",
        {"mix": {"analyze": 1.0}, "users": 1},
    ),
    "queueing HTTP server (one at a time)": (
        "server_overload",
        {},
        "openai:tests/queueserver.py",
        {
            "mode": "open",
            "rate": 15.0,
            "arrival": "constant",
            "duration_s": 4,
            "mix": {"analyze": 1.0},
        },
    ),
    "clean (nothing planted)": (
        "none",
        {},
        None,
        {"mix": {"search": 0.4, "analyze": 0.3, "embed": 0.3}, "users": 1},
    ),
    "leak in the service": (
        "memory_leak",
        {},
        "tests.planted:LeakyService",
        {"mix": {"search": 0.7, "analyze": 0.3}, "users": 2, "duration_s": 20},
    ),
}
"""Case -> (expected top finding, config changes, test-only service (``openai:SCRIPT``: a
test-only HTTP server started for the case on a free loopback port, see
:func:`start_test_server`), stage fields). ``none`` (the negative control): no finding
outside the latency tier, and none that claims :data:`CLEAN_SHARE` of latency. The slow
BLAS case is not first: indexes are embedded once, by content, and with the reference BLAS
that first embedding alone would take many minutes."""
SMALL_PROJECTS = ("json", "wsgiref", "html")
"""Standard-library packages (1.3k-3k lines each) that serve as the planted runs' projects:
real code, small enough that their indexes are built in seconds."""


QUEUE_SERVER_ARGS = ("0.008", "0.03")
"""tests/queueserver.py's seconds per token and prefill: 0.16 s a request alone, so about 6
requests a second at most, against the case's 15 a second."""


@contextlib.contextmanager
def start_test_server(script: str, *args: str) -> Iterator[tuple[str, int]]:
    """The repository's test server ``script`` (``script PORT ARGS...``) on a free 127.0.0.1
    port, once it answers ``/v1/models``: its URL and pid; stopped by its pid afterwards.
    Shared with the tests' queueing-server fixture."""
    import urllib.request

    from workloads.stack.mlx_server import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, script, str(port), *args])
    try:
        for _ in range(100):
            if server.poll() is not None:
                raise RuntimeError(f"{script} exited before it answered")
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{script} never answered on {url}")
        yield url, server.pid
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


MARGIN = 1.5
"""A planted latency cause must lead the runner-up of its tier by this factor of score."""
CLEAN_SHARE = 0.1
"""No cause may claim this share of a clean run's latency (the tests' bound too)."""


def _margin(findings: list[dict[str, Any]]) -> float | None:
    """The top finding's score over the next one of its tier (``None``: no rival, or not a
    latency tier, where scores are not shares)."""
    top = findings[0]
    rivals = [f for f in findings[1:] if f["tier"] == top["tier"]]
    if top["tier"] != "latency" or not rivals:
        return None
    return float(top["score"]) / max(float(rivals[0]["score"]), 1e-12)


def planted_table(
    results: Path, repeats: int = 1, cases: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run each planted case ``repeats`` times (needs the repository's tests/ folder on the
    path); per case: how often the expected cause ranked first, and by what margin."""
    from workloads.load.spec import parse_profile
    from workloads.runs.runner import RunSpec
    from workloads.service.projects import Project
    from workloads.stack import Stack
    from workloads.stack.config import load_config

    rows = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    projects = tuple(Project(name=f"std-{n}", root=stdlib / n) for n in SMALL_PROJECTS)
    for case, (expected, change, target, stage) in PLANTED.items():
        if cases and not any(c in case for c in cases):
            continue
        fields = {"name": "s", "duration_s": 10, "mode": "closed", **stage}
        mix = ", ".join(f"{k} = {v}" for k, v in fields.pop("mix").items())
        lines = [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in fields.items()]
        text = (
            "projects = 3\nreplicas = 1\n[[stage]]\n" + "\n".join(lines) + f"\nmix = {{ {mix} }}\n"
        )
        profile = parse_profile(tomllib.loads(text), source=case, name="planted")
        base = load_config("optimized")
        config = dataclasses.replace(
            base,
            blas=change.get("blas", base.blas),
            service={**base.service, **change.get("service", {})},
        )
        with contextlib.ExitStack() as stack:
            if target and target.startswith("openai:"):
                url, pid = stack.enter_context(
                    start_test_server(target.removeprefix("openai:"), *QUEUE_SERVER_ARGS)
                )
                system = Stack("openai", url=url, pid=pid)
            else:
                system = Stack("python", target) if target else Stack("builtin")
            spec = RunSpec(
                profile=profile,
                config=config,
                results_dir=results,
                quiet=True,
                extra_projects=projects,
                stack=system,
            )
            analyses = [
                json.loads((_run(spec) / "analysis.json").read_text()) for _ in range(repeats)
            ]
        first = held = 0
        margins: list[float] = []
        shares: list[float] = []
        for analysis in analyses:
            findings = analysis["findings"] or [
                {"kind": "none", "share": 0.0, "score": 0.0, "tier": "-"}
            ]
            top, margin = findings[0], _margin(findings)
            if expected == "none":
                ok = all(f["tier"] in ("latency", "-") for f in findings)
                ok = ok and max(float(f["share"]) for f in findings) < CLEAN_SHARE
                margin = None
            else:
                ok = top["kind"] == expected
            first += ok
            held += ok and (margin is None or margin >= MARGIN)
            if margin is not None:
                margins.append(margin)
            shares.append(float(top.get("share", 0.0)))
            shown = f"{top['share']:.0%} of latency" if top["tier"] == "latency" else top["tier"]
            print(
                f"  {case}: top {top['kind']} ({shown}), margin "
                + (f"{margin:.2f}x" if margin is not None else "none (no rival)"),
                flush=True,
            )
        rows.append(
            {
                "case": case,
                "expected": expected,
                "runs": repeats,
                "first": first,
                "first_by_margin": held,
                "min_margin": min(margins) if margins else None,
                "median_share": float(statistics.median(shares)),
            }
        )
    return rows


def print_planted(rows: list[dict[str, Any]], repeats: int) -> None:
    """The planted table: first in how many runs, and by the margin."""
    print(f"\n(d) planted bottlenecks ({repeats} short run(s) each, margin >= {MARGIN}x):")
    wide = max([len(r["case"]) + 2 for r in rows] + [36])
    print(
        f"  {'case':<{wide}}{'expected':<15}{'first':>7}{'by margin':>11}{'min margin':>12}"
        f"{'share':>7}"
    )
    for r in rows:
        low = f"{r['min_margin']:.2f}x" if r["min_margin"] is not None else "no rival"
        print(
            f"  {r['case']:<{wide}}{r['expected']:<15}{r['first']:>4}/{r['runs']:<2}"
            f"{r['first_by_margin']:>8}/{r['runs']:<2}{low:>12}{r['median_share']:>7.0%}"
        )


def bench_verdicts(args: argparse.Namespace) -> None:
    """The calibration benchmark (see the module docstring)."""
    from workloads.bench.session import bench_session

    with bench_session(args.results_dir, "verdicts") as (results, machine):
        if args.interleaved:
            from workloads.bench import interleaved as bench_interleaved

            ab_dir = (
                Path(args.interleaved_reuse)
                if args.interleaved_reuse
                else bench_interleaved.record_session(args, results)
            )
            print(
                f"\n(e) interleaved A/B, block pairs as units ({ab_dir}; profile {args.profile}, "
                f"config {args.config} on both sides):",
                flush=True,
            )
            bench_interleaved.table(ab_dir, args.pairs, args.trials)
            return
        if args.planted_only:
            print_planted(
                planted_table(results, args.planted_repeats, args.planted_case),
                args.planted_repeats,
            )
            return
        paths = [Path(p) for p in args.reuse] if args.reuse else aa_runs(args, results)
        runs = [RunData.load(p) for p in paths]
        kinds = {(r.run["spec"]["profile"]["name"], r.run["spec"]["config"]["name"]) for r in runs}
        if len(kinds) > 1:
            raise SystemExit(
                "error: --reuse takes A/A runs of one profile and one configuration; these are "
                + ", ".join(f"{p}/{c}" for p, c in sorted(kinds))
            )
        cal = calibration.build(
            machine,
            runs[0].run["spec"]["profile"]["name"],
            [RunFigures.of(r) for r in runs],
            [_peak_mb(r) for r in runs],
            measured_utc=utc_now(),
            command=" ".join(sys.orig_argv),
        )
        saved = calibration.save(cal, machine, Path(args.cache_dir or default_cache_dir()))
        print(
            f"\n(c) run-to-run drift on {cal.machine}, profile {cal.profile}, {cal.runs} runs "
            f"(saved to {saved}):"
        )
        for kind in calibration.KINDS:
            print(
                f"  {kind:<10} sd {cal.sigma.get(kind, 0):.4f} (df {cal.df.get(kind, 0):.0f}), "
                f"within-run var {cal.within.get(kind, 0):.2e}: a 10% change needs "
                f"{cal.rounds.get(kind) or '> 50'} run(s) a side"
            )
        print("\n(a)+(b) comparisons, drift prior calibrated on the other runs only:")
        for k in sorted({1, *args.rounds}):
            if 2 * k + 2 > len(runs):
                print(f"  {k} run(s) a side: not enough runs ({len(runs)})")
                continue
            r = evaluate(runs, k)
            print(
                f"  {k} run(s) a side, {r['trials']:.0f} trials: A/A flagged {r['aa']:.0%}; "
                f"10% slowdown detected {r['slower']:.0%}; 3x slowest-3% detected "
                f"{r['tail']:.0%} (in a p99 row {r['tail_p99']:.0%})",
                flush=True,
            )
        if args.planted:
            print_planted(
                planted_table(results, args.planted_repeats, args.planted_case),
                args.planted_repeats,
            )


def add_parser(sub: Any) -> None:
    """The ``verdicts`` subcommand's arguments."""
    v = sub.add_parser("verdicts", help="A/A false alarms, power, rounds needed, planted causes")
    v.set_defaults(handler=bench_verdicts)
    v.add_argument("--profile", default="multi-project")
    v.add_argument("--config", default="optimized")
    v.add_argument("--runs", type=int, default=8, help="A/A runs of one configuration")
    v.add_argument("--duration", type=float, default=40.0, help="seconds per A/A run")
    v.add_argument("--rounds", type=int, nargs="+", default=[2, 3], help="runs a side to test")
    v.add_argument("--reuse", nargs="+", default=None, help="run folders to use instead")
    v.add_argument("--no-planted", dest="planted", action="store_false")
    v.add_argument("--planted-only", action="store_true", help="only the planted table")
    v.add_argument("--planted-repeats", type=int, default=1, help="runs of each planted case")
    v.add_argument(
        "--planted-case", action="append", default=[], help="only cases whose name holds this"
    )
    v.add_argument(
        "--interleaved",
        action="store_true",
        help="one interleaved A/A session (--duration seconds a side, --block-s blocks); "
        "A/A false alarms and power by pairs",
    )
    v.add_argument("--block-s", type=float, default=15.0, help="seconds of a block")
    v.add_argument("--pairs", type=int, nargs="+", default=[5, 10, 20], help="block pairs a trial")
    v.add_argument("--trials", type=int, default=100, help="trials per number of pairs")
    v.add_argument("--interleaved-reuse", default=None, help="an interleaved A/B folder")
    v.add_argument("--results-dir", default=None)
    v.add_argument("--cache-dir", default=None, help="where the calibration is saved")
