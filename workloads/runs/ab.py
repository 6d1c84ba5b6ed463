"""Candidate-vs-baseline runs interleaved in rounds, then compared.

Each round runs both sides, in an order drawn at random per round (seeded by the A/B's
id, written to ``ab.json``): a side that always went second would always meet the state
the first one left (a warm page cache, a hot CPU) and that would read as its own effect.
Index building at the start of a run is set-up, not measurement, and whichever side goes
first builds what the other then finds ready. Interleaving makes slow drift of a shared,
noisy machine (other tenants, thermal state, page cache) fall on both sides alike. Each
round is a complete, ordinary run folder under ``<ab-dir>/rounds/``; the comparison
merges each side's raw records across rounds.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.connect import connect, disconnect
from datamodel.errors import LoadlensError
from datamodel.runfolder import utc_now, write_json
from workloads.load.progress import Progress
from workloads.runs.results import new_run_id
from workloads.runs.runner import RunOutcome, RunSpec, execute


@dataclass
class ABOutcome:
    """Where an A/B run landed, and what the comparison said."""

    ab_dir: Path
    status: str
    regressions: list[str]
    rounds: list[RunOutcome]


def execute_ab(candidate: RunSpec, baseline: RunSpec, *, rounds: int) -> ABOutcome:
    """Run ``rounds`` of both sides (in a random order per round) in one Ray session;
    compare; write the comparison and its report."""
    ab_id = new_run_id(f"{candidate.profile.name}-ab")
    ab_dir = candidate.results_dir / ab_id
    progress = Progress(quiet=candidate.quiet)
    info: dict[str, Any] = {
        "ab_id": ab_id,
        "started_utc": utc_now(),
        "rounds": [],
        "baseline": baseline.config.name,
        "candidate": candidate.config.name,
        "profile": candidate.profile.name,
    }
    specs = {"candidate": candidate, "baseline": baseline}
    # One Ray session for every round: each run reuses it, so no round pays for a start.
    connect(candidate.address)
    try:
        return _rounds(ab_dir, info, specs, rounds, progress)
    finally:
        disconnect()


def _rounds(
    ab_dir: Path, info: dict[str, Any], specs: dict[str, RunSpec], rounds: int, progress: Progress
) -> ABOutcome:
    candidate, baseline = specs["candidate"], specs["baseline"]
    rounds_dir = ab_dir / "rounds"
    outcomes: list[RunOutcome] = []
    status = "completed"
    for number, pair in enumerate(round_order(info["ab_id"], rounds)):
        for side, spec in ((s, specs[s]) for s in pair):
            progress.say(
                f"round {number + 1}/{rounds}: {side} ({label(spec, baseline, candidate)})"
            )
            outcome = execute(dataclasses.replace(spec, results_dir=rounds_dir))
            outcomes.append(outcome)
            info["rounds"].append(
                {
                    "round": number + 1,
                    "side": side,
                    "config": spec.config.name,
                    "run_dir": str(outcome.run_dir.relative_to(ab_dir)),
                    "status": outcome.status,
                }
            )
            write_json(ab_dir / "ab.json", info)
            if outcome.stopped_at_once:  # a second interrupt: no comparison, out now
                info.update(ended_utc=utc_now(), status="interrupted")
                write_json(ab_dir / "ab.json", info)
                return ABOutcome(ab_dir, "interrupted", [], outcomes)
            if outcome.status != "completed":
                status = outcome.status
                break
        if status != "completed":
            break
    info.update(ended_utc=utc_now(), status=status)
    write_json(ab_dir / "ab.json", info)
    regressions = _compare(ab_dir, info, baseline, candidate, progress)
    return ABOutcome(ab_dir, status, regressions, outcomes)


def _compare(
    ab_dir: Path, info: dict[str, Any], baseline: RunSpec, candidate: RunSpec, progress: Progress
) -> list[str]:
    """Compare what finished; a failure to compare is a message, never lost rounds."""
    from datamodel.runfolder import RunData

    sides: dict[str, list[RunData]] = {"baseline": [], "candidate": []}
    for row in info["rounds"]:
        if row["status"] == "completed":
            sides[row["side"]].append(RunData.load(ab_dir / row["run_dir"]))
    if not sides["baseline"] or not sides["candidate"]:
        progress.say("comparison skipped: a side has no completed round")
        return []
    last_candidate = ab_dir / next(
        r["run_dir"] for r in reversed(info["rounds"]) if r["side"] == "candidate"
    )
    return publish(ab_dir, sides, (baseline, candidate), last_candidate, progress)


def publish(
    ab_dir: Path,
    sides: dict[str, list[Any]],
    specs: tuple[RunSpec, RunSpec],
    report_dir: Path,
    progress: Progress,
) -> list[str]:
    """Compare ``sides`` (baseline and candidate runs), write ``comparison.json``, print
    it, and write the report of ``report_dir`` with it; the regressions, by row. A failure
    to compare is a message: the measured runs are kept."""
    from profiling.render.compare_text import render_terminal as render_comparison
    from profiling.render.html import write_report
    from profiling.verdict.compare import compare_runs

    baseline, candidate = specs
    try:
        comparison = compare_runs(
            sides["baseline"],
            sides["candidate"],
            a_label=label(baseline, baseline, candidate),
            b_label=label(candidate, baseline, candidate),
            out_dir=ab_dir,
        )
    except LoadlensError as exc:
        progress.say(f"comparison failed: {exc}")
        return []
    data = comparison.as_dict()
    write_json(ab_dir / "comparison.json", data)
    progress.say(render_comparison(comparison))
    report = write_report(report_dir, comparison=_for_report(data, report_dir, ab_dir))
    progress.say(f"report: {report}")
    return [f"{r.name} {r.metric}" for r in comparison.regressions]


def round_order(seed: str, rounds: int) -> list[tuple[str, str]]:
    """The sides' order in each round: drawn at random, the same for the same ``seed``."""
    draw = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    for _ in range(rounds):
        first = draw.choice(("candidate", "baseline"))
        pairs.append((first, "baseline" if first == "candidate" else "candidate"))
    return pairs


def label(spec: RunSpec, baseline: RunSpec, candidate: RunSpec) -> str:
    """A side's name: its config, and its stack when the sides' stacks differ."""
    if baseline.stack == candidate.stack:
        return spec.config.name
    if baseline.config.name == candidate.config.name:
        return spec.stack.label
    return f"{spec.config.name} on {spec.stack.label}"


def _for_report(data: dict[str, Any], run_dir: Path, ab_dir: Path) -> dict[str, Any]:
    """Point the comparison's file links at paths relative to the report's own folder."""
    out = dict(data)
    rel = Path("../..")  # report in <ab>/rounds/<run>/, diff graphs in <ab>/
    flames = out.get("diff_flamegraphs") or {}
    out["diff_flamegraphs"] = {role: str(rel / path) for role, path in flames.items()}
    first = next(iter(out["diff_flamegraphs"].values()), None)
    out["diff_flamegraph"] = first
    return out
