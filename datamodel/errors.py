"""The small error hierarchy of loadlens.

Every error says what was wrong, where (a file, a project, a field) and, where it can,
what to do. Only the CLI's ``main()`` turns a :class:`LoadlensError` into an exit code.
"""

from __future__ import annotations


class LoadlensError(Exception):
    """Base of every error loadlens raises on purpose."""

    exit_code: int = 1


class ConfigError(LoadlensError):
    """A configuration, profile, flag or argument is invalid."""

    exit_code = 2


class ModelError(LoadlensError):
    """A base model or embedding model is missing, corrupt or does not fit."""


class AdapterError(LoadlensError):
    """A LoRA adapter is missing, corrupt, or does not fit the base model."""


class SourceFileError(LoadlensError):
    """A source file cannot be read as text (missing, binary or not UTF-8)."""


class ProjectError(LoadlensError):
    """A project is unknown, empty, or its source tree is missing."""


class IndexStoreError(LoadlensError):
    """A persisted vector index is missing or corrupt."""


class ResultsUnwritable(LoadlensError):
    """The results folder cannot be written: a full disk, a read-only or missing folder."""
