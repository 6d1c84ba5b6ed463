"""Per-project indexes: persistence, freshness, LRU and corruption, with the real embedder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_tree

from datamodel.errors import IndexStoreError
from workloads.service.embedder import Embedder
from workloads.service.index import ProjectVectorStoreManager


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_build_persist_reload_and_search(tmp_path, embedder):
    tree = write_tree(
        tmp_path / "src",
        {
            "a.py": "def parse_json(text):\n    import json\n    return json.loads(text)\n",
            "b.py": "def draw_circle(canvas, r):\n    canvas.circle(0, 0, r)\n",
        },
    )
    store = ProjectVectorStoreManager(tmp_path / "idx", max_loaded=1)
    report = store.build("p", tree, embedder.embed)
    assert (report.files, report.chunks) == (2, 2)
    assert store.is_fresh("p", tree)
    assert not store.is_fresh("p", tree, max_chunks=1)  # built without a cap
    index = ProjectVectorStoreManager(tmp_path / "idx").load("p")  # a new manager reads disk
    hits = index.search(embedder.embed(["decode a JSON string"])[0], k=2)
    assert [h.chunk.path for h in hits] == ["a.py", "b.py"] and hits[0].score > hits[1].score
    (tree / "b.py").write_text("changed = True\n")
    assert not store.is_fresh("p", tree)


def test_lru_and_corruption(tmp_path, embedder):
    tree = write_tree(tmp_path / "src", {"a.py": "x = 1\n"})
    store = ProjectVectorStoreManager(tmp_path / "idx", max_loaded=1)
    for name in ("p", "q"):
        store.build(name, tree, embedder.embed)
    store.load("p")
    store.load("q")
    assert store.loaded == ["q"] and store.stats.evictions == 1
    np.save(tmp_path / "idx" / "p" / "vectors.npy", np.zeros((5, 384), dtype=np.float32))
    with pytest.raises(IndexStoreError, match=r"index of project 'p' at .* is corrupt"):
        store.load("p")
    (tmp_path / "idx" / "q" / "chunks.json").write_text("{not json")
    store.unload("q")
    with pytest.raises(IndexStoreError, match=r"'q'.*corrupt"):
        store.load("q")
