"""The shared libraries a process has mapped: which BLAS really serves it (Linux)."""

from __future__ import annotations

from pathlib import Path


def loaded_blas(pid: int | str = "self") -> list[str]:
    """Paths of BLAS libraries mapped into process ``pid`` (Linux; empty elsewhere)."""
    maps = Path(f"/proc/{pid}/maps")
    if not maps.exists():
        return []
    found: list[str] = []
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        path = parts[5] if len(parts) == 6 else ""
        name = Path(path).name.lower()
        if ("blas" in name or "mkl" in name or "accelerate" in name) and path not in found:
            found.append(path)
    return found
