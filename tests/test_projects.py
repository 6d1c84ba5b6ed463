"""Default projects are real trees on this machine; project flags parse strictly."""

from __future__ import annotations

import pytest

from datamodel.errors import ConfigError
from workloads.service.projects import check_name, default_projects, parse_project_arg
from workloads.service.sources import count_lines


def test_ten_default_projects_hold_100k_lines():
    projects = default_projects(10)
    lines = [count_lines(p.root) for p in projects]
    assert len({p.name for p in projects}) == 10
    assert min(lines) >= 5000 and sum(lines) >= 100_000


def test_asking_for_too_many_defaults_says_how_to_add_more():
    with pytest.raises(ConfigError, match="--project NAME=PATH"):
        default_projects(500)
    with pytest.raises(ConfigError, match=">= 1"):
        default_projects(0)


def test_parse_project_arg(tmp_path):
    p = parse_project_arg(f"mine={tmp_path}:{tmp_path / 'adapter'}")
    assert (p.name, p.root, p.adapter) == ("mine", tmp_path, tmp_path / "adapter")
    assert parse_project_arg(str(tmp_path)).name == tmp_path.name
    with pytest.raises(ConfigError, match="does not exist") as bad:
        parse_project_arg(f"x={tmp_path / 'nope'}")
    assert bad.value.exit_code == 2  # bad input, as the README promises
    with pytest.raises(ConfigError, match="not allowed"):
        check_name("../etc")
