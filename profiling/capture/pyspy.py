"""py-spy flame graph capture of running processes (the service replicas).

``py-spy record --nonblocking`` samples without pausing the target: Ray workers carry
~20 threads, and blocking sampling at high rates slowed them to 0.25-0.31x at 1000 Hz.
The default rate is low (20 Hz) and its cost is measured by ``workloads.bench profiling``.
Output is the collapsed ("raw") format; SVG and speedscope files are rendered from it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RATE_HZ = 20


def pyspy_binary() -> str | None:
    """The py-spy executable next to this Python, else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


def ptrace_problem() -> str | None:
    """Why py-spy cannot attach here, with the fix; ``None`` when it should work."""
    if sys.platform == "darwin":
        return (
            None
            if os.geteuid() == 0
            else (
                "py-spy needs root on macOS to read another process: run loadlens with sudo, "
                "or use --no-profile"
            )
        )
    if os.geteuid() == 0:
        return None
    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    level = scope.read_text().strip() if scope.exists() else "0"
    if level in ("0",):
        return None
    return (
        f"py-spy cannot attach: kernel.yama.ptrace_scope is {level}. Fix one of: run as root; "
        "grant CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep $(which py-spy)); or "
        "`sudo sysctl kernel.yama.ptrace_scope=0`. The run continues without flame graphs."
    )


@dataclass
class Recording:
    """A py-spy process recording one target."""

    role: str
    pid: int
    output: Path
    process: subprocess.Popen[bytes]
    log: Path


def _default_sigint() -> None:
    """In the child: let SIGINT through. A Ray worker blocks or ignores it, and a child
    inherits both, so py-spy would never hear the signal that makes it write its file."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(role: str, pid: int, out_dir: Path, rate_hz: int = DEFAULT_RATE_HZ) -> Recording:
    """Start recording ``pid`` into ``out_dir/<role>.raw``; raises ``OSError`` if it can't."""
    binary = pyspy_binary()
    if binary is None:
        raise OSError("py-spy is not installed (pip install py-spy)")
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{role}.raw"
    log = out_dir / f"{role}.pyspy.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate_hz),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(output),
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint,
        )
    return Recording(role=role, pid=pid, output=output, process=proc, log=log)


def stop(rec: Recording, timeout_s: float = 5.0) -> tuple[str, str | None]:
    """Stop a recording (SIGINT makes py-spy write its file); returns (collapsed, problem)."""
    if rec.process.poll() is None:
        rec.process.send_signal(signal.SIGINT)
        try:
            rec.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rec.process.kill()
            rec.process.wait()
    text = rec.output.read_text() if rec.output.exists() else ""
    problem = None
    if not text.strip():
        tail = (
            rec.log.read_text(errors="replace").strip().splitlines()[-3:]
            if rec.log.exists()
            else []
        )
        problem = f"py-spy wrote no samples for {rec.role} (pid {rec.pid}): {' | '.join(tail)}"
    # Root every stack at the role, so merged or compared profiles read by role, not pid.
    lines = [f"{rec.role};{line}" for line in text.splitlines() if line.strip()]
    return "\n".join(lines) + ("\n" if lines else ""), problem
