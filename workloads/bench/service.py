"""``python -m workloads.bench service``: adapter load/activate/unload, project switch cold and
warm, embedding throughput, initialisation time and process USS with 10 projects (and USS,
PSS and MLX's active, peak and cache memory after each phase of a process set up as a
replica is), mlx-lm's reload path against our in-place swap, and sentence-transformers
when it is installed.
MLX work is evaluated before each clock read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datamodel.quantiles import summarize
from profiling.capture.libraries import loaded_blas
from workloads.runs.results import machine_info
from workloads.stack.allocator import allocator_env
from workloads.stack.blas import THREAD_VARS, reexec_with
from workloads.stack.config import load_config

SNIPPET = (
    "def handle_request(self, request, timeout=None):\n"
    "    headers = parse_headers(request.raw)\n"
    "    if 'content-length' in headers:\n"
    "        body = request.read(int(headers['content-length']))\n"
)


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _pct(values: list[float], scale: float, unit: str) -> str:
    s = summarize(values)
    assert s.p50 is not None and s.p99 is not None
    return f"p50 {s.p50 * scale:.2f} {unit}, p99 {s.p99 * scale:.2f} {unit} (n={s.count})"


def _child_init(config_name: str, projects: int, cache: str, max_chunks: int) -> None:
    """In a fresh process set up as a replica's (its allocator and trimmer): time imports +
    Service() with ``projects``, then load them all; USS, PSS and MLX's peak per phase."""
    import mlx.core as mx
    import psutil

    from workloads.stack.allocator import trimmer_from_env

    started = psutil.Process().create_time()
    trimmer = trimmer_from_env()
    phases: list[dict[str, Any]] = []

    def phase(name: str) -> None:
        time.sleep(2 * trimmer.every_s if trimmer else 0.0)  # what the replica's thread does
        info = psutil.Process().memory_full_info()
        phases.append(
            {
                "phase": name,
                "uss_bytes": info.uss,
                "pss_bytes": getattr(info, "pss", None),
                "mlx_active_bytes": mx.get_active_memory(),
                "mlx_peak_bytes": mx.get_peak_memory(),
                "mlx_cache_bytes": mx.get_cache_memory(),
            }
        )
        mx.reset_peak_memory()

    from workloads.service.projects import default_projects
    from workloads.service.service import Service, ServiceConfig

    phase("imports")
    config = load_config(config_name)
    chosen = default_projects(projects)
    service_config = ServiceConfig(
        cache_dir=Path(cache),
        max_chunks_per_project=max_chunks,
        adapter_cache_count=projects,
        index_cache_count=projects,
        **{k: v for k, v in config.service.items() if not k.endswith("_count")},
    )
    svc = Service(service_config, chosen)
    ready = time.time() - started
    phase("service built (model, embedder)")
    for p in chosen:
        svc.ingest(p.name)
    phase(f"{projects} projects ingested")
    for p in chosen:
        svc.switch(p.name)
    phase(f"switched through {projects} projects (adapters and indexes loaded)")
    for p in chosen:
        svc.analyze(p.name, "how is the connection closed")
    phase(f"analyze on each of {projects} projects")
    for _ in range(4):
        svc.embed([SNIPPET] * 32)
    phase("4 embed batches of 32")
    mem = psutil.Process().memory_full_info()
    print(
        json.dumps(
            {
                "init_with_imports_s": ready,
                "service_init_s": svc.init_seconds["total"],
                "uss_bytes": mem.uss,
                "rss_bytes": mem.rss,
                "resident_adapters": len(svc.adapters.resident),
                "loaded_indexes": len(svc.indexes.loaded),
                "index_bytes": svc.indexes.bytes_loaded,
                "blas": loaded_blas(),
                "phases": phases,
            }
        )
    )


_ST_SCRIPT = """
import json, sys, time, numpy as np
from sentence_transformers import SentenceTransformer
texts = json.loads(sys.stdin.read())
st = SentenceTransformer(sys.argv[1], device="cpu")
st.max_seq_length = 128
st.encode(texts[:32], batch_size=32)
t = time.perf_counter()
vecs = st.encode(texts, batch_size=32, normalize_embeddings=True)
rate = len(texts) / (time.perf_counter() - t)
np.save(sys.argv[2], vecs.astype(np.float32))
print(rate)
"""


def _sentence_transformers(python: str, texts: list[str]) -> tuple[float, Any] | None:
    """Embed ``texts`` with sentence-transformers under ``python`` (which may be another
    virtual environment holding torch); ``None`` when it cannot import it."""
    import numpy as np

    from workloads.service.embedder import minilm_dir

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "st.npy"
        drop = ("LD_PRELOAD", "MKL_THREADING_LAYER", *THREAD_VARS)
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["HF_HUB_OFFLINE"] = "1"
        proc = subprocess.run(
            [python, "-c", _ST_SCRIPT, str(minilm_dir()), str(out)],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0 or not out.exists():
            return None
        return float(proc.stdout.strip().splitlines()[-1]), np.load(out)


def bench_service(args: argparse.Namespace) -> None:
    """The service benchmark (see the module docstring)."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model

    from workloads.service.embedder import Embedder
    from workloads.service.index import ProjectIndex
    from workloads.service.projects import default_projects
    from workloads.service.service import Service, ServiceConfig
    from workloads.service.sources import Chunk

    config = load_config(args.config)
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="loadlens-bench-"))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine_info())}")
    print(f"config: {config.name} (blas={config.blas}); MLX BLAS loaded: {loaded_blas()}")
    print(f"cache: {cache}")

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from workloads.bench.service import _child_init; "
            f"_child_init({config.name!r}, {args.projects}, {str(cache)!r}, {args.max_chunks})",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **allocator_env(config.allocator)},
    )
    if child.returncode != 0:
        print(f"init child failed:\n{child.stderr[-2000:]}")
    else:
        init = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"initialisation: {init['init_with_imports_s']:.2f} s from process start "
            f"(Service() alone {init['service_init_s']:.2f} s), "
            f"{args.projects} projects"
        )
        print(
            f"service process with {args.projects} projects loaded "
            f"({init['resident_adapters']} adapters, {init['loaded_indexes']} indexes of "
            f"<= {args.max_chunks} chunks): USS {init['uss_bytes'] / 2**20:.0f} MiB, "
            f"RSS {init['rss_bytes'] / 2**20:.0f} MiB"
        )
        print(f"memory per phase (allocator {config.allocator}; MLX peak since the last phase):")
        for row in init["phases"]:
            pss = row["pss_bytes"]
            print(
                f"  {row['phase']:<62} USS {row['uss_bytes'] / 2**20:6.0f} MiB  PSS "
                + (f"{pss / 2**20:6.0f} MiB" if pss is not None else "     -")
                + f"  MLX active {row['mlx_active_bytes'] / 2**20:5.0f} MiB, peak "
                f"{row['mlx_peak_bytes'] / 2**20:5.0f} MiB, cache "
                f"{row['mlx_cache_bytes'] / 2**20:5.0f} MiB"
            )

    chosen = default_projects(args.projects)
    svc = Service(
        ServiceConfig(
            cache_dir=cache,
            max_chunks_per_project=args.max_chunks,
            adapter_cache_count=2,
            index_cache_count=2,
            **{k: v for k, v in config.service.items() if not k.endswith("_count")},
        ),
        chosen,
    )
    for p in chosen:
        svc.ingest(p.name)
    names = [p.name for p in chosen]
    am = svc.adapters
    n = args.repeats

    def cold_load() -> None:
        for name in list(am.resident):
            am.unload(name)
        am.load(names[0])

    cold = _timed(cold_load, n)
    print(f"adapter cold load: {_pct(cold, 1e3, 'ms')}")
    am.load(names[0])
    am.load(names[1])
    flip = iter(range(10**9))
    warm = _timed(lambda: am.activate(names[next(flip) % 2]), n * 10)
    print(f"adapter warm activation: {_pct(warm, 1e6, 'µs')}")
    unload = []
    for _ in range(n):
        am.load(names[2])
        t = time.perf_counter()
        am.unload(names[2])
        unload.append(time.perf_counter() - t)
    print(f"adapter unload: {_pct(unload, 1e3, 'ms')}")

    def cold_switch() -> None:
        svc.projects.current = None
        for name in list(am.resident):
            am.unload(name)
        for name in svc.indexes.loaded:
            svc.indexes.unload(name)
        t = time.perf_counter()
        svc.switch(names[3])
        cold_sw.append(time.perf_counter() - t)

    cold_sw: list[float] = []
    for _ in range(n):
        cold_switch()
    print(f"project switch cold (adapter + index from disk): {_pct(cold_sw, 1e3, 'ms')}")
    svc.switch(names[0])
    svc.switch(names[1])
    flip = iter(range(10**9))
    warm_sw = _timed(lambda: svc.switch(names[next(flip) % 2]), n * 5)
    print(f"project switch warm (both resident): {_pct(warm_sw, 1e3, 'ms')}")

    base_path = svc.base.path
    adapter_path = svc.adapter_root / f"{names[0]}-r{svc.config.adapter_rank}"

    def reload_path() -> None:
        model, _ = load_model(base_path)
        load_adapters(model, str(adapter_path))
        mx.eval(model.parameters())

    reload_path()
    reload = _timed(reload_path, max(5, n // 3))
    in_place = [c + w for c, w in zip(cold, warm, strict=False)]
    ratio = summarize(reload).p50 / summarize(in_place).p50  # type: ignore[operator]
    print(
        f"mlx-lm reload path (load_model + load_adapters): {_pct(reload, 1e3, 'ms')}; "
        f"vs our in-place swap (cold load + activate, p50): {ratio:.1f}x slower"
    )

    streams = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    embedder = Embedder(
        batch_size=32,
        max_tokens=128,
        length_bucketing=config.service.get("length_bucketing", True),
        fast_math=config.service.get("fast_math", True),
        streams=streams,
    )
    texts = [f"# variant {i}\n" + SNIPPET * 4 for i in range(args.texts)]
    embedder.embed(texts[:32])
    mlx_rates: list[float] = []
    st_rates: list[float] = []
    ref = None
    for round_no in range(args.rounds):  # interleaved: MLX, torch, MLX, torch, ...
        t = time.perf_counter()
        embedder.embed(texts)
        mlx_rates.append(len(texts) / (time.perf_counter() - t))
        st = _sentence_transformers(args.reference_python, texts)
        if st is not None:
            st_rates.append(st[0])
            ref = st[1]
        st_text = f", sentence-transformers {st_rates[-1]:.1f}" if st is not None else ""
        print(f"embedding round {round_no + 1}: MLX {mlx_rates[-1]:.1f} texts/s{st_text}")
    mlx_rate = statistics.median(mlx_rates)
    if streams > 1:
        single = Embedder(
            batch_size=32,
            max_tokens=128,
            length_bucketing=config.service.get("length_bucketing", True),
            fast_math=config.service.get("fast_math", True),
            streams=1,
        )
        single.embed(texts[:32])
        t = time.perf_counter()
        single.embed(texts)
        one = len(texts) / (time.perf_counter() - t)
        print(
            f"threads: 1 CPU stream {one:.1f} texts/s vs {streams} streams {mlx_rate:.1f} "
            f"({mlx_rate / one:.2f}x), BLAS 1 thread in both"
        )
    print(
        f"MLX embedding throughput: {mlx_rate:.1f} texts/s, median of {args.rounds} "
        f"({len(texts)} texts of 128 tokens, batch 32, {streams} CPU stream(s), BLAS "
        f"{os.environ.get('LOADLENS_BLAS', 'as loaded')} x 1 thread)"
    )
    if ref is None:
        print(
            "sentence-transformers: not importable by --reference-python "
            f"{args.reference_python} (pip install -e '.[reference]' to compare)"
        )
    else:
        st_rate = statistics.median(st_rates)
        cos = float(np.min(np.sum(ref * embedder.embed(texts), axis=1)))
        print(
            f"sentence-transformers (torch CPU, its own threads): {st_rate:.1f} texts/s, median; "
            f"MLX/ST ratio {mlx_rate / st_rate:.2f}; min cosine MLX vs ST {cos:.5f}"
        )

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ProjectIndex("synthetic", vectors, [Chunk("x", 1, 1, "")] * 10_000, {})
    query = vectors[0]
    search = _timed(lambda: index.search(query, 4), n * 3)
    print(f"exact search over 10k x 384 vectors (top-4): {_pct(search, 1e3, 'ms')}")


def add_parser(sub: Any) -> None:
    """The ``service`` subcommand."""
    s = sub.add_parser("service", help="the service's own figures")
    s.add_argument("--config", default="optimized")
    s.add_argument("--projects", type=int, default=10)
    s.add_argument("--repeats", type=int, default=30)
    s.add_argument("--texts", type=int, default=128)
    s.add_argument("--rounds", type=int, default=3, help="interleaved MLX/torch rounds")
    s.add_argument("--max-chunks", type=int, default=64, help="chunks indexed per project")
    s.add_argument("--cache-dir", default=None)
    s.add_argument(
        "--reference-python",
        default=sys.executable,
        help="a Python with sentence-transformers (and torch) for the comparison",
    )
    s.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    """Re-executed with the configuration's BLAS first, then :func:`bench_service`."""
    reexec_with(load_config(args.config).blas)
    bench_service(args)
