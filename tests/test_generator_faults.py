"""Faults in the load generator's own path, injected into real runs: a worker that stops
answering for a while, one that stops for good during an open-loop stage. Nothing issued
is lost or unknown, and the outage shows as lag."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from runs import finish, only_run, records_written, run_records, start, wait_for
from test_faults import _actors, expected_ids

OPEN_PROFILE = """
description = "open loop at a steady rate, for the generator's faults"
projects = 2
replicas = 1
max_chunks_per_project = 24

[[stage]]
name = "open"
duration_s = {seconds}
mode = "open"
rate = 10
arrival = "constant"
mix = {{ search = 0.5, embed = 0.5 }}
"""


def _open_profile(tmp_path: Path, seconds: int) -> Path:
    path = tmp_path / "open-faults.toml"
    path.write_text(OPEN_PROFILE.format(seconds=seconds))
    return path


def test_a_worker_silent_for_a_while_loses_nothing_and_its_lag_shows(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(results, cache_dir, "--profile", str(_open_profile(tmp_path, 16)), "--no-profile")
    wait_for(records_written(results, 10), proc)
    paused = min(_actors(proc, "GeneratorWorker", 2, known=set()))
    os.kill(paused, signal.SIGSTOP)  # drains go unanswered; its records wait in it
    time.sleep(4.0)
    os.kill(paused, signal.SIGCONT)
    _, err = finish(proc, timeout=180)
    assert proc.returncode == 0, err[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["generators"]["outages"] == []  # slow is not lost
    assert "slow to answer" in err
    ids = [r["id"] for r in run_records(run)]
    assert len(ids) == len(set(ids)), "a batch sent again was written twice"
    assert set(ids) == expected_ids(info["generators"]["issued_by_worker"])
    records = run_records(run)
    assert max(r["lag"] for r in records) > 2.0  # arrivals due while it was stopped: late
    (stage,) = info["stages"]
    assert stage["issued"] == len(records)


def test_a_worker_lost_in_an_open_loop_stage_leaves_every_id_and_its_outage_as_lag(
    tmp_path, cache_dir
):
    results = tmp_path / "results"
    profile = _open_profile(tmp_path, 20)
    proc = start(
        results,
        cache_dir,
        "--profile",
        str(profile),
        "--no-profile",
        env={"LOADLENS_DRAIN_TIMEOUT_S": "3"},
    )
    wait_for(records_written(results, 10), proc)
    silenced = min(_actors(proc, "GeneratorWorker", 2, known=set()))
    stopped_at = time.time()
    os.kill(silenced, signal.SIGSTOP)
    _, err = finish(proc, timeout=180)  # it is found silent, lost, killed and replaced
    assert proc.returncode == 0, err[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    (outage,) = info["generators"]["outages"]
    assert outage["error"].startswith("TimeoutError: no answer to a drain")
    assert outage["sent_after_last_drain"] is not None  # its ledger was read
    records = run_records(run)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    issued = info["generators"]["issued_by_worker"]
    assert set(ids) == expected_ids(issued)  # the lost worker's ids too: none unknown
    gone = [r for r in records if r["worker"] == outage["worker"]]
    lost = [r for r in gone if (r["error"] or "").startswith("GeneratorLost")]
    assert len(lost) == outage["in_flight_lost"] + outage["sent_after_last_drain"]
    # The workers wrote the rest themselves; the driver wrote only the lost ones.
    written = info["generators"]["written_by_worker"]
    assert sum(written.values()) + len(lost) == len(records)
    late = [r for r in records if r["worker"] == outage["replaced_by"]]
    assert late and late[0]["planned"] < stopped_at + 3  # it took the schedule where it stopped
    assert max(r["lag"] for r in late) > 2.0  # the arrivals due during the outage, late
    (stage,) = info["stages"]
    assert stage["issued"] == len(records)  # the lost worker's ops are counted
    assert "was lost (TimeoutError)" in err
    report = (run / "report.html").read_text()
    assert f"generator {outage['worker']} lost" in report  # the window is marked
