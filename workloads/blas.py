"""Which BLAS MLX's CPU backend uses on Linux, and how to give it a fast one.

The mlx CPU wheel for Linux bundles the reference BLAS (25x slower for a 1024² float32
matmul than OpenBLAS on the same cores here: 2.95 vs 73 GFLOP/s, 2-core AVX2 EPYC).
MLX calls the standard ``cblas_*`` symbols, so an OpenBLAS loaded first with
``LD_PRELOAD`` takes them over. That has to happen before the process starts: a replica
gets it through its Ray runtime environment, a plain command re-executes itself
(:func:`reexec_with`), and ``make test`` sets it for pytest (``python -m workloads.blas
--shell-env``).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

from datamodel.errors import ConfigError

BLAS_CHOICES = ("bundled", "openblas")
"""``bundled``: the BLAS the mlx wheel ships; ``openblas``: a system OpenBLAS preloaded."""


SYSTEM_OPENBLAS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
)
"""Where distributions put a runtime-dispatching (DYNAMIC_ARCH) OpenBLAS with cblas symbols.

Why not the PyPI wheel cmeel-openblas: it is built for one CPU family (its kernels use
AVX-512 and die with SIGILL on an AVX2-only EPYC, seen here), and it needs a system
libgfortran anyway. Debian's ``libopenblas0-pthread`` picks kernels at run time.
"""


def openblas_path() -> Path | None:
    """``$LOADLENS_OPENBLAS`` if set, else the first system OpenBLAS found, else ``None``."""
    override = os.environ.get("LOADLENS_OPENBLAS")
    candidates = [override] if override else list(SYSTEM_OPENBLAS)
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


@functools.cache
def check_preload(lib: str) -> str | None:
    """Run one MLX matmul in a child process with ``lib`` preloaded; ``None`` if it works.

    Otherwise returns why not (a crash such as SIGILL, or an import error), so a bad
    library is refused with a reason instead of killing a replica.
    """
    code = (
        "import os, mlx.core as mx; a = mx.ones((64, 64)); mx.eval(a @ a); "
        "print('ok' if os.path.realpath(os.environ['LD_PRELOAD']) in "
        "open('/proc/self/maps').read() else 'not mapped')"
    )
    env = {**os.environ, "LD_PRELOAD": lib, "OPENBLAS_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "a test matmul did not finish in 60 s"
    if proc.returncode == 0 and proc.stdout.strip() == "ok":
        return None
    if proc.returncode == 0:
        return "the dynamic loader did not map it (not a loadable shared library?)"
    if proc.returncode < 0:
        return f"a test matmul died with signal {signal.Signals(-proc.returncode).name}"
    return f"a test matmul failed: {proc.stderr.strip().splitlines()[-1:]}"


def blas_env(choice: str, threads: int | None = None) -> dict[str, str]:
    """Environment variables that make a new process use ``choice`` as MLX's BLAS.

    ``OPENBLAS_NUM_THREADS`` is set explicitly: Ray's ``OMP_NUM_THREADS`` does not bind
    OpenBLAS's own thread pool.
    """
    if choice not in BLAS_CHOICES:
        raise ConfigError(f"blas must be one of {', '.join(BLAS_CHOICES)}, got {choice!r}")
    if sys.platform != "linux":
        return {}
    preload = os.environ.get("LD_PRELOAD", "")
    others = [p for p in preload.split(":") if p and "libopenblas" not in p]
    if choice == "bundled":
        # An OpenBLAS preloaded into this process (a shell, `make test`) would otherwise be
        # inherited by every Ray worker and silently replace the bundled BLAS.
        return {"LD_PRELOAD": ":".join(others)} if preload else {}
    lib = openblas_path()
    if lib is None:
        raise ConfigError(
            "blas 'openblas' asked for, but no OpenBLAS was found (looked in "
            f"{', '.join(SYSTEM_OPENBLAS)}): run `make setup` as root, or "
            "`apt-get install libopenblas0-pthread`, or set LOADLENS_OPENBLAS=/path/libopenblas.so"
        )
    problem = check_preload(str(lib))
    if problem:
        raise ConfigError(f"blas 'openblas': {lib} cannot serve MLX here: {problem}")
    return {
        "LD_PRELOAD": ":".join([str(lib), *others]),
        "OPENBLAS_NUM_THREADS": str(threads or os.cpu_count() or 1),
    }


def loaded_blas(pid: int | str = "self") -> list[str]:
    """Paths of BLAS libraries mapped into process ``pid`` (Linux; empty elsewhere)."""
    maps = Path(f"/proc/{pid}/maps")
    if not maps.exists():
        return []
    found: list[str] = []
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        path = parts[5] if len(parts) == 6 else ""
        name = Path(path).name.lower()
        if ("blas" in name or "mkl" in name or "accelerate" in name) and path not in found:
            found.append(path)
    return found


def reexec_with(choice: str) -> None:
    """Re-execute this Python command with ``choice`` as BLAS unless it already is in force.

    Marks the environment so that it happens at most once.
    """
    env = blas_env(choice)
    if os.environ.get("LOADLENS_BLAS") == choice or all(
        os.environ.get(k, "") == v for k, v in env.items()
    ):
        return
    new_env = {**os.environ, **env, "LOADLENS_BLAS": choice}
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], new_env)


def main(argv: list[str] | None = None) -> int:
    """``python -m workloads.blas --shell-env``: print ``KEY=VALUE`` lines for ``env``."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--shell-env"]:
        print("usage: python -m workloads.blas --shell-env", file=sys.stderr)
        return 2
    try:
        env = blas_env("openblas")
    except ConfigError as exc:
        print(f"warning: {exc}", file=sys.stderr)
        env = {}
    print(" ".join(f"{k}={v}" for k, v in {**env, "LOADLENS_BLAS": "openblas"}.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
