"""What MLX really runs on inside a process: backend, device, limits, threads, BLAS.

Run inside a replica (the MLX owner). The BLAS is read from the process's own mapped
libraries, not assumed, and a short matmul says how fast it is.
"""

from __future__ import annotations

import os
import time
from typing import Any

import mlx.core as mx
import psutil

from profiling.capture.libraries import loaded_blas

THREAD_VARS = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_THREADING_LAYER",
    "LOADLENS_BLAS",
)


def blas_kind(paths: list[str]) -> str:
    """Name the BLAS that serves MLX: a preloaded OpenBLAS wins over the wheel's own."""
    names = [os.path.basename(p).lower() for p in paths]
    if any(n.startswith("libmkl_rt") for n in names):
        return "mkl"
    if any("openblas" in n and "scipy_openblas" not in n for n in names):
        return "openblas"
    if any("accelerate" in n for n in names) or mx.metal.is_available():
        return "accelerate"
    if any(n.startswith("libblas") for n in names):
        return "reference"
    return "unknown"


def matmul_gflops(n: int = 512, repeats: int = 5) -> float:
    """GFLOP/s of an ``n``² float32 matmul on the default device (warmed up, evaluated)."""
    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a, b, a @ b)
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    seconds = (time.perf_counter() - start) / repeats
    return 2 * n**3 / seconds / 1e9


def probe() -> dict[str, Any]:
    """The facts, JSON-ready."""
    device = mx.default_device()
    backends = {"metal": mx.metal.is_available()}
    cuda = getattr(mx, "cuda", None)
    backends["cuda"] = bool(cuda and cuda.is_available())
    backend = next((k for k, v in backends.items() if v), "cpu")
    try:
        info: dict[str, Any] = {k: str(v) for k, v in mx.device_info().items()}
    except (RuntimeError, AttributeError) as exc:
        info = {"error": str(exc)}
    blas = loaded_blas()
    return {
        "device": str(device),
        "backend": backend,
        "backends_available": backends,
        "device_info": info,
        "memory_limit_bytes": mx.get_memory_limit(),
        "mlx_version": getattr(mx, "__version__", None),
        "blas": blas,
        "blas_kind": blas_kind(blas),
        "matmul_gflops": round(matmul_gflops(), 2),
        "threads": psutil.Process().num_threads(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "env": {k: os.environ.get(k) for k in THREAD_VARS},
    }
