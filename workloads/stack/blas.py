"""Which BLAS MLX's CPU backend uses on Linux, chosen by measurement on the CPU in hand.

The mlx CPU wheel for Linux bundles the reference BLAS (2-6 GFLOP/s here). MLX calls the
standard ``cblas_*`` symbols, so a library loaded first with ``LD_PRELOAD`` takes them
over. That has to happen before the process starts: a replica gets it through its Ray
runtime environment, a plain command re-executes itself (:func:`reexec_with`), and
``make test`` sets it for pytest (``python -m workloads.blas --shell-env``).

Candidates (:data:`CANDIDATES`): ``bundled``; ``openblas``, Debian's runtime-dispatching
OpenBLAS; ``mkl``, Intel's ``libmkl_rt`` from the ``mkl`` wheel in this environment (x86_64).
Machines differ, and so does the best one (an AVX2 EPYC and an AVX-512/AMX Xeon have both
served), so :func:`survey` runs each in a child process on the service's own matmul shapes
with the replica's thread count, checks its results against numpy, and times it. The survey
is cached per CPU model, thread count and library, and ``fastest`` preloads its winner.

Threads: each replica runs its BLAS with **one** thread and gets its parallelism from MLX
CPU streams (the embedder splits batches over as many streams as the replica has cores).
Measured on a 2-core Xeon: the base model's analyze pass took 88 ms with MKL at one thread
and 350 ms at two; MiniLM embedding ran 55 texts/s with 2 streams x 1 thread and 35 with
1 stream x 2 threads. None of this applies on Apple Silicon (Metal), where nothing is
preloaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from datamodel.cache import default_cache_dir
from datamodel.errors import ConfigError

BLAS_CHOICES = ("bundled", "openblas", "mkl", "fastest")
"""``bundled``: the mlx wheel's own; ``openblas``/``mkl``: that library preloaded;
``fastest``: the fastest correct one the survey measured on this machine."""
CANDIDATES = ("bundled", "openblas", "mkl")
"""Libraries the survey measures."""
BLAS_THREADS = 1
"""BLAS threads per replica (see the module docstring for why one)."""
SYSTEM_OPENBLAS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
)
"""Where distributions put a runtime-dispatching (DYNAMIC_ARCH) OpenBLAS with cblas symbols.

Why not the PyPI wheel cmeel-openblas: it is built for one CPU family (its kernels use
AVX-512 and die with SIGILL on an AVX2-only EPYC, seen here)."""
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")

_PROBE = r"""
import json, sys, time
import numpy as np
import mlx.core as mx
shapes = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
worst, seconds, flops = 0.0, 0.0, 0.0
for m, k, n, reps in shapes:
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    x, y = mx.array(a), mx.array(b)
    out = np.array(x @ y)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    worst = max(worst, float(np.max(np.abs(out - ref)) / (np.max(np.abs(ref)) + 1e-30)))
    mx.eval(x @ y)
    start = time.perf_counter()
    for _ in range(reps):
        mx.eval(x @ y)
    seconds += time.perf_counter() - start
    flops += 2.0 * m * k * n * reps
square = mx.random.normal((512, 512)); mx.eval(square @ square)
start = time.perf_counter()
for _ in range(5):
    mx.eval(square @ square)
peak = 2 * 512**3 * 5 / (time.perf_counter() - start) / 1e9
print(json.dumps({"gflops": flops / seconds / 1e9, "matmul_512_gflops": peak,
                  "max_rel_error": worst}))
"""
SHAPES = (
    (256, 256, 688, 20),  # base model prefill: one 256-token prompt through an MLP matrix
    (1, 256, 30522, 40),  # base model decode: one token through the output head
    (2048, 384, 1536, 4),  # embedder: a batch of 16 x 128 tokens through the MLP
    (2048, 384, 1152, 4),  # embedder: the same through the fused Q, K, V projection
)
"""(m, k, n, repeats): the matmuls the service spends its time in."""
MAX_REL_ERROR = 1e-4
"""A candidate whose results stray further than this from numpy's float64 is refused."""


def openblas_path() -> Path | None:
    """``$LOADLENS_OPENBLAS`` if set, else the first system OpenBLAS found, else ``None``."""
    override = os.environ.get("LOADLENS_OPENBLAS")
    for candidate in [override] if override else list(SYSTEM_OPENBLAS):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def mkl_path() -> Path | None:
    """``$LOADLENS_MKL`` if set, else ``libmkl_rt`` of the ``mkl`` wheel in this environment."""
    override = os.environ.get("LOADLENS_MKL")
    if override:
        return Path(override) if Path(override).is_file() else None
    found = sorted((Path(sys.prefix) / "lib").glob("libmkl_rt.so*"))
    return found[-1] if found else None


def library(choice: str) -> Path | None:
    """The file ``choice`` preloads (``None`` for ``bundled`` or when it is not installed)."""
    return {"openblas": openblas_path, "mkl": mkl_path}.get(choice, lambda: None)()


def _thread_env(choice: str, threads: int) -> dict[str, str]:
    env = {var: str(threads) for var in THREAD_VARS}
    if choice == "mkl":
        # GNU OpenMP (libgomp) rather than Intel's: the one MLX's process already loads.
        env["MKL_THREADING_LAYER"] = "GNU" if threads > 1 else "SEQUENTIAL"
    return env


def _preload_env(choice: str, lib: Path | None) -> dict[str, str]:
    preload = os.environ.get("LD_PRELOAD", "")
    others = [p for p in preload.split(":") if p and "libopenblas" not in p and "mkl" not in p]
    if lib is None:
        # An OpenBLAS/MKL preloaded into this process (a shell, `make test`) would otherwise
        # be inherited by every Ray worker and silently replace the bundled BLAS.
        return {"LD_PRELOAD": ":".join(others)} if preload else {}
    return {"LD_PRELOAD": ":".join([str(lib), *others])}


def _measure(choice: str, threads: int) -> dict[str, Any]:
    """Run :data:`_PROBE` with ``choice`` preloaded in a child process."""
    lib = library(choice)
    if choice != "bundled" and lib is None:
        return {"blas": choice, "ok": False, "problem": f"{choice} is not installed"}
    env = {**os.environ, **_preload_env(choice, lib), **_thread_env(choice, threads)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(SHAPES)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return {"blas": choice, "ok": False, "problem": "the probe did not finish in 300 s"}
    if proc.returncode < 0:
        why = f"the probe died with signal {signal.Signals(-proc.returncode).name}"
        return {"blas": choice, "ok": False, "problem": why}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"blas": choice, "ok": False, "problem": f"the probe failed: {tail[0]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    ok = result["max_rel_error"] <= MAX_REL_ERROR
    problem = None if ok else f"results off by {result['max_rel_error']:.1e} (relative)"
    mapped = ""
    if lib is not None:
        mapped = str(lib)
    return {"blas": choice, "library": mapped, "ok": ok, "problem": problem, **result}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _survey_key(threads: int) -> str:
    libs = []
    for choice in CANDIDATES:
        lib = library(choice)
        stamp = f"{lib}:{lib.stat().st_size}:{lib.stat().st_mtime_ns}" if lib else "-"
        libs.append(f"{choice}={stamp}")
    text = f"{cpu_model()}|{os.cpu_count()}|{threads}|{'|'.join(libs)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def survey(threads: int = BLAS_THREADS, cache_dir: Path | None = None) -> dict[str, Any]:
    """Every candidate measured on this machine at ``threads`` threads (cached).

    Returns ``{"cpu", "threads", "candidates": [...], "fastest", "fastest_gflops"}``; each
    candidate has ``gflops`` on :data:`SHAPES`, ``matmul_512_gflops``, ``max_rel_error``,
    ``ok`` and ``problem``. The cache key holds the CPU model, the core count, the thread
    count and each library's path, size and time, so another machine or library re-measures.
    """
    path = Path(cache_dir or default_cache_dir()) / "blas" / f"{_survey_key(threads)}.json"
    try:
        cached: dict[str, Any] = json.loads(path.read_text())
        return cached
    except (OSError, ValueError):
        pass
    candidates = [_measure(choice, threads) for choice in CANDIDATES]
    good = [c for c in candidates if c.get("ok")]
    best = max(good, key=lambda c: c["gflops"]) if good else None
    result = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "candidates": candidates,
        "fastest": best["blas"] if best else "bundled",
        "fastest_gflops": best["gflops"] if best else None,
        "fastest_matmul_512_gflops": best["matmul_512_gflops"] if best else None,
    }
    from datamodel.runfolder import write_json

    write_json(path, result)
    return result


def resolve(choice: str, cache_dir: Path | None = None) -> str:
    """``choice`` itself, or for ``fastest`` the survey's winner (``bundled`` off Linux)."""
    if choice not in BLAS_CHOICES:
        raise ConfigError(f"blas must be one of {', '.join(BLAS_CHOICES)}, got {choice!r}")
    if sys.platform != "linux" or choice != "fastest":
        return choice
    return str(survey(BLAS_THREADS, cache_dir)["fastest"])


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
    env = {**os.environ, "LD_PRELOAD": lib, **_thread_env("mkl" if "mkl" in lib else "", 1)}
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


def blas_env(choice: str, threads: int = BLAS_THREADS) -> dict[str, str]:
    """Environment variables that make a new process use ``choice`` (not ``fastest``: pass
    it through :func:`resolve` first) as MLX's BLAS, with ``threads`` BLAS threads."""
    if choice not in CANDIDATES:
        raise ConfigError(f"blas must be one of {', '.join(CANDIDATES)}, got {choice!r}")
    if sys.platform != "linux":
        return {}
    if choice == "bundled":
        return _preload_env("bundled", None)
    lib = library(choice)
    if lib is None:
        hint = {
            "openblas": f"looked in {', '.join(SYSTEM_OPENBLAS)}: run `make setup` as root, or "
            "`apt-get install libopenblas0-pthread`, or set LOADLENS_OPENBLAS=/path/libopenblas.so",
            "mkl": "the `mkl` wheel is not in this environment (x86_64 only): `pip install mkl`, "
            "or set LOADLENS_MKL=/path/libmkl_rt.so",
        }[choice]
        raise ConfigError(f"blas {choice!r} asked for, but it is not installed ({hint})")
    problem = check_preload(str(lib))
    if problem:
        raise ConfigError(f"blas {choice!r}: {lib} cannot serve MLX here: {problem}")
    return {**_preload_env(choice, lib), **_thread_env(choice, threads)}


def reexec_with(choice: str) -> None:
    """Re-execute this Python command with ``choice`` as BLAS unless it already is in force.

    Marks the environment so that it happens at most once.
    """
    resolved = resolve(choice)
    env = blas_env(resolved)
    if os.environ.get("LOADLENS_BLAS") == resolved or all(
        os.environ.get(k, "") == v for k, v in env.items()
    ):
        return
    new_env = {**os.environ, **env, "LOADLENS_BLAS": resolved}
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], new_env)


def main(argv: list[str] | None = None) -> int:
    """``python -m workloads.blas --shell-env``: ``KEY=VALUE`` for the fastest BLAS here;
    ``python -m workloads.blas --survey``: the survey as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--survey"]:
        print(json.dumps(survey(), indent=1))
        return 0
    if args != ["--shell-env"]:
        print("usage: python -m workloads.blas --shell-env | --survey", file=sys.stderr)
        return 2
    try:
        choice = resolve("fastest")
        env = blas_env(choice)
    except ConfigError as exc:
        print(f"warning: {exc}", file=sys.stderr)
        choice, env = "bundled", {}
    print(" ".join(f"{k}={v}" for k, v in {**env, "LOADLENS_BLAS": choice}.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
