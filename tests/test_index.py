"""Per-project indexes: persistence, freshness, LRU and corruption, with the real embedder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_tree

from datamodel.errors import IndexStoreError
from workloads.service.embedder import Embedder
from workloads.service.embedstore import EmbeddingStore, content_key
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


class CountingEmbed:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts += list(texts)
        return self.embedder.embed(texts)


def test_unchanged_chunks_are_not_embedded_again_and_a_changed_file_is(tmp_path, embedder):
    files = {
        f"m{k}.py": "".join(f"def f{k}_{j}(x):\n    return x + {j}\n\n" for j in range(30))
        for k in range(3)
    }
    tree = write_tree(tmp_path / "src", files)
    store = EmbeddingStore(tmp_path / "emb")
    indexes = ProjectVectorStoreManager(tmp_path / "idx")
    embed = CountingEmbed(embedder)
    first = indexes.build("p", tree, embed, store=store, max_chunks=None)
    assert first.embedded == first.chunks == len(embed.texts) and first.reused == 0
    before = indexes.load("p").vectors.copy()
    embed.texts.clear()
    again = indexes.build("p", tree, embed, store=store)
    assert again.embedded == 0 and again.reused == again.chunks and embed.texts == []
    (tree / "m1.py").write_text(files["m1.py"].replace("return x + 7", "return x - 7"))
    changed = indexes.build("p", tree, embed, store=store)
    assert changed.embedded == len(embed.texts) >= 1
    assert all("m1.py" not in t and "x - 7" in t for t in embed.texts)
    after = indexes.load("p")
    untouched = [i for i, c in enumerate(after.chunks) if "x - 7" not in c.text]
    np.testing.assert_array_equal(after.vectors[untouched], before[untouched])
    assert len(store) == first.chunks + changed.embedded
    kept, dropped = store.compact(indexes.referenced_keys())
    assert (kept, dropped) == (first.chunks, changed.embedded)  # the old chunk's vector goes
    assert len(EmbeddingStore(tmp_path / "emb")) == first.chunks  # as read from disk


def test_an_interrupted_build_resumes_from_what_was_embedded(tmp_path, embedder):
    tree = write_tree(tmp_path / "src", {f"m{k}.py": f"VALUE_{k} = {k}\n" * 3 for k in range(8)})
    store = EmbeddingStore(tmp_path / "emb")
    indexes = ProjectVectorStoreManager(tmp_path / "idx")
    calls = []

    def flaky(texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped mid-build, after one batch was stored
        return embedder.embed(texts)

    with pytest.raises(KeyboardInterrupt):
        indexes.build("p", tree, flaky, store=store, batch=3)
    assert len(store) == 3 and not indexes.is_fresh("p", tree)
    embed = CountingEmbed(embedder)
    report = indexes.build("p", tree, embed, store=store, batch=3)
    assert report.chunks == 8 and report.embedded == 5 and len(embed.texts) == 5


def test_the_store_refuses_mismatched_rows_and_finds_other_writers(tmp_path):
    store = EmbeddingStore(tmp_path / "emb")
    with pytest.raises(ValueError, match="2 keys for 1 vectors"):
        store.put([content_key("a"), content_key("b")], np.zeros((1, 4), dtype=np.float32))
    other = EmbeddingStore(tmp_path / "emb")
    other.put([content_key("a")], np.ones((1, 4), dtype=np.float32))
    assert store.get([content_key("a"), content_key("b")]).keys() == {content_key("a")}
    assert content_key("a") != content_key("a ") and len(content_key("x")) == 16


def test_keys_ending_in_zero_bytes_survive_the_disk(tmp_path):
    keys = [b"\x01" * 15 + b"\x00", b"\x00" * 16, content_key("x")]
    store = EmbeddingStore(tmp_path / "emb")
    store.put(keys, np.eye(3, 4, dtype=np.float32))
    assert set(EmbeddingStore(tmp_path / "emb").get(keys)) == set(keys)
