"""The system under load: one MLX owner serving many projects.

A :class:`Service` holds one base model, one embedder, an adapter cache and an index
cache, and answers the operations users send: ``analyze``, ``search``, ``embed``,
``switch`` and ``ingest``. It needs no Ray; the Ray actor in the generator wraps it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from datamodel.cache import default_cache_dir
from datamodel.errors import ConfigError
from workloads.service.adapters import AdapterManager, AdapterSpec, generate_adapter
from workloads.service.basemodel import (
    BaseModel,
    BaseModelSpec,
    ensure_default_base_model,
    generate_greedy,
    load_base_model,
)
from workloads.service.embedder import Embedder
from workloads.service.embedstore import EmbeddingStore
from workloads.service.index import IngestReport, ProjectVectorStoreManager, SearchHit
from workloads.service.projects import Project, ProjectContextManager, SwitchTiming

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
STAGE_FRAMES: dict[str, tuple[str, ...]] = {
    "request": ("ServiceReplica.call",),
    "adapter": ("AdapterManager.activate", "AdapterManager.load"),
    "index": ("ProjectVectorStoreManager.load",),
    "embed": ("Embedder.embed",),
    "search": ("ProjectIndex.search",),
    "model": ("generate_greedy",),
}
"""Functions (as py-spy names them) that mark where a sampled stack is in a request: the
request's root, then the stage each one times. The verdict places hot code with these."""


@dataclass(frozen=True)
class ServiceConfig:
    """Everything that shapes one service replica. Sizes in bytes, counts in items."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    """Where generated models, adapters and indexes are kept between runs."""
    base_model: Path | None = None
    """An mlx-lm model folder; ``None`` generates the small default one."""
    base_spec: BaseModelSpec = field(default_factory=BaseModelSpec)
    """Shape of the generated default base model."""
    adapter_rank: int = 8
    """LoRA rank of generated per-project adapters."""
    adapter_cache_count: int = 8
    """Most adapters kept resident."""
    adapter_cache_bytes: int = 64 * 1024 * 1024
    """Most bytes of adapters kept resident."""
    index_cache_count: int = 8
    """Most project indexes kept in memory."""
    embed_batch_size: int = 32
    """Texts per embedding batch."""
    length_bucketing: bool = True
    """Sort texts by length and pad per batch (else pad every batch to the longest text)."""
    embed_max_tokens: int = 128
    """Texts are truncated to this many tokens before embedding."""
    fast_math: bool = True
    """Compiled GELU/softmax approximations in the embedder (exact ones when False)."""
    top_k: int = 4
    """Chunks retrieved per query."""
    prefill_tokens: int = 256
    """Most prompt tokens the base model reads per ``analyze``."""
    generate_tokens: int = 4
    """Tokens generated per ``analyze`` after the prefill."""
    max_chunks_per_project: int | None = None
    """Cap on chunks indexed per project (``None``: all of them)."""
    eager: bool = False
    """Load every adapter and index at start instead of on first use."""
    base_dtype: str = "float32"
    """Precision the base model runs in: float32, float16 or bfloat16 (adapters follow)."""
    mlx_cache_limit_mb: int | None = None
    """MLX buffer cache limit for the replica process (``None``: MLX's default)."""
    mlx_memory_limit_mb: int | None = None
    """MLX memory limit for the replica process (``None``: MLX's default)."""
    memory_budget_mb: int | None = None
    """Memory this replica may use, in MiB: what is left after the base model and embedder
    load (less MLX's cache limit) sizes the adapter and index caches; ``None``: no budget."""
    cpu_streams: int = 1
    """MLX CPU streams the embedder splits each batch over: the cores this replica gets
    (the runner sets it to the node's cores over its replicas there; 1 on Metal)."""

    def __post_init__(self) -> None:
        if self.base_dtype not in DTYPES:
            raise ConfigError(
                f"service config: base_dtype must be one of {sorted(DTYPES)}, "
                f"got {self.base_dtype!r}"
            )
        for name in (
            "adapter_rank",
            "adapter_cache_count",
            "adapter_cache_bytes",
            "index_cache_count",
            "embed_batch_size",
            "embed_max_tokens",
            "top_k",
            "prefill_tokens",
            "generate_tokens",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"service config: {name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent in each stage of one operation (0.0 for a stage it did not run).

    The names are :data:`datamodel.records.STAGES`; service time outside them is "other".
    """

    adapter: float = 0.0
    """Activating the project's adapter (reading it from disk on a cache miss)."""
    index: float = 0.0
    """Getting the project's index into memory (reading it on a cache miss)."""
    embed: float = 0.0
    """Embedding texts or the query."""
    search: float = 0.0
    """Searching the index."""
    model: float = 0.0
    """Running the base model with the active adapter."""


@dataclass(frozen=True)
class OpResult:
    """What one service operation returns: stage timings plus a small payload."""

    op: str
    project: str | None
    stages: StageTimings
    hits: list[tuple[str, int, int, float]] = field(default_factory=list)
    """Retrieved chunks as (file, first line, last line, score)."""
    tokens: list[int] = field(default_factory=list)
    """Tokens the base model generated."""
    switched: bool = False
    """Whether the operation changed the active project."""
    misses: list[str] = field(default_factory=list)
    """Caches that missed (``adapter``, ``index``): what had to be read from disk."""
    flops: float = 0.0
    """Estimated matmul floating-point operations of the embed and model stages."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (Ray sends this back to the generator)."""
        return asdict(self)


def _hits(hits: list[SearchHit]) -> list[tuple[str, int, int, float]]:
    return [(h.chunk.path, h.chunk.start_line, h.chunk.end_line, h.score) for h in hits]


def _misses(timing: SwitchTiming) -> list[str]:
    return [
        k for k, hit in (("adapter", timing.adapter_hit), ("index", timing.index_hit)) if not hit
    ]


MIB = 1024 * 1024
MIN_CACHE_BYTES = 4 * MIB
"""Smallest cache a budget leaves: one adapter and one index still fit (a degraded service,
swapping on every other request, rather than one that fails)."""


def _cache_budget(config: ServiceConfig) -> dict[str, int]:
    """Share out ``memory_budget_mb``: what this process does not hold yet (models loaded),
    less MLX's cache limit, goes 30% to adapters and 70% to indexes."""
    if config.memory_budget_mb is None:
        return {}
    import psutil

    held = psutil.Process().memory_info().rss
    mlx_cache = (config.mlx_cache_limit_mb or 0) * MIB
    left = config.memory_budget_mb * MIB - held - mlx_cache
    adapters = max(min(int(left * 0.3), config.adapter_cache_bytes), MIN_CACHE_BYTES)
    indexes = max(int(left * 0.7), MIN_CACHE_BYTES)
    return {
        "budget_bytes": config.memory_budget_mb * MIB,
        "held_at_start_bytes": held,
        "mlx_cache_limit_bytes": mlx_cache,
        "adapter_cache_bytes": adapters,
        "index_cache_bytes": indexes,
        "fits": int(left >= 2 * MIN_CACHE_BYTES),
    }


def linear_flops_per_token(model: Any) -> float:
    """Multiply-adds x 2 of one token through every linear layer of an mlx-lm model.

    Counts each ``nn.Linear``/``nn.QuantizedLinear`` weight once, plus the embedding table
    when the model ties it to the output head. Attention's own ``T^2`` products are left
    out (under 5% at the prompt lengths used here), so this is a slight underestimate.
    """
    import mlx.nn as nn

    total = 0
    for _, module in model.named_modules():
        if isinstance(module, nn.QuantizedLinear):
            out_dims, packed = module.weight.shape
            total += out_dims * packed * 32 // module.bits
        elif isinstance(module, nn.Linear):
            total += int(module.weight.size)
    args = getattr(model, "args", None)
    if getattr(args, "tie_word_embeddings", False):
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if embed is not None:
            total += int(embed.weight.size)
    return 2.0 * total


def _index_key(config: ServiceConfig) -> str:
    """Indexes differ by token window and chunk cap, so each pair gets its own folder."""
    cap = config.max_chunks_per_project
    return f"tok{config.embed_max_tokens}-cap{cap if cap is not None else 'all'}"


def adapter_root(cache: Path, base_path: Path) -> Path:
    """Where the adapters generated for the base model at ``base_path`` are kept."""
    key = hashlib.sha256(
        str(Path(base_path).resolve()).encode() + (Path(base_path) / "config.json").read_bytes()
    ).hexdigest()[:12]
    return Path(cache) / "adapters" / key


def project_adapter(root: Path, name: str, model: Any, rank: int) -> Path:
    """Project ``name``'s generated adapter under ``root`` (made once, from a seed of its
    name, so every process and run gets the same one)."""
    adapter = Path(root) / f"{name}-r{rank}"
    if not (adapter / "adapters.safetensors").is_file():
        generate_adapter(adapter, model, spec=AdapterSpec(rank=rank), seed=_stable_seed(name))
    return adapter


def _stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


class Service:
    """One replica's worth of the local AI stack, usable in-process without Ray."""

    def __init__(self, config: ServiceConfig, projects: Sequence[Project]) -> None:
        start = time.perf_counter()
        self.config = config
        cache = Path(config.cache_dir)
        base_path = config.base_model or ensure_default_base_model(
            cache / "models", config.base_spec
        )
        self.base: BaseModel = load_base_model(base_path)
        if config.base_dtype != "float32":
            self.base.model.set_dtype(DTYPES[config.base_dtype])
            mx.eval(self.base.model.parameters())
        self.model_flops_per_token = linear_flops_per_token(self.base.model)
        """Matmul FLOPs of one token through the base model (see :func:`linear_flops_per_token`)."""
        model_loaded = time.perf_counter()
        self.embedder = Embedder(
            batch_size=config.embed_batch_size,
            max_tokens=config.embed_max_tokens,
            length_bucketing=config.length_bucketing,
            fast_math=config.fast_math,
            streams=config.cpu_streams,
        )
        self.store = EmbeddingStore(cache / "embeddings" / self.embedder.identity)
        """Vectors by chunk content, shared by every replica and run on this machine."""
        embedder_loaded = time.perf_counter()
        self.adapter_root = adapter_root(cache, Path(base_path))
        self.budget = _cache_budget(config)
        """How the memory budget was shared out (empty without one)."""
        self.lock = threading.RLock()
        """Held while the caches change, so another thread can read :meth:`stats` safely."""
        self.adapters = AdapterManager(
            self.base.model,
            max_bytes=self.budget.get("adapter_cache_bytes", config.adapter_cache_bytes),
            max_count=config.adapter_cache_count,
            lock=self.lock,
        )
        self.indexes = ProjectVectorStoreManager(
            cache / "indexes" / _index_key(config),
            max_loaded=config.index_cache_count,
            max_bytes=self.budget.get("index_cache_bytes"),
            lock=self.lock,
        )
        self.projects = ProjectContextManager(self.adapters, self.indexes)
        for project in projects:
            self.add_project(project)
        if config.eager:
            for name in self.projects.projects:
                self.adapters.load(name)
                root = self.projects.projects[name].root
                if self.indexes.is_fresh(name, root, config.max_chunks_per_project):
                    self.indexes.load(name)
        end = time.perf_counter()
        self.init_seconds = {
            "base_model": model_loaded - start,
            "embedder": embedder_loaded - model_loaded,
            "projects": end - embedder_loaded,
            "total": end - start,
        }

    def add_project(self, project: Project) -> None:
        """Register ``project``; a project without an adapter gets a generated one (cached)."""
        adapter = project.adapter or project_adapter(
            self.adapter_root, project.name, self.base.model, self.config.adapter_rank
        )
        self.projects.add(project, adapter)

    def ingest(self, name: str, *, rebuild: bool = False) -> IngestReport | None:
        """Build ``name``'s index unless a fresh one exists; returns the report if it built.

        Chunks whose text the embedding store already has are not embedded again, so a
        rebuild after a small change embeds only what changed.
        """
        project = self.projects.get(name)
        cap = self.config.max_chunks_per_project
        if not rebuild and self.indexes.is_fresh(name, project.root, cap):
            return None
        return self.indexes.build(
            name,
            project.root,
            self.embedder.embed,
            max_chunks=cap,
            store=self.store,
            embedder_id=self.embedder.identity,
        )

    def ingest_plan(self, name: str) -> tuple[list[bytes], list[str], int]:
        """``(keys, texts, chunks)`` still to embed before ``name``'s index can be built
        (nothing when a fresh index exists), and its chunk count."""
        project = self.projects.get(name)
        cap = self.config.max_chunks_per_project
        if self.indexes.is_fresh(name, project.root, cap):
            return [], [], 0
        return self.indexes.missing(name, project.root, self.store, cap)

    def embed_into_store(self, keys: Sequence[bytes], texts: Sequence[str]) -> int:
        """Embed ``texts`` and keep their vectors in the store under ``keys``; returns how
        many. Any replica can do this for any project: the store is shared on disk."""
        self.store.put(list(keys), self.embedder.embed(texts))
        return len(texts)

    def switch(self, name: str) -> OpResult:
        """Make ``name`` the active project (adapter active, index loaded)."""
        previous = self.projects.current
        _, timing = self.projects.switch(name)
        return OpResult(
            "switch",
            name,
            StageTimings(adapter=timing.adapter_seconds, index=timing.index_seconds),
            switched=previous != name,
            misses=_misses(timing),
        )

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, OpResult]:
        """Embed ``texts`` (no project needed)."""
        start = time.perf_counter()
        flops0 = self.embedder.stats.flops
        vectors = self.embedder.embed(texts)
        result = OpResult(
            "embed",
            None,
            StageTimings(embed=time.perf_counter() - start),
            flops=self.embedder.stats.flops - flops0,
        )
        return vectors, result

    def search(self, name: str, query: str, k: int | None = None) -> OpResult:
        """Embed ``query`` and search ``name``'s index (the adapter is not touched)."""
        self.projects.get(name)
        misses0 = self.indexes.stats.misses
        t0 = time.perf_counter()
        index = self.indexes.load(name)
        t1 = time.perf_counter()
        flops0 = self.embedder.stats.flops
        vector = self.embedder.embed([query])[0]
        t2 = time.perf_counter()
        hits = index.search(vector, k or self.config.top_k)
        t3 = time.perf_counter()
        return OpResult(
            "search",
            name,
            StageTimings(index=t1 - t0, embed=t2 - t1, search=t3 - t2),
            _hits(hits),
            misses=["index"] if self.indexes.stats.misses > misses0 else [],
            flops=self.embedder.stats.flops - flops0,
        )

    def analyze(self, name: str, query: str) -> OpResult:
        """Switch to ``name`` if needed, retrieve code for ``query``, run the adapted model."""
        previous = self.projects.current
        index, timing = self.projects.switch(name)
        flops0 = self.embedder.stats.flops
        t1 = time.perf_counter()
        vector = self.embedder.embed([query])[0]
        t2 = time.perf_counter()
        hits = index.search(vector, self.config.top_k)
        t3 = time.perf_counter()
        context = "\n".join(h.chunk.text for h in hits)
        tokenizer = self.base.tokenizer
        prompt = tokenizer.encode(query).ids + tokenizer.encode(context).ids
        prompt = prompt[: self.config.prefill_tokens]
        tokens = generate_greedy(self.base.model, prompt, self.config.generate_tokens)
        t4 = time.perf_counter()
        processed = len(prompt) + max(self.config.generate_tokens - 1, 0)
        return OpResult(
            "analyze",
            name,
            StageTimings(
                adapter=timing.adapter_seconds,
                index=timing.index_seconds,
                embed=t2 - t1,
                search=t3 - t2,
                model=t4 - t3,
            ),
            _hits(hits),
            tokens,
            switched=previous != name,
            misses=_misses(timing),
            flops=self.embedder.stats.flops - flops0 + processed * self.model_flops_per_token,
        )

    def stats(self) -> dict[str, Any]:
        """Cache counters and memory figures of this replica, JSON-ready.

        Safe to call from another thread while a request runs (the caches' lock is held).
        """
        with self.lock:
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        return {
            "adapters": {
                **self.adapters.stats.as_dict(),
                "resident": self.adapters.resident,
                "bytes_resident": self.adapters.bytes_resident,
                "active": self.adapters.active,
            },
            "indexes": {
                "hits": self.indexes.stats.hits,
                "misses": self.indexes.stats.misses,
                "evictions": self.indexes.stats.evictions,
                "loaded": self.indexes.loaded,
                "bytes_loaded": self.indexes.bytes_loaded,
            },
            "switches": self.projects.switches,
            "mlx": {
                "active_bytes": mx.get_active_memory(),
                "peak_bytes": mx.get_peak_memory(),
                "cache_bytes": mx.get_cache_memory(),
            },
            "init_seconds": dict(self.init_seconds),
            "memory_budget": dict(self.budget),
        }
