"""The run summary: quantiles per op, project and stage, from all records merged.

Failed and timed-out operations stay in every latency distribution at the time they were
observed to take (a lower bound for a timeout), so the slowest outcomes never vanish from
the tail; each group also says how many of its records failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datamodel.quantiles import group_summaries
from datamodel.records import adapter_changes, error_counts, number, span, throughput
from datamodel.runfolder import SCHEMA_VERSION


def _grouped(
    records: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any], value: str = "duration"
) -> dict[str, dict[str, Any]]:
    failed: dict[Any, int] = {}
    for r in records:
        if not r.get("ok"):
            failed[key(r)] = failed.get(key(r), 0) + 1
    summaries = group_summaries(records, key, lambda r: number(r.get(value)))
    return {str(k): {**v.as_dict(), "failed": failed.get(k, 0)} for k, v in summaries.items()}


def summarize(
    records: list[dict[str, Any]], blocks: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Quantiles per op, project and stage (failures included), lag and queue wait per op;
    throughput over the run's ``blocks`` when it was loaded only in blocks."""
    errors = sum(1 for r in records if not r.get("ok"))
    rate = throughput(records, blocks=blocks)
    return {
        "schema_version": SCHEMA_VERSION,
        "records": len(records),
        "errors": errors,
        "error_rate": errors / len(records) if records else 0.0,
        "throughput_ops_s": rate[0] if rate else 0.0,
        "switches": sum(1 for r in records if r.get("switched")),
        "by_op": _grouped(records, lambda r: r["op"]),
        "by_project": _grouped(records, lambda r: r["project"]),
        "by_stage": _grouped(records, lambda r: r["stage"]),
        "wait_by_op": _grouped(records, lambda r: r["op"], "wait"),
        "lag_by_op": _grouped(records, lambda r: r["op"], "lag"),
        "error_kinds": error_counts(records),
        "adapter_changes": adapter_changes(records),
        **_streaming(records),
    }


def _streaming(records: list[dict[str, Any]]) -> dict[str, Any]:
    """HTTP targets: time to first token and between tokens per op, output tokens and
    tokens/s over the run (nothing for targets that do not stream)."""
    streamed = [r for r in records if r.get("ok") and number(r.get("ttft")) > 0]
    if not streamed:
        return {}
    tokens = sum(int(number(r.get("tokens_out"))) for r in streamed)
    window = span(records)
    seconds = window[1] - window[0] if window else 0.0
    return {
        "ttft_by_op": _grouped(streamed, lambda r: r["op"], "ttft"),
        "itl_by_op": _grouped(
            [r for r in streamed if number(r.get("itl")) > 0], lambda r: r["op"], "itl"
        ),
        "tokens_out": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }
