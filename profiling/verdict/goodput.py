"""Goodput: operations a second that completed and kept every latency SLO covering them.

Throughput counts what finished; goodput counts what finished in time. The SLOs a run's
goodput is counted against are its capacity search's (``run.json``'s ``capacity.slos``)
when it was one, else its targets file's latency targets (``p95_s:OP``, ``OP_p99_s``).
An operation keeps a latency SLO when it completed within the SLO's bound: a p95 SLO of
2 s counts the operations done within 2 s, so a run meets its p95 when at least 95% of
them are good. With no latency SLO at all, every completed operation is good and goodput
is the throughput; the table says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datamodel.errors import ConfigError
from datamodel.frame import Frame, throughput
from datamodel.summary import summarize
from profiling.verdict.capacity import Slo, good_mask, parse_slo, slos_from_targets


def run_slos(run_info: Mapping[str, Any], targets: Sequence[Any], name: str) -> list[Slo]:
    """The latency SLOs a run's goodput counts against (see the module docstring)."""
    search = run_info.get("capacity") or {}
    texts = [str(t) for t in search.get("slos") or []]
    return slos_of(texts) if texts else slos_from_targets(targets, name)


def slos_of(texts: Sequence[str], source: str = "--slo") -> list[Slo]:
    """The latency SLOs among ``texts`` (``analyze:p95<=2``), unreadable ones left out."""
    out = []
    for text in texts:
        try:
            slo = parse_slo(text, (text.split(":", 1)[0],))
        except ConfigError:
            continue
        if slo.latency_field:
            out.append(dataclasses.replace(slo, source=source))
    return out


def goodput_table(
    records: Sequence[Mapping[str, Any]],
    slos: Sequence[Slo],
    blocks: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Goodput over the run, per op and per project: ``ops_s`` (good a second), ``good``
    and ``ok`` counts, and ``share`` (good of all operations, failures included)."""
    latency = [s for s in slos if s.latency_field]
    rate = throughput(records, blocks=blocks)
    seconds = rate[2] if rate else 0.0
    frame = Frame.of(records)
    good, ok = good_mask(frame, latency), frame.ok

    def row(mine: NDArray[np.intp] | slice) -> dict[str, Any]:
        count = int(good[mine].sum())
        operations = int(ok[mine].size)
        return {
            "ops_s": count / seconds if seconds > 0 else None,
            "good": count,
            "ok": int(ok[mine].sum()),
            "operations": operations,
            "share": count / operations if operations else None,
        }

    by_op = {str(op): row(rows) for op, rows in frame.groups("op")}
    by_project = {str(p): row(rows) for p, rows in frame.groups("project") if p}
    return {
        "slos": [s.text for s in latency],
        "against": latency[0].source if latency else "none: every completed op counts",
        "seconds": seconds,
        **row(slice(None)),
        "by_op": dict(sorted(by_op.items())),
        "by_project": dict(sorted(by_project.items())),
    }


def summary_with_goodput(
    records: Sequence[Mapping[str, Any]],
    run_info: Mapping[str, Any],
    targets: Sequence[Any],
    name: str,
) -> dict[str, Any]:
    """``summary.json``'s content: the summary of ``records`` and their goodput against
    the run's latency SLOs (:func:`run_slos`)."""
    blocks = run_info.get("blocks")
    summary = summarize(records, blocks)
    summary["goodput"] = goodput_table(records, run_slos(run_info, targets, name), blocks)
    return summary


def describe(table: Mapping[str, Any]) -> str:
    """One line: "goodput 3.1 ops/s: 96% of ops kept analyze:p95<=2 (targets: default)"."""
    if table.get("ops_s") is None:
        return "goodput: no time measured"
    share = table.get("share")
    kept = ", ".join(table.get("slos") or []) or "no latency SLO (every completed op counts)"
    said = f"{share:.0%} of ops" if share is not None else "no ops"
    return f"goodput {table['ops_s']:.3g} ops/s: {said} completed within {kept}"
