"""The runs of a comparison's sides: merged, checked against each other, described.

A side's rounds are merged into one :class:`RunData` (for the targets table and the
differential flame graphs); runs of different profiles or schemas are refused, and what
may mislead (other machines, other settings, unfinished runs) becomes a warning. The
merged sides' targets table, differential flame graphs, pooled rates and adapter notes are
built here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from datamodel.errors import ConfigError
from datamodel.frame import Frame, Records, adapter_changes, shifted, span, throughput
from datamodel.records import number
from datamodel.runfolder import RunData
from datamodel.stacks import merge, strip_line_numbers
from profiling.render.flamegraph import render_diff_svg
from profiling.verdict.targets import MB, Target, check_targets

MACHINE_KEYS = ("hostname", "os", "machine", "chip", "cpus_logical", "memory_bytes")
"""Machine facts that make two runs incomparable in absolute terms when they differ."""


def spec_value(run: RunData, *keys: str) -> Any:
    """``run.json`` ``spec.<keys...>`` (e.g. ``"profile", "name"``), ``None`` when absent."""
    node: Any = run.run.get("spec")
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def machine(run: RunData) -> dict[str, Any]:
    """``run.json``'s ``machine`` (an empty dict when absent)."""
    machine = run.run.get("machine")
    return machine if isinstance(machine, dict) else {}


def describe(run: RunData) -> dict[str, Any]:
    """How a comparison names one of its runs: id, folder, config, commit and status."""
    return {
        "run_id": run.run_id,
        "path": str(run.path),
        "config": spec_value(run, "config", "name"),
        "git_commit": machine(run).get("git_commit"),
        "status": run.run.get("status"),
    }


def _shifted(rows: Sequence[dict[str, Any]], key: str, offset: float) -> list[dict[str, Any]]:
    """Timeline samples with ``key`` moved on by ``offset`` seconds where it is set."""
    if not offset:
        return list(rows)
    return [{**r, key: number(r[key]) + offset} if number(r.get(key)) > 0 else r for r in rows]


def merge_runs(runs: Sequence[RunData]) -> RunData:
    """One :class:`RunData` holding the raw data of several rounds of one side.

    Records, timelines, ingest reports, snapshots, replica sections and profiles are
    concatenated (profiles summed per role). Each later round's times are shifted to start
    where the previous round ended, so that a rate over the merged records (throughput)
    is the pooled rate, not one diluted by the other side's interleaved rounds.
    """
    if not runs:
        raise ConfigError("no run to merge")
    if len(runs) == 1:
        return runs[0]
    tables = []
    timeline: list[dict[str, Any]] = []
    cursor: float | None = None
    for run in runs:
        window = span(run.records)
        offset = cursor - window[0] if window and cursor is not None else 0.0
        tables.append(shifted(run.records, offset))
        timeline += _shifted(run.timeline or [], "t", offset)
        cursor = window[1] + offset if window else cursor

    def joined(get: Callable[[RunData], list[dict[str, Any]] | None]) -> Any:
        parts = [get(r) for r in runs]
        return None if all(p is None for p in parts) else [x for p in parts for x in p or []]

    roles = sorted({role for r in runs for role in r.profiles or {}})
    profiles = {role: merge(*((r.profiles or {}).get(role, {}) for r in runs)) for role in roles}
    first = runs[0]
    return RunData(
        path=first.path,
        run={
            **first.run,
            "replicas": joined(lambda r: r.section("replicas")),
            "replica_stats": joined(lambda r: r.section("replica_stats")),
            "merged_runs": [r.run_id for r in runs],
        },
        records=Records(pa.concat_tables(tables)),
        ingest=joined(lambda r: r.ingest),
        timeline=timeline if any(r.timeline is not None for r in runs) else None,
        profiles=profiles or None,
        snapshots=joined(lambda r: r.snapshots),
        mlx_probe=joined(lambda r: r.mlx_probe),
        notes=[f"{r.run_id}: {note}" for r in runs for note in r.notes],
    )


def check_same_experiment(sides: Sequence[tuple[str, Sequence[RunData]]]) -> None:
    """Raise :class:`ConfigError` when the runs used different profiles or schemas."""
    for what, get, advice in (
        ("profiles", lambda r: spec_value(r, "profile", "name"), "run both sides with one profile"),
        (
            "schema versions",
            lambda r: r.run.get("schema_version"),
            "rerun the older side with this loadlens version",
        ),
    ):
        seen: dict[Any, str] = {}
        for label, runs in sides:
            for run in runs:
                seen.setdefault(get(run), f"{label}: run {run.run_id}")
        if len(seen) > 1:
            found = ", ".join(f"{value!r} ({where})" for value, where in seen.items())
            raise ConfigError(f"cannot compare runs of different {what}: {found}; {advice}")


def warnings_of(sides: Sequence[tuple[str, Sequence[RunData]]]) -> list[str]:
    """Why the comparison may mislead: unfinished runs, other machines, other settings."""
    (label_0, runs_0), *_ = sides
    ref = runs_0[0]
    where_ref = f"{label_0}: run {ref.run_id}"
    out: list[str] = []
    for label, runs in sides:
        for run in runs:
            where = f"{label}: run {run.run_id}"
            if run.run.get("status") not in (None, "completed"):
                out.append(f"{where} did not complete (status {run.run.get('status')!r})")
            if run is ref:
                continue
            for key in MACHINE_KEYS:
                x, y = machine(ref).get(key), machine(run).get(key)
                if x is not None and y is not None and x != y:
                    out.append(
                        f"different machines: {key} {x!r} ({where_ref}) vs {y!r} ({where}); "
                        "absolute numbers may not be comparable"
                    )
            p_ref, p_run = spec_value(ref, "profile") or {}, spec_value(run, "profile") or {}
            differ = sorted(k for k in set(p_ref) | set(p_run) if p_ref.get(k) != p_run.get(k))
            if differ:
                out.append(f"profile settings differ ({where_ref} vs {where}): {', '.join(differ)}")
    return list(dict.fromkeys(out))


def memory_peak(run: RunData) -> tuple[float, str] | None:
    """``(MB, source)`` of the run's largest replica memory figure (for a server reached
    over HTTP, its own process's), if any."""
    for samples, prefix in ((run.samples("replica"), ""), (run.server_samples(), "server ")):
        for key, source in (("uss", "USS"), ("rss", "RSS")):
            values = [number(s[key]) for s in samples if isinstance(s.get(key), int | float)]
            if values:
                return max(values) / MB, prefix + source
    ends = [number(s.get("rss_bytes")) for s in run.section("replica_stats")]
    return (max(ends) / MB, "end-of-run RSS") if any(ends) else None


def mlx_peak(run: RunData) -> tuple[float, str] | None:
    """``(MB, source)`` of the largest MLX peak memory any replica reported, if any."""
    mlx = [s.get("mlx") for s in run.section("replica_stats")]
    peaks = [number(m.get("peak_bytes")) for m in mlx if isinstance(m, dict)]
    return (max(peaks) / MB, "MLX peak_bytes") if any(peaks) else None


def targets_table(a: RunData, b: RunData, targets: Sequence[Target]) -> list[dict[str, Any]]:
    """Each target checked on merged side ``a`` and on ``b``, side by side."""
    table = []
    checked = zip(check_targets(a, list(targets)), check_targets(b, list(targets)), strict=True)
    for ra, rb in checked:
        t = ra.target
        table.append(
            {
                "name": t.name,
                "metric": t.metric,
                "op": t.op,
                "threshold": t.threshold,
                "unit": t.unit,
                "a": ra.value,
                "b": rb.value,
                "passed_a": ra.passed,
                "passed_b": rb.passed,
                "evidence_a": ra.evidence,
                "evidence_b": rb.evidence,
            }
        )
    return table


def diff_flamegraphs(
    a: RunData, b: RunData, labels: tuple[str, str], out_dir: Path
) -> dict[str, str]:
    """Write ``diff-<role>.svg`` per replica role profiled on both sides; role -> file name."""
    pa, pb = a.profiles or {}, b.profiles or {}
    written = {}
    for role in sorted(set(pa) & set(pb)):
        if not role.startswith("replica"):
            continue
        name = f"diff-{role}.svg"
        title = f"{role}: {labels[0]} -> {labels[1]} (red: larger share in {labels[1]})"
        svg = render_diff_svg(strip_line_numbers(pa[role]), strip_line_numbers(pb[role]), title)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text(svg, encoding="utf-8")
        written[role] = name
    return written


def adapter_note(label: str, run: RunData) -> str:
    """What changing the adapter cost one side: p50 of requests that changed it and not."""
    parts = [
        f"{op} {f['p50_changed_s'] * 1000:.0f} ms when it changed ({f['changed']}) vs "
        f"{f['p50_unchanged_s'] * 1000:.0f} ms when not ({f['unchanged']})"
        for op, f in adapter_changes(run.records).items()
    ]
    return f"{label}: adapter changes, p50 end to end: " + "; ".join(parts)


def pooled_rate(runs: Sequence[RunData], op: str) -> float | None:
    """Ok ops of ``op`` (or all) per second, pooled over the runs' spans."""
    ok = seconds = 0.0
    for run in runs:
        frame = Frame.of(run.records)
        rate = throughput(run.records, span(run.records), blocks=run.run.get("blocks"))
        if rate is not None:
            mine = frame.ok if op == "all" else frame.ok & frame.equals("op", op)
            ok += int(mine.sum())
            seconds += rate[2]
    return ok / seconds if seconds > 0 else None
