"""The live terminal display: one status line a second, then the final table."""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cluster.connect import Cluster
from datamodel.quantiles import quantile_sorted
from workloads.load.shards import Tally
from workloads.load.spec import Stage

WINDOW_S = 10.0


class Progress:
    """Shows stage, elapsed/remaining, ops/s, p95 per op, errors and swaps while a run goes."""

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._recent: deque[tuple[float, str, float, bool, float]] = deque()
        """(when taken, op, duration, ok, how many records it stands for)."""
        self.total = 0
        self.errors = 0
        self.swaps = 0
        self._own = Tally()
        """Counts the records handed to :meth:`add`."""
        self._stage: Stage | None = None
        self._stage_index = 0
        self._stage_start = 0.0
        self._last_line = 0.0

    def say(self, message: str) -> None:
        """Print one line (unless quiet)."""
        if not self.quiet:
            self._end_status()
            print(message, file=self.stream, flush=True)

    def cluster(self, cluster: Cluster) -> None:
        """Tell where the run is and how to watch it."""
        kind = "embedded local Ray" if cluster.embedded else f"Ray at {cluster.address}"
        self.say(f"cluster: {kind}, {len(cluster.nodes)} node(s)")
        if cluster.dashboard_url:
            self.say(f"dashboard: {cluster.dashboard_url}  (token: {cluster.token_hint()})")

    def ingest(self, done: int, total: int, seconds: float) -> None:
        """Index building: chunks embedded so far, chunks/s and time left (once a second)."""
        now = time.monotonic()
        if self.quiet or (now - self._last_line < 1.0 and done < total):
            return
        self._last_line = now
        rate = done / seconds if seconds > 0 else 0.0
        left = f"{(total - done) / rate:.0f} s left" if rate > 0 else "starting"
        line = (
            f"[indexes] {done:,}/{total:,} chunks embedded | {rate:5.1f} chunks/s | {left} | "
            f"{seconds:.0f} s"
        )
        if self.tty:
            print("\r" + line.ljust(100), end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def start_stage(self, stage: Stage, index: int) -> None:
        """A new stage begins."""
        self._stage, self._stage_index = stage, index
        self._stage_start = time.monotonic()
        self.say(f"stage {index + 1}: {stage.name} ({stage.mode} loop, {stage.duration_s:.0f} s)")

    def add(self, records: list[dict[str, Any]], in_flight: int) -> None:
        """Take newly finished records (the driver holds them: a worker that hands its
        records over, or ops recorded as lost) and refresh the status line: they are
        counted as a worker counts what it writes itself, in the order they were sent."""
        for record in sorted(records, key=lambda r: r.get("sent") or 0.0):
            self._own.add(record)
        self.tally(self._own.take(), in_flight)

    def tally(self, tally: dict[str, Any], in_flight: int) -> None:
        """Take a worker's tally of the records it finished and wrote itself (counts and a
        sample, :class:`~workloads.load.shards.Tally`) and refresh the status line."""
        now = time.monotonic()
        sample = tally["sample"]
        weight = tally["done"] / len(sample) if sample else 0.0
        for op, duration, ok in sample:
            self._recent.append((now, op, duration, ok, weight))
        self.total += tally["done"]
        self.errors += tally["errors"]
        self.swaps += tally["swaps"]
        self._refresh(now, in_flight)

    def _refresh(self, now: float, in_flight: int) -> None:
        while self._recent and self._recent[0][0] < now - WINDOW_S:
            self._recent.popleft()
        if self.quiet or self._stage is None or now - self._last_line < 1.0:
            return
        self._last_line = now
        elapsed = now - self._stage_start
        window = min(WINDOW_S, max(elapsed, 1e-9))
        p95 = []
        for op in sorted({op for _, op, _, _, _ in self._recent}):
            kept = [(d, w) for _, o, d, ok, w in self._recent if o == op and ok]
            if kept:
                p95.append(f"{op} {_p95(kept) * 1000:.0f}ms")
        done = sum(weight for *_, weight in self._recent)
        line = (
            f"[{self._stage.name}] {elapsed:5.1f}/{self._stage.duration_s:.0f} s | "
            f"{done / window:5.1f} ops/s | p95 {', '.join(p95) or '-'} | "
            f"errors {self.errors} | swaps {self.swaps} | in flight {in_flight} | done {self.total}"
        )
        if self.tty:
            print("\r" + line[:200].ljust(120), end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def _end_status(self) -> None:
        if self.tty and self._last_line:
            print(file=self.stream)
            self._last_line = 0.0

    def final(self, summary: dict[str, Any], run_dir: Path, status: str) -> None:
        """The closing table: per-operation percentiles, errors, where the files are."""
        if self.quiet:
            return
        self._end_status()
        out = self.stream
        print(
            f"\nrun {status}: {summary.get('records', 0)} operations, "
            f"{summary.get('errors', 0)} errors, "
            f"{summary.get('throughput_ops_s', 0.0):.2f} ops/s"
            + _goodput_text(summary.get("goodput")),
            file=out,
        )
        good = (summary.get("goodput") or {}).get("by_op") or {}
        print(
            f"{'op':<10}{'count':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}"
            f"{'goodput/s':>11}",
            file=out,
        )
        for op, s in sorted(summary.get("by_op", {}).items()):
            cells = [s.get(k) for k in ("p50", "p95", "p99", "max")]
            text = "".join(f"{c * 1000:>10.1f}" if c is not None else f"{'-':>10}" for c in cells)
            rate = (good.get(op) or {}).get("ops_s")
            text += f"{rate:>11.3g}" if rate is not None else f"{'-':>11}"
            print(f"{op:<10}{s['count']:>7}{text}", file=out)
        for op, s in sorted(summary.get("ttft_by_op", {}).items()):
            itl = summary.get("itl_by_op", {}).get(op, {}).get("p50")
            print(
                f"  {op} time to first token p50 {s['p50'] * 1000:.1f} ms, p95 "
                f"{s['p95'] * 1000:.1f} ms"
                + (f"; between tokens p50 {itl * 1000:.1f} ms" if itl else ""),
                file=out,
            )
        if summary.get("tokens_out"):
            print(
                f"  {summary['tokens_out']} output tokens, {summary['tokens_per_s']:.1f} tokens/s",
                file=out,
            )
        for kind, n in summary.get("error_kinds", {}).items():
            print(f"  error {kind}: {n}", file=out)
        print(f"results: {run_dir}", file=out, flush=True)


def _goodput_text(table: dict[str, Any] | None) -> str:
    """ ", goodput 3.1 ops/s within analyze:p95<=2" (nothing without a goodput table)."""
    if not table or table.get("ops_s") is None:
        return ""
    kept = ", ".join(table.get("slos") or []) or "any time (no latency SLO)"
    return f", goodput {table['ops_s']:.2f} ops/s within {kept}"


def _p95(kept: list[tuple[float, float]]) -> float:
    """The p95 of (duration, how many records it stands for): samples of workers that
    finished different numbers of records weigh by those numbers."""
    values = [d for d, _ in kept]
    weights = [w for _, w in kept]
    if min(weights) == max(weights):
        return quantile_sorted(sorted(values), 0.95)
    return float(np.quantile(values, 0.95, weights=weights, method="inverted_cdf"))
