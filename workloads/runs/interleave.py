"""Candidate-vs-baseline interleaved in one session: both systems alive at once, short
blocks of identical load alternating between them, block pairs as the units.

A whole-run round starts a system, warms it and loads it for minutes; between two runs
the machine drifts (other tenants, thermal state, page cache), so two runs of one
configuration differ by more than a 10% change, and seeing one takes many rounds. Here
both sides' replicas are started once in one Ray session (the second only after the
first's memory says both fit), and each stage of the profile is cut into blocks of about
``block_s`` seconds. Block ``j`` of a stage runs on both sides, one right after the other,
in an order drawn at random per pair (seeded by the A/B's id), with the same plan seed:
the same arrivals, users and projects. Slow drift then falls on both blocks of a pair
alike and cancels in their difference; the comparison tests the mean of per-pair
differences with the pairs as units (randomized multiple interleaved trials, as in Abedi
& Brecht, ICPE 2017).

Each side is an ordinary run folder under ``<ab-dir>/sides/`` whose ``run.json`` lists
its blocks (``blocks``: pair, stage, start and end in UNIX seconds); ``ab.json`` lists
every block of both sides in the order they ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
import ray

from cluster.connect import connect, disconnect
from datamodel.errors import LoadlensError
from datamodel.runfolder import utc_now, write_json
from workloads.load.progress import Progress
from workloads.load.spec import Profile, Stage
from workloads.runs.ab import ABOutcome, label, publish
from workloads.runs.live import Interrupts, Live, RunOutcome, RunSpec, run_stage
from workloads.runs.results import new_run_id
from workloads.runs.runner import close_folder, judge, open_folder, open_side

BLOCK_S = 20.0
"""Default seconds of one block: long enough for its records to say something (a few
dozen operations at the profiles' rates), short enough that many pairs fit in minutes."""
MEMORY_HEADROOM = 2.0
"""The second side starts only if the memory available, with the first side up and its
indexes built, is this many times what the first side's replicas hold (the second side
needs as much, and both grow under load)."""
SIDES = ("baseline", "candidate")


class NoRoom(LoadlensError):
    """Both sides do not fit on the machine at once: whole-run rounds must do."""


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of the schedule: a stretch of one stage, run once on each side."""

    pair: int
    stage_index: int
    stage: Stage
    number: int
    """Its number within its stage."""


def schedule(profile: Profile, block_s: float) -> list[Block]:
    """Each stage cut into blocks of about ``block_s`` seconds (at least one a stage, of
    equal length), in the profile's order."""
    if not block_s > 0:
        raise LoadlensError(f"block seconds must be > 0, got {block_s}")
    out: list[Block] = []
    for index, stage in enumerate(profile.stages):
        count = max(1, round(stage.duration_s / block_s))
        piece = dataclasses.replace(stage, duration_s=stage.duration_s / count)
        first = len(out)
        out.extend(Block(first + j, index, piece, j) for j in range(count))
    return out


def pair_order(seed: str, pairs: int) -> list[tuple[str, str]]:
    """Which side goes first in each pair: drawn at random, the same for the same ``seed``."""
    draw = random.Random(f"{seed}:pairs")
    out: list[tuple[str, str]] = []
    for _ in range(pairs):
        first = draw.choice(SIDES)
        out.append((first, SIDES[1 - SIDES.index(first)]))
    return out


def held_bytes(live: Live) -> int:
    """What a side's replicas hold now (resident set), as their gauges say."""
    rows = ray.get([r.gauges.remote() for r in live.replicas], timeout=60)
    return int(sum(row.get("rss") or 0 for row in rows))


def check_room(live: Live, progress: Progress) -> None:
    """Raise :class:`NoRoom` unless the second side fits next to ``live`` (the first)."""
    held = held_bytes(live)
    free = psutil.virtual_memory().available
    if free < MEMORY_HEADROOM * held:
        raise NoRoom(
            f"both sides do not fit at once: the first side's replicas hold {held / 2**20:.0f} "
            f"MiB and {free / 2**20:.0f} MiB is available (needs {MEMORY_HEADROOM:g}x)"
        )
    progress.say(
        f"memory: first side holds {held / 2**20:.0f} MiB, {free / 2**20:.0f} MiB available: "
        "both sides fit, interleaving blocks"
    )


def execute_interleaved(
    candidate: RunSpec, baseline: RunSpec, *, block_s: float = BLOCK_S
) -> ABOutcome:
    """Run both sides in interleaved blocks in one Ray session; compare the block pairs;
    write the comparison and its report. Raises :class:`NoRoom` (having removed its
    folder: nothing was measured) when both sides do not fit on the machine at once."""
    ab_id = new_run_id(f"{candidate.profile.name}-ab")
    ab_dir = candidate.results_dir / ab_id
    blocks = schedule(candidate.profile, block_s)
    info: dict[str, Any] = {
        "ab_id": ab_id,
        "mode": "interleaved",
        "started_utc": utc_now(),
        "block_s": block_s,
        "pairs": len(blocks),
        "baseline": baseline.config.name,
        "candidate": candidate.config.name,
        "profile": candidate.profile.name,
        "sides": {},
        "blocks": [],
    }
    specs = {"candidate": candidate, "baseline": baseline}
    progress = Progress(quiet=candidate.quiet)
    connect(candidate.address)
    try:
        outcomes, status = _run(ab_dir, info, specs, blocks, progress)
    except NoRoom:
        shutil.rmtree(ab_dir, ignore_errors=True)
        raise
    finally:
        disconnect()
    info.update(ended_utc=utc_now(), status=status)
    write_json(ab_dir / "ab.json", info)
    if any(o.stopped_at_once for o in outcomes.values()):
        return ABOutcome(ab_dir, "interrupted", [], list(outcomes.values()))
    regressions = compare_sides(ab_dir, outcomes, specs, progress)
    return ABOutcome(ab_dir, status, regressions, list(outcomes.values()))


def _run(
    ab_dir: Path,
    info: dict[str, Any],
    specs: dict[str, RunSpec],
    blocks: list[Block],
    progress: Progress,
) -> tuple[dict[str, RunOutcome], str]:
    """Open both sides, run every block pair, close both run folders (always)."""
    folders = {
        side: open_folder(dataclasses.replace(spec, results_dir=ab_dir / "sides"))
        for side, spec in specs.items()
    }
    for side, (run_dir, run_info, _) in folders.items():
        run_info.update(ab={"id": info["ab_id"], "side": side, "mode": "interleaved"}, blocks=[])
        info["sides"][side] = str(run_dir.relative_to(ab_dir))
    write_json(ab_dir / "ab.json", info)
    status, hard = "failed", False
    try:
        with Interrupts() as interrupts, contextlib.ExitStack() as stack:
            lives: dict[str, Live] = {}
            for side in pair_order(info["ab_id"], 1)[0]:
                run_dir, run_info, writer = folders[side]
                progress.say(f"starting {side} ({label(specs[side], *_bc(specs))})")
                lives[side] = stack.enter_context(
                    open_side(specs[side], run_dir, run_info, writer, progress, interrupts)
                )
                if len(lives) == 1:
                    check_room(lives[side], progress)
            _blocks(lives, blocks, info, folders, ab_dir, progress, interrupts)
            status = "interrupted" if interrupts.count else "completed"
    except KeyboardInterrupt:
        status, hard = "interrupted", True
        progress.say("second interrupt: stopping at once; the records so far are kept")
    except NoRoom:
        for name, (run_dir, run_info, writer) in folders.items():
            close_folder(run_dir, run_info, writer, "not run", specs[name])
        raise
    outcomes: dict[str, RunOutcome] = {}
    for side, (run_dir, run_info, writer) in folders.items():
        records, summary = close_folder(run_dir, run_info, writer, status, specs[side])
        progress.final(summary, run_dir, status)
        failed = [] if hard else judge(run_dir, specs[side], progress)
        outcomes[side] = RunOutcome(run_dir, status, records, summary, failed, hard)
    return outcomes, status


def _bc(specs: dict[str, RunSpec]) -> tuple[RunSpec, RunSpec]:
    return specs["baseline"], specs["candidate"]


def _blocks(
    lives: dict[str, Live],
    blocks: list[Block],
    info: dict[str, Any],
    folders: dict[str, tuple[Path, dict[str, Any], Any]],
    ab_dir: Path,
    progress: Progress,
    interrupts: Interrupts,
) -> None:
    """Each block on both sides, in its pair's order, with one plan seed for both."""
    orders = pair_order(info["ab_id"], len(blocks))
    for block, order in zip(blocks, orders, strict=True):
        for side in order:
            if interrupts.count:
                return
            progress.say(
                f"pair {block.pair + 1}/{len(blocks)}: {side}, {block.stage.name} "
                f"block {block.number + 1}"
            )
            start = time.time()
            done = run_stage(
                lives[side],
                block.stage,
                block.stage_index,
                seed_index=block.stage_index * 1000 + block.number,
                snapshot=False,
            )
            row = {
                "pair": block.pair,
                "stage": block.stage.name,
                "block": block.number,
                "start": start,
                "end": time.time(),
            }
            run_dir, run_info, _ = folders[side]
            run_info["blocks"].append(row)
            run_info.setdefault("stages", []).append({**done, "pair": block.pair})
            write_json(run_dir / "run.json", run_info)
            info["blocks"].append({**row, "side": side})
            write_json(ab_dir / "ab.json", info)


def compare_sides(
    ab_dir: Path, outcomes: dict[str, RunOutcome], specs: dict[str, RunSpec], progress: Progress
) -> list[str]:
    """Compare the two sides' block pairs; write ``comparison.json`` and the report."""
    from datamodel.runfolder import RunData

    sides = {side: [RunData.load(o.run_dir)] for side, o in outcomes.items()}
    return publish(ab_dir, sides, _bc(specs), outcomes["candidate"].run_dir, progress)
