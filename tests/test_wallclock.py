"""The wall-clock sampler on real threads: a request that waits on a socket, one that runs,
and one that waits for a lock another thread holds while it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from planted import load_rows, spin

from profiling.capture.wallclock import WallSampler

SECONDS = 0.6


def serve_request(sampler: WallSampler, work) -> None:
    """The request root the sampler looks for."""
    sampler.enter()
    work()


def sampled(work, *, background=None) -> dict[str, float]:
    """Milliseconds per state of one request running ``work`` while sampled."""
    sampler = WallSampler(["serve_request"], rate_hz=100)
    sampler.start()
    try:
        if background is not None:
            background.start()
        thread = threading.Thread(target=serve_request, args=(sampler, work))
        thread.start()
        thread.join()
    finally:
        sampler.stop()
    states: dict[str, float] = {}
    for stack, ms in sampler.collapsed().items():
        assert "serve_request (" in stack, stack
        state = stack.rsplit(";", 1)[1]
        states[state] = states.get(state, 0) + ms
    return states


def share(states: dict[str, float], state: str) -> float:
    return states.get(state, 0) / sum(states.values())


def test_a_blocking_socket_read_is_waiting_outside_the_process() -> None:
    states = sampled(lambda: load_rows(SECONDS))
    assert share(states, "[wait]") > 0.7, states
    assert 0.3 * SECONDS * 1000 < sum(states.values()) < 2 * SECONDS * 1000, states


def test_python_work_is_running() -> None:
    states = sampled(lambda: spin(SECONDS))
    assert share(states, "[cpu]") > 0.7, states


def test_a_lock_held_by_a_running_thread_is_waiting_on_threads() -> None:
    lock = threading.Lock()
    held = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            spin(SECONDS)

    def request() -> None:
        held.wait()
        with lock:
            pass

    states = sampled(request, background=threading.Thread(target=holder))
    assert share(states, "[wait:threads]") > 0.6, states


def test_waiting_for_a_core_is_the_threads_own_work() -> None:
    """Two busy processes per core: the request's spin is often ready but not running."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(2 * (os.cpu_count() or 1))
    ]
    try:
        states = sampled(lambda: spin(SECONDS))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert share(states, "[runq]") > 0.2, states
    assert share(states, "[cpu]") + share(states, "[runq]") > 0.8, states
