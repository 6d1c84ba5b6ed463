"""Per-project vector indexes (the ProjectVectorStoreManager): build, persist, cache, search.

Search is exact: normalised vectors times the query, then a partial sort. Why no vector
library: at the sizes a project reaches here (a few thousand to ~100k chunks of 384
floats) one matrix-vector product is about 1 ms per 10k chunks on this 2-core machine
(``python -m workloads.bench service`` prints the figure), exact results need no recall
tuning, and an approximate index would cost build time and memory on every ingest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodel.errors import IndexStoreError, ProjectError, SourceFileError
from workloads.service.embedstore import EmbeddingStore, content_key, pack_keys, unpack_keys
from workloads.service.sources import Chunk, chunk_text, iter_source_files, read_source

SCHEMA = 3
"""Index layout version (3: content keys, as bytes rows, stored beside the vectors)."""
EmbedFn = Callable[[Sequence[str]], np.ndarray]


@dataclass
class IngestReport:
    """What building one project's index did."""

    project: str
    files: int
    lines: int
    chunks: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) for files that could not be read; the ingest went on without them."""
    embedded: int = 0
    """Chunks embedded by this build (the rest were found by content in the store)."""
    reused: int = 0
    """Chunks whose vectors came from the store (embedded before, unchanged since)."""


@dataclass(frozen=True)
class SearchHit:
    """One retrieved chunk and its cosine similarity to the query."""

    chunk: Chunk
    score: float


@dataclass
class ProjectIndex:
    """A project's index loaded in memory."""

    project: str
    vectors: np.ndarray
    chunks: list[Chunk]
    meta: dict[str, Any]

    @property
    def nbytes(self) -> int:
        """Approximate bytes held: vectors plus chunk text."""
        return int(self.vectors.nbytes) + sum(len(c.text) + 64 for c in self.chunks)

    def search(self, query: np.ndarray, k: int) -> list[SearchHit]:
        """Top-``k`` chunks by cosine similarity (vectors and query are L2-normalised)."""
        if len(self.chunks) == 0 or k < 1:
            return []
        scores = self.vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [SearchHit(chunk=self.chunks[i], score=float(scores[i])) for i in top]


def fingerprint(root: Path) -> str:
    """A hash of the tree's file names, sizes and modification times."""
    h = hashlib.sha256()
    for path in iter_source_files(root):
        st = path.stat()
        h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass
class IndexStats:
    """Counters of the loaded-index cache."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    load_seconds: list[float] = field(default_factory=list)


class ProjectVectorStoreManager:
    """Builds indexes on disk under ``root`` and keeps up to ``max_loaded`` in memory (LRU),
    and no more than ``max_bytes`` of them when set (the one just loaded always stays)."""

    def __init__(
        self,
        root: Path,
        *,
        max_loaded: int = 8,
        max_bytes: int | None = None,
        max_lines_per_chunk: int = 40,
        max_chars_per_chunk: int = 600,
        lock: threading.RLock | None = None,
    ) -> None:
        self._lock = lock or threading.RLock()
        self.root = Path(root)
        self.max_loaded = max_loaded
        self.max_bytes = max_bytes
        """Most bytes of loaded indexes (``None``: no byte budget, only the count)."""
        self.max_lines_per_chunk = max_lines_per_chunk
        self.max_chars_per_chunk = max_chars_per_chunk
        self.stats = IndexStats()
        self._loaded: OrderedDict[str, ProjectIndex] = OrderedDict()

    def folder(self, project: str) -> Path:
        """Where ``project``'s index lives on disk."""
        return self.root / project

    def is_fresh(self, project: str, source_root: Path, max_chunks: int | None = None) -> bool:
        """Whether a built index exists, matches the source tree as it is now, and was
        built with the same chunking and chunk cap."""
        meta_path = self.folder(project) / "meta.json"
        if not meta_path.is_file():
            return False
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return False
        return bool(
            meta.get("schema") == SCHEMA
            and meta.get("fingerprint") == fingerprint(source_root)
            and meta.get("chunking") == [self.max_lines_per_chunk, self.max_chars_per_chunk]
            and meta.get("max_chunks") == max_chunks
        )

    def collect_chunks(
        self, project: str, source_root: Path, max_chunks: int | None = None
    ) -> tuple[list[Chunk], IngestReport]:
        """Read and chunk a project's files; unreadable files are reported, not fatal."""
        source_root = Path(source_root)
        report = IngestReport(project=project, files=0, lines=0, chunks=0, seconds=0.0)
        chunks: list[Chunk] = []
        for path in iter_source_files(source_root):
            rel = str(path.relative_to(source_root))
            try:
                text = read_source(path)
            except SourceFileError as exc:
                report.skipped.append((rel, str(exc)))
                continue
            report.files += 1
            report.lines += text.count("\n") + 1
            chunks.extend(
                chunk_text(
                    rel,
                    text,
                    max_lines=self.max_lines_per_chunk,
                    max_chars=self.max_chars_per_chunk,
                )
            )
            if max_chunks is not None and len(chunks) >= max_chunks:
                chunks = chunks[:max_chunks]
                break
        if not chunks:
            raise ProjectError(
                f"project {project!r}: no readable source text under {source_root} "
                f"({len(report.skipped)} files skipped)"
            )
        report.chunks = len(chunks)
        return chunks, report

    def missing(
        self,
        project: str,
        source_root: Path,
        store: EmbeddingStore,
        max_chunks: int | None = None,
    ) -> tuple[list[bytes], list[str], int]:
        """``(keys, texts, chunks)``: the distinct chunks of ``project`` whose vectors the
        store lacks, and how many chunks it has in all."""
        chunks, _ = self.collect_chunks(project, source_root, max_chunks)
        keys = [content_key(c.text) for c in chunks]
        known = store.get(keys)
        todo = {k: c.text for k, c in zip(keys, chunks, strict=True) if k not in known}
        return list(todo), list(todo.values()), len(chunks)

    def build(
        self,
        project: str,
        source_root: Path,
        embed: EmbedFn,
        *,
        max_chunks: int | None = None,
        batch: int = 256,
        store: EmbeddingStore | None = None,
        embedder_id: str = "",
    ) -> IngestReport:
        """Chunk, embed and persist ``project``'s index atomically (replacing an old one).

        With a ``store``, only chunks whose text it has no vector for are embedded, and
        each embedded batch is stored at once: a build that is interrupted resumes where
        it stopped, and a rebuild after a small change embeds only the changed chunks.
        """
        start = time.perf_counter()
        chunks, report = self.collect_chunks(project, source_root, max_chunks)
        keys = [content_key(c.text) for c in chunks]
        known = store.get(keys) if store is not None else {}
        todo = {k: c.text for k, c in zip(keys, chunks, strict=True) if k not in known}
        pending = list(todo.items())
        for i in range(0, len(pending), batch):
            part = pending[i : i + batch]
            vectors = embed([text for _, text in part]).astype(np.float32, copy=False)
            if store is not None:
                store.put([k for k, _ in part], vectors)
            known.update(zip((k for k, _ in part), vectors, strict=True))
        report.embedded = len(todo)
        report.reused = sum(1 for k in keys if k not in todo)
        vectors = np.stack([known[k] for k in keys]).astype(np.float32, copy=False)
        meta = {
            "schema": SCHEMA,
            "project": project,
            "source_root": str(source_root),
            "fingerprint": fingerprint(source_root),
            "chunking": [self.max_lines_per_chunk, self.max_chars_per_chunk],
            "max_chunks": max_chunks,
            "dim": int(vectors.shape[1]),
            "files": report.files,
            "lines": report.lines,
            "chunks": len(chunks),
            "skipped": report.skipped,
            "embedder": embedder_id,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{project}-", dir=self.root))
        try:
            np.save(tmp / "vectors.npy", vectors, allow_pickle=False)
            np.save(tmp / "keys.npy", pack_keys(keys), allow_pickle=False)
            (tmp / "chunks.json").write_text(
                json.dumps([[c.path, c.start_line, c.end_line, c.text] for c in chunks])
            )
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            target = self.folder(project)
            old = None
            if target.exists():
                old = target.with_name(f".{project}-old-{os.getpid()}")
                os.rename(target, old)
            os.rename(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        with self._lock:
            self._loaded.pop(project, None)
        report.seconds = time.perf_counter() - start
        return report

    def referenced_keys(self) -> set[bytes]:
        """Content keys of every index persisted under this manager's root."""
        keys: set[bytes] = set()
        for path in self.root.glob("*/keys.npy"):
            try:
                keys.update(unpack_keys(np.load(path, allow_pickle=False)))
            except (OSError, ValueError):
                continue
        return keys

    def describe(self, project: str) -> dict[str, Any]:
        """What ``project``'s index on disk was built from (files, lines, chunks, skipped)."""
        try:
            meta = json.loads((self.folder(project) / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise IndexStoreError(f"project {project!r} has no readable index metadata") from exc
        keys = ("project", "files", "lines", "chunks", "skipped")
        return {k: meta.get(k) for k in keys} | {"seconds": 0.0}

    @property
    def loaded(self) -> list[str]:
        """Projects whose index is in memory, least recently used first."""
        with self._lock:
            return list(self._loaded)

    @property
    def bytes_loaded(self) -> int:
        """Approximate bytes of all loaded indexes."""
        with self._lock:
            return sum(i.nbytes for i in self._loaded.values())

    def load(self, project: str) -> ProjectIndex:
        """Return ``project``'s index, reading it from disk on a miss (LRU eviction)."""
        with self._lock:
            return self._load(project)

    def _load(self, project: str) -> ProjectIndex:
        index = self._loaded.get(project)
        if index is not None:
            self.stats.hits += 1
            self._loaded.move_to_end(project)
            return index
        self.stats.misses += 1
        start = time.perf_counter()
        index = self._read(project)
        self._loaded[project] = index
        while len(self._loaded) > self.max_loaded or (
            self.max_bytes is not None
            and len(self._loaded) > 1
            and sum(i.nbytes for i in self._loaded.values()) > self.max_bytes
        ):
            self._loaded.popitem(last=False)
            self.stats.evictions += 1
        self.stats.load_seconds.append(time.perf_counter() - start)
        return index

    def _read(self, project: str) -> ProjectIndex:
        folder = self.folder(project)
        if not (folder / "meta.json").is_file():
            raise IndexStoreError(f"project {project!r} has no index at {folder}; ingest it first")
        try:
            meta = json.loads((folder / "meta.json").read_text())
            vectors = np.load(folder / "vectors.npy", allow_pickle=False)
            rows = json.loads((folder / "chunks.json").read_text())
            chunks = [Chunk(path=r[0], start_line=r[1], end_line=r[2], text=r[3]) for r in rows]
        except (OSError, ValueError, IndexError, TypeError) as exc:
            raise IndexStoreError(
                f"index of project {project!r} at {folder} is corrupt: {exc}"
            ) from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(chunks):
            raise IndexStoreError(
                f"index of project {project!r} at {folder} is corrupt: "
                f"{vectors.shape} vectors for {len(chunks)} chunks"
            )
        return ProjectIndex(project=project, vectors=vectors, chunks=chunks, meta=meta)

    def unload(self, project: str) -> bool:
        """Drop ``project``'s index from memory; returns whether it was loaded."""
        with self._lock:
            return self._loaded.pop(project, None) is not None
