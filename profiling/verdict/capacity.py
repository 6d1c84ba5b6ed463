"""How much load a configuration holds within its SLOs: the numbers of a capacity search.

A search (:mod:`workloads.runs.capacity`) measures levels of load (arrival rates, or
concurrent users) one after another in one session. This module judges them, with no Ray
and no clock of its own:

- an :class:`Slo` is a per-operation promise, ``analyze:p95<=2`` ("95% of analyze ops end
  within 2 s") or ``errors:rate<=0.01``; each becomes a proportion that must be reached
  (the *attainment*: the share of ops that kept it);
- a level's attainment is judged with time blocks as the units (operations in one second
  queue together, so they are not independent): the design effect of the blocks shrinks
  the sample to an effective size, and the Wilson interval of the attainment at that size
  says ``pass``, ``fail`` or ``unresolved`` (the interval straddles the target);
- the capacity is where the attainment, made monotone in the load by isotonic regression
  (scipy), crosses its target, interpolated between the neighbouring levels; its interval
  is the bootstrap over the levels' blocks, never narrower than the levels that bracket it
  (a search cannot resolve finer than the levels it measured);
- over-saturation: the backlog (operations in flight) growing with confidence (a Theil-Sen
  slope whose lower bound is above a share of the arrival rate) says a level is over
  capacity before its latencies do, and the search stops it early.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats
from scipy.optimize import isotonic_regression

from datamodel.errors import ConfigError
from datamodel.frame import Frame

Verdict = Literal["pass", "fail", "unresolved", "no data"]
CONFIDENCE = 0.95
"""Confidence of each level's attainment interval and of the capacity's interval."""
BLOCK_S = 1.0
"""Seconds of one time block: the unit of a level's attainment and of the bootstrap."""
BOOTSTRAP = 400
"""Bootstrap resamples of the capacity's interval."""
BACKLOG_SHARE = 0.03
"""A level is over capacity when its backlog grows faster than this share of its arrival
rate with confidence: a queue that gains 3 of every 100 arrivals never drains."""
METRIC = re.compile(r"^(?:(ttft)_)?p(\d{1,2}(?:\.\d+)?)$")
SLO_TEXT = re.compile(r"^\s*([\w.-]+)\s*:\s*([\w.]+)\s*(<=|<)\s*([0-9.eE+-]+)\s*(s|ms)?\s*$")


@dataclass(frozen=True)
class Slo:
    """One per-operation promise: a latency quantile under a bound, or errors under a rate."""

    op: str
    """An op name, ``all`` (every op), or ``errors``."""
    metric: str
    """``p95`` (end-to-end latency), ``ttft_p95`` (first token, HTTP stacks) or ``rate``."""
    threshold: float
    """Seconds for latency, a share (0..1) for the error rate."""
    source: str = "--slo"
    """Where it came from: ``--slo`` or ``targets: NAME``."""

    @property
    def text(self) -> str:
        """``op:metric<=threshold`` as the user writes it."""
        return f"{self.op}:{self.metric}<={self.threshold:g}"

    @property
    def need(self) -> float:
        """The attainment it needs: the quantile for latency, ``1 - rate`` for errors."""
        if self.op == "errors":
            return 1.0 - self.threshold
        match = METRIC.match(self.metric)
        assert match is not None
        return float(match.group(2)) / 100.0

    @property
    def latency_field(self) -> str | None:
        """The record field a latency SLO bounds (``duration`` or ``ttft``); ``None``
        for the error rate."""
        if self.op == "errors":
            return None
        match = METRIC.match(self.metric)
        return "ttft" if match and match.group(1) else "duration"

    def covers(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` counts toward this SLO."""
        return bool(self.covered(Frame.of([record]))[0])

    def kept(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` kept this SLO (a failed op never keeps a latency SLO)."""
        return bool(self.kept_by(Frame.of([record]))[0])

    def covered(self, frame: Frame) -> NDArray[np.bool_]:
        """Which records of ``frame`` count toward this SLO."""
        if self.op in ("all", "errors"):
            return np.ones(frame.n, dtype=bool)
        return frame.equals("op", self.op)

    def kept_by(self, frame: Frame) -> NDArray[np.bool_]:
        """Which records of ``frame`` kept this SLO (a failed op never keeps a latency
        SLO)."""
        if self.op == "errors":
            return frame.ok
        return frame.ok & (frame.value(self.latency_field or "duration") <= self.threshold)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, with its text and the attainment it needs."""
        return {**asdict(self), "text": self.text, "need": self.need}


def parse_slo(text: str, ops: Sequence[str]) -> Slo:
    """``OP:METRIC<=VALUE`` (``analyze:p95<=2``, ``all:p99<=500ms``, ``errors:rate<=0.01``,
    ``analyze:ttft_p95<=0.5``) as an :class:`Slo` over the known ``ops``;
    :class:`ConfigError` names what is wrong."""
    match = SLO_TEXT.match(text)
    if not match:
        raise ConfigError(
            f"--slo {text!r}: expected OP:METRIC<=VALUE, e.g. 'analyze:p95<=2' (seconds), "
            "'all:p99<=500ms' or 'errors:rate<=0.01'"
        )
    op, metric, _, value_text, unit = match.groups()
    try:
        value = float(value_text)
    except ValueError:
        raise ConfigError(f"--slo {text!r}: {value_text!r} is not a number") from None
    if op == "errors":
        if metric != "rate":
            raise ConfigError(f"--slo {text!r}: errors take the metric 'rate', got {metric!r}")
        if unit or not 0.0 <= value < 1.0:
            raise ConfigError(f"--slo {text!r}: an error rate is a share in [0, 1), got {value}")
        return Slo("errors", "rate", value)
    if op != "all" and op not in ops:
        raise ConfigError(
            f"--slo {text!r}: unknown op {op!r}; known: all, errors, {', '.join(ops)}"
        )
    quantile = METRIC.match(metric)
    if not quantile or not 0.0 < float(quantile.group(2)) < 100.0:
        raise ConfigError(
            f"--slo {text!r}: unknown metric {metric!r}; latency metrics are pNN (p50, p95, "
            "p99) or ttft_pNN (HTTP stacks), in seconds or with 'ms'"
        )
    seconds = value / 1000.0 if unit == "ms" else value
    if not seconds > 0.0:
        raise ConfigError(f"--slo {text!r}: a latency bound must be > 0, got {value}")
    return Slo(op, metric, seconds)


TARGET_METRIC = re.compile(r"^(?:p(\d{2})_s:([\w-]+)|([\w-]+)_p(\d{2})_s)$")


def slos_from_targets(targets: Sequence[Any], name: str) -> list[Slo]:
    """The latency targets of a targets file (``p95_s:OP``, ``OP_p99_s`` with ``<`` or
    ``<=``) as SLOs; the others (memory, init, counts) say nothing about a level of load."""
    out = []
    for target in targets:
        match = TARGET_METRIC.match(target.metric)
        if not match or target.op not in ("<", "<="):
            continue
        q, op = (match.group(1), match.group(2)) if match.group(1) else match.group(4, 3)
        out.append(Slo(op, f"p{q}", float(target.threshold), f"targets: {name}"))
    return out


THROUGHPUT = "throughput"
"""The limit's name when the SLOs held at every level measured below the saturated
throughput: the capacity is what the system can serve at all."""


@dataclass(frozen=True)
class Attainment:
    """One SLO at one level: the share of operations that kept it, with its interval."""

    slo: str
    need: float
    estimate: float | None
    low: float | None
    high: float | None
    n: int
    """Operations counted."""
    n_eff: float
    """Their effective number, blocks as units (``n`` divided by the design effect)."""
    verdict: Verdict


def blocks_of(times: np.ndarray, block_s: float = BLOCK_S) -> np.ndarray:
    """Block index of each time (seconds), counted from the first."""
    if times.size == 0:
        return np.zeros(0, dtype=int)
    return np.floor((times - times.min()) / block_s).astype(int)


def attainment(
    kept: np.ndarray, blocks: np.ndarray, need: float, slo: str, confidence: float = CONFIDENCE
) -> Attainment:
    """The share of ``kept`` (0/1 per operation), its Wilson interval at the effective
    sample size of the blocks, and its verdict against ``need``."""
    n = int(kept.size)
    if n == 0:
        return Attainment(slo, need, None, None, None, 0, 0.0, "no data")
    p = float(kept.mean())
    n_eff = float(n)
    ids, inverse = np.unique(blocks, return_inverse=True)
    if ids.size >= 2 and 0.0 < p < 1.0:
        hits = np.bincount(inverse, weights=kept.astype(float))
        counts = np.bincount(inverse).astype(float)
        b = ids.size
        # Variance of the ratio estimator with blocks as the sampled units.
        var = float(np.sum((hits - p * counts) ** 2) / (b * (b - 1)) / counts.mean() ** 2)
        if var > 0.0:
            n_eff = min(float(n), max(p * (1.0 - p) / var, 1.0))
    trials = max(round(n_eff), 1)
    ci = stats.binomtest(min(round(p * trials), trials), trials).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    low, high = float(ci.low), float(ci.high)
    verdict: Verdict = "pass" if low >= need else "fail" if high < need else "unresolved"
    return Attainment(slo, need, p, low, high, n, n_eff, verdict)


@dataclass
class LevelData:
    """What one level of load measured: its operations' SLO outcomes by block."""

    value: float
    """The level on the search's axis (arrivals per second, or users)."""
    kept: dict[str, np.ndarray]
    """SLO text -> 0/1 per operation it covers."""
    blocks: dict[str, np.ndarray]
    """SLO text -> block index per operation it covers."""
    over: bool = False
    """Stopped early as over capacity: every SLO counts as missed here."""
    unseen: float = 0.0
    """Open loop: the most backlog growth (operations a second) the level could have had
    unseen (the upper bound of its backlog slope): a level that passes at rate ``r`` shows
    a capacity of at least ``r - unseen``."""


def level_data(
    value: float,
    records: Sequence[Mapping[str, Any]],
    slos: Sequence[Slo],
    *,
    over: bool = False,
    unseen: float = 0.0,
    block_s: float = BLOCK_S,
) -> LevelData:
    """:class:`LevelData` of one level's records (planned times give the blocks)."""
    kept: dict[str, np.ndarray] = {}
    blocks: dict[str, np.ndarray] = {}
    frame = Frame.of(records)
    for slo in slos:
        mine = slo.covered(frame)
        kept[slo.text] = slo.kept_by(frame)[mine].astype(float)
        blocks[slo.text] = blocks_of(frame.value("planned")[mine], block_s)
    return LevelData(value, kept, blocks, over, unseen)


def judge_level(data: LevelData, slos: Sequence[Slo]) -> list[Attainment]:
    """Each SLO's attainment at one level; an over-capacity level fails every SLO."""
    out = []
    for slo in slos:
        got = attainment(data.kept[slo.text], data.blocks[slo.text], slo.need, slo.text)
        if data.over and got.verdict != "fail":
            got = Attainment(
                got.slo, got.need, got.estimate, got.low, got.high, got.n, got.n_eff, "fail"
            )
        out.append(got)
    return out


def level_verdict(attainments: Sequence[Attainment]) -> Verdict:
    """A level passes when every SLO passes, fails when any fails, else is unresolved."""
    verdicts = {a.verdict for a in attainments} - {"no data"}
    if "fail" in verdicts:
        return "fail"
    if verdicts == {"pass"}:
        return "pass"
    return "unresolved" if verdicts else "no data"


def _root(xs: np.ndarray, ys: np.ndarray, ws: np.ndarray, need: float) -> float:
    """Where the decreasing isotonic fit of ``ys`` over ``xs`` crosses ``need``: linear
    between the last level at or above it and the first below; ``xs[-1]`` when none is
    below (censored: at least that), ``0`` when the first already is."""
    fit = isotonic_regression(ys, weights=ws, increasing=False).x
    below = np.flatnonzero(fit < need)
    if below.size == 0:
        return float(xs[-1])
    i = int(below[0])
    if i == 0:
        return 0.0
    x0, x1, y0, y1 = xs[i - 1], xs[i], fit[i - 1], fit[i]
    return float(x0 + (y0 - need) / (y0 - y1) * (x1 - x0))


def _points(levels: Sequence[LevelData], slo: Slo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct level value: pooled attainment and its weight (operations)."""
    by: dict[float, list[np.ndarray]] = {}
    for level in levels:
        kept = level.kept[slo.text]
        by.setdefault(level.value, []).append(np.zeros_like(kept) if level.over else kept)
    xs = np.array(sorted(by))
    pooled = [np.concatenate(by[x]) for x in xs]
    ys = np.array([p.mean() if p.size else 1.0 for p in pooled])
    ws = np.array([max(p.size, 1) for p in pooled], dtype=float)
    return xs, ys, ws


@dataclass
class Capacity:
    """The answer of a search: the highest load that meets every SLO, with its interval."""

    value: float | None
    low: float | None
    high: float | None
    limiting_slo: str | None
    """The SLO that gives way first (the lowest crossing)."""
    censored: Literal["", "above", "below"] = ""
    """``above``: every level measured met the SLOs (capacity at least ``value``);
    ``below``: none did."""
    per_slo: dict[str, float] = field(default_factory=dict)
    """SLO text -> where it alone crosses."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def estimate(
    levels: Sequence[LevelData],
    slos: Sequence[Slo],
    *,
    confidence: float = CONFIDENCE,
    boots: int = BOOTSTRAP,
    seed: int = 0,
    ceiling: float | None = None,
    saturated: float | None = None,
) -> Capacity:
    """The capacity over ``levels`` (see the module docstring). An SLO no level has data
    for (its op is not in the mix) is left out. ``ceiling``: a load known to be over
    capacity without measuring it (arrivals above the saturated throughput's upper bound
    can never be served): it counts as a level that misses every SLO. When that bound is
    the first miss above the crossing, the levels say only that the SLOs hold up to the
    last one measured, not where they give way: the capacity is then the throughput
    (``saturated``, within the bracket) and the limit is named ``throughput``. The lower
    bound is never above the highest level under the estimate less the backlog growth
    that level could have hidden (:attr:`LevelData.unseen`): a short level a little over
    capacity meets its SLOs."""
    slos = [s for s in slos if any(level.kept[s.text].size for level in levels)]
    if not levels or not slos:
        return Capacity(None, None, None, None)
    if ceiling is not None and all(lv.value != ceiling for lv in levels):
        missed = {s.text: np.zeros(1) for s in slos}
        levels = [*levels, LevelData(ceiling, missed, {k: np.zeros(1, int) for k in missed}, True)]
    per_slo = {}
    for slo in slos:
        xs, ys, ws = _points(levels, slo)
        per_slo[slo.text] = _root(xs, ys, ws, slo.need)
    limiting = min(per_slo, key=lambda k: per_slo[k])
    value = per_slo[limiting]
    xs = np.array(sorted({lv.value for lv in levels}))
    if value <= 0.0:
        return Capacity(0.0, 0.0, float(xs[0]), limiting, "below", per_slo)
    rng = np.random.default_rng(seed)
    roots = []
    for _ in range(boots):
        resampled = [_resample(level, rng) for level in levels]
        roots.append(min(_root(*_points(resampled, slo), slo.need) for slo in slos))
    tail = (1.0 - confidence) / 2.0
    low, high = (float(v) for v in np.quantile(roots, [tail, 1.0 - tail]))
    below = xs[xs <= value]
    above = xs[xs > value]
    if below.size:
        hidden = [lv.unseen for lv in levels if lv.value == below[-1]]
        low = min(low, float(below[-1]) - max(float(np.mean(hidden)), 0.0))
    if above.size:
        high = max(high, float(above[0]))
        if (
            ceiling is not None
            and saturated is not None
            and above[0] == ceiling
            and below.size
            and below[-1] < saturated <= ceiling
        ):
            value, limiting, high = float(saturated), THROUGHPUT, float(ceiling)
        elif all(lv.over for lv in levels if lv.value == above[0]) and _kept_all(
            [lv for lv in levels if below.size and lv.value == below[-1]]
        ):
            # The next level failed only because its backlog grew (every SLO held below):
            # the limit is what the system can serve, not the SLO that happens to cross first.
            limiting = THROUGHPUT
        return Capacity(value, min(low, value), high, limiting, "", per_slo)
    return Capacity(value, low, None, limiting, "above", per_slo)


def _kept_all(levels: Sequence[LevelData]) -> bool:
    """Whether ``levels`` exist and every operation of them kept every SLO."""
    return bool(levels) and all(
        bool(np.all(kept == 1.0)) for level in levels for kept in level.kept.values()
    )


def _resample(level: LevelData, rng: np.random.Generator) -> LevelData:
    """``level`` with its blocks drawn again with replacement (one draw for every SLO)."""
    ids = sorted({int(b) for blocks in level.blocks.values() for b in blocks})
    if not ids:
        return level
    drawn = rng.choice(ids, size=len(ids), replace=True)
    kept, blocks = {}, {}
    for slo, values in level.kept.items():
        mine = level.blocks[slo]
        parts = [values[mine == b] for b in drawn]
        kept[slo] = np.concatenate(parts) if parts else values
        blocks[slo] = np.concatenate([np.full(p.size, k) for k, p in enumerate(parts)])
    return LevelData(level.value, kept, blocks, level.over, level.unseen)


@dataclass(frozen=True)
class Backlog:
    """Whether the operations in flight grow faster than a level can ever drain."""

    slope: float
    """Operations a second the backlog gained (Theil-Sen)."""
    low: float
    """Lower bound of the slope's interval."""
    growing: bool
    high: float = 0.0
    """Upper bound of the slope's interval: the most growth the level could hide."""


def backlog_growth(
    times: Sequence[float], in_flight: Sequence[float], rate: float, confidence: float = 0.95
) -> Backlog:
    """Theil-Sen slope of ``in_flight`` over ``times``: growing when its lower bound is
    above :data:`BACKLOG_SHARE` of ``rate`` and the backlog ends above a few operations."""
    t = np.asarray(times, dtype=float)
    y = np.asarray(in_flight, dtype=float)
    if t.size < 4 or np.ptp(t) <= 0.0:
        return Backlog(0.0, 0.0, False, float(rate))
    slope, _, low, high = stats.theilslopes(y, t, alpha=confidence)
    growing = bool(low > BACKLOG_SHARE * max(rate, 1e-9) and y[-1] >= 3.0 and y[-1] > y[0])
    return Backlog(float(slope), float(low), growing, float(high))


@dataclass(frozen=True)
class Rate:
    """Operations a second finished over a stretch, with a t interval of its seconds."""

    value: float
    low: float
    high: float


def finish_rate(
    ends: Sequence[float], start: float, seconds: float, confidence: float = CONFIDENCE
) -> Rate:
    """Completions a second between ``start`` and ``start + seconds`` (one-second blocks
    as the units; a t interval of their mean)."""
    counts = np.zeros(max(int(seconds), 1))
    for end in ends:
        k = int(end - start)
        if 0 <= k < counts.size:
            counts[k] += 1
    mean = float(counts.mean())
    if counts.size < 2:
        return Rate(mean, 0.0, math.inf)
    half = float(stats.t.ppf(0.5 + confidence / 2, counts.size - 1)) * float(
        counts.std(ddof=1) / math.sqrt(counts.size)
    )
    return Rate(mean, max(mean - half, 0.0), mean + half)


def goodput(
    records: Sequence[Mapping[str, Any]], slos: Sequence[Slo], seconds: float
) -> float | None:
    """Operations a second that completed and kept every latency SLO that covers them."""
    if not seconds > 0.0:
        return None
    return int(good_mask(Frame.of(records), slos).sum()) / seconds


def good_mask(frame: Frame, slos: Sequence[Slo]) -> NDArray[np.bool_]:
    """Which records of ``frame`` completed and kept every latency SLO that covers them:
    the one definition of a good operation (capacity levels, goodput, paired rows)."""
    good = frame.ok.copy()
    for slo in slos:
        if slo.latency_field:
            good &= ~slo.covered(frame) | slo.kept_by(frame)
    return good


def knee(values: Sequence[float], throughputs: Sequence[float]) -> float | None:
    """The highest level whose throughput still grows with the load: past it, each step
    of load adds under a quarter of its share in throughput (``None`` with < 3 levels)."""
    pairs = sorted(zip(values, throughputs, strict=True))
    if len(pairs) < 3:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(pairs):
        if x1 > x0 and y0 > 0 and (y1 / y0 - 1.0) < 0.25 * (x1 / x0 - 1.0):
            return float(x0)
    return None


def describe(capacity: Capacity, unit: str) -> str:
    """One sentence: "holds 6.2 ops/s [5.8, 6.5] (limited by analyze:p95<=2)"."""
    if capacity.value is None:
        return "no capacity: nothing was measured"
    if capacity.censored == "below":
        return (
            f"misses its SLOs at every level measured (down to {capacity.high:.3g} {unit}); "
            f"first to fail: {capacity.limiting_slo}"
        )
    if capacity.censored == "above":
        return (
            f"holds at least {capacity.value:.3g} {unit}: every level measured met its SLOs "
            f"(lower bound {capacity.low:.3g})"
        )
    limit = (
        "limited by throughput: every SLO held up to where the backlog grows"
        if capacity.limiting_slo == THROUGHPUT
        else f"limited by {capacity.limiting_slo}"
    )
    return f"holds {capacity.value:.3g} {unit} [{capacity.low:.3g}, {capacity.high:.3g}] ({limit})"


def relative_half_width(capacity: Capacity) -> float:
    """Half the interval's width over the value (``inf`` when open or unknown)."""
    if capacity.value in (None, 0.0) or capacity.low is None or capacity.high is None:
        return math.inf
    assert capacity.value is not None
    return (capacity.high - capacity.low) / 2.0 / capacity.value


def compare_capacities(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """B's capacity over A's (two ``capacity.json`` contents), with an interval.

    Each side's interval is read as a 95% interval of its log capacity (half its width in
    logs over 1.96 as its standard error) and the two combine as independent: a ratio's
    interval is wider than either side's. A side whose answer is censored (every level
    passed, or none did) gives a bound, not a ratio. Raises :class:`ConfigError` when the
    two searches used different axes or SLOs (their capacities would not be comparable)."""
    if a.get("axis") != b.get("axis"):
        raise ConfigError(
            f"capacities on different axes cannot be compared: {a.get('axis')} and {b.get('axis')}"
        )
    slos_a = sorted(s["text"] for s in a.get("slos", []))
    slos_b = sorted(s["text"] for s in b.get("slos", []))
    if slos_a != slos_b:
        raise ConfigError(
            f"capacities under different SLOs cannot be compared: {slos_a} and {slos_b}"
        )
    ca, cb = a["capacity"], b["capacity"]
    unit = ca.get("unit", "")
    out: dict[str, Any] = {"axis": a.get("axis"), "unit": unit, "a": ca, "b": cb}
    values = (ca.get("value"), cb.get("value"))
    bounds = (ca.get("low"), ca.get("high"), cb.get("low"), cb.get("high"))
    if any(v is None or v <= 0 for v in (*values, *bounds)):
        out.update(ratio=None, low=None, high=None)
        out["sentence"] = (
            "no ratio: a side's capacity is censored or unknown "
            f"(A: {ca.get('sentence')}; B: {cb.get('sentence')})"
        )
        return out
    z = float(stats.norm.ppf(0.975))
    se = [(math.log(hi) - math.log(lo)) / (2 * z) for lo, hi in (bounds[:2], bounds[2:])]
    log_ratio = math.log(values[1]) - math.log(values[0])
    half = z * math.hypot(*se)
    ratio, low, high = (math.exp(log_ratio + d) for d in (0.0, -half, half))
    out.update(ratio=ratio, low=low, high=high, significant=not low <= 1.0 <= high)
    out["sentence"] = (
        f"B holds {ratio:.2f}x [{low:.2f}, {high:.2f}] the {a.get('axis')} of A "
        f"({values[1]:.3g} vs {values[0]:.3g} {unit})"
        + ("" if out["significant"] else "; the interval holds 1: no difference shown")
    )
    return out


DEMAND = re.compile(
    r"^\s*(\d+)\s*projects?\s*[x*×]\s*([0-9.]+)\s*(?:ops?/s|/s)?\s*$", re.IGNORECASE
)


def parse_demand(text: str) -> tuple[int, float]:
    """``"20 projects x 0.3 ops/s"`` as ``(20, 0.3)``; :class:`ConfigError` otherwise."""
    match = DEMAND.match(text)
    if not match or not float(match.group(2)) > 0 or int(match.group(1)) < 1:
        raise ConfigError(
            f"--demand {text!r}: expected 'N projects x R ops/s' with N >= 1 and R > 0, "
            "e.g. '20 projects x 0.3 ops/s'"
        )
    return int(match.group(1)), float(match.group(2))


def plan(
    capacity: Capacity, demand: tuple[int, float], replicas: int, axis: str = "rate"
) -> dict[str, Any]:
    """How many machines like the one searched (each with ``replicas`` replicas) serve
    ``demand``, from the capacity's value and its lower bound, with the assumptions. On
    the ``projects`` axis the capacity is in projects at the demand's per-project rate."""
    projects, per_project = demand
    total = projects * per_project
    need = float(projects) if axis == "projects" else total
    out: dict[str, Any] = {
        "demand_ops_s": total,
        "projects": projects,
        "per_project_ops_s": per_project,
        "assumptions": [
            "the demand has the searched profile's mix and popularity",
            "capacity grows in proportion to machines (no shared bottleneck between them)",
            "the projects spread so that no machine gets more than its share",
            "the SLOs are the search's",
        ],
    }
    if capacity.value is None or capacity.value <= 0 or capacity.censored == "below":
        out["sentence"] = "no plan: the search found no load that meets the SLOs"
        return out
    likely = math.ceil(need / capacity.value)
    safe = math.ceil(need / capacity.low) if capacity.low else None
    out.update(machines=likely, machines_at_low=safe, replicas=likely * replicas)
    bound = f"; {safe} at the interval's low end" if safe and safe != likely else ""
    more = " at least" if capacity.censored == "above" else ""
    out["sentence"] = (
        f"{projects} projects x {per_project:g} ops/s = {total:.3g} ops/s needs{more} "
        f"{likely} machine(s) like this one ({likely * replicas} replicas){bound}"
    )
    return out
