"""Where loadlens keeps what it builds once and reuses: models, adapters, indexes, probes."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$LOADLENS_CACHE``, else ``~/.cache/loadlens``."""
    env = os.environ.get("LOADLENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "loadlens"
