"""Load profiles: TOML scenarios parsed once, at the edge, into frozen dataclasses.

A profile file has top-level keys for :class:`Profile` fields and one ``[[stage]]`` table
per :class:`Stage`. Unknown keys and wrong types are errors that name the file and the key,
so a typo never passes silently. Built-in profiles live in ``workloads/profiles/``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datamodel.errors import ConfigError
from datamodel.names import check_name

OPS = ("analyze", "search", "embed", "switch", "ingest")
"""Operations a load generator can send to the service."""
MODES = ("closed", "open")
ARRIVALS = ("poisson", "constant")
THINKS = ("exponential", "constant")
POPULARITIES = ("uniform", "zipf")
PROFILES_DIR = Path(__file__).parent.parent / "profiles"
"""Where built-in profiles (``<name>.toml``) are found."""

Mode = Literal["closed", "open"]
Arrival = Literal["poisson", "constant"]
Think = Literal["exponential", "constant"]
Popularity = Literal["uniform", "zipf"]


def _fmt(value: object) -> str:
    """``-1`` for ``-1.0``, ``'x'`` for a string: values as a user wrote them."""
    return f"{value:g}" if isinstance(value, float) else repr(value)


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One phase of a profile: how load arrives, for how long, and what it asks for."""

    name: str
    """Label of the stage in reports; unique within a profile."""
    duration_s: float
    """How long the stage runs, in seconds (> 0)."""
    mode: Mode
    """``closed``: fixed users, each waits for its op; ``open``: arrivals at a rate regardless."""
    users: int = 1
    """Closed loop: concurrent users (>= 1)."""
    think_time_s: float = 0.0
    """Closed loop: a user's mean pause between the end of one op and the start of the next
    (>= 0)."""
    think: Think = "exponential"
    """Closed loop: ``exponential`` pauses of mean ``think_time_s`` (users drift apart, as
    real ones do), or ``constant`` ones."""
    rate: float = 0.0
    """Open loop: arrivals per second (> 0 when open)."""
    arrival: Arrival = "poisson"
    """Open loop: ``poisson`` (exponential gaps) or ``constant`` (evenly spaced)."""
    mix: tuple[tuple[str, float], ...]
    """(op, weight) pairs: ops from :data:`OPS`, weights > 0, normalised when used."""
    popularity: Popularity = "uniform"
    """How projects are picked: ``uniform`` or ``zipf`` (first project most popular)."""
    zipf_s: float = 1.1
    """Zipf exponent: weight of the project ranked r is 1 / r**zipf_s (> 0)."""
    projects: int | None = None
    """How many of the run's projects (the first ones) this stage touches; ``None``: all."""

    def __post_init__(self) -> None:
        _check(self, _STAGE_CHECKS)
        _check_mix(self.mix)

    @property
    def weights(self) -> dict[str, float]:
        """The mix normalised so that its weights sum to 1."""
        total = sum(w for _, w in self.mix)
        return {op: w / total for op, w in self.mix}


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A whole load-test scenario: the fleet it needs and the stages it runs in order."""

    name: str
    """Profile name (the file's stem unless the file sets ``name``)."""
    description: str = ""
    """One line saying what the scenario exercises."""
    stages: tuple[Stage, ...]
    """Stages, run one after another (at least one)."""
    projects: int = 10
    """How many projects the run serves (>= 1)."""
    replicas: int = 2
    """How many service replicas serve them (>= 1)."""
    max_chunks_per_project: int | None = None
    """Cap on chunks indexed per project; ``None``: all of them."""
    memory_budget_mb: int | None = None
    """Memory each replica may use, in MiB: its adapter and index caches are sized to what
    the base model and embedder leave of it, and the verdict holds it to it; ``None``: none."""
    adapter_cache_count: int | None = None
    """Overrides the service's resident-adapter count; ``None``: keep the config's."""
    index_cache_count: int | None = None
    """Overrides the service's in-memory index count; ``None``: keep the config's."""
    ingest_at_start: bool = True
    """Build every project's index before the first stage."""

    def __post_init__(self) -> None:
        _check(self, _PROFILE_CHECKS)
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"stage names must be unique, repeated: {', '.join(dupes)}")
        for stage in self.stages:
            if stage.projects is not None and stage.projects > self.projects:
                raise ConfigError(
                    f"stage {stage.name!r}: projects ({stage.projects}) exceeds the profile's "
                    f"projects ({self.projects})"
                )

    @property
    def duration_s(self) -> float:
        """Total duration of all stages, in seconds."""
        return sum(s.duration_s for s in self.stages)

    @property
    def ops(self) -> frozenset[str]:
        """Every op some stage's mix can send."""
        return frozenset(op for s in self.stages for op, _ in s.mix)

    def with_overrides(
        self,
        *,
        duration_s: float | None = None,
        projects: int | None = None,
        replicas: int | None = None,
    ) -> Profile:
        """A copy with command-line overrides applied (``None`` leaves a field as is).

        ``duration_s`` scales every stage proportionally so that their durations sum to it;
        ``projects`` also caps each stage's ``projects`` at the new count.
        """
        for flag, value in (
            ("duration_s", duration_s),
            ("projects", projects),
            ("replicas", replicas),
        ):
            if value is not None and not value > 0:
                raise ConfigError(f"profile {self.name!r}: {flag} must be > 0, got {value}")
        stages = self.stages
        if duration_s is not None:
            scale = duration_s / self.duration_s
            stages = tuple(dataclasses.replace(s, duration_s=s.duration_s * scale) for s in stages)
        if projects is not None:
            stages = tuple(
                dataclasses.replace(s, projects=min(s.projects, projects))
                if s.projects is not None
                else s
                for s in stages
            )
        try:
            return dataclasses.replace(
                self,
                stages=stages,
                projects=self.projects if projects is None else projects,
                replicas=self.replicas if replicas is None else replicas,
            )
        except ConfigError as exc:
            raise ConfigError(f"profile {self.name!r}: {exc}") from None


# Value checks: (field, predicate on the whole object, requirement). Run on construction.
_Check = tuple[str, Callable[[Any], bool], str]


def _one_of(key: str, options: tuple[str, ...]) -> _Check:
    return (key, lambda obj: getattr(obj, key) in options, f"must be one of {', '.join(options)}")


def _unset_or_positive(key: str) -> _Check:
    return (key, lambda obj: getattr(obj, key) is None or getattr(obj, key) >= 1, "must be >= 1")


_STAGE_CHECKS: tuple[_Check, ...] = (
    ("name", lambda s: bool(s.name.strip()), "must not be empty"),
    ("duration_s", lambda s: 0 < s.duration_s < math.inf, "must be > 0"),
    _one_of("mode", MODES),
    ("users", lambda s: s.users >= 1, "must be >= 1"),
    ("think_time_s", lambda s: 0 <= s.think_time_s < math.inf, "must be >= 0"),
    ("rate", lambda s: 0 <= s.rate < math.inf, "must be >= 0"),
    ("rate", lambda s: s.mode != "open" or s.rate > 0, "must be > 0 for an open-loop stage"),
    _one_of("arrival", ARRIVALS),
    _one_of("think", THINKS),
    _one_of("popularity", POPULARITIES),
    ("zipf_s", lambda s: 0 < s.zipf_s < math.inf, "must be > 0"),
    _unset_or_positive("projects"),
)
_PROFILE_CHECKS: tuple[_Check, ...] = (
    ("name", lambda p: bool(p.name.strip()), "must not be empty"),
    ("stages", lambda p: len(p.stages) >= 1, "must have at least one [[stage]]"),
    ("projects", lambda p: p.projects >= 1, "must be >= 1"),
    ("replicas", lambda p: p.replicas >= 1, "must be >= 1"),
    _unset_or_positive("max_chunks_per_project"),
    _unset_or_positive("memory_budget_mb"),
    _unset_or_positive("adapter_cache_count"),
    _unset_or_positive("index_cache_count"),
)


def _check(obj: object, checks: tuple[_Check, ...]) -> None:
    for key, ok, requirement in checks:
        if not ok(obj):
            raise ConfigError(f"{key} {requirement}, got {_fmt(getattr(obj, key))}")


def _check_mix(mix: tuple[tuple[str, float], ...]) -> None:
    if not mix:
        raise ConfigError("mix must name at least one op")
    ops = [op for op, _ in mix]
    for op, weight in mix:
        if op not in OPS:
            raise ConfigError(f"mix has unknown op {op!r} (known: {', '.join(OPS)})")
        if ops.count(op) > 1:
            raise ConfigError(f"mix names op {op!r} twice")
        if not 0 < weight < math.inf:
            raise ConfigError(f"mix weight of {op!r} must be > 0, got {_fmt(weight)}")


# Type converters for raw TOML values; each raises ConfigError("must be ..., got ...").
def _got(value: object) -> str:
    return f"got {value!r} ({type(value).__name__})"


def _typed(what: str, *kinds: type) -> Callable[[object], Any]:
    """A converter taking values of exactly ``kinds`` (so ``true`` is never a number)."""

    def convert(value: Any) -> Any:
        if type(value) not in kinds:
            raise ConfigError(f"must be {what}, {_got(value)}")
        return float(value) if float in kinds else value

    return convert


_number = _typed("a number", int, float)
_integer = _typed("an integer", int)
_string = _typed("a string", str)
_boolean = _typed("true or false", bool)


def _mix(value: object) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"must be a table like {{ analyze = 0.7, search = 0.3 }}, {_got(value)}")
    pairs = []
    for op, weight in value.items():
        try:
            pairs.append((op, _number(weight)))
        except ConfigError as exc:
            raise ConfigError(f"weight of {op!r} {exc}") from None
    return tuple(pairs)


_Converters = Mapping[str, Callable[[object], object]]
_STAGE_KEYS: _Converters = {
    "name": _string,
    "duration_s": _number,
    "mode": _string,
    "users": _integer,
    "think_time_s": _number,
    "think": _string,
    "rate": _number,
    "arrival": _string,
    "mix": _mix,
    "popularity": _string,
    "zipf_s": _number,
    "projects": _integer,
}
_PROFILE_KEYS: _Converters = {
    "name": _string,
    "description": _string,
    "projects": _integer,
    "replicas": _integer,
    "max_chunks_per_project": _integer,
    "memory_budget_mb": _integer,
    "adapter_cache_count": _integer,
    "index_cache_count": _integer,
    "ingest_at_start": _boolean,
}
_MODE_ONLY_KEYS = {
    "rate": "open",
    "arrival": "open",
    "users": "closed",
    "think_time_s": "closed",
    "think": "closed",
}
"""Keys that mean something in one mode only; setting them in the other is a mistake."""


def _convert(raw: Mapping[str, Any], converters: _Converters, where: str) -> dict[str, Any]:
    """Check every key of ``raw`` is known and typed right; ``where`` prefixes errors."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        convert = converters.get(key)
        if convert is None:
            close = difflib.get_close_matches(key, list(converters), n=1)
            known = ", ".join(converters)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {known})"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        try:
            out[key] = convert(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {key} {exc}") from None
    return out


def _require_keys(cls: type, values: Mapping[str, Any], where: str) -> None:
    for f in dataclasses.fields(cls):
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and f.name not in values:
            raise ConfigError(f"{where}: missing required key {f.name!r}")


def _parse_stage(raw: object, where: str) -> Stage:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table, {_got(raw)}")
    if isinstance(raw.get("name"), str):
        where = f"{where} ({raw['name']!r})"
    values = _convert(raw, _STAGE_KEYS, where)
    _require_keys(Stage, values, where)
    for key, mode in _MODE_ONLY_KEYS.items():
        if key in values and values["mode"] in MODES and values["mode"] != mode:
            raise ConfigError(
                f"{where}: {key} applies to {mode}-loop stages only, this one is {values['mode']}"
            )
    try:
        return Stage(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_profile(data: Mapping[str, Any], *, source: str, name: str) -> Profile:
    """Build a :class:`Profile` from parsed TOML ``data``.

    ``source`` names the file in error messages; ``name`` is used unless ``data`` sets one.
    """
    top = {k: v for k, v in data.items() if k != "stage"}
    values = _convert(top, _PROFILE_KEYS, source)
    raw_stages = data.get("stage", [])
    if not isinstance(raw_stages, list):
        raise ConfigError(f"{source}: stage must be [[stage]] tables, {_got(raw_stages)}")
    stages = tuple(_parse_stage(r, f"{source}: stage {i}") for i, r in enumerate(raw_stages, 1))
    try:
        # The name becomes part of the run folder's name: no path tricks.
        check_name(str(values.get("name", name)), "profile")
        return Profile(**{"name": name, **values, "stages": stages})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _builtin_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name, or a profile file by path.

    Anything containing a path separator or ending in ``.toml`` is a path; anything else is
    looked up as ``workloads/profiles/<name>.toml``.
    """
    if "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith(".toml"):
        path, source = Path(name_or_path).expanduser(), name_or_path
        if not path.is_file():
            raise ConfigError(f"{source}: no such profile file")
    else:
        path, source = PROFILES_DIR / f"{name_or_path}.toml", f"profiles/{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(_builtin_names()) or "none"
            raise ConfigError(f"unknown profile {name_or_path!r} (known: {known})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    return parse_profile(data, source=source, name=path.stem)


def list_profiles() -> list[tuple[str, str]]:
    """Every built-in profile as (name, description), sorted by name."""
    return [(name, load_profile(name).description) for name in _builtin_names()]
