"""The run summary: quantiles per op, project and stage, from all records merged.

Failed and timed-out operations stay in every latency distribution at the time they were
observed to take (a lower bound for a timeout), so the slowest outcomes never vanish from
the tail; each group also says how many of its records failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datamodel.frame import Frame, adapter_changes, error_counts, grouped, span, throughput
from datamodel.runfolder import SCHEMA_VERSION


def _grouped(
    frame: Frame, by: str, value: str = "duration", mask: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    failed = ~frame.ok if mask is None else ~frame.ok & mask
    counts = {label: int(failed[rows].sum()) for label, rows in frame.groups(by, mask)}
    return {
        str(k): {**v.as_dict(), "failed": counts[k]}
        for k, v in grouped(frame, by, value, mask).items()
    }


def summarize(
    records: Sequence[Mapping[str, Any]], blocks: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Quantiles per op, project and stage (failures included), lag and queue wait per op;
    throughput over the run's ``blocks`` when it was loaded only in blocks."""
    frame = Frame.of(records)
    errors = int((~frame.ok).sum())
    rate = throughput(records, blocks=blocks)
    return {
        "schema_version": SCHEMA_VERSION,
        "records": frame.n,
        "errors": errors,
        "error_rate": errors / frame.n if frame.n else 0.0,
        "throughput_ops_s": rate[0] if rate else 0.0,
        "switches": int(frame.flag("switched").sum()),
        "by_op": _grouped(frame, "op"),
        "by_project": _grouped(frame, "project"),
        "by_stage": _grouped(frame, "stage"),
        "wait_by_op": _grouped(frame, "op", "wait"),
        "lag_by_op": _grouped(frame, "op", "lag"),
        "error_kinds": error_counts(records),
        "adapter_changes": adapter_changes(records),
        **_streaming(records, frame),
    }


def _streaming(records: Sequence[Mapping[str, Any]], frame: Frame) -> dict[str, Any]:
    """HTTP targets: time to first token and between tokens per op, output tokens and
    tokens/s over the run (nothing for targets that do not stream)."""
    streamed = frame.ok & (frame.value("ttft") > 0)
    if not streamed.any():
        return {}
    tokens = int(frame.value("tokens_out")[streamed].sum())
    window = span(records)
    seconds = window[1] - window[0] if window else 0.0
    return {
        "ttft_by_op": _grouped(frame, "op", "ttft", streamed),
        "ttft_planned_by_op": _grouped(
            frame, "op", "ttft_planned", streamed & (frame.value("ttft_planned") > 0)
        ),
        "itl_by_op": _grouped(frame, "op", "itl", streamed & (frame.value("itl") > 0)),
        "itl_p99_by_op": _grouped(frame, "op", "itl_p99", streamed & (frame.value("itl_p99") > 0)),
        "tokens_out": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }
