"""How much runs of one configuration drift apart on this machine, measured by A/A runs.

``python -m workloads.bench verdicts`` runs one configuration several times and writes what
it saw here, per kind of figure: the run-to-run standard deviation of the log figure beyond
within-run noise (``sigma``), its degrees of freedom, the typical within-run variance, and
the rounds a side an A/B needs to tell a 10% change. Comparisons use it as the prior of
the between-run variance (see :mod:`profiling.verdict.statistics`), so that two runs are
not called different for drifting as much as identical runs do here.

Files live in ``<cache>/calibration/<machine-key>/<profile>.json``. Without one for the
machine in hand, the default shipped in ``profiling/verdict/calibration/default.json``
(measured on the machine it names) is used as a weak prior only (at most
:data:`DEFAULT_PRIOR_DF` degrees of freedom), and comparisons say so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from datamodel.runfolder import write_json
from profiling.verdict.figures import LATENCY_METRICS, RunFigures, latency_levels, pool
from profiling.verdict.statistics import Level, Prior, power_rounds

KINDS = ("p50", "p95", "p99", "throughput", "memory")
"""Kinds of figure a calibration describes: latency quantiles, throughput, memory peak."""
DEFAULT_FILE = Path(__file__).resolve().parent / "calibration" / "default.json"
"""The calibration shipped with loadlens (used when the machine has none of its own)."""
DETECT = 0.10
"""The change a calibration sizes A/B rounds for."""
DEFAULT_PRIOR_DF = 3.0
"""Most degrees of freedom the shipped default's drift weighs as on a machine that has no
calibration of its own. It was measured on another machine (its ``machine`` says which), so
it says little about this one: at its full ~27 degrees of freedom it would decide the
between-run variance of every comparison, and a machine that drifts 2-3x more would raise
false alarms. At 3 it still keeps one run a side from being judged with no drift at all,
while an A/B's own rounds soon outweigh it and estimate the drift here."""


@dataclass(frozen=True)
class Calibration:
    """What A/A runs of one profile showed on one machine."""

    machine: str
    """CPU model, cores and memory, as run.json records them."""
    profile: str
    """Profile the runs used."""
    runs: int
    """A/A runs behind the figures."""
    sigma: dict[str, float]
    """Kind (``p95``) or op and kind (``analyze:p95``) -> run-to-run standard deviation of
    the figure beyond within-run noise: per op where the runs had that op, pooled per kind."""
    df: dict[str, float]
    """Kind -> degrees of freedom behind ``sigma``."""
    within: dict[str, float]
    """Kind -> typical within-run variance of one run's log figure."""
    rounds: dict[str, int | None]
    """Kind -> runs a side to detect a 10% change with 90% power (``None``: more than 50)."""
    measured_utc: str = ""
    """When."""
    command: str = ""
    """The command that measured it."""

    def prior(self, kind: str, source: str) -> Prior:
        """The prior of the between-run variance of ``kind`` (or ``op:kind``)."""
        return Prior(self.sigma.get(kind, 0.0), max(self.df.get(kind, 0.0), 1.0), source)

    def priors(self, source: str) -> dict[str, Prior]:
        """Every prior this calibration holds, by kind and by ``op:kind``."""
        return {key: self.prior(key, source) for key in self.sigma}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def machine_name(machine: Mapping[str, Any]) -> str:
    """``"<chip>, <n> CPUs, <m> GiB"`` from run.json's ``machine``."""
    gib = round(float(machine.get("memory_bytes") or 0) / 2**30)
    return f"{machine.get('chip')}, {machine.get('cpus_logical')} CPUs, {gib} GiB"


def machine_key(machine: Mapping[str, Any]) -> str:
    """A folder name for the machine: a hash of :func:`machine_name`."""
    return hashlib.sha256(machine_name(machine).encode()).hexdigest()[:16]


def _pooled_sigma(rows: list[list[Level]]) -> tuple[float, float, float]:
    """``(sigma^2, df, mean within variance)`` pooled over rows of per-run levels."""
    ss = df = within = 0.0
    for levels in rows:
        x = np.array([lv.value for lv in levels if math.isfinite(lv.value)])
        v = np.array([lv.var for lv in levels if math.isfinite(lv.value)])
        if x.size < 2:
            continue
        ss += max(float(x.var(ddof=1)) - float(v.mean()), 0.0) * (x.size - 1)
        within += float(v.mean()) * (x.size - 1)
        df += x.size - 1
    return (ss / df, df, within / df) if df else (0.0, 0.0, 0.0)


def build(
    machine: Mapping[str, Any],
    profile: str,
    runs: Sequence[RunFigures],
    peaks: Sequence[float],
    *,
    measured_utc: str = "",
    command: str = "",
) -> Calibration:
    """A :class:`Calibration` from A/A runs of one configuration (their figures and memory
    peaks in MB).

    Latency kinds are measured as the comparison tests them: per op, the share of each
    run's operations slower than the pooled quantile of all runs; the spread of those
    shares beyond their within-run variance is the between-run variance, pooled over ops.
    The 10% change a calibration sizes rounds for is, for a latency quantile, how much that
    share grows when every operation is 10% slower (read off the pooled durations).
    """
    sigma: dict[str, float] = {}
    df: dict[str, float] = {}
    within: dict[str, float] = {}
    rounds: dict[str, int | None] = {}
    ops = sorted({op for f in runs for op in f.durations})

    def keep(key: str, levels: list[list[Level]], effect: float) -> None:
        s2, nu, w = _pooled_sigma(levels)
        sigma[key], df[key], within[key] = math.sqrt(s2), nu, w
        rounds[key] = power_rounds(effect, sigma[key], w)

    for metric, q in LATENCY_METRICS.items():
        kind = metric.removesuffix("_s")
        rows, effects = [], []
        for op in ops:
            threshold, levels, _ = latency_levels(runs, [], op, q)
            pooled = pool(runs, op)
            if not pooled.size:
                continue
            slower = float((pooled * (1 + DETECT) > threshold).mean())
            effects.append(slower - float((pooled > threshold).mean()))
            rows.append(levels)
            keep(f"{op}:{kind}", [levels], effects[-1])  # each op drifts as much as it does
        keep(kind, rows, float(np.median(effects)) if effects else 0.0)
    for op in [*ops, "all"]:
        keep(
            f"{op}:throughput",
            [[f.throughput[op] for f in runs if op in f.throughput]],
            math.log1p(DETECT),
        )
    keep(
        "throughput",
        [[f.throughput[op] for f in runs if op in f.throughput] for op in [*ops, "all"]],
        math.log1p(DETECT),
    )
    logs = [Level(math.log(m), 0.0) for m in peaks if m > 0]
    s2, nu, w = _pooled_sigma([logs])
    sigma["memory"], df["memory"], within["memory"] = math.sqrt(s2), nu, w
    rounds["memory"] = power_rounds(math.log1p(DETECT), sigma["memory"], w)
    return Calibration(
        machine_name(machine), profile, len(runs), sigma, df, within, rounds, measured_utc, command
    )


def calibration_root(cache_dir: Path) -> Path:
    """Where this cache keeps calibrations."""
    return Path(cache_dir) / "calibration"


def save(calibration: Calibration, machine: Mapping[str, Any], cache_dir: Path) -> Path:
    """Write ``calibration`` for its machine and profile; returns the file."""
    path = calibration_root(cache_dir) / machine_key(machine) / f"{calibration.profile}.json"
    write_json(path, calibration.as_dict())
    return path


def read_calibration(path: Path) -> Calibration | None:
    """The calibration in ``path``; ``None`` when it is missing or not one."""
    try:
        data = json.loads(path.read_text())
        return Calibration(**data)
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Found:
    """The calibration a comparison uses, and whose it is."""

    calibration: Calibration
    """The figures (the shipped default's with its degrees of freedom capped)."""
    source: str
    """Where it came from, in words."""
    own: bool
    """Whether it was measured on this machine (``False``: the shipped default)."""


def weak(calibration: Calibration, most_df: float = DEFAULT_PRIOR_DF) -> Calibration:
    """``calibration`` with every degrees of freedom capped at ``most_df``."""
    df = {key: min(value, most_df) for key, value in calibration.df.items()}
    return replace(calibration, df=df)


def with_prior(
    own: Calibration, prior: Calibration, prior_df: float = DEFAULT_PRIOR_DF
) -> Calibration:
    """``own`` with ``prior``'s drift pooled in as ``prior_df`` more degrees of freedom.

    A calibration of a few runs can miss what drift looks like here: memory peaks that jump
    between two levels in one run of six, or a latency quantile that happened to agree in
    four runs, give a standard deviation near zero, and one run a side is then "significant"
    for drifting as identical runs do (measured: 5 of 15 one-run A/A pairs flagged on the
    memory row, each with run-to-run sd 0.002-0.003 from the four other runs). Pooling the
    variance with the shipped default as a weak prior keeps such a calibration from
    claiming certainty, while a calibration of many runs outweighs it (27 own degrees of
    freedom against 3). A key the prior lacks falls back to its kind (``analyze:p95`` to
    ``p95``); a key neither has keeps ``own``'s figure.
    """
    sigma, df = dict(own.sigma), dict(own.df)
    for key, s_own in own.sigma.items():
        s_prior = prior.sigma.get(key, prior.sigma.get(key.rpartition(":")[2]))
        if s_prior is None:
            continue
        nu = max(own.df.get(key, 0.0), 0.0)
        sigma[key] = math.sqrt((nu * s_own**2 + prior_df * s_prior**2) / (nu + prior_df))
        df[key] = nu + prior_df
    return replace(own, sigma=sigma, df=df)


def find_calibration(machine: Mapping[str, Any], profile: str | None, cache_dir: Path) -> Found:
    """The calibration that fits best, where it came from, and whether it is this machine's.

    This machine's file for ``profile``; else this machine's file for another profile (the
    one with the largest drift, to stay cautious); either pooled with the shipped default
    as a weak prior (:func:`with_prior`). Else the shipped default alone, as a weak prior
    (:data:`DEFAULT_PRIOR_DF`).
    """
    folder = calibration_root(cache_dir) / machine_key(machine)
    default = read_calibration(DEFAULT_FILE)
    pooled = (
        f", pooled with the shipped default as {DEFAULT_PRIOR_DF:g} degrees of freedom"
        if default
        else ""
    )
    if profile and (exact := read_calibration(folder / f"{profile}.json")):
        own = with_prior(exact, default) if default else exact
        return Found(own, f"A/A calibration of this machine, profile {profile}{pooled}", True)
    others = [c for p in sorted(folder.glob("*.json")) if (c := read_calibration(p))]
    if others:
        worst = max(others, key=lambda c: max(c.sigma.values(), default=0.0))
        own = with_prior(worst, default) if default else worst
        return Found(own, f"A/A calibration of this machine, profile {worst.profile}{pooled}", True)
    if default is None:  # pragma: no cover - the file ships with the package
        return Found(Calibration("unknown", "none", 0, {}, {}, {}, {}), "no calibration", False)
    return Found(
        weak(default),
        f"shipped default calibration ({default.machine}, profile {default.profile}) as a "
        f"weak prior of at most {DEFAULT_PRIOR_DF:g} degrees of freedom; run "
        "`python -m workloads.bench verdicts` to calibrate this machine",
        False,
    )


def find(
    machine: Mapping[str, Any], profile: str | None, cache_dir: Path
) -> tuple[Calibration, str]:
    """:func:`find_calibration` as ``(calibration, source)``."""
    found = find_calibration(machine, profile, cache_dir)
    return found.calibration, found.source
