"""Per-project LoRA adapters: generation, validation, an LRU cache, and in-place swapping.

Adapters use mlx-lm's on-disk format (``adapter_config.json`` + ``adapters.safetensors``
with keys ``model.layers.N.<module>.lora_a`` of shape (in, rank) and ``.lora_b`` of shape
(rank, out)), so mlx-lm's own ``load(..., adapter_path=...)`` reads the same folders.

Why not mlx-lm's ``load_adapters`` to switch: it rebuilds LoRA layers (attaching twice
nests LoRA inside LoRA), and ``load_weights(strict=False)`` checks nothing, so a wrong
rank fails only at the forward pass. Here the targeted linears of the resident base model
are wrapped once in a :class:`LoRASlot`; activating an adapter points each slot at the
adapter's (already validated) arrays, and deactivating clears them, which gives back the
exact base computation.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from datamodel.errors import AdapterError
from workloads.service.safetensors_check import check_safetensors

FLOAT_DTYPES = {"F16", "BF16", "F32"}


@dataclass(frozen=True)
class AdapterSpec:
    """How a generated default adapter looks."""

    rank: int = 8
    """LoRA rank."""
    scale: float = 20.0
    """mlx-lm's LoRA scale (multiplies the low-rank update)."""
    keys: tuple[str, ...] = ("self_attn.q_proj", "self_attn.v_proj")
    """Module paths inside each block that get a LoRA update."""
    num_layers: int = -1
    """How many of the last blocks are adapted; -1 means all."""


class _Active:
    """The arrays a slot currently adds (held outside the module's parameter tree)."""

    __slots__ = ("a", "b", "scale")

    def __init__(self, a: mx.array, b: mx.array, scale: float) -> None:
        self.a, self.b, self.scale = a, b, scale


class LoRASlot(nn.Module):
    """A base linear layer plus an optional low-rank update that can be swapped in place."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear
        self._active: _Active | None = None

    def set(self, active: _Active | None) -> None:
        """Use ``active``'s arrays from the next call on; ``None`` restores the base layer."""
        self._active = active

    def __call__(self, x: mx.array) -> mx.array:
        y = self.linear(x)
        act = self._active
        if act is None:
            return y
        return y + (act.scale * ((x @ act.a) @ act.b)).astype(x.dtype)


@dataclass
class Adapter:
    """A validated adapter resident in memory."""

    name: str
    path: Path
    rank: int
    scale: float
    weights: dict[str, tuple[mx.array, mx.array]]
    """Module path -> (lora_a, lora_b)."""
    nbytes: int


@dataclass
class AdapterStats:
    """Counters of an :class:`AdapterManager`; durations in seconds, one entry per event."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    load_seconds: list[float] = field(default_factory=list)
    activate_seconds: list[float] = field(default_factory=list)
    unload_seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "load_seconds": list(self.load_seconds),
            "activate_seconds": list(self.activate_seconds),
            "unload_seconds": list(self.unload_seconds),
        }


def _linear_dims(module: nn.Module) -> tuple[int, int]:
    out_dims, in_dims = module.weight.shape
    if isinstance(module, nn.QuantizedLinear):
        in_dims = in_dims * 32 // module.bits
    return in_dims, out_dims


def generate_adapter(path: Path, model: nn.Module, *, spec: AdapterSpec, seed: int) -> Path:
    """Write a random LoRA adapter for ``model`` into ``path`` in mlx-lm's format.

    ``lora_b`` is non-zero (unlike a fresh training run) so that each adapter really
    changes the model's outputs and a swap is observable.
    """
    layers = model.layers
    chosen = (
        range(len(layers))
        if spec.num_layers < 0
        else range(max(len(layers) - spec.num_layers, 0), len(layers))
    )
    modules = dict(model.named_modules())
    key = mx.random.key(seed)
    weights: dict[str, mx.array] = {}
    for i in chosen:
        for k in spec.keys:
            target = modules.get(f"model.layers.{i}.{k}")
            if target is None:
                raise AdapterError(f"base model has no module model.layers.{i}.{k} to adapt")
            while isinstance(target, LoRASlot):
                target = target.linear
            in_dims, out_dims = _linear_dims(target)
            key, ka, kb = mx.random.split(key, 3)
            bound = 1.0 / in_dims**0.5
            weights[f"model.layers.{i}.{k}.lora_a"] = mx.random.uniform(
                -bound, bound, (in_dims, spec.rank), key=ka
            )
            weights[f"model.layers.{i}.{k}.lora_b"] = 0.01 * mx.random.normal(
                (spec.rank, out_dims), key=kb
            )
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "fine_tune_type": "lora",
        "num_layers": len(layers) if spec.num_layers < 0 else spec.num_layers,
        "lora_parameters": {
            "rank": spec.rank,
            "scale": spec.scale,
            "dropout": 0.0,
            "keys": list(spec.keys),
        },
    }
    mx.save_safetensors(str(path / "adapters.safetensors"), weights)
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return path


def read_adapter(name: str, path: Path, model: nn.Module) -> Adapter:
    """Read and validate an adapter folder against ``model``; never touches the model.

    Checks: both files exist; the config is JSON with a LoRA rank and scale; the
    safetensors header is intact; every tensor is a float ``lora_a``/``lora_b`` of a
    linear module that exists in the base model, with shapes (in, rank) and (rank, out);
    each module has both halves.
    """
    path = Path(path)
    config_path = path / "adapter_config.json"
    weights_path = path / "adapters.safetensors"
    if not path.is_dir():
        raise AdapterError(f"adapter folder {path} for {name!r} does not exist")
    if not config_path.is_file():
        raise AdapterError(f"adapter {name!r}: {config_path} is missing")
    try:
        config = json.loads(config_path.read_text())
        if config.get("fine_tune_type", "lora") != "lora":
            raise AdapterError(
                f"adapter {name!r}: {config_path} has fine_tune_type "
                f"{config.get('fine_tune_type')!r}; only 'lora' can be swapped in place"
            )
        rank = int(config["lora_parameters"]["rank"])
        scale = float(config["lora_parameters"]["scale"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise AdapterError(
            f"adapter {name!r}: {config_path} is not a valid mlx-lm adapter config "
            f"(needs lora_parameters.rank and .scale): {exc!r}"
        ) from exc
    header = check_safetensors(weights_path, AdapterError)
    modules = dict(model.named_modules())
    halves: dict[str, dict[str, str]] = {}
    for tensor, info in header.items():
        module_path, _, leaf = tensor.rpartition(".")
        target = modules.get(module_path)
        if leaf not in ("lora_a", "lora_b") or target is None:
            raise AdapterError(
                f"adapter {name!r}: {weights_path} has tensor {tensor!r}, which is not a LoRA "
                "weight of a module in the base model"
            )
        while isinstance(target, LoRASlot):
            target = target.linear
        if not isinstance(target, (nn.Linear, nn.QuantizedLinear)):
            raise AdapterError(f"adapter {name!r}: {module_path} is not a linear layer")
        if info.dtype not in FLOAT_DTYPES:
            raise AdapterError(f"adapter {name!r}: {tensor} has dtype {info.dtype}, not float")
        in_dims, out_dims = _linear_dims(target)
        want = (in_dims, rank) if leaf == "lora_a" else (rank, out_dims)
        if info.shape != want:
            raise AdapterError(
                f"adapter {name!r}: {weights_path} tensor {tensor} has shape {list(info.shape)}, "
                f"the base model with rank {rank} needs {list(want)}"
            )
        halves.setdefault(module_path, {})[leaf] = tensor
    if not halves:
        raise AdapterError(f"adapter {name!r}: {weights_path} holds no LoRA tensors")
    for module_path, pair in halves.items():
        if len(pair) != 2:
            raise AdapterError(f"adapter {name!r}: {module_path} lacks lora_a or lora_b")
    try:
        arrays = mx.load(str(weights_path))
    except Exception as exc:  # mlx raises RuntimeError/ValueError on bad data
        raise AdapterError(f"adapter {name!r}: {weights_path} cannot be read: {exc}") from exc
    assert isinstance(arrays, dict)
    weights = {m: (arrays[p["lora_a"]], arrays[p["lora_b"]]) for m, p in halves.items()}
    mx.eval([w for pair in weights.values() for w in pair])
    nbytes = sum(a.nbytes + b.nbytes for a, b in weights.values())
    return Adapter(name=name, path=path, rank=rank, scale=scale, weights=weights, nbytes=nbytes)


class AdapterManager:
    """An LRU cache of adapters for one resident base model, swapped in place.

    ``max_bytes`` and ``max_count`` bound what stays resident; a load evicts the least
    recently used adapter, the active one only as a last resort (the model then runs
    as the plain base until the next activation). One thread serves requests; ``lock``
    (shared with the owning service) lets another thread read the figures meanwhile.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_bytes: int,
        max_count: int,
        lock: threading.RLock | None = None,
    ) -> None:
        if max_count < 1 or max_bytes < 1:
            raise AdapterError("adapter cache needs max_count >= 1 and max_bytes >= 1")
        self.model = model
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.stats = AdapterStats()
        self._paths: dict[str, Path] = {}
        self._cache: OrderedDict[str, Adapter] = OrderedDict()
        self._slots: dict[str, LoRASlot] = {}
        self.active: str | None = None
        self._lock = lock or threading.RLock()

    def register(self, name: str, path: Path) -> None:
        """Make adapter ``name`` known, read from ``path`` when first needed."""
        self._paths[name] = Path(path)

    @property
    def resident(self) -> list[str]:
        """Names of cached adapters, least recently used first."""
        with self._lock:
            return list(self._cache)

    @property
    def bytes_resident(self) -> int:
        """Bytes held by cached adapters."""
        with self._lock:
            return sum(a.nbytes for a in self._cache.values())

    def load(self, name: str) -> Adapter:
        """Return adapter ``name`` from the cache, reading and validating it on a miss."""
        with self._lock:
            return self._load(name)

    def _load(self, name: str) -> Adapter:
        if name in self._cache:
            self.stats.hits += 1
            self._cache.move_to_end(name)
            return self._cache[name]
        if name not in self._paths:
            known = ", ".join(sorted(self._paths)) or "none"
            raise AdapterError(f"no adapter registered as {name!r} (known: {known})")
        self.stats.misses += 1
        start = time.perf_counter()
        adapter = self._read(name)
        if adapter.nbytes > self.max_bytes:
            raise AdapterError(
                f"adapter {name!r} ({adapter.nbytes} bytes) is larger than the adapter cache "
                f"budget ({self.max_bytes} bytes)"
            )
        self._cache[name] = adapter
        self._evict_over_budget(keep=name)
        self.stats.load_seconds.append(time.perf_counter() - start)
        return adapter

    def _read(self, name: str) -> Adapter:
        """Read and validate adapter ``name`` from its folder (a cache miss)."""
        return read_adapter(name, self._paths[name], self.model)

    def _evict_over_budget(self, keep: str) -> None:
        while len(self._cache) > self.max_count or self.bytes_resident > self.max_bytes:
            # Prefer not to evict the active adapter; the budget is a hard limit though.
            others = [n for n in self._cache if n != keep]
            victim = next((n for n in others if n != self.active), others[0])
            self._drop(victim)
            self.stats.evictions += 1

    def _slot(self, module_path: str) -> LoRASlot:
        slot = self._slots.get(module_path)
        if slot is None:
            parent_path, _, attr = module_path.rpartition(".")
            parent = dict(self.model.named_modules())[parent_path]
            current = getattr(parent, attr)
            slot = current if isinstance(current, LoRASlot) else LoRASlot(current)
            setattr(parent, attr, slot)
            self._slots[module_path] = slot
        return slot

    def activate(self, name: str) -> None:
        """Make ``name`` the adapter the model runs with (loading it on a miss)."""
        with self._lock:
            self._activate(name)

    def _activate(self, name: str) -> None:
        adapter = self._load(name)
        start = time.perf_counter()
        if self.active != name:
            for slot in self._slots.values():
                slot.set(None)
            for module_path, (a, b) in adapter.weights.items():
                self._slot(module_path).set(_Active(a, b, adapter.scale))
            self.active = name
        self.stats.activate_seconds.append(time.perf_counter() - start)

    def deactivate(self) -> None:
        """Run the plain base model from now on."""
        for slot in self._slots.values():
            slot.set(None)
        self.active = None

    def _drop(self, name: str) -> None:
        if self.active == name:
            self.deactivate()
        del self._cache[name]

    def unload(self, name: str) -> bool:
        """Free adapter ``name``'s arrays; if it was active the base model is restored.

        Returns whether it was resident.
        """
        with self._lock:
            if name not in self._cache:
                return False
            start = time.perf_counter()
            self._drop(name)
            self.stats.unload_seconds.append(time.perf_counter() - start)
            return True
