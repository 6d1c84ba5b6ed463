"""The whole service in-process, on real MLX and real files at tiny scale."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tree

from datamodel.errors import AdapterError, IndexStoreError, ProjectError
from workloads.service.projects import Project
from workloads.service.service import Service, ServiceConfig


@pytest.fixture(scope="module")
def service(cache_dir: Path, tiny_trees: dict[str, Path]) -> Service:
    svc = Service(
        ServiceConfig(cache_dir=cache_dir, adapter_cache_count=2, index_cache_count=2),
        [Project(name=n, root=p) for n, p in tiny_trees.items()],
    )
    for name in tiny_trees:
        svc.ingest(name)
    return svc


def test_init_and_ingest_are_cached(service: Service, tiny_trees):
    assert service.init_seconds["total"] > 0
    assert service.ingest("alpha") is None  # fresh on disk: nothing rebuilt
    report = service.ingest("alpha", rebuild=True)
    assert report is not None and report.files == 2 and report.chunks >= 2


def test_search_finds_the_right_file(service: Service):
    result = service.search("beta", "open a TCP socket connection and send an HTTP request")
    assert result.hits[0][0] == "net/http_client.py"
    assert result.stages.embed > 0 and result.stages.search > 0
    result = service.search("alpha", "compute the area of a circle from its radius")
    assert result.hits[0][0] == "geometry.py"


def test_analyze_switches_runs_model_and_times_stages(service: Service):
    first = service.analyze("gamma", "key value store in sqlite")
    assert first.project == "gamma" and first.hits[0][0] == "db/store.py"
    assert len(first.tokens) == service.config.generate_tokens
    assert all(t > 0 for t in (first.stages.embed, first.stages.search, first.stages.model))
    again = service.analyze("gamma", "key value store in sqlite")
    assert again.switched is False and again.tokens == first.tokens
    other = service.analyze("alpha", "key value store in sqlite")
    assert other.switched is True and service.adapters.active == "alpha"


def test_adapters_make_projects_answer_differently(service: Service):
    service.switch("alpha")
    model = service.base.model
    import mlx.core as mx

    tokens = mx.array([[101, 2000, 2001, 2002, 102]])
    a = np.array(model(tokens))
    service.switch("beta")
    b = np.array(model(tokens))
    assert np.abs(a - b).max() > 1e-2


def test_cache_limits_evict_and_count(service: Service):
    for name in ["alpha", "beta", "gamma", "alpha"]:
        service.switch(name)
    stats = service.stats()
    assert len(stats["adapters"]["resident"]) <= 2 and stats["adapters"]["evictions"] >= 1
    assert len(stats["indexes"]["loaded"]) <= 2 and stats["indexes"]["evictions"] >= 1
    assert stats["mlx"]["active_bytes"] > 0


def test_embed_returns_unit_vectors(service: Service):
    vectors, result = service.embed(["def f(): pass", "class A: ..."])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert result.stages.embed > 0


def test_bad_projects_fail_clearly_and_others_keep_serving(service: Service, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.bin").write_bytes(b"\x00\x01")
    junk = write_tree(tmp_path / "junk", {"bad.py": b"\xff\xfe\x00binary", "ok.py": "x = 1\n"})
    broken_adapter = tmp_path / "broken-adapter"
    shutil.copytree(service.adapter_root / "alpha-r8", broken_adapter)
    (broken_adapter / "adapters.safetensors").write_bytes(b"\x00" * 5)
    service.add_project(Project(name="empty", root=empty))
    service.add_project(Project(name="junk", root=junk))
    service.add_project(Project(name="broken", root=junk, adapter=broken_adapter))

    with pytest.raises(ProjectError, match=r"project 'empty': no readable source text"):
        service.ingest("empty")
    report = service.ingest("junk")
    assert report is not None and report.files == 1
    assert report.skipped[0][0] == "bad.py" and "binary" in report.skipped[0][1]
    with pytest.raises(ProjectError, match=r"unknown project 'nope' \(known: alpha, beta"):
        service.analyze("nope", "q")
    with pytest.raises(AdapterError, match=r"broken-adapter/adapters.safetensors is truncated"):
        service.analyze("broken", "q")
    with pytest.raises(IndexStoreError, match=r"project 'empty' has no index"):
        service.analyze("empty", "q")
    ok = service.analyze("beta", "send an HTTP request")
    assert ok.hits and service.adapters.active == "beta"


def test_a_memory_budget_sizes_the_caches_to_what_the_models_leave(cache_dir, tmp_path):
    import psutil

    trees = {
        f"p{k}": write_tree(tmp_path / f"p{k}", {"m.py": f"VALUE_{k} = {k}\n" * 400})
        for k in range(4)
    }
    held_mb = psutil.Process().memory_info().rss / 2**20
    config = ServiceConfig(
        cache_dir=cache_dir,
        memory_budget_mb=int(held_mb) + 60,
        mlx_cache_limit_mb=8,
        index_cache_count=8,
    )
    svc = Service(config, [Project(name=n, root=p) for n, p in trees.items()])
    budget = svc.stats()["memory_budget"]
    left = budget["budget_bytes"] - budget["held_at_start_bytes"] - 8 * 2**20
    assert budget["index_cache_bytes"] == max(int(left * 0.7), 4 * 2**20)
    assert svc.indexes.max_bytes == budget["index_cache_bytes"]
    assert svc.adapters.max_bytes == budget["adapter_cache_bytes"] <= config.adapter_cache_bytes
    svc.indexes.max_bytes = 1  # tighter than one index: each load evicts the one before
    for name in trees:
        svc.ingest(name)
        svc.search(name, "value")
    assert len(svc.indexes.loaded) == 1 and svc.indexes.stats.evictions >= 3
    assert ServiceConfig(cache_dir=cache_dir).memory_budget_mb is None


def test_stats_read_safely_while_requests_churn_the_caches(cache_dir, tiny_trees):
    """``stats`` runs on the replica's control thread while requests evict and load."""
    import threading

    svc = Service(
        ServiceConfig(cache_dir=cache_dir, adapter_cache_count=1, index_cache_count=1),
        [Project(name=n, root=p) for n, p in tiny_trees.items()],
    )
    for name in tiny_trees:
        svc.ingest(name)
    stop = threading.Event()
    failures: list[BaseException] = []

    def requests() -> None:
        names = sorted(tiny_trees)
        k = 0
        while not stop.is_set():
            try:
                svc.switch(names[k % len(names)])
                svc.search(names[(k + 1) % len(names)], "area of a circle")
            except BaseException as exc:
                failures.append(exc)
                return
            k += 1

    worker = threading.Thread(target=requests)
    worker.start()
    reads = 0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            stats = svc.stats()
            assert len(stats["adapters"]["resident"]) <= 1 and len(stats["indexes"]["loaded"]) <= 1
            reads += 1
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not failures, failures
    assert reads > 100 and svc.adapters.stats.evictions > 10 and svc.indexes.stats.evictions > 10
