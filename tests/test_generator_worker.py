"""One generator worker in a real local Ray, against a no-op replica: closed-loop users
start apart and think for exponentially distributed times unless asked for constant ones;
an open-loop worker past its cap on operations in flight records drops, not unbounded
work."""

from __future__ import annotations

import itertools
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pytest
import ray

from workloads.bench.generator import _noop_class
from workloads.load.generator import GeneratorWorker


@pytest.fixture(scope="module")
def replica():
    temp = Path(tempfile.mkdtemp(prefix="ll-ray-", dir="/tmp"))
    ray.init(address="local", include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    yield _noop_class().remote()
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _records(worker) -> list[dict]:
    """What finished since the last call: every batch handed before is acknowledged."""
    drained = ray.get(worker.drain.remote(10**9))
    return [r for _, batch in drained["batches"] for r in batch]


def _closed(worker, users: int, think_s: float, seconds: float, think: str) -> list[dict]:
    ray.get(
        worker.run_closed.remote(
            "s",
            users=users,
            duration_s=seconds,
            think_time_s=think_s,
            mix=[("analyze", 1.0)],
            projects=["p"],
            popularity="uniform",
            zipf_s=1.1,
            seed=1,
            origin=time.time() + 0.1,
            think=think,
        )
    )
    return sorted(_records(worker), key=lambda r: r["sent"])


def test_closed_loop_users_start_apart_and_think_exponentially(replica):
    worker = GeneratorWorker.remote(0, [replica], {"p": 0})
    ray.get(worker.__ray_ready__.remote())  # started: a stage's origin is not past on arrival
    first = _closed(worker, users=16, think_s=0.5, seconds=0.8, think="exponential")
    starts = [r["sent"] for r in first][:16]  # in lockstep all 16 would go within ms
    assert len(starts) == 16 and max(starts) - min(starts) > 0.1
    one = _closed(worker, users=1, think_s=0.03, seconds=3.0, think="exponential")
    gaps = [b["sent"] - a["sent"] for a, b in itertools.pairwise(one)]
    assert statistics.stdev(gaps) / statistics.mean(gaps) > 0.5  # exponential: about 1
    steady = _closed(worker, users=1, think_s=0.03, seconds=3.0, think="constant")
    gaps = [b["sent"] - a["sent"] for a, b in itertools.pairwise(steady)]
    low, median, high = statistics.quantiles(gaps, n=4)  # one pause of the machine weighs little
    assert (high - low) / median < 0.3  # exponential: about 1.6
    ray.kill(worker)


def test_past_its_cap_an_open_loop_worker_records_drops(replica):
    worker = GeneratorWorker.remote(0, [replica], {"p": 0}, max_in_flight=1)
    arrivals = [(0.0, "analyze", "p")] * 50  # all due at once: one may be in flight
    cost = ray.get(worker.run_open.remote("s", arrivals=arrivals, seed=0, origin=time.time() + 0.1))
    records = _records(worker)
    dropped = [r for r in records if (r["error"] or "").startswith("GeneratorDropped")]
    assert len(records) == 50 and cost["issued"] == 50
    assert cost["dropped"] == len(dropped) > 0
    assert all("its cap is 1" in r["error"] for r in dropped)
    assert sum(r["ok"] for r in records) == 50 - len(dropped)
    ray.kill(worker)


@ray.remote(max_concurrency=1)
class SlowReplica:
    """Serves one call at a time, each taking a second, and counts what it served."""

    def __init__(self) -> None:
        self.served = 0

    def call(self, request: dict) -> dict:
        time.sleep(1.0)
        self.served += 1
        return {
            "start": time.time(),
            "node": "",
            "pid": 0,
            "ok": True,
            "error": None,
            "stages": {},
            "switched": False,
            "service": 1.0,
        }

    def count(self) -> int:
        return self.served


def test_a_stop_cancels_the_calls_still_queued_at_the_replica(replica):
    from workloads.load.generator import STOP_GRACE_S

    slow = SlowReplica.remote()
    worker = GeneratorWorker.remote(0, [slow], {"p": 0})
    arrivals = [(0.0, "analyze", "p")] * 20  # twenty seconds of work for a one-at-a-time replica
    ref = worker.run_open.remote("s", arrivals=arrivals, seed=0, origin=time.time() + 0.1)
    # Stop only once all twenty are in flight: a stop before the origin (a slow actor start
    # on a busy machine) would rightly issue nothing.
    deadline = time.monotonic() + 30
    while ray.get(worker.drain.remote(0))["in_flight"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    ray.get(worker.stop.remote())
    ray.get(ref, timeout=STOP_GRACE_S + 10)
    drained = ray.get(worker.drain.remote(0))  # nothing acknowledged: every batch handed so far
    records = [r for _, batch in drained["batches"] for r in batch]
    assert len(records) == 20
    interrupted = [r for r in records if (r["error"] or "").startswith("Interrupted")]
    assert len(interrupted) >= 10
    at_stop = ray.get(slow.count.remote())
    time.sleep(3.0)  # calls given up on must not be served now
    assert ray.get(slow.count.remote()) <= at_stop + 1  # the one running may finish
    ray.kill(worker)
    ray.kill(slow)


def test_workers_go_apart_from_replicas_and_to_the_driver_for_a_loopback_stack():
    from workloads.load.placement import loopback, spread, worker_cpus

    def node(name: str, cpus: float = 2, alive: bool = True) -> dict:
        return {"node_id": name, "alive": alive, "resources": {"CPU": cpus}}

    nodes = [node("a"), node("b"), node("c"), node("d", alive=False), node("e", cpus=0)]
    assert spread(nodes, ["a", "b"]) == ["c"]  # a node with no replica takes them all
    assert spread(nodes, ["a", "b", "c", "a"]) == ["b", "c", "a"]  # else fewest replicas first
    assert worker_cpus(nodes, 2) == 0.1
    assert worker_cpus([node("a", 1)], 8) == 0.0312  # a quarter of one CPU over 8, rounded down
    assert loopback("http://127.0.0.1:8080") and loopback("http://localhost:1")
    assert loopback("http://[::1]:80") and not loopback("http://10.0.0.5:8080")


def _open(worker, count: int, seconds: float) -> dict:
    arrivals = [(seconds * i / count, "analyze", "p") for i in range(count)]
    return ray.get(worker.run_open.remote("s", arrivals=arrivals, seed=0, origin=time.time() + 0.1))


def test_a_worker_writes_its_own_shards_and_the_driver_gets_counts(replica, tmp_path):
    from datamodel.runfolder import RecordWriter, compact, read_run_records
    from workloads.load.fleet import Fleet
    from workloads.load.progress import Progress

    writer = RecordWriter(tmp_path)
    fleet = Fleet([replica], {"p": 0}, "own-shards", results=tmp_path)
    (k,) = fleet.start(1)
    _open(fleet.workers[k], 200, 0.5)
    deadline = time.monotonic() + 15  # no drain yet: the worker's own flush puts them on disk
    while len(read_run_records(tmp_path, [])) < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    shards = sorted((tmp_path / "records").glob(f"g{k}-*.parquet"))
    assert shards and len(read_run_records(tmp_path, [])) == 200
    progress = Progress(quiet=True)
    moved, lost = fleet.drain(writer, progress)
    assert moved == [] and lost == []  # counts only: no record went through the driver
    assert writer.count == fleet.written[k] == 200 and progress.total == 200
    assert fleet.facts()["records_written"] == "by each worker, into its own shards"
    fleet.close()
    writer.close()
    assert compact(tmp_path) == 0 and (tmp_path / "records.parquet").exists()
    ids = {r["id"] for r in read_run_records(tmp_path, []).frame.table.to_pylist()}
    assert ids == {f"{k}-{i}" for i in range(200)}


def test_a_worker_that_cannot_see_the_results_folder_spools_and_is_collected(replica, tmp_path):
    from datamodel.runfolder import RecordWriter, read_run_records
    from workloads.load.fleet import Fleet
    from workloads.load.progress import Progress
    from workloads.load.shards import spool_dir

    run = f"spool-{time.time_ns()}"  # a run's own spool: nothing left by another
    writer = RecordWriter(tmp_path)
    fleet = Fleet([replica], {"p": 0}, run, results=tmp_path)
    for marker in (tmp_path / "records").glob(".fleet-*"):
        marker.unlink()  # as on a node without the driver's file system
    (k,) = fleet.start(1)
    _open(fleet.workers[k], 100, 0.3)
    fleet.drain(writer, Progress(quiet=True))
    spool = spool_dir(run) / "records"
    assert list(spool.glob(f"g{k}-*.parquet")) and not list((tmp_path / "records").glob("g*"))
    fleet.settle(writer, Progress(quiet=True))  # a stage's end collects them
    assert fleet.spools == {k: str(spool_dir(run))}
    assert not list(spool.glob("*.parquet"))
    assert len(read_run_records(tmp_path, [])) == 100 == writer.count
    fleet.close()
    shutil.rmtree(spool_dir(run))


def test_spools_are_collected_while_a_stage_goes_not_only_at_its_end(replica, tmp_path):
    """Between stage ends the driver gathers the spools every ``spool_every_s`` without
    waiting, so a node that dies takes at most that much; nothing is placed twice."""
    from datamodel.runfolder import RecordWriter, read_run_records
    from workloads.load.fleet import Fleet
    from workloads.load.progress import Progress
    from workloads.load.shards import spool_dir

    run = f"spool-{time.time_ns()}"  # a run's own spool: nothing left by another
    writer = RecordWriter(tmp_path)
    fleet = Fleet([replica], {"p": 0}, run, results=tmp_path, spool_every_s=0.5)
    for marker in (tmp_path / "records").glob(".fleet-*"):
        marker.unlink()
    (k,) = fleet.start(1)
    arrivals = [(4.0 * i / 80, "analyze", "p") for i in range(80)]
    stage = fleet.workers[k].run_open.remote(
        "s", arrivals=arrivals, seed=0, origin=time.time() + 0.1
    )
    placed_during = 0
    while not ray.wait([stage], timeout=0)[0]:
        fleet.drain(writer, Progress(quiet=True), wait=0.2)
        placed_during = len(list((tmp_path / "records").glob(f"g{k}-*.parquet")))
        time.sleep(0.1)
    assert placed_during > 0  # in the folder before the stage's end
    fleet.settle(writer, Progress(quiet=True))
    assert not list((spool_dir(run) / "records").glob("*.parquet"))
    ids = [r["id"] for r in read_run_records(tmp_path, []).frame.table.to_pylist()]
    assert sorted(ids) == sorted(f"{k}-{i}" for i in range(80))  # each once
    fleet.close()
    shutil.rmtree(spool_dir(run))


def test_records_gone_with_a_spool_are_counted_in_the_outage_by_id(replica, tmp_path):
    """A node that dies takes its spool: the worker's records written there since the last
    collection are gone, and the outage names how many and which ids, not a silent gap. A
    node that was only away gives them back at a later collection, and the count follows."""
    from datamodel.runfolder import RecordWriter, read_run_records
    from workloads.load.fleet import Fleet
    from workloads.load.progress import Progress
    from workloads.load.shards import spool_dir

    run = f"spool-{time.time_ns()}"  # a run's own spool: nothing left by another
    writer = RecordWriter(tmp_path)
    fleet = Fleet([replica], {"p": 0}, run, results=tmp_path)
    for marker in (tmp_path / "records").glob(".fleet-*"):
        marker.unlink()
    (k,) = fleet.start(1)
    _open(fleet.workers[k], 60, 0.3)
    fleet.settle(writer, Progress(quiet=True))  # the first 60 collected into the folder
    _open(fleet.workers[k], 40, 0.3)
    fleet.drain(writer, Progress(quiet=True))  # 40 more, written to the spool only
    away = tmp_path / "away"
    spool_dir(run).rename(away)  # as when the node goes down with it
    gone = fleet.lose(k, RuntimeError("node died"), writer, Progress(quiet=True))
    (outage,) = fleet.outages
    assert gone.unknown == [] and outage["in_flight_lost"] == 0
    assert outage["spooled_not_collected"] == 40
    assert outage["spooled_not_collected_ids"] == f"{k}-60..{k}-99"
    from workloads.load.fleet import _ranges

    assert _ranges(3, [0, 1, 2, 5, 7, 8]) == "3-0..3-2, 3-5, 3-7..3-8" and _ranges(3, []) == ""
    on_disk = {r["id"] for r in read_run_records(tmp_path, []).frame.table.to_pylist()}
    assert on_disk == {f"{k}-{i}" for i in range(60)}
    assert fleet.facts()["outages"][0]["spooled_not_collected"] == 40  # still away
    away.rename(spool_dir(run))  # it was only away: a later collection finds it
    fleet.collect(Progress(quiet=True))
    (outage,) = fleet.facts()["outages"]
    assert outage["spooled_not_collected"] == 0 and outage["spooled_not_collected_ids"] == ""
    assert len(read_run_records(tmp_path, [])) == 100
    fleet.close()
    shutil.rmtree(spool_dir(run))


def test_the_live_counts_are_the_same_from_records_held_and_from_a_workers_tally():
    """The driver's records (handed over, or lost) and a worker's own tally count alike:
    done, errors, swaps (flags, and changes of an HTTP server's adapter in the order sent),
    and a sample of at most 200 standing for all of them."""
    from workloads.load.progress import Progress
    from workloads.load.shards import SAMPLE, Tally

    records = [
        {"op": "analyze", "duration": 0.01 * (k + 1), "ok": k % 7 != 0, "sent": float(k)}
        | ({"switched": True} if k % 50 == 0 else {"served": f"a{k // 100}"})
        for k in range(450)
    ]
    held = Progress(quiet=True)
    held.add(list(reversed(records)), 0)  # finished in another order than sent
    worker = Tally()
    for record in records:
        worker.add(record)
    told = Progress(quiet=True)
    told.tally(worker.take(), 0)
    for progress in (held, told):
        assert progress.total == 450 and progress.errors == 65
        assert progress.swaps == 9 + 4  # nine flagged, four changes a0 -> a1 -> ... -> a4
        assert len(progress._recent) == SAMPLE
        assert sum(w for *_, w in progress._recent) == pytest.approx(450)
    # Two workers' samples: one stands for 1,000 fast ops, the other for 10 slow ones. The
    # live p95 is a fast op's time; unweighted, the slow tenth would set it.
    from workloads.load.progress import _p95

    fast, slow = [(0.01, 1000 / 180)] * 180, [(1.0, 1.0)] * 10
    assert _p95(fast + slow) == 0.01
