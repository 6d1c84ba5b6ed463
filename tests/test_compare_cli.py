"""``python -m workloads.compare`` and named baselines, on hand-built run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_compare import make_run

from datamodel.errors import ConfigError
from profiling.verdict.baselines import list_baselines, load_baseline, save_baseline
from workloads.compare import main


def cli(args: list[str]) -> int:
    """The CLI with no drift allowance (these tests plant their changes in one run a side)."""
    return main([*args, "--calibration", "none"])


def test_regression_exits_1_and_writes_comparison_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path / "a", seed=1)
    b = make_run(tmp_path / "b", seed=2, scale=1.5)
    assert cli([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "verdict" in out and "regression(s): analyze p50_s" in out
    data = json.loads((b / "comparison.json").read_text())
    assert data["summary"]["regression"] > 0
    assert data["a"]["runs"][0]["run_id"] == "a"


def test_improvement_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path / "a", seed=1)
    b = make_run(tmp_path / "b", seed=2, scale=0.6)
    out_dir = tmp_path / "report"
    assert cli([str(a), str(b), "--out", str(out_dir)]) == 0
    assert "no regression (" in capsys.readouterr().out
    assert (out_dir / "comparison.json").is_file()
    assert not (b / "comparison.json").exists()


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path / "a", seed=1)
    assert cli([str(a), str(a), "--json", "--factor", "1.2", "--alpha", "0.01"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["factor"], data["alpha"]) == (1.2, 0.01)


def test_different_profiles_exit_2_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", profile="sustained")
    assert cli([str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'smoke'" in err and "'sustained'" in err


def test_missing_run_folder_and_wrong_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path / "a")
    assert cli([str(a), str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli([str(a)]) == 2
    assert "RUN_A RUN_B" in capsys.readouterr().err
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "run.json").write_text("{}")
    assert cli([str(a), str(tmp_path / "partial")]) == 2
    assert "records.jsonl is missing" in capsys.readouterr().err


def test_machine_difference_is_printed_as_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path / "a", seed=1)
    b = make_run(tmp_path / "b", seed=1, machine={"cpus_logical": 16})
    assert cli([str(a), str(b)]) == 0
    assert "warning: different machines: cpus_logical 8" in capsys.readouterr().out


def test_comma_separated_rounds_are_merged(tmp_path: Path) -> None:
    a1, a2 = make_run(tmp_path / "a1", seed=1, n=30), make_run(tmp_path / "a2", seed=2, n=45)
    b1, b2 = make_run(tmp_path / "b1", seed=3, n=20), make_run(tmp_path / "b2", seed=4, n=25)
    out_dir = tmp_path / "out"
    assert cli([f"{a1},{a2}", f"{b1}, {b2}", "--out", str(out_dir)]) == 0
    data = json.loads((out_dir / "comparison.json").read_text())
    (p50,) = [r for r in data["rows"] if (r["name"], r["metric"]) == ("search", "p50_s")]
    assert (p50["n_a"], p50["n_b"]) == (30 + 45, 20 + 25)
    assert [r["run_id"] for r in data["b"]["runs"]] == ["b1", "b2"]


def test_unknown_targets_name_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path / "a")
    assert cli([str(a), str(a), "--targets", "nope"]) == 2
    assert "unknown targets 'nope'" in capsys.readouterr().err


def test_save_and_check_baseline_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "baselines"
    a = make_run(tmp_path / "a", seed=1, stacks={"replica-0": "replica-0;f (x.py:1) 3\n"})
    (a / "huge.raw").write_text("not kept")
    assert cli(["--save-baseline", "main", str(a), "--baselines-dir", str(root)]) == 0
    assert "saved baseline 'main'" in capsys.readouterr().out
    assert list_baselines(root) == ["main"]
    assert (root / "main" / "profiles" / "replica-0.collapsed").is_file()
    assert not (root / "main" / "huge.raw").exists()
    same = make_run(tmp_path / "same", seed=1, stacks={"replica-0": "replica-0;f (x.py:2) 3\n"})
    check = ["--check-baseline", "main", "--baselines-dir", str(root)]
    assert cli([*check, str(same)]) == 0
    assert "A: baseline main" in capsys.readouterr().out
    assert (same / "comparison.json").is_file() and (same / "diff-replica-0.svg").is_file()
    slower = make_run(tmp_path / "slower", seed=2, scale=1.5)
    assert cli([*check, str(slower)]) == 1


def test_unknown_baseline_exits_2_listing_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "baselines"
    run = make_run(tmp_path / "a")
    for name in ("main", "v1.2"):
        save_baseline(run, name, root)
    assert cli(["--check-baseline", "nope", str(run), "--baselines-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "unknown baseline 'nope'" in err and "known: main, v1.2" in err


def test_baselines_are_replaced_whole_and_names_are_checked(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    save_baseline(make_run(tmp_path / "first", n=10), "main", root)
    save_baseline(make_run(tmp_path / "second", n=20), "main", root)
    baseline = load_baseline("main", root)
    assert baseline.run_id == "second" and len(baseline.records) == 40
    assert json.loads((root / "main" / "baseline.json").read_text())["run_id"] == "second"
    assert list_baselines(root) == ["main"]
    assert list_baselines(tmp_path / "none") == []
    with pytest.raises(ConfigError, match="none saved yet"):
        load_baseline("main", tmp_path / "none")
    with pytest.raises(ConfigError, match="bad baseline name"):
        save_baseline(tmp_path / "first", "../escape", root)
    with pytest.raises(ConfigError, match="does not exist"):
        save_baseline(tmp_path / "missing", "other", root)
    assert list_baselines(root) == ["main"]


def test_the_drift_allowance_comes_from_a_calibration_and_says_which(tmp_path, capsys):
    a = make_run(tmp_path / "a", seed=1)
    b = make_run(tmp_path / "b", seed=2, scale=1.05)
    assert main([str(a), str(b)]) in (0, 1)
    out = capsys.readouterr().out
    assert "run-to-run drift allowed for: " in out and "calibration" in out
    assert main([str(a), str(b), "--calibration", str(tmp_path / "nope.json")]) == 2
    assert "not a calibration file" in capsys.readouterr().err
