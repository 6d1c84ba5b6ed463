"""Wall-clock sampling of the threads that serve requests, in the process that serves them.

py-spy samples running threads only, so a request that waits (a socket, a lock, a sleep,
a subprocess) leaves no frame, and its time cannot be told from work. This sampler runs as
a thread inside a service replica: every tick it reads the Python stack of each thread that
is inside a request (its stack holds a request root frame) and how much CPU that thread
used since the last tick (``pthread_getcpuclockid``, nanoseconds). The tick's wall time
is then split, for that stack, into:

- ``[cpu]``: the thread itself was on a CPU;
- ``[runq]``: it was ready to run but waited for a free core (Linux's per-thread run-queue
  delay, ``/proc/self/task/<tid>/schedstat``): its own work, slowed by a busy machine;
- ``[native]``: it waited while threads that are not Python threads (MLX's and the BLAS
  library's compute pools) used CPU: work done on its behalf, not waiting;
- ``[wait:threads]``: it waited while other Python threads ran (a lock held by another
  thread, the GIL, work handed to a Python pool);
- ``[wait]``: it waited while nothing in the process ran: on something outside it (I/O, a
  remote call, a sleep, a subprocess).

Time is kept in milliseconds per collapsed stack (``root;...;leaf;[state] ms``), the
format of ``profiles/<role>.wall``. The cost is a look at every thread's frames and CPU
clock per tick: with 22 threads and a request 36 frames deep, 0.9% of a core at the
default 20 Hz (0.17 ms a tick) and 2% at 50 Hz (measured on a 2-core Xeon while another
run loaded it).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from types import FrameType

from datamodel.stacks import WALL_STATES as STATES

DEFAULT_RATE_HZ = 20
"""Ticks per second (py-spy's default rate too). The seconds a profile holds are measured
tick lengths, so a lower rate costs precision, never bias."""


def _cpu_clock(ident: int) -> float | None:
    """CPU seconds used so far by the thread ``ident``; ``None`` where the OS cannot say."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError, OverflowError):
        return None


def _runqueue(tid: int) -> float | None:
    """Seconds thread ``tid`` of this process has waited for a core so far (Linux)."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _short(filename: str, paths: list[str]) -> str:
    for prefix in paths:
        if prefix and filename.startswith(prefix):
            return filename[len(prefix) :].lstrip("/")
    return filename


def _stack(frame: FrameType | None, paths: list[str]) -> list[str]:
    """Frames root first, named like py-spy names them: ``qualname (file:line)``."""
    out = []
    while frame is not None:
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)
        out.append(f"{name} ({_short(code.co_filename, paths)}:{frame.f_lineno})")
        frame = frame.f_back
    out.reverse()
    return out


class WallSampler:
    """A daemon thread that samples request threads' stacks and states (module docstring)."""

    def __init__(self, roots: Iterable[str], rate_hz: float = DEFAULT_RATE_HZ) -> None:
        """``roots``: function names (``Class.method``) whose frame marks a request."""
        self._roots = frozenset(roots)
        self._interval = 1.0 / rate_hz
        self._ms: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loadlens-wall", daemon=True)
        self._paths = sorted({p for p in sys.path if p}, key=len, reverse=True)
        self._tids: dict[int, int] = {}

    def enter(self) -> None:
        """Called by a request's thread as it starts: makes its OS thread id known, so its
        waits for a core can be read (a thread started by C++ has no Python record of it)."""
        self._tids[threading.get_ident()] = threading.get_native_id()

    def start(self) -> None:
        """Start ticking."""
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking (what was sampled stays readable)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def collapsed(self) -> dict[str, int]:
        """Milliseconds per ``stack;[state]`` so far (stacks root first)."""
        with self._lock:
            return {s: round(ms) for s, ms in self._ms.items() if ms >= 0.5}

    def _in_request(self, frame: FrameType | None) -> bool:
        while frame is not None:
            code = frame.f_code
            if getattr(code, "co_qualname", code.co_name) in self._roots:
                return True
            frame = frame.f_back
        return False

    def _loop(self) -> None:
        me = threading.get_ident()
        last_cpu: dict[int, float] = {}
        last_rq: dict[int, float] = {}
        last_key: dict[int, str] = {}
        last_wall, last_proc, last_own = time.perf_counter(), time.process_time(), 0.0
        while not self._stop.wait(self._interval):
            wall, proc, own = time.perf_counter(), time.process_time(), time.thread_time()
            frames = sys._current_frames()
            python_cpu = 0.0
            busy: list[tuple[list[tuple[str, float]], float, float]] = []
            keys: dict[int, str] = {}
            for ident, frame in frames.items():
                if ident == me:
                    continue
                cpu = _cpu_clock(ident)
                if cpu is None:
                    continue
                used = max(cpu - last_cpu.get(ident, cpu), 0.0)
                first = ident not in last_cpu
                last_cpu[ident] = cpu
                python_cpu += used
                if first:
                    continue
                if self._in_request(frame):
                    keys[ident] = ";".join(_stack(frame, self._paths))
                before, now = last_key.get(ident), keys.get(ident)
                if before is not None or now is not None:
                    tid = self._tids.get(ident)
                    queued = _runqueue(tid) if tid is not None else None
                    delay = 0.0
                    if queued is not None:
                        delay = max(queued - last_rq.get(ident, queued), 0.0)
                        last_rq[ident] = queued
                    busy.append((_shares(before, now), used, delay))
            for gone in set(last_cpu) - set(frames):
                del last_cpu[gone]
                last_rq.pop(gone, None)
                self._tids.pop(gone, None)
            last_key = keys
            tick = wall - last_wall
            native = max((proc - last_proc) - (own - last_own) - python_cpu, 0.0)
            last_wall, last_proc, last_own = wall, proc, own
            if busy and tick > 0:
                self._add(busy, tick, native, python_cpu)

    def _add(
        self,
        busy: list[tuple[list[tuple[str, float]], float, float]],
        tick: float,
        native: float,
        python_cpu: float,
    ) -> None:
        waiting = sum(1 for _, used, delay in busy if used + delay < tick)
        with self._lock:
            for shares, used, delay in busy:
                ran = min(used, tick)
                queued = min(delay, tick - ran)
                waited = tick - ran - queued
                offload = min(waited, native / waiting) if waiting else 0.0
                others = min(waited - offload, max(python_cpu - used, 0.0))
                external = waited - offload - others
                for key, weight in shares:
                    for state, seconds in zip(
                        STATES, (ran, queued, offload, others, external), strict=True
                    ):
                        if seconds > 0:
                            name = f"{key};{state}"
                            self._ms[name] = self._ms.get(name, 0.0) + seconds * weight * 1000


def _shares(before: str | None, now: str | None) -> list[tuple[str, float]]:
    """Which stacks a tick's time belongs to: all of it to the stack seen at both of its
    ends; half to each when they differ (the change came at an unknown moment within the
    tick), and none of the half outside a request."""
    if before == now:
        return [(now, 1.0)] if now is not None else []
    return [(key, 0.5) for key in (before, now) if key is not None]
