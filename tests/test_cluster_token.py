"""Two raylets on one machine, started with ``ray start`` and token authentication exactly
as cluster/README.md says: a run joins with the token it finds, spreads replicas and
generator workers over both nodes, and puts every record on one clock; without the token
the join is a one-line error."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from runs import finish, only_run, run_records, start
from test_faults import expected_ids

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class TokenCluster:
    address: str
    token: Path
    sessions: list[int]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _count_nodes(address: str, token: Path) -> int:
    probe = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0


def _stop_session(sid: int) -> None:
    """End every process of session ``sid`` (a raylet and what it started), by pid."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == sid:
                    p.send_signal(sig)
                    alive.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        psutil.wait_procs(alive, timeout=3)


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenCluster]:
    root = tmp_path_factory.mktemp("token-cluster")
    short = Path(tempfile.mkdtemp(prefix="ll-ray-"))  # Ray's socket paths must stay short
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = [RAY, "start", "--head", "--block", f"--port={port}", "--dashboard-host=127.0.0.1"]
    head += ["--num-cpus=2", "--disable-usage-stats", f"--temp-dir={short}"]
    node = [RAY, "start", "--block", f"--address={address}", "--num-cpus=2"]
    node += ["--disable-usage-stats"]
    procs = [subprocess.Popen(head, env=env, start_new_session=True, stdout=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 90
        while _count_nodes(address, token) < 1:
            assert time.monotonic() < deadline, "the head never came up"
            time.sleep(1)
        procs.append(
            subprocess.Popen(node, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        )
        while _count_nodes(address, token) < 2:
            assert time.monotonic() < deadline, "the second raylet never joined"
            time.sleep(1)
        yield TokenCluster(address, token, [p.pid for p in procs])
    finally:
        for p in reversed(procs):
            _stop_session(p.pid)
        shutil.rmtree(short, ignore_errors=True)


def test_a_run_joins_with_the_token_it_finds_and_spreads_on_one_clock(
    token_cluster, tmp_path, cache_dir, monkeypatch
):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)  # the README's user has only the token file
    results = tmp_path / "results"
    proc = start(
        results,
        cache_dir,
        *("--profile", "smoke", "--duration", "10", "--no-profile"),
        *("--address", token_cluster.address, "--replicas", "2", "--projects", "4"),
        env={"RAY_AUTH_TOKEN_PATH": str(token_cluster.token)},
    )
    _, err = finish(proc, timeout=240)
    assert proc.returncode == 0, err[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed"
    nodes = {n["node_id"] for n in info["cluster"]["nodes"] if n["alive"]}
    assert len(nodes) == 2
    assert {r["node"] for r in info["replicas"]} == nodes  # a replica on each node
    assert set(info["blas_by_node"]) == nodes  # each node resolved its own BLAS
    placement = info["generators"]["placement"]
    assert set(placement["node_of_worker"].values()) == nodes  # generators on both
    assert placement["cpus_per_worker"] > 0
    clock = info["clock"]["nodes"]
    assert set(clock) == nodes
    for row in clock.values():  # one machine, one clock: each offset within its round trip
        assert 0 < row["rtt_s"] < 0.1 and abs(row["offset_s"]) <= row["rtt_s"] / 2 + 0.002
    records = run_records(run)
    ids = [r["id"] for r in records]
    assert set(ids) == expected_ids(info["generators"]["issued_by_worker"]) and len(ids) == len(
        set(ids)
    )
    # One host, one file system: each worker wrote its shards into the run folder itself.
    assert sum(info["generators"]["written_by_worker"].values()) == len(records)
    assert info["generators"]["spooled_workers"] == []
    served = [r for r in records if r["ok"]]
    assert {r["node"] for r in served} == nodes
    assert {r["worker"] for r in served} == {0, 1}
    assert all(0 <= r["wait"] < 5 for r in served)


def test_without_the_token_joining_is_a_one_line_error(token_cluster, tmp_path, cache_dir):
    home = tmp_path / "home"  # no ~/.ray/auth_token here, and no token in the environment
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), LOADLENS_CACHE=str(cache_dir))
    command = [sys.executable, "-m", "workloads.run", "--profile", "smoke"]
    command += ["--address", token_cluster.address, "--results-dir", str(tmp_path / "r")]
    done = subprocess.run(
        command,
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not join the Ray cluster at " + token_cluster.address)
    assert "looked in $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token" in last
    assert "Traceback" not in done.stderr
