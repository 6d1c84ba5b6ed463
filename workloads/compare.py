"""``python -m workloads.compare RUN_A RUN_B``: did B regress or improve on A, for real?

RUN_A and RUN_B are run folders, or comma-separated lists of run folders (the rounds of an
interleaved A/B run, merged per side). ``--check-baseline NAME RUN`` compares RUN with a
saved baseline; ``--save-baseline NAME RUN`` saves RUN as one. The table is printed
(``--json``: the comparison as JSON instead) and ``comparison.json`` plus differential
flame graphs are written to ``--out`` (default: the first run folder of side B).

Exit codes: 0 no regression, 1 at least one regression, 2 bad input (a missing run folder,
runs of different profiles, an unknown baseline or targets name).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from datamodel.errors import ConfigError, LoadlensError
from datamodel.runfolder import RunData, write_json
from profiling.render.compare_text import render_terminal
from profiling.verdict.baselines import DEFAULT_ROOT, load_baseline, save_baseline
from profiling.verdict.calibration import read_calibration
from profiling.verdict.compare import DEFAULT_FACTOR, Comparison, compare_runs, spec_value
from profiling.verdict.statistics import Prior
from profiling.verdict.targets import Target, known_targets, load_targets

EXIT_REGRESSION = 1
COMPARISON_JSON = "comparison.json"


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m workloads.compare",
        description="Compare runs (A = baseline, B = candidate) with statistics: a change "
        "counts when it is significant and larger than --factor.",
    )
    p.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="RUN_A RUN_B; each a run folder or a comma-separated list of rounds",
    )
    p.add_argument(
        "--factor",
        type=float,
        default=DEFAULT_FACTOR,
        help=f"smallest ratio B/A (or A/B) that counts as a change (default {DEFAULT_FACTOR})",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (0.05)")
    p.add_argument(
        "--calibration",
        default="auto",
        help="run-to-run drift to allow for: auto (this machine's A/A calibration, else the "
        "shipped one), none, or a calibration file",
    )
    p.add_argument("--out", type=Path, default=None, help="where comparison.json goes")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument(
        "--targets",
        default=None,
        help="targets name or .toml path (default: the profile's own, else default)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check-baseline", metavar="NAME", help="compare RUN with baseline NAME")
    mode.add_argument("--save-baseline", metavar="NAME", help="save RUN as baseline NAME")
    p.add_argument(
        "--baselines-dir",
        type=Path,
        default=DEFAULT_ROOT,
        help=f"where named baselines live (default {DEFAULT_ROOT})",
    )
    return p


def load_side(text: str) -> list[RunData]:
    """The runs of one side: a run folder or a comma-separated list of them."""
    paths = [part.strip() for part in text.split(",") if part.strip()]
    if not paths:
        raise ConfigError(f"no run folder in {text!r}")
    return [RunData.load(path) for path in paths]


def _expect(runs: Sequence[str], count: int, usage: str) -> None:
    if len(runs) != count:
        raise ConfigError(f"expected {usage}, got {len(runs)} run argument(s)")


def _label(runs: Sequence[RunData], other: Sequence[RunData]) -> str:
    """The config name when the two sides ran different configs, else the run id(s)."""
    config = spec_value(runs[0], "config", "name")
    other_config = spec_value(other[0], "config", "name")
    if config and other_config and config != other_config:
        return str(config)
    return runs[0].run_id + (f" +{len(runs) - 1} rounds" if len(runs) > 1 else "")


def _targets(args: argparse.Namespace, run: RunData) -> list[Target]:
    """``--targets``, else the targets file named like the run's profile, else default."""
    name = args.targets
    if name is None:
        profile = spec_value(run, "profile", "name")
        name = profile if profile in known_targets() else "default"
    return load_targets(name)


def _priors(choice: str) -> dict[str, Prior] | None:
    """``auto``: the calibration that fits (``None`` here); ``none``: no drift allowance;
    else a calibration file written by ``python -m workloads.bench verdicts``."""
    if choice == "auto":
        return None
    if choice == "none":
        return {}
    calibration = read_calibration(Path(choice))
    if calibration is None:
        raise ConfigError(f"--calibration {choice}: not a calibration file")
    return calibration.priors(f"calibration file {choice}")


def _compare(args: argparse.Namespace) -> Comparison:
    if args.check_baseline:
        _expect(args.runs, 1, "--check-baseline NAME RUN")
        side_a = [load_baseline(args.check_baseline, args.baselines_dir)]
        side_b = load_side(args.runs[0])
        a_label = f"baseline {args.check_baseline}"
    else:
        _expect(args.runs, 2, "RUN_A RUN_B")
        side_a, side_b = load_side(args.runs[0]), load_side(args.runs[1])
        a_label = _label(side_a, side_b)
    out = args.out if args.out is not None else side_b[0].path
    comparison = compare_runs(
        side_a,
        side_b,
        a_label=a_label,
        b_label=_label(side_b, side_a),
        factor=args.factor,
        alpha=args.alpha,
        targets=_targets(args, side_a[0]),
        out_dir=out,
        priors=_priors(args.calibration),
    )
    write_json(out / COMPARISON_JSON, comparison.as_dict())
    _capacities(side_a, side_b, out)
    if out == side_b[0].path and (out / "run.json").is_file():
        from profiling.render.html import write_report

        write_report(out)  # run B's report now carries the comparison
    return comparison


def _capacities(side_a: Sequence[RunData], side_b: Sequence[RunData], out: Path) -> None:
    """Two capacity searches (one run a side, each with ``capacity.json``): their ratio,
    printed and written to ``capacity_comparison.json``."""
    from profiling.verdict.capacity import compare_capacities

    if len(side_a) != 1 or len(side_b) != 1:
        return
    paths = [side[0].path / "capacity.json" for side in (side_a, side_b)]
    if not all(p.is_file() for p in paths):
        return
    ratio = compare_capacities(*(json.loads(p.read_text()) for p in paths))
    write_json(out / "capacity_comparison.json", ratio)
    print(f"capacity: {ratio['sentence']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Parse, compare, and turn a :class:`LoadlensError` into its exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.save_baseline:
            _expect(args.runs, 1, "--save-baseline NAME RUN")
            folder = save_baseline(args.runs[0], args.save_baseline, args.baselines_dir)
            print(f"saved baseline {args.save_baseline!r} in {folder}")
            return 0
        comparison = _compare(args)
    except LoadlensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=1))
    else:
        print(render_terminal(comparison))
    return EXIT_REGRESSION if comparison.regressions else 0


if __name__ == "__main__":
    raise SystemExit(main())
