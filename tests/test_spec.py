"""Profiles: every built-in file loads and fits its scenario; bad files fail with clear errors."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from datamodel.errors import ConfigError
from workloads.load.spec import OPS, PROFILES_DIR, Profile, Stage, list_profiles, load_profile

BUILTIN = sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))
EXPECTED = {
    "smoke",
    "multi-project",
    "large-codebase",
    "memory-pressure",
    "sustained",
    "project-switching",
    "server-adapters",
}

GOOD_STAGE = """
[[stage]]
name = "warm"
duration_s = 10
mode = "closed"
users = 2
mix = { analyze = 0.6, search = 0.4 }
"""


def write(tmp_path: Path, text: str, name: str = "x.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_every_expected_profile_exists_and_loads():
    assert set(BUILTIN) >= EXPECTED
    for name in BUILTIN:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.description.strip()
        assert profile.stages


def test_list_profiles_gives_names_and_descriptions():
    listed = list_profiles()
    assert [n for n, _ in listed] == BUILTIN
    assert all(desc for _, desc in listed)


def test_smoke_runs_every_op_within_30_seconds():
    smoke = load_profile("smoke")
    assert smoke.ops == set(OPS)
    assert smoke.duration_s <= 30
    assert len(smoke.stages) == 2
    assert (smoke.projects, smoke.replicas, smoke.max_chunks_per_project) == (3, 1, 24)
    assert all(s.mode == "closed" and 1 <= s.users <= 4 for s in smoke.stages)


def test_multi_project_keeps_ten_or_more_projects_active():
    profile = load_profile("multi-project")
    assert profile.projects >= 10
    for stage in profile.stages:
        assert stage.projects is None or stage.projects >= 10
        assert stage.mode == "closed"
        assert stage.popularity == "zipf"
        assert {"analyze", "search", "embed"} <= set(stage.weights)


def test_large_codebase_ingests_everything_while_querying():
    profile = load_profile("large-codebase")
    assert profile.max_chunks_per_project is None
    assert profile.projects >= 10  # the ten default projects hold >= 100k lines together
    assert any({"ingest", "analyze"} <= set(s.weights) for s in profile.stages)


def test_memory_pressure_has_more_projects_than_cache_slots():
    profile = load_profile("memory-pressure")
    assert profile.projects == 14
    assert (profile.adapter_cache_count, profile.index_cache_count) == (4, 4)
    assert profile.memory_budget_mb == 500
    assert all(s.popularity == "uniform" for s in profile.stages)


def test_sustained_is_ten_minutes_of_open_poisson_load():
    profile = load_profile("sustained")
    assert profile.duration_s == pytest.approx(600)
    assert profile.projects == 10
    assert len(profile.stages) == 2
    warm, steady = profile.stages
    assert steady.duration_s > warm.duration_s
    assert all(s.mode == "open" and s.arrival == "poisson" for s in profile.stages)


def test_project_switching_is_cold_then_warm_switch_and_analyze():
    profile = load_profile("project-switching")
    assert profile.projects == 12
    assert [s.name for s in profile.stages] == ["cold", "warm"]
    for stage in profile.stages:
        assert set(stage.weights) == {"switch", "analyze"}
        assert stage.popularity == "uniform"
        assert stage.think_time_s <= 0.1


def test_open_loop_rates_are_modest_for_a_two_core_machine():
    for name in BUILTIN:
        for stage in load_profile(name).stages:
            if stage.mode == "open":
                # analyze costs up to ~0.2 s of CPU: keep its expected load under one core.
                assert stage.rate * stage.weights.get("analyze", 0) * 0.2 < 1.0, (name, stage)


def test_mix_weights_are_normalised():
    weights = load_profile("smoke").stages[1].weights
    assert sum(weights.values()) == pytest.approx(1.0)


def test_duration_override_scales_stages_proportionally():
    profile = load_profile("sustained")
    scaled = profile.with_overrides(duration_s=60)
    assert scaled.duration_s == pytest.approx(60)
    ratios = [
        s.duration_s / o.duration_s for s, o in zip(scaled.stages, profile.stages, strict=True)
    ]
    assert ratios == pytest.approx([0.1] * len(ratios))
    assert profile.duration_s == pytest.approx(600)  # the original is untouched


def test_project_and_replica_overrides_cap_stage_projects():
    base = load_profile("smoke")
    stage = dataclasses.replace(base.stages[0], projects=3)
    profile = dataclasses.replace(base, stages=(stage, base.stages[1]))
    out = profile.with_overrides(projects=2, replicas=3)
    assert (out.projects, out.replicas) == (2, 3)
    assert out.stages[0].projects == 2
    assert out.stages[1].projects is None
    assert profile.with_overrides() == profile


@pytest.mark.parametrize(
    "kwargs", [{"duration_s": 0}, {"duration_s": -5.0}, {"projects": 0}, {"replicas": -1}]
)
def test_bad_overrides_are_config_errors(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        load_profile("smoke").with_overrides(**kwargs)


def test_profile_loads_from_a_path(tmp_path):
    path = write(tmp_path, 'description = "mine"\nprojects = 2\n' + GOOD_STAGE, "mine.toml")
    profile = load_profile(path)
    assert profile.name == "mine"
    assert profile.projects == 2
    assert profile.stages[0] == Stage(
        name="warm",
        duration_s=10.0,
        mode="closed",
        users=2,
        mix=(("analyze", 0.6), ("search", 0.4)),
    )


def sub(old: str, new: str) -> str:
    """The good stage with one edit."""
    return GOOD_STAGE.replace(old, new)


MIX = "{ analyze = 0.6, search = 0.4 }"
OPEN = sub('"closed"', '"open"').replace("users = 2\n", "")
BAD_FILES = {
    "unknown top-level key": (
        "projets = 3\n" + GOOD_STAGE,
        "unknown key 'projets'; did you mean 'projects'",
    ),
    "unknown stage key": (GOOD_STAGE + "duraton = 3\n", "stage 1 ('warm'): unknown key 'duraton'"),
    "wrong top-level type": (
        'replicas = "2"\n' + GOOD_STAGE,
        "replicas must be an integer, got '2' (str)",
    ),
    "bool is not a number": (sub("10", "true"), "duration_s must be a number"),
    "float for an integer": (sub("users = 2", "users = 2.5"), "users must be an integer"),
    "negative duration": (sub("10", "-1"), "stage 1 ('warm'): duration_s must be > 0, got -1"),
    "unknown op": (sub("search", "serch"), "mix has unknown op 'serch'"),
    "empty mix": (sub(MIX, "{}"), "mix must name at least one op"),
    "zero weight": (sub("0.6", "0"), "mix weight of 'analyze' must be > 0"),
    "mix not a table": (sub(MIX, '"analyze"'), "mix must be a table"),
    "missing key": (sub('mode = "closed"\n', ""), "stage 1 ('warm'): missing required key 'mode'"),
    "bad mode": (sub('"closed"', '"opn"'), "mode must be one of closed, open, got 'opn'"),
    "open without rate": (OPEN, "rate must be > 0 for an open-loop stage"),
    "closed with rate": (GOOD_STAGE + "rate = 3\n", "rate applies to open-loop stages only"),
    "open with users": (OPEN + "rate = 1\nusers = 3\n", "users applies to closed-loop stages"),
    "zero users": (sub("users = 2", "users = 0"), "users must be >= 1, got 0"),
    "no stages": ('description = "x"\n', "must have at least one"),
    "stage not an array": ("stage = 3\n", "stage must be [[stage]] tables"),
    "repeated stage names": (GOOD_STAGE * 2, "stage names must be unique, repeated: warm"),
    "stage needs more projects": (
        "projects = 2\n" + GOOD_STAGE + "projects = 5\n",
        "projects (5) exceeds the profile's projects (2)",
    ),
    "bad popularity": (GOOD_STAGE + 'popularity = "pareto"\n', "popularity must be one of uniform"),
    "zero cache count": ("index_cache_count = 0\n" + GOOD_STAGE, "index_cache_count must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_profile_files_name_file_key_and_problem(tmp_path, case):
    text, message = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}: ")


def test_second_stage_errors_name_the_stage_index(tmp_path):
    text = GOOD_STAGE + GOOD_STAGE.replace('"warm"', '"hot"').replace("10", "-1")
    with pytest.raises(ConfigError, match=r"x\.toml: stage 2 \('hot'\): duration_s must be > 0"):
        load_profile(write(tmp_path, text))


def test_malformed_toml_names_the_file(tmp_path):
    path = write(tmp_path, "projects = [1,\n", "broken.toml")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_profile(path)


def test_missing_profile_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such profile file"):
        load_profile(str(tmp_path / "nope.toml"))


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown profile 'smok'") as info:
        load_profile("smok")
    for name in BUILTIN:
        assert name in str(info.value)
    assert info.value.exit_code == 2


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="duration_s must be > 0"):
        Stage(name="s", duration_s=0, mode="closed", mix=(("analyze", 1.0),))
    stage = Stage(name="s", duration_s=1, mode="closed", mix=(("analyze", 1.0),))
    with pytest.raises(ConfigError, match="replicas must be >= 1"):
        Profile(name="p", stages=(stage,), replicas=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.users = 3  # type: ignore[misc]


def test_a_profile_name_cannot_reach_outside_the_results_folder(tmp_path):
    bad = tmp_path / "evil.toml"
    bad.write_text(
        'name = "../../escape"\n[[stage]]\nname = "s"\nduration_s = 1\nmode = "closed"\n'
        "mix = { search = 1.0 }\n"
    )
    with pytest.raises(ConfigError, match=r"bad profile name '\.\./\.\./escape'"):
        load_profile(str(bad))
