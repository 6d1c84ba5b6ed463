"""The small protocol a service hosted in loadlens's replicas answers.

The builtin :class:`~workloads.service.service.Service` is one implementation; a
``--stack python:package.module:Class`` is another. Each op the profile sends needs its
method (checked before the run starts); ``stats`` is always needed. Results are
:class:`~workloads.service.service.OpResult`\\ s (stage timings, and what was switched or
missed); the replica turns them into records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from workloads.service.index import IngestReport
from workloads.service.service import OpResult


class ServiceProtocol(Protocol):
    """What a replica calls on the service it hosts."""

    def analyze(self, name: str, query: str) -> OpResult:
        """Answer ``query`` about project ``name`` (retrieval and the adapted model)."""

    def search(self, name: str, query: str, k: int | None = None) -> OpResult:
        """Search project ``name``'s index for ``query``."""

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, OpResult]:
        """Embed ``texts``."""

    def switch(self, name: str) -> OpResult:
        """Make project ``name`` the active one."""

    def ingest(self, name: str, *, rebuild: bool = False) -> IngestReport | None:
        """Build project ``name``'s index (``None`` when a fresh one exists)."""

    def stats(self) -> dict[str, Any]:
        """Cache counters and memory figures, JSON-ready."""
