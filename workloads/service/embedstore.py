"""Embeddings kept by content: nothing is embedded twice.

A chunk's key is a hash of its text; a store holds the vectors of one embedder identity
(model weights, token window, math mode), so a change of model never serves stale vectors.
Every batch that is embedded is written at once as a shard of its own (atomically, by
whichever process embedded it), so an interrupted index build resumes where it stopped and
several replicas can fill one store at the same time. :meth:`EmbeddingStore.compact` drops
the entries no index refers to any more.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

KEY_BYTES = 16
"""Bytes of a content key (a truncated SHA-256 of the chunk text)."""


def pack_keys(keys: Sequence[bytes]) -> np.ndarray:
    """Keys as an ``(n, KEY_BYTES)`` uint8 array (numpy's fixed-width bytes would drop a
    key's trailing zero bytes on the way back)."""
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)


def unpack_keys(array: np.ndarray) -> list[bytes]:
    """The keys of :func:`pack_keys`."""
    return [row.tobytes() for row in np.asarray(array, dtype=np.uint8).reshape(-1, KEY_BYTES)]


def content_key(text: str) -> bytes:
    """The key of a chunk: the first :data:`KEY_BYTES` of the SHA-256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES]


class EmbeddingStore:
    """Vectors by content key under ``root`` (one folder per embedder identity)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._vectors: dict[bytes, np.ndarray] = {}
        self._shards: set[str] = set()

    def _refresh(self) -> None:
        """Read shards written since the last look (by this process or another)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("shard-*.npz")):
            if path.name in self._shards:
                continue
            try:
                with np.load(path, allow_pickle=False) as data:
                    keys, vectors = unpack_keys(data["keys"]), data["vectors"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced by compaction, or not a shard: skipped
            self._vectors.update(zip(keys, vectors, strict=True))
            self._shards.add(path.name)

    def get(self, keys: Iterable[bytes]) -> dict[bytes, np.ndarray]:
        """The stored vectors of ``keys`` (absent keys are left out)."""
        with self._lock:
            self._refresh()
            return {k: self._vectors[k] for k in keys if k in self._vectors}

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store ``vectors`` (one row per key) as a new shard, written atomically."""
        if not keys:
            return
        array = np.asarray(vectors, dtype=np.float32)
        if array.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys for {array.shape[0]} vectors")
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"shard-{time.time_ns()}-{os.getpid()}-{threading.get_ident()}.npz"
        with self._lock:
            _save(self.root / name, pack_keys(keys), array)
            self._vectors.update(zip(keys, array, strict=True))
            self._shards.add(name)

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._vectors)

    def compact(self, keep: set[bytes]) -> tuple[int, int]:
        """Rewrite the store with only the vectors of ``keep``; ``(kept, dropped)``."""
        with self._lock:
            self._refresh()
            old = sorted(self.root.glob("shard-*.npz")) if self.root.is_dir() else []
            kept = [k for k in self._vectors if k in keep]
            dropped = len(self._vectors) - len(kept)
            if not dropped:
                return len(kept), 0
            name = f"shard-{time.time_ns()}-{os.getpid()}-compact.npz"
            vectors = np.stack([self._vectors[k] for k in kept]) if kept else np.zeros((0, 1))
            _save(self.root / name, pack_keys(kept), vectors)
            for path in old:
                path.unlink(missing_ok=True)
            self._vectors = {k: self._vectors[k] for k in kept}
            self._shards = {name}
            return len(kept), dropped


def _save(path: Path, keys: np.ndarray, vectors: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".shard-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, keys=keys, vectors=vectors)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
