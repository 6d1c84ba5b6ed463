"""The run summary: percentiles per op, project and stage, from all records merged."""

from __future__ import annotations

from typing import Any

from workloads.results import SCHEMA_VERSION
from workloads.stats import group_summaries


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles per op, per project and per stage, from all records merged."""
    ok = [r for r in records if r["ok"]]
    errors = [r for r in records if not r["ok"]]
    span = (
        max(r["issued"] + r["duration"] for r in records) - min(r["issued"] for r in records)
        if records else 0.0
    )  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "records": len(records),
        "errors": len(errors),
        "error_rate": len(errors) / len(records) if records else 0.0,
        "throughput_ops_s": len(ok) / span if span > 0 else 0.0,
        "switches": sum(1 for r in records if r.get("switched")),
        "by_op": {k: v.as_dict() for k, v in group_summaries(ok, lambda r: r["op"]).items()},
        "by_project": {
            k: v.as_dict() for k, v in group_summaries(ok, lambda r: r["project"]).items()
        },
        "by_stage": {k: v.as_dict() for k, v in group_summaries(ok, lambda r: r["stage"]).items()},
        "wait_by_op": {
            k: v.as_dict()
            for k, v in group_summaries(
                [{**r, "duration": r["wait"]} for r in ok], lambda r: r["op"]
            ).items()
        },
        "error_kinds": _count(str(r["error"]).split(":")[0] for r in errors),
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out
