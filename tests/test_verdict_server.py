"""Queueing inside a server behind an HTTP target, estimated from what the client sees.

Unit tests of the estimate on synthetic records (pure logic: a one-at-a-time server is
simulated exactly, so the queue each request met is known), then a real planted case: a
test-only server that serves one request at a time (tests/queueserver.py), driven by real
loadlens runs above and well below its capacity.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runs import ROOT, only_run, run_cli, run_records

from datamodel.runfolder import RunData
from profiling.verdict.analyze import analyze
from profiling.verdict.attribution import Attribution
from profiling.verdict.causes import ServiceClaims
from profiling.verdict.server import (
    estimate_queue,
    idle_first_token,
    in_flight_at_send,
    rank_correlation,
    server_queue,
)

HTTP_RUN = {"stack": {"kind": "openai"}}


def _record(i: int, sent: float, first: float, end: float, **extra: Any) -> dict[str, Any]:
    """A completed request of an HTTP target, as the generator records it."""
    service = end - sent
    return {
        "id": f"0-{i}",
        "op": "analyze",
        "project": "p",
        "replica": 0,
        "planned": sent,
        "sent": sent,
        "duration": service,
        "lag": 0.0,
        "wait": 0.0,
        "service": service,
        "stages": {"model": service},
        "ttft": first - sent,
        "ok": True,
        "served": '{"model": "m"}',
        **extra,
    }


def one_at_a_time(
    sends: list[float], *, prefill: float = 0.05, stream: float = 0.15
) -> tuple[list[dict[str, Any]], list[float]]:
    """Requests sent at ``sends`` to a server that serves one at a time, first come first
    served: the records and the seconds each one waited behind the others."""
    records, waits, free = [], [], 0.0
    for i, sent in enumerate(sorted(sends)):
        start = max(sent, free)
        free = start + prefill + stream
        records.append(_record(i, sent, start + prefill, free))
        waits.append(start - sent)
    return records, waits


def closed_loop(users: int, seconds: float, *, think: float = 0.0) -> list[dict[str, Any]]:
    """``users`` each sending their next request when the last one is answered (plus
    ``think``), to a one-at-a-time server."""
    due = [(0.01 * u, u) for u in range(users)]
    records: list[dict[str, Any]] = []
    free = 0.0
    while due:
        sent, user = heapq.heappop(due)
        start = max(sent, free)
        free = start + 0.2
        records.append(_record(len(records), sent, start + 0.05, free))
        if free + think < seconds:
            heapq.heappush(due, (free + think, user))
    return records


def findings(records: list[dict[str, Any]], run: dict[str, Any] | None = None) -> list[Any]:
    att = Attribution(records)
    claims = ServiceClaims(att)
    return server_queue(RunData(Path("."), run or HTTP_RUN, records), att, claims)


def test_in_flight_counts_the_others_whose_reply_has_not_ended() -> None:
    sent = np.array([0.0, 0.5, 1.0, 3.0, 3.0])
    end = np.array([2.0, 1.0, 1.5, 4.0, 3.5])
    # At 0.5: the first; at 1.0: the first (the second ended at 1.0); at 3.0: the other one
    # sent at 3.0.
    assert in_flight_at_send(sent, end).tolist() == [0, 1, 1, 1, 1]


def test_idle_first_token_is_the_median_of_requests_sent_alone() -> None:
    first = np.array([0.2, 0.21, 0.19, 0.9, 1.5, 0.5])
    assert idle_first_token(first, np.array([0, 0, 0, 3, 5, 1])) == (0.2, 3)
    # Fewer than three alone: the lowest of those with at most one other in flight (each
    # of them may have waited for the other).
    assert idle_first_token(first, np.array([0, 1, 1, 3, 5, 2])) == (0.19, 3)
    # Never as few: the lowest at the fewest.
    assert idle_first_token(first, np.array([5, 6, 3, 6, 4, 3])) == (0.19, 2)
    assert idle_first_token(first[:2], np.zeros(2)) is None


def test_rank_correlation_handles_ties_and_constants() -> None:
    x = np.array([0.0, 1.0, 1.0, 2.0, 3.0])
    assert rank_correlation(x, 2 * x + 1)[0] == pytest.approx(1.0)
    assert rank_correlation(x, -x)[0] == pytest.approx(-1.0)
    assert rank_correlation(np.zeros(5), x) == (0.0, 1.0)


def test_arrivals_above_capacity_are_server_overload_with_the_queue_they_met() -> None:
    # 8 requests/s for 5 s against a server that completes 5/s: a growing backlog.
    records, waits = one_at_a_time([i / 8 for i in range(40)])
    att = Attribution(records)
    claims = ServiceClaims(att)
    (found,) = server_queue(RunData(Path("."), HTTP_RUN, records), att, claims)
    assert found.kind == "server_overload" and found.explains == ["model"]
    # The estimate is the queue each request met, exactly (the idle first token is known).
    assert claims.by_cause["server_queue"].tolist() == pytest.approx(waits)
    assert found.seconds == pytest.approx(sum(waits))
    assert found.share > 0.7
    ev = found.evidence
    assert ev["arrivals_per_s"] == pytest.approx(8.0)
    assert ev["completions_per_s"] == pytest.approx(5.0)
    assert ev["by_op"]["analyze"]["idle_first_token_s"] == pytest.approx(0.05)
    assert ev["backlog_growth_per_s"] > 1 and ev["load_correlation"] > 0.9
    assert ev["streaming_mean"] < 1.01 and ev["in_flight_mean"] > 3
    assert "8.0 requests/s sent against 5.0/s completed" in found.title
    # Only the first request was sent alone: the idle figure is the lowest at the fewest.
    assert not ev["by_op"]["analyze"]["idle_sent_alone"]
    assert "for their first token beyond the 0.05 s it took with the fewest in flight" in (
        found.title
    )
    assert "batches" in found.suggestion


def test_users_waiting_on_a_one_at_a_time_server_are_a_batching_limit() -> None:
    # Closed loop: arrivals follow completions, so the backlog does not grow, but four
    # users wait for a server that streams one request at a time.
    (found,) = findings(closed_loop(4, 20.0))
    assert found.kind == "server_batching"
    assert found.evidence["in_flight_mean"] == pytest.approx(4.0, rel=0.05)
    assert found.evidence["streaming_mean"] == pytest.approx(0.75, rel=0.05)  # 0.15 of 0.2 s
    assert found.share > 0.5


def test_bursts_below_capacity_are_server_queueing() -> None:
    # Bursts of three every 2 s, far below what the server completes.
    sends = [2.0 * b + 0.01 * k for b in range(15) for k in range(3)]
    (found,) = findings(one_at_a_time(sends)[0])
    assert found.kind == "server_queueing"
    assert found.evidence["completions_per_s"] == pytest.approx(1.5, rel=0.1)
    assert found.evidence["by_op"]["analyze"]["idle_sent_alone"]  # each burst's first
    assert "beyond the 0.05 s an idle server takes" in found.title


def test_requests_that_never_overlap_get_no_server_finding() -> None:
    # Negative control: one request at a time, first tokens that vary (noise, not load).
    rng = np.random.default_rng(7)
    records = [
        _record(i, 1.0 * i, 1.0 * i + first, 1.0 * i + first + 0.15)
        for i, first in enumerate(rng.uniform(0.05, 0.5, size=40))
    ]
    att = Attribution(records)
    claims = ServiceClaims(att)
    assert server_queue(RunData(Path("."), HTTP_RUN, records), att, claims) == []
    assert not claims.by_cause["server_queue"].any()


def test_a_server_that_batches_everything_in_flight_gets_no_finding() -> None:
    # First tokens do not rise with the requests in flight: a queue is not there.
    rng = np.random.default_rng(3)
    records = [
        _record(i, 0.1 * i, 0.1 * i + first, 0.1 * i + first + 1.0)
        for i, first in enumerate(rng.uniform(0.05, 0.08, size=60))
    ]
    assert findings(records) == []


def test_builtin_records_are_not_an_http_server() -> None:
    records, _ = one_at_a_time([i / 8 for i in range(40)])
    for r in records:
        del r["served"]
    assert findings(records, {"target": {"kind": "builtin"}}) == []


def test_what_adapter_changes_claimed_is_not_counted_twice() -> None:
    records, waits = one_at_a_time([i / 8 for i in range(40)])
    att = Attribution(records)
    claims = ServiceClaims(att)
    adapter = np.where(np.arange(40) % 2 == 1, 0.3, 0.0)
    claims.add("adapter_change", adapter)
    (found,) = server_queue(RunData(Path("."), HTTP_RUN, records), att, claims)
    expected = np.maximum(np.array(waits) - adapter, 0.0)
    assert claims.by_cause["server_queue"].tolist() == pytest.approx(expected.tolist())
    assert found.evidence["adapter_change_s_subtracted"] == pytest.approx(
        float(np.minimum(waits, adapter).sum())
    )
    est = estimate_queue(records, np.arange(40), adapter=adapter)
    assert est.queue.tolist() == pytest.approx(expected.tolist())


def test_the_analysis_ranks_it_and_no_longer_calls_the_queue_the_work_itself(
    tmp_path: Path,
) -> None:
    records, _ = one_at_a_time([i / 8 for i in range(40)])
    analysis = analyze(RunData(tmp_path, HTTP_RUN, records), [])
    latency = [f for f in analysis.findings if f.tier == "latency"]
    assert latency[0].kind == "server_overload"
    assert not any(f.kind == "unexplained" and "model" in f.title for f in analysis.facts)


# --- planted: a real server that serves one request at a time -------------------------------

SECONDS_PER_TOKEN = 0.008
PREFILL_S = 0.03
"""A request alone: 0.03 s + 16 tokens x 8 ms = 0.16 s, so about 6 requests/s at most."""


def _profile(tmp_path: Path, name: str, rate: float, seconds: float, arrival: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'description = "{name}: {rate}/s against a one-at-a-time server"\n'
        "projects = 2\nreplicas = 1\nmax_chunks_per_project = 8\n\n"
        f'[[stage]]\nname = "{name}"\nduration_s = {seconds}\nmode = "open"\n'
        f'rate = {rate}\narrival = "{arrival}"\nmix = {{ analyze = 1.0 }}\n'
    )
    return str(path)


@pytest.fixture(scope="module")
def queue_server() -> Iterator[tuple[str, int]]:
    """tests/queueserver.py on a free port: its URL and pid; stopped by pid afterwards."""
    from workloads.bench.verdicts import start_test_server

    script = str(ROOT / "tests" / "queueserver.py")
    with start_test_server(script, str(SECONDS_PER_TOKEN), str(PREFILL_S)) as started:
        yield started


def _run(tmp_path: Path, cache_dir: Path, url: str, profile: str) -> dict[str, Any]:
    results = tmp_path / "results"
    proc = run_cli(
        *("--profile", profile, "--stack", "openai", "--stack-url", url),
        *("--results-dir", str(results), "--no-fail-on-targets", "--no-profile"),
        cache=cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(results)
    records = run_records(run)
    assert records and all(r["ok"] for r in records), [r["error"] for r in records]
    analysis: dict[str, Any] = json.loads((run / "analysis.json").read_text())
    analysis["records"] = records
    return analysis


def test_planted_queueing_server_overload_ranks_first(tmp_path, cache_dir, queue_server) -> None:
    url, _ = queue_server
    started = time.monotonic()
    profile = _profile(tmp_path, "overload", rate=15, seconds=4, arrival="constant")
    analysis = _run(tmp_path, cache_dir, url, profile)
    latency = [f for f in analysis["findings"] if f["tier"] == "latency"]
    assert latency, analysis["findings"]
    top = latency[0]
    assert top["kind"] == "server_overload", [(f["kind"], f["score"]) for f in latency]
    assert top["score"] >= 0.6 and not top["weak"]
    if len(latency) > 1:
        assert top["score"] >= 1.5 * latency[1]["score"], [(f["kind"], f["score"]) for f in latency]
    ev = top["evidence"]
    assert ev["arrivals_per_s"] > 1.5 * ev["completions_per_s"]
    assert ev["streaming_mean"] < 1.2 and ev["in_flight_mean"] > 3
    # The idle server's first token: its prefill and one token, give or take the machine.
    assert 0.03 <= ev["by_op"]["analyze"]["idle_first_token_s"] < 0.5
    runner_up = f"{latency[1]['kind']} {latency[1]['score']:.3f}" if len(latency) > 1 else "none"
    print(
        f"\nplanted server overload: share {top['share']:.2f}, tail {top['tail_share']:.2f}, "
        f"score {top['score']:.2f}, runner-up {runner_up}, {len(analysis['records'])} "
        f"requests, {time.monotonic() - started:.0f} s\n{top['title']}"
    )


def test_a_low_rate_gets_no_server_overload(tmp_path, cache_dir, queue_server) -> None:
    url, _ = queue_server
    profile = _profile(tmp_path, "calm", rate=2, seconds=8, arrival="poisson")
    analysis = _run(tmp_path, cache_dir, url, profile)
    assert len(analysis["records"]) >= 10  # enough for the server cause to look at them
    kinds = [f["kind"] for f in analysis["findings"]]
    assert "server_overload" not in kinds, analysis["findings"]
    server = [f for f in analysis["findings"] if f["kind"].startswith("server_")]
    print(f"\nlow rate: {len(analysis['records'])} requests, server findings {server}")
