"""Names that become folder names (projects, baselines): checked once, the same way."""

from __future__ import annotations

import re

from datamodel.errors import ConfigError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""1-64 letters, digits, '_', '-', '.', starting with a letter or digit: no path tricks."""


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is safe as a folder name, else raise :class:`ConfigError`."""
    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(
            f"bad {what} name {name!r}, not allowed: use 1-64 letters, digits, '_', '-', '.', "
            "starting with a letter or digit"
        )
    return name
