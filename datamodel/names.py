"""Names that become folder names (projects, baselines, profiles in run ids): checked once,
the same way; and the folders a run writes into."""

from __future__ import annotations

import os
import re
from pathlib import Path

from datamodel.errors import ConfigError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""1-64 letters, digits, '_', '-', '.', starting with a letter or digit: no path tricks."""


def check_folder(path: Path, what: str) -> Path:
    """``path`` if it is a folder or can become one; a file or an unwritable place is a
    :class:`ConfigError` naming ``what`` (e.g. ``--results-dir``)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written (no permission on {existing})")
    return path


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is safe as a folder name, else raise :class:`ConfigError`."""
    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(
            f"bad {what} name {name!r}, not allowed: use 1-64 letters, digits, '_', '-', '.', "
            "starting with a letter or digit"
        )
    return name
