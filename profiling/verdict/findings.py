"""What a finding is, and how findings are ranked.

A finding names a cause and the parts of the latency budget it explains. Causes of latency
claim seconds per record (see :class:`~profiling.verdict.attribution.Attribution`), so each
finding carries the seconds of user-visible latency it accounts for, over all records and
over the tail, in the same unit as every other finding. Errors come first, in their own
tier, when their rate is material; a leak that will exhaust memory soon ranks next (it is
a stability problem, not a latency one); then latency causes by their seconds. A finding
backed by too few records says so and ranks after every well-supported one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Tier = Literal["errors", "stability", "latency"]
TIERS: tuple[Tier, ...] = ("errors", "stability", "latency")
"""Ranking tiers, most urgent first."""
MIN_SHARE = 0.02
"""A latency cause is reported when it explains at least this share of the latency of all
records or of the tail."""
MIN_SUPPORT = 10
"""Records (or events) behind a finding for it to rank with well-supported ones."""


@dataclass(frozen=True)
class Finding:
    """One cause, with the seconds it explains and the numbers behind it."""

    kind: str
    """Cause name, e.g. ``adapter_thrash``."""
    title: str
    """One line saying what was found."""
    tier: Tier
    """``errors``, ``stability`` or ``latency``: the ranking tier."""
    explains: list[str]
    """Budget components it accounts for (e.g. ``adapter``, ``queue``)."""
    seconds: float
    """Seconds of latency, summed over all records, that it accounts for."""
    share: float
    """``seconds`` over the summed latency of all records."""
    tail_seconds: float
    """Seconds it accounts for in the tail (each op's slowest records)."""
    tail_share: float
    """``tail_seconds`` over the summed latency of the tail."""
    support: int
    """Records or events behind it."""
    evidence: dict[str, Any]
    """The numbers behind it."""
    files: list[str]
    """Run-folder files the numbers came from."""
    suggestion: str
    """What to change."""
    by_op: dict[str, float] = field(default_factory=dict)
    """Seconds it accounts for per op."""
    gain_s: float | None = None
    """Estimated seconds of latency saved if fixed, where it can be computed."""

    @property
    def weak(self) -> bool:
        """Backed by fewer than :data:`MIN_SUPPORT` records or events."""
        return self.support < MIN_SUPPORT

    @property
    def score(self) -> float:
        """The ranking key within a tier: the mean of its share overall and in the tail."""
        return (self.share + self.tail_share) / 2

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "weak": self.weak, "score": self.score}


@dataclass(frozen=True)
class Fact:
    """Context: something true about the run that explains no latency by itself."""

    kind: str
    """What it is about, e.g. ``cpu`` or ``hot_frames``."""
    title: str
    """One line."""
    evidence: dict[str, Any]
    """The numbers."""
    files: list[str]
    """Where they came from."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def rank(findings: list[Finding]) -> list[Finding]:
    """Tier first, then well-supported before weak, then score, then kind and title."""
    return sorted(findings, key=lambda f: (TIERS.index(f.tier), f.weak, -f.score, f.kind, f.title))


def latency_finding(
    kind: str,
    title: str,
    explains: list[str],
    claim: dict[str, Any],
    support: int,
    evidence: dict[str, Any],
    files: list[str],
    suggestion: str,
    gain_s: float | None = None,
) -> Finding:
    """A latency cause from a claim (:meth:`Attribution.claim`'s sums)."""
    return Finding(
        kind=kind,
        title=title,
        tier="latency",
        explains=explains,
        seconds=claim["seconds"],
        share=claim["share"],
        tail_seconds=claim["tail_seconds"],
        tail_share=claim["tail_share"],
        support=support,
        evidence=evidence,
        files=files,
        suggestion=suggestion,
        by_op=claim["by_op"],
        gain_s=gain_s,
    )


def stability_finding(
    kind: str,
    title: str,
    support: int,
    evidence: dict[str, Any],
    files: list[str],
    suggestion: str,
) -> Finding:
    """A stability finding (leak, over budget): ranked by tier, it claims no latency."""
    return Finding(
        kind=kind,
        title=title,
        tier="stability",
        explains=[],
        seconds=0.0,
        share=0.0,
        tail_seconds=0.0,
        tail_share=0.0,
        support=support,
        evidence=evidence,
        files=files,
        suggestion=suggestion,
    )


def material(claim: dict[str, Any]) -> bool:
    """Whether a claim explains enough latency (overall or in the tail) to report."""
    return max(claim["share"], claim["tail_share"]) >= MIN_SHARE
