"""Named system configurations (``workloads/configs/<name>.toml`` or a path): BLAS + service knobs.

A configuration file has ``description``, ``blas`` (``bundled`` or ``openblas``),
``affinity``, ``replicas``, ``allocator`` (``keep`` or ``return``) and a ``[service]``
table whose keys are :class:`ServiceConfig` fields. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamodel.errors import ConfigError
from workloads.service.service import ServiceConfig
from workloads.stack.allocator import ALLOCATORS
from workloads.stack.blas import BLAS_CHOICES

CONFIG_DIR = Path(__file__).parent.parent / "configs"
_SERVICE_KEYS = {f.name: f for f in dataclasses.fields(ServiceConfig)}
_SETTABLE = {k for k in _SERVICE_KEYS if k not in ("cache_dir", "base_model", "base_spec")}


@dataclass(frozen=True)
class SystemConfig:
    """One named configuration of the system under load."""

    name: str
    """The file's name without .toml."""
    description: str = ""
    """What this configuration is for."""
    blas: str = "openblas"
    """BLAS the replicas' MLX uses on Linux: ``bundled`` or ``openblas``."""
    service: dict[str, Any] = field(default_factory=dict)
    """ServiceConfig fields this configuration sets."""
    affinity: bool = True
    """Route each project to one replica (False: any replica serves any project)."""
    replicas: int | None = None
    """Service replicas for the run (``None``: the profile's number)."""
    allocator: str = "keep"
    """How a replica's C allocator hands freed memory back: ``keep`` (glibc's defaults) or
    ``return`` (see :mod:`workloads.stack.allocator`)."""


def list_configs() -> list[str]:
    """Names of the shipped configurations."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_config(name_or_path: str) -> SystemConfig:
    """Load a configuration by name or path; errors name the file and the key."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
    else:
        path = CONFIG_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(
                f"unknown config {name_or_path!r} (known: {', '.join(list_configs())})"
            )
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    allowed = {"description", "blas", "service", "affinity", "replicas", "allocator"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    affinity = raw.get("affinity", True)
    if not isinstance(affinity, bool):
        raise ConfigError(f"{path}: affinity must be true or false, got {affinity!r}")
    replicas = raw.get("replicas")
    if replicas is not None and (
        isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1
    ):
        raise ConfigError(f"{path}: replicas must be an integer >= 1, got {replicas!r}")
    blas = raw.get("blas", "openblas")
    if blas not in BLAS_CHOICES:
        raise ConfigError(f"{path}: blas must be one of {list(BLAS_CHOICES)}, got {blas!r}")
    allocator = raw.get("allocator", "keep")
    if allocator not in ALLOCATORS:
        raise ConfigError(f"{path}: allocator must be one of {list(ALLOCATORS)}, got {allocator!r}")
    service = raw.get("service", {})
    if not isinstance(service, dict):
        raise ConfigError(f"{path}: [service] must be a table")
    for key, value in service.items():
        if key not in _SETTABLE:
            raise ConfigError(
                f"{path}: [service] has unknown key {key!r} (known: {sorted(_SETTABLE)})"
            )
        want = _SERVICE_KEYS[key].type
        kind = {"bool": bool, "int": int, "int | None": int, "str": str}.get(str(want))
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{path}: [service] {key} must be true or false, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{path}: [service] {key} must be an integer, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ConfigError(f"{path}: [service] {key} must be a string, got {value!r}")
    return SystemConfig(
        name=path.stem,
        description=str(raw.get("description", "")),
        blas=blas,
        service=dict(service),
        affinity=affinity,
        replicas=replicas,
        allocator=allocator,
    )
