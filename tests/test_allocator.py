"""``allocator = "trim"`` or ``"return"``: freed MLX arrays go back to the system, so a
process's unique memory follows MLX's active memory. Real MLX in real processes, one per
setting: each
allocates and frees 400 MiB of 4 MiB arrays twice with small arrays kept alive between
them (as a replica's activations fall between its caches' entries), then reads its USS."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from workloads.stack.allocator import allocator_env

PROBE = """
import json
import time
import mlx.core as mx
import psutil
from workloads.stack.allocator import trimmer_from_env

trimmer = trimmer_from_env()

mx.set_default_device(mx.cpu)
mx.set_cache_limit(32 * 2**20)
process = psutil.Process()
start = process.memory_full_info().uss
kept = []
for _ in range(2):
    big = []
    for k in range(100):
        a = mx.ones((1024, 1024)) * float(k)
        mx.eval(a)
        big.append(a)
        small = mx.ones((64,)) + k
        mx.eval(small)
        kept.append(small)
    del big, a
    mx.synchronize()
if trimmer is not None:  # two whole trims after the frees, however busy the machine
    calls, deadline = trimmer.calls, time.monotonic() + 60
    while trimmer.calls < calls + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
print(json.dumps({
    "start_mb": start / 2**20,
    "after_mb": process.memory_full_info().uss / 2**20,
    "active_mb": mx.get_active_memory() / 2**20,
}))
"""


def _probe(env: dict[str, str]) -> dict[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_returned_memory_follows_mlx_active_memory_and_kept_memory_does_not() -> None:
    if platform.libc_ver()[0] != "glibc":  # macOS, musl: the setting changes nothing
        assert allocator_env("return") == {}
        return
    kept = _probe(allocator_env("keep"))
    assert kept["active_mb"] < 5, kept  # almost nothing is active in MLX at the end
    # glibc's defaults keep most of the 400 MiB; trimming or mapping gives it back but
    # MLX's own cache (32 MiB).
    assert kept["after_mb"] - kept["start_mb"] > 200, kept
    for choice in ("trim", "return"):
        back = _probe(allocator_env(choice))
        assert back["active_mb"] < 5 and back["after_mb"] - back["start_mb"] < 80, (choice, back)
