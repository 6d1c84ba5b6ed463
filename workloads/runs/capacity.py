"""Where it breaks: a capacity search in one session.

The stack under load is opened once (:func:`~workloads.runs.runner.open_side`: replicas
warm, indexes built, or the user's server up) and short levels of load run on it one after
another, each a stage named ``capacity-NN`` of the run folder's records:

1. one user, closed loop: the one-user rate, and whether the SLOs can be met at all (if
   one user misses them with confidence the search says so and stops);
2. many users, closed loop: the saturated throughput, which bounds the search;
3. levels on the search's axis (open-loop arrivals a second; concurrent users; or active
   projects, each at the same open-loop rate, picked uniformly), chosen
   by bracketing and then at the estimated crossing (:mod:`profiling.verdict.capacity`)
   until the capacity's interval is within ``precision`` of its value or the levels run
   out. A level that cannot be told from the SLO is measured again. An open-loop level
   whose backlog grows with confidence is stopped early as over capacity; after a failing
   level one user probes until the latency is back to the one-user figure (the system is
   drained and idle) before the next level starts.

``capacity.json`` in the run folder holds the axis, the SLOs, every level and the answer;
the run's own analysis, report and targets run as for any run.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from datamodel.errors import ConfigError, LoadlensError
from datamodel.records import number
from datamodel.runfolder import RunData, write_json
from profiling.verdict import capacity as cap
from profiling.verdict.analyze import analyze
from workloads.load.progress import Progress
from workloads.load.spec import Stage
from workloads.runs.live import Interrupts, Live, RunOutcome, RunSpec, run_stage
from workloads.runs.runner import close_folder, judge, open_folder, open_side

Axis = Literal["rate", "users", "projects"]
Kind = Literal["one user", "saturation", "level", "settle"]
AXES: tuple[Axis, ...] = ("rate", "users", "projects")
UNITS = {"rate": "ops/s", "users": "users", "projects": "projects"}
LEVEL_S = 10.0
"""Default seconds of one level."""
MAX_LEVELS = 12
"""Most levels on the axis (repeats included) before the search gives its answer."""
REPEATS = 2
"""Most extra measurements of a level that cannot be told from its SLOs."""
SETTLE_S = 1.5
"""Seconds of one idle probe after a failing level."""
SETTLE_MOST_S = 30.0
"""Most seconds spent waiting for the system to be idle again."""
SATURATED = 2.0
"""The saturation probe saturates when its median latency is at least this many times one
user's (requests queue); otherwise it doubles its users."""
MOST_USERS = 256
"""Most users of the saturation probe."""
BREAK_FACTOR = 1.15
"""Where the breaking level goes, over the saturated throughput's upper bound."""
SATURATION_LEVELS = 2
"""The saturation probe runs this many levels' time: its throughput bounds the search."""
IDLE_FACTOR = 1.5
"""Idle again: a lone user's median latency within this factor of the one-user level's."""


@dataclass(frozen=True)
class CapacitySpec:
    """What to search for: the axis, the SLOs, how precisely, with what levels."""

    axis: Axis
    slos: tuple[cap.Slo, ...]
    precision: float = 0.10
    """Stop once the interval's half-width is within this share of the value."""
    level_s: float = LEVEL_S
    max_levels: int = MAX_LEVELS
    saturation_users: int | None = None
    """Users of the saturation probe; ``None``: 4 per replica, at least 4."""
    demand: tuple[int, float] | None = None
    """``(projects, ops/s each)`` to plan machines for (``--demand``)."""
    project_rate: float | None = None
    """Projects axis: arrivals a second of each active project; ``None``: the demand's,
    else the profile's last stage's load spread over its projects."""

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ConfigError(f"--capacity: unknown axis {self.axis!r}; known: {', '.join(AXES)}")
        if not self.slos:
            raise ConfigError(
                "--capacity needs at least one SLO: give --slo OP:METRIC<=VALUE (e.g. "
                "'analyze:p95<=2') or a targets file with latency targets (p95_s:OP)"
            )
        if not 0.0 < self.precision < 1.0:
            raise ConfigError(f"--precision must be within (0, 1), got {self.precision}")
        if not self.level_s >= 1.0:
            raise ConfigError(f"--level-s must be >= 1 second, got {self.level_s}")
        if self.max_levels < 2:
            raise ConfigError(f"the search needs at least 2 levels, got {self.max_levels}")
        if self.project_rate is not None and not self.project_rate > 0.0:
            raise ConfigError(f"--project-rate must be > 0 ops/s, got {self.project_rate}")
        if self.project_rate is not None and self.axis != "projects":
            raise ConfigError(
                f"--project-rate is for --capacity projects, not --capacity {self.axis}"
            )


@dataclass
class Level:
    """One level measured."""

    number: int
    kind: Kind
    value: float
    """On the axis: arrivals a second, or users."""
    stage: str
    seconds: float
    records: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None
    backlog: cap.Backlog | None = None
    """Open loop: the backlog's growth over the level."""

    @property
    def on_axis(self) -> bool:
        return self.kind == "level"


class Search:
    """One capacity search on an opened stack (see the module docstring)."""

    def __init__(self, live: Live, spec: RunSpec, search: CapacitySpec, progress: Progress) -> None:
        self.live, self.spec, self.search, self.progress = live, spec, search, progress
        self.template = spec.profile.stages[-1]
        self.levels: list[Level] = []
        self.by_stage: dict[str, Level] = {}
        self.ended = ""
        self.saturated: cap.Rate | None = None
        """Throughput at saturation, with its interval: no arrival rate above it is served."""
        self.per_project: float | None = search.project_rate
        """Projects axis: each active project's arrivals a second."""
        self.per_project_from = "--project-rate" if search.project_rate else ""
        live.tap = self._take

    def _take(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            level = self.by_stage.get(str(record.get("stage")))
            if level is not None:
                level.records.append(record)

    # -- measuring ------------------------------------------------------------------------

    def stage_for(self, kind: str, value: float, seconds: float, number: int) -> Stage:
        name = f"capacity-{number:02d}" if kind != "settle" else f"capacity-settle-{number:02d}"
        closed = kind in ("one user", "saturation", "settle") or self.search.axis == "users"
        if not closed and self.search.axis == "projects":
            # ``value`` projects, each at the same rate: uniform over the first ``value``.
            per = self.per_project or 0.0
            return dataclasses.replace(
                self.template,
                name=name,
                mode="open",
                rate=per * value,
                projects=int(value),
                popularity="uniform",
                duration_s=seconds,
            )
        if closed:
            return dataclasses.replace(
                self.template,
                name=name,
                mode="closed",
                users=max(1, int(value)),
                think_time_s=0.0 if kind != "level" else self.template.think_time_s,
                duration_s=seconds,
            )
        return dataclasses.replace(
            self.template, name=name, mode="open", rate=float(value), duration_s=seconds
        )

    def measure(self, kind: Kind, value: float) -> Level:
        number = len(self.levels)
        seconds = {"settle": SETTLE_S, "saturation": SATURATION_LEVELS * self.search.level_s}.get(
            kind, self.search.level_s
        )
        stage = self.stage_for(kind, value, seconds, number)
        level = Level(number, kind, value, stage.name, seconds)
        self.levels.append(level)
        self.by_stage[stage.name] = level
        watch = None
        if stage.mode == "open":
            watch = self._watcher(level, stage.rate)
        if kind != "settle":
            self.progress.say(f"capacity: {kind} {value:.3g} {self._unit(kind)} ({seconds:g} s)")
        started = time.perf_counter()
        done = run_stage(
            self.live, stage, number, seed_index=1000 + number, snapshot=False, watch=watch
        )
        # Until the last reply: throughput counts what finished over the time it took.
        level.seconds = max(time.perf_counter() - started, 1e-3)
        level.stopped_early = done.get("stopped_early")
        if level.stopped_early:
            self.live.fleet.resume()
            self.progress.say(f"capacity: stopped early: {level.stopped_early}")
        return level

    def _unit(self, kind: str) -> str:
        if kind in ("one user", "saturation"):
            return "users"
        return UNITS[self.search.axis]

    def _watcher(self, level: Level, rate: float) -> Any:
        times: list[float] = []
        counts: list[float] = []

        def watch(elapsed: float) -> str | None:
            times.append(elapsed)
            counts.append(float(len(self.live.fleet.in_flight())))
            if elapsed > self.search.level_s:  # the arrivals are over: the rest is draining
                return None
            backlog = level.backlog = cap.backlog_growth(times, counts, rate)
            if elapsed < max(3.0, 0.3 * self.search.level_s):
                return None
            if backlog.growing:
                return (
                    f"over capacity: the backlog grew {backlog.slope:.2g} ops/s (at least "
                    f"{backlog.low:.2g}) at {rate:.3g} arrivals/s, to {counts[-1]:.0f} in flight"
                )
            return None

        return watch

    def settle(self, baseline_p50: float | None) -> None:
        """After a failing level: one user probes until latency is back (or time is up)."""
        if baseline_p50 is None:
            return
        started = time.perf_counter()
        while time.perf_counter() - started < SETTLE_MOST_S:
            if self.live.interrupts.count:
                return
            probe = self.measure("settle", 1)
            p50 = _p50(probe.records)
            if p50 is not None and p50 <= IDLE_FACTOR * baseline_p50:
                return
        self.progress.say(
            f"capacity: not idle after {SETTLE_MOST_S:.0f} s (a lone user's latency is above "
            f"{IDLE_FACTOR:g}x the one-user level); the next level may start behind"
        )

    # -- judging ------------------------------------------------------------------------

    def data(self, level: Level) -> cap.LevelData:
        return cap.level_data(
            level.value,
            level.records,
            self.search.slos,
            over=bool(level.stopped_early) or self._above_ceiling(level),
            unseen=self._unseen(level),
        )

    def _unseen(self, level: Level) -> float:
        """The backlog growth a level could hide: its slope's upper bound, and never more
        than its arrivals exceed the saturated throughput's lower bound."""
        if level.backlog is None:
            return 0.0
        if self.search.axis == "projects":
            # Fewer projects may serve more than saturation over all of them did: no cap.
            return max(level.backlog.high, 0.0) / (self.per_project or 1.0)
        if self.saturated is None:
            return max(level.backlog.high, 0.0)
        return max(min(level.backlog.high, level.value - self.saturated.low), 0.0)

    def _above_ceiling(self, level: Level) -> bool:
        """A level on the rate axis above what saturation served cannot be sustained."""
        return level.on_axis and self.ceiling is not None and level.value > self.ceiling

    @property
    def ceiling(self) -> float | None:
        """Rate axis: the saturated throughput's upper bound, over capacity unmeasured."""
        if self.search.axis != "rate" or self.saturated is None:
            return None
        return self.saturated.high

    def verdict(self, level: Level) -> cap.Verdict:
        return cap.level_verdict(cap.judge_level(self.data(level), self.search.slos))

    def pooled(self, value: float) -> list[cap.Attainment]:
        """Every SLO's attainment over every measurement at ``value`` together."""
        same = [lv for lv in self.levels if lv.on_axis and lv.value == value]
        records = [r for lv in same for r in lv.records]
        merged = cap.level_data(
            value, records, self.search.slos, over=any(lv.stopped_early for lv in same)
        )
        return cap.judge_level(merged, self.search.slos)

    def pooled_verdict(self, value: float) -> cap.Verdict:
        """The verdict of every measurement at ``value`` together."""
        return cap.level_verdict(self.pooled(value))

    def side(self, value: float) -> cap.Verdict:
        """Which side of the capacity ``value`` is on, for choosing the next level: its
        verdict, or where it cannot be told, its point estimate's."""
        verdict = self.pooled_verdict(value)
        if verdict != "unresolved":
            return verdict
        told = [a for a in self.pooled(value) if a.estimate is not None]
        return "pass" if all(a.estimate >= a.need for a in told) else "fail"  # type: ignore[operator]

    def near(self, value: float) -> bool:
        """Whether ``value`` is worth measuring again: it cannot be told from its SLOs and
        some of its operations missed them (all kept: more of it would only confirm)."""
        got = self.pooled(value)
        return cap.level_verdict(got) == "unresolved" and any(
            a.estimate is not None and a.estimate < 1.0 for a in got
        )

    def estimate(self) -> cap.Capacity:
        return cap.estimate(
            [self.data(lv) for lv in self.levels if lv.on_axis],
            self.search.slos,
            seed=0,
            ceiling=self.ceiling,
            saturated=self.saturated.value if self.saturated else None,
        )

    # -- the search ---------------------------------------------------------------------

    def run(self) -> None:
        """One user, saturation, then levels on the axis until the answer is precise."""
        one = self.measure("one user", 1)
        if self.verdict(one) == "fail":
            self.ended = (
                "the SLOs cannot be met at all: one user alone misses them "
                f"({self._failing(one)}); no search"
            )
            return
        one_p50 = _p50(one.records)
        users = self.search.saturation_users or max(4, 4 * self.spec.profile.replicas)
        while True:
            saturated = self.measure("saturation", users)
            sat_p50 = _p50(saturated.records)
            queued = one_p50 is None or sat_p50 is None or sat_p50 >= SATURATED * one_p50
            if queued or users >= MOST_USERS or self.live.interrupts.count:
                break
            users *= 2  # latency did not grow: these users did not saturate it yet
        self.saturated = _finish_rate(saturated, SATURATION_LEVELS * self.search.level_s)
        if self.live.interrupts.count:
            return
        if self.search.axis == "users":
            self._search_users(users, one_p50)
        elif self.search.axis == "projects":
            self._search_projects(one_p50)
        else:
            self._search_rate(self.saturated.value, one_p50)
        self._break(one_p50)

    def _break(self, one_p50: float | None) -> None:
        """When no level measured missed the SLOs (the saturated throughput bounded the
        search), one level past that bound, to see what gives way there."""
        on_axis = [lv for lv in self.levels if lv.on_axis]
        if self.live.interrupts.count or not on_axis or self.search.axis != "rate":
            return
        if any(self.side(lv.value) == "fail" for lv in on_axis) or self.ceiling is None:
            return
        self.measure("level", BREAK_FACTOR * self.ceiling)
        self.settle(one_p50)

    def _step(self, value: float, one_p50: float | None) -> cap.Verdict:
        """Measure ``value`` (again while it cannot be told, up to :data:`REPEATS`)."""
        verdict: cap.Verdict = "no data"
        for _ in range(1 + REPEATS):
            if self.live.interrupts.count or self._spent():
                break
            level = self.measure("level", value)
            verdict = self.pooled_verdict(value)
            if verdict == "fail" or level.stopped_early:
                self.settle(one_p50)
            if not self.near(value):
                break
        return verdict

    def _spent(self) -> bool:
        return sum(1 for lv in self.levels if lv.on_axis) >= self.search.max_levels

    def _search_rate(self, x_sat: float, one_p50: float | None) -> None:
        if not x_sat > 0:
            self.ended = "no operation completed at saturation: nothing to search"
            return
        value = 0.5 * x_sat
        ceiling = self.ceiling or 1.5 * x_sat
        while not self.live.interrupts.count and not self._spent():
            self._step(value, one_p50)
            nxt = self._next(value, ceiling, floor=0.05 * x_sat)
            if nxt is None:
                return
            value = nxt

    def _search_users(self, saturation_users: int, one_p50: float | None) -> None:
        value = 1.0
        ceiling = float(4 * saturation_users)
        while not self.live.interrupts.count and not self._spent():
            self._step(value, one_p50)
            nxt = self._next(value, ceiling, floor=1.0, whole=True)
            if nxt is None:
                return
            value = nxt

    def _project_rate(self, one_p50: float | None) -> float:
        """Each active project's arrivals a second: ``--project-rate``, else the demand's,
        else the profile's last stage's load spread over the projects it touches (a closed
        stage's users each at one op per think time plus one user's median latency)."""
        if self.per_project:
            return self.per_project
        if self.search.demand:
            self.per_project_from = "--demand"
            return self.search.demand[1]
        stage = self.template
        touched = stage.projects or self.spec.profile.projects
        self.per_project_from = f"stage {stage.name!r} of the profile, over {touched} projects"
        if stage.mode == "open":
            return stage.rate / touched
        cycle = stage.think_time_s + (one_p50 or 0.0)
        return stage.users / cycle / touched if cycle > 0 else 0.0

    def _search_projects(self, one_p50: float | None) -> None:
        self.per_project = self._project_rate(one_p50)
        most = float(self.spec.profile.projects)
        if not self.per_project > 0.0:
            self.ended = "no per-project rate: give --project-rate R (ops/s of each project)"
            return
        sat = self.saturated.value if self.saturated else 0.0
        value = min(most, _whole(0.5 * sat / self.per_project))
        while not self.live.interrupts.count and not self._spent():
            self._step(value, one_p50)
            nxt = self._next(value, most, floor=1.0, whole=True)
            if nxt is None:
                if self.ended.startswith("every level"):
                    self.ended += (
                        f" (the run has {most:.0f} projects: --projects N searches further)"
                    )
                return
            value = nxt

    def _next(
        self, value: float, ceiling: float, floor: float, whole: bool = False
    ) -> float | None:
        """The next level, or ``None`` when the answer is found (``self.ended`` says how)."""
        measured = sorted({lv.value for lv in self.levels if lv.on_axis})
        verdicts = {v: self.side(v) for v in measured}
        passing = [v for v in measured if verdicts[v] == "pass"]
        failing = [v for v in measured if verdicts[v] == "fail"]
        if self.ceiling is not None and not any(v >= self.ceiling for v in failing):
            failing.append(self.ceiling)  # over capacity unmeasured: a failing bound
        if not failing:
            up = max(measured) * (2.0 if whole else 1.4)
            if max(measured) >= ceiling:
                self.ended = f"every level up to {max(measured):.3g} met the SLOs"
                return None
            return _whole(min(up, ceiling)) if whole else min(up, ceiling)
        if not passing:
            down = min(measured) / 2.0
            if down < floor or (whole and min(measured) <= 1.0):
                self.ended = f"no level down to {min(measured):.3g} met the SLOs"
                return None
            return _whole(down) if whole else down
        found = self.estimate()
        if cap.relative_half_width(found) <= self.search.precision:
            self.ended = f"interval within {self.search.precision:.0%} of the value"
            return None
        lo = max(passing)
        above = [v for v in failing if v > lo]
        hi = min(above) if above else max(measured) * 1.4
        if whole:
            if hi - lo <= 1:
                unit = UNITS[self.search.axis]
                self.ended = f"{lo:.0f} {unit} pass and {hi:.0f} fail: resolved to one step"
                return None
            guess = _whole(found.value if found.value else (lo + hi) / 2)
            if guess in measured or not lo < guess < hi:
                guess = _whole((lo + hi) / 2)
            return guess if guess not in measured else None
        # The estimated crossing where it splits the bracket well; else its middle (an
        # estimate that hugs one end would creep there by small steps).
        guess = found.value or math.sqrt(lo * hi)
        where = (guess - lo) / (hi - lo)
        if not 0.25 <= where <= 0.75:
            guess = math.sqrt(lo * hi)
        return guess

    def _failing(self, level: Level) -> str:
        got = cap.judge_level(self.data(level), self.search.slos)
        return "; ".join(
            f"{a.slo} kept by {a.estimate:.0%} of ops, needs {a.need:.0%}"
            for a in got
            if a.verdict == "fail" and a.estimate is not None
        )


def _whole(value: float) -> float:
    return float(max(1, round(value)))


def _p50(records: Sequence[dict[str, Any]]) -> float | None:
    values = [number(r.get("duration")) for r in records if r.get("ok")]
    return statistics.median(values) if values else None


def _finish_rate(level: Level, seconds: float) -> cap.Rate:
    """Completions a second over a level's first ``seconds``, with their interval."""
    if not level.records:
        return cap.Rate(0.0, 0.0, 0.0)
    start = min(number(r.get("planned")) for r in level.records)
    ends = [
        number(r.get("planned")) + number(r.get("duration")) for r in level.records if r.get("ok")
    ]
    return cap.finish_rate(ends, start, seconds)


def _throughput(level: Level) -> float:
    ok = sum(1 for r in level.records if r.get("ok"))
    return ok / level.seconds if level.seconds > 0 else 0.0


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _arrivals(search: Search, level: Level) -> float | None:
    """An open-loop level's arrivals a second (``None``: closed loop)."""
    if not level.on_axis or search.search.axis == "users":
        return None
    if search.search.axis == "projects":
        return level.value * (search.per_project or 0.0)
    return level.value


def level_row(search: Search, level: Level) -> dict[str, Any]:
    """One level as ``capacity.json`` holds it."""
    attainments = cap.judge_level(search.data(level), search.search.slos)
    durations = [number(r.get("duration")) for r in level.records if r.get("ok")]
    return {
        "number": level.number,
        "kind": level.kind,
        "value": level.value,
        "unit": search._unit(level.kind),
        "stage": level.stage,
        "arrivals_ops_s": _arrivals(search, level),
        "seconds": level.seconds,
        "operations": len(level.records),
        "errors": sum(1 for r in level.records if not r.get("ok")),
        "throughput_ops_s": _throughput(level),
        "goodput_ops_s": cap.goodput(level.records, search.search.slos, level.seconds),
        "p50_s": _quantile(durations, 0.50),
        "p95_s": _quantile(durations, 0.95),
        "p99_s": _quantile(durations, 0.99),
        "stopped_early": level.stopped_early,
        "backlog": dataclasses.asdict(level.backlog) if level.backlog else None,
        "attainment": [dataclasses.asdict(a) for a in attainments],
        "verdict": cap.level_verdict(attainments),
    }


def why(run_dir: Any, search: Search, capacity: cap.Capacity) -> dict[str, Any]:
    """The ranked causes of the last passing level beside the first failing one above it,
    and what fixing each of them might buy (:func:`if_fixed`)."""
    on_axis = [lv for lv in search.levels if lv.on_axis and lv.records]
    verdicts = {lv.number: search.side(lv.value) for lv in on_axis}
    passing = [lv for lv in on_axis if verdicts[lv.number] == "pass"]
    last_pass = max(passing, key=lambda lv: lv.value) if passing else None
    failing = [
        lv
        for lv in on_axis
        if verdicts[lv.number] == "fail" and (last_pass is None or lv.value > last_pass.value)
    ]
    first_fail = min(failing, key=lambda lv: lv.value) if failing else None
    try:
        run = RunData.load(run_dir)
    except LoadlensError:
        return {}
    out: dict[str, Any] = {}
    for name, level in (("last_pass", last_pass), ("first_fail", first_fail)):
        if level is None:
            continue
        mine = dataclasses.replace(run, records=[dict(r) for r in level.records])
        try:
            found = analyze(mine, [])
        except LoadlensError as exc:
            out[name] = {"level": level.number, "value": level.value, "problem": str(exc)}
            continue
        out[name] = {
            "level": level.number,
            "value": level.value,
            "causes": [
                {
                    "kind": f.kind,
                    "title": f.title,
                    "share": f.share,
                    "tier": f.tier,
                    "gain_s": f.gain_s,
                }
                for f in found.findings[:5]
            ],
        }
    if "last_pass" in out and "first_fail" in out:
        out["grew"] = _grew(out["last_pass"]["causes"], out["first_fail"]["causes"])
    if "last_pass" in out and capacity.value and capacity.censored != "below":
        out["if_fixed"] = if_fixed(out["last_pass"]["causes"], capacity.value)
    return out


MOST_GAIN = 0.9
"""A cause's share above this is read as this: removing all of an op's time is no answer."""


def if_fixed(causes: list[dict[str, Any]], value: float) -> list[dict[str, Any]]:
    """What capacity removing each cause with an estimated gain might buy: at the last level
    that held, where little of the latency is queue, a cause's share of latency is about its
    share of the time each op holds what limits the load, so without it that resource
    serves ``1 / (1 - share)`` as many. An upper estimate: the cause removed entirely, and
    its time spent on what limits the load (not, say, in a wait beside it)."""
    out = []
    for cause in causes:
        if cause.get("gain_s") is None or cause.get("tier") == "errors":
            continue
        share = max(float(cause["share"]), 0.0)
        if share < 0.05:
            continue
        estimate = value / (1.0 - min(share, MOST_GAIN))
        more = "more than " if share > MOST_GAIN else ""
        out.append(
            {
                "kind": cause["kind"],
                "title": cause["title"],
                "share": share,
                "capacity": estimate,
                "sentence": (
                    f"fixing {cause['kind']} ({share:.0%} of latency where it held) might "
                    f"raise the capacity to {more}about {estimate:.3g} "
                    f"(x{estimate / value:.2g}; an estimate, at most)"
                ),
            }
        )
    return out[:3]


def _grew(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """Causes whose share of latency grew most between the two levels, said in words."""
    shares = {c["kind"]: c for c in before}
    lines = []
    for cause in after:
        was = shares.get(cause["kind"], {}).get("share", 0.0)
        if cause["share"] > was:
            lines.append(f"{cause['title']}: {was:.0%} -> {cause['share']:.0%} of latency")
    return lines[:3]


def result(search: Search, run_dir: Any, status: str) -> dict[str, Any]:
    """``capacity.json``'s content."""
    found = search.estimate()
    unit = UNITS[search.search.axis]
    rows = [level_row(search, lv) for lv in search.levels if lv.kind != "settle"]
    axis_rows = [r for r in rows if r["kind"] == "level"]
    return {
        "axis": search.search.axis,
        "unit": unit,
        "status": status,
        "slos": [s.as_dict() for s in search.search.slos],
        "precision": search.search.precision,
        "level_s": search.search.level_s,
        "one_user_ops_s": next(
            (r["throughput_ops_s"] for r in rows if r["kind"] == "one user"), None
        ),
        "saturated_ops_s": dataclasses.asdict(search.saturated) if search.saturated else None,
        "project_rate_ops_s": search.per_project if search.search.axis == "projects" else None,
        "project_rate_from": search.per_project_from or None,
        "capacity": {**found.as_dict(), "unit": unit, "sentence": cap.describe(found, unit)},
        "knee": cap.knee(
            [r["value"] for r in axis_rows], [r["throughput_ops_s"] for r in axis_rows]
        ),
        "ended": search.ended,
        "levels": rows,
        "settle_probes": sum(1 for lv in search.levels if lv.kind == "settle"),
        "why": why(run_dir, search, found),
        "plan": _plan(search, found),
    }


def _plan(search: Search, found: cap.Capacity) -> dict[str, Any] | None:
    """``--demand``'s machines, on the rate axis or on the projects axis searched at the
    demand's own per-project rate."""
    demand, axis = search.search.demand, search.search.axis
    if demand is None or axis == "users":
        return None
    if axis == "projects" and search.per_project != demand[1]:
        return None
    return cap.plan(found, demand, search.spec.profile.replicas, axis)


def table(payload: dict[str, Any]) -> str:
    """The terminal's table of levels and the answer."""
    lines = [
        f"capacity search on {payload['axis']} ({payload['unit']}), SLOs: "
        + ", ".join(s["text"] for s in payload["slos"]),
        f"{'#':>3} {'kind':<10} {'load':>9} {'ops/s':>7} {'goodput':>8} {'p95 s':>7} "
        f"{'kept':>6} {'verdict':<10} note",
    ]
    for row in payload["levels"]:
        shares = [a["estimate"] for a in row["attainment"] if a["estimate"] is not None]
        kept = f"{min(shares):.0%}" if shares else "-"
        lines.append(
            f"{row['number']:>3} {row['kind']:<10} {row['value']:>9.3g} "
            f"{row['throughput_ops_s']:>7.3g} {row['goodput_ops_s'] or 0:>8.3g} "
            f"{row['p95_s'] or 0:>7.3g} {kept:>6} {row['verdict']:<10} "
            f"{row['stopped_early'] or ''}"
        )
    lines.append(
        "kept: the lowest share of operations that kept an SLO; unresolved: too few "
        "operations to tell that share from the SLO's with 95% confidence"
    )
    if payload.get("project_rate_ops_s"):
        lines.append(
            f"each active project: {payload['project_rate_ops_s']:.3g} ops/s, picked "
            f"uniformly (from {payload['project_rate_from']})"
        )
    lines.append(f"answer: {payload['capacity']['sentence']}")
    if payload["ended"]:
        lines.append(f"search ended: {payload['ended']}")
    if payload.get("plan"):
        lines.append(f"plan: {payload['plan']['sentence']}")
    grew = payload.get("why", {}).get("grew")
    if grew:
        lines.append("what gives way: " + "; ".join(grew))
    for fix in payload.get("why", {}).get("if_fixed") or []:
        lines.append(f"if fixed: {fix['sentence']}")
    return "\n".join(lines)


def execute_capacity(spec: RunSpec, search: CapacitySpec) -> RunOutcome:
    """A capacity search in one run folder; ``capacity.json`` beside the usual files."""
    run_dir, run_info, writer = open_folder(spec)
    run_info["capacity"] = {"axis": search.axis, "slos": [s.text for s in search.slos]}
    progress = Progress(quiet=spec.quiet)
    status = "failed"
    found: Search | None = None
    try:
        with Interrupts() as interrupts:
            with open_side(spec, run_dir, run_info, writer, progress, interrupts) as live:
                found = Search(live, spec, search, progress)
                try:
                    found.run()
                finally:
                    run_info["stages"] = [
                        {"stage": lv.stage, "kind": lv.kind, "value": lv.value}
                        for lv in found.levels
                    ]
            status = "interrupted" if interrupts.count else "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        progress.say("second interrupt: stopping at once; the levels so far are kept")
    finally:
        from cluster.connect import disconnect

        disconnect()
        records, summary = close_folder(run_dir, run_info, writer, status, spec)
    progress.final(summary, run_dir, status)
    payload = result(found, run_dir, status) if found is not None else None
    if payload is not None:
        write_json(run_dir / "capacity.json", payload)  # before the report, which shows it
    failed = judge(run_dir, spec, progress)
    if payload is not None:
        print(table(payload), flush=True)
    return RunOutcome(run_dir, status, records, summary, failed)
