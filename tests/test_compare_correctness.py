"""The comparison says what its tests support: direction, zero variance, error rate, power.

Hand-built run folders (from ``test_compare``) and synthetic levels; pure, no Ray, no MLX.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_compare import compare, load, make_run, row

from profiling.render.compare_text import render_terminal
from profiling.render.verdict_html import comparison_section
from profiling.verdict import calibration
from profiling.verdict.compare import compare_runs
from profiling.verdict.figures import RunFigures, ShareScale
from profiling.verdict.statistics import Level, Prior, compare_levels, detectable_effect

LATENCY = ("p50_s", "p95_s", "p99_s")


def test_a_side_that_fails_fast_is_slower_by_the_test_not_faster_by_the_ratio(
    tmp_path: Path,
) -> None:
    """Failures count as infinitely slow in the test; their short durations lower B's
    merged quantiles, which must not make the row an improvement."""
    a = load(make_run(tmp_path / "a", seed=1, n=400))
    b = load(make_run(tmp_path / "b", seed=2, n=400, failed=300, fail_scale=0.1))
    comparison = compare(a, b)
    p50 = row(comparison, "analyze", "p50_s")
    assert p50.ratio is not None and p50.ratio < 1
    assert p50.verdict == "regression"
    assert "points the other way from the tested statistic" in p50.reason
    assert "or failed" in p50.reason
    assert p50.ci_low is not None and p50.ci_low > 1  # the interval is of the test's change
    assert not [r for r in comparison.improvements if r.metric in LATENCY]


def test_direction_follows_the_tested_statistic_when_values_agree(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1))
    b = load(make_run(tmp_path / "b", seed=2, scale=1.5))
    p50 = row(compare(a, b), "analyze", "p50_s")
    assert p50.verdict == "regression" and "the other way" not in p50.reason


def test_no_variance_at_all_is_not_testable_never_p_zero(tmp_path: Path) -> None:
    """One run a side of replica memory, 200 -> 211 MB: no within-run variance and no
    drift to allow for cannot say anything; a calibration prior makes it testable."""
    a = load(make_run(tmp_path / "a", seed=1, uss_mb=200))
    b = load(make_run(tmp_path / "b", seed=1, uss_mb=211))
    bare = row(compare(a, b), "replicas", "memory_peak_mb")
    assert bare.verdict == "not testable" and bare.p_value is None
    assert "cannot tell: nothing varies" in bare.reason
    assert bare.ratio == pytest.approx(211 / 200)
    drift = {"memory": Prior(sigma=0.038, df=3, source="test prior")}
    prior = row(compare(a, b, priors=drift), "replicas", "memory_peak_mb")
    assert prior.p_value is not None and prior.p_value > 0.1
    assert prior.verdict == "not detected" and "test prior" in prior.reason
    assert prior.ci_low is not None and prior.ci_high is not None
    assert prior.ci_low < 1 < prior.ci_high


def test_compare_levels_with_no_variance_is_not_testable() -> None:
    test = compare_levels([Level(math.log(200), 0.0)], [Level(math.log(211), 0.0)], None)
    assert not test.testable and math.isnan(test.p) and test.se == 0
    same = compare_levels([Level(1.0, 0.0)], [Level(1.0, 0.0)], Prior(0.0, 9, "flat"))
    assert not same.testable  # identical figures and no variance: still nothing to go on
    drift = compare_levels([Level(1.0, 0.0)], [Level(1.05, 0.0)], Prior(0.04, 3, "cal"))
    assert drift.testable and 0.05 < drift.p < 1


def test_detectable_effect_is_the_power_sum_of_quantiles() -> None:
    assert detectable_effect(0.1, math.inf) == pytest.approx((1.959964 + 0.841621) * 0.1)
    assert detectable_effect(0.1, 5) > detectable_effect(0.1, math.inf)
    assert detectable_effect(0.1, math.inf, alpha=0.01) > detectable_effect(0.1, math.inf)
    assert detectable_effect(0.0, 5) == 0.0


def test_error_rate_takes_runs_as_units_with_an_interval_of_the_difference(
    tmp_path: Path,
) -> None:
    """Runs whose failure shares drift far apart: pooled records would call 90/1290 vs
    135/1335 significant (z ~ 2.9); with runs as units it is not."""
    a = load(*(make_run(tmp_path / f"a{i}", seed=i, failed=k) for i, k in enumerate((0, 30, 60))))
    b = load(
        *(make_run(tmp_path / f"b{i}", seed=9 + i, failed=k) for i, k in enumerate((15, 45, 75)))
    )
    errors = row(compare(a, b), "records", "error_rate")
    assert errors.interval == "difference" and (errors.runs_a, errors.runs_b) == (3, 3)
    assert not errors.significant and errors.verdict == "not detected"
    assert errors.ci_low is not None and errors.ci_high is not None
    assert errors.ci_low < (errors.b or 0) - (errors.a or 0) < errors.ci_high
    assert errors.ci_low < 0 < errors.ci_high and errors.ci_low != errors.ci_high
    assert errors.detectable is not None and 0 < errors.detectable < 1
    assert "3 vs 3 runs as units" in errors.reason


def test_error_rate_one_run_a_side_is_a_regression_with_a_real_interval(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1))
    b = load(make_run(tmp_path / "b", seed=2, failed=40))
    errors = row(compare(a, b), "records", "error_rate")
    assert errors.verdict == "regression" and errors.interval == "difference"
    assert errors.ci_low is not None and errors.ci_high is not None
    assert 0 < errors.ci_low < 40 / 440 < errors.ci_high < 0.2
    assert "one run a side: drift of the error rate between runs is not allowed" in errors.reason
    none = row(compare(a, a), "records", "error_rate")
    assert none.verdict == "no change" and none.interval == "difference"
    assert none.ci_low is not None and none.ci_high is not None
    assert -0.02 < none.ci_low < 0 < none.ci_high < 0.02  # exact bounds at zero failures


def test_latency_rows_have_an_interval_of_the_quantile_ratio(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1, n=3000, ops=("embed",)))
    b = load(make_run(tmp_path / "b", seed=3, n=2000, ops=("embed",), scale=1.3))
    comparison = compare(a, b)
    for metric in LATENCY:
        r = row(comparison, "embed", metric)
        assert r.ci_low is not None and r.ci_high is not None and r.ratio is not None
        assert r.ci_low < r.ratio < r.ci_high, metric
        assert r.ci_low < 1.3 < r.ci_high, metric
        assert r.interval == "ratio" and r.detectable is not None and r.detectable > 1


def test_share_scale_inverts_the_shift_of_a_scaled_distribution() -> None:
    rng = np.random.default_rng(5)
    a = rng.lognormal(-1.5, 0.4, 20_000)
    b = rng.lognormal(-1.5, 0.4, 20_000) * 1.2
    pooled = np.concatenate([a, b])
    for q in (0.5, 0.95, 0.99):
        threshold = float(np.quantile(pooled, q))
        scale = ShareScale.of(a, threshold)
        assert scale is not None
        shift = float((b > threshold).mean() - (a > threshold).mean())
        assert scale.shift(1.2) == pytest.approx(shift, abs=0.01)
        assert scale.ratio(shift) == pytest.approx(1.2, rel=0.03)
        assert scale.ratio(scale.shift(0.8)) == pytest.approx(0.8, rel=1e-3)
    assert scale.ratio(0.0) == 1.0 and math.isnan(scale.ratio(math.nan))
    assert scale.ratio(1.5) == math.inf and scale.ratio(-1.5) == 0.0
    floor = -float((a > threshold).mean())  # a faster B at most empties its share above T
    assert scale.shift(0.0) == pytest.approx(floor, abs=1e-3) and scale.ratio(floor - 0.01) == 0
    assert ShareScale.of([0.1, 0.1], 0.1) is None and ShareScale.of([0.1, 0.2], 0.0) is None


def test_not_detected_unless_a_factor_sized_change_would_have_been_seen(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1, n=3000, ops=("embed",)))
    b = load(make_run(tmp_path / "b", seed=2, n=3000, ops=("embed",)))
    coarse = compare(a, b, factor=1.5)
    for metric in LATENCY:
        r = row(coarse, "embed", metric)
        assert r.verdict == "no change" and r.detectable is not None and r.detectable < 1.5
    assert not [w for w in coarse.warnings if "not detected" in w]
    fine = compare(a, b, factor=1.01)
    p95 = row(fine, "embed", "p95_s")
    assert (
        p95.verdict == "not detected" and p95.detectable == row(coarse, "embed", "p95_s").detectable
    )
    assert "could have been missed" in p95.reason
    (warning,) = [w for w in fine.warnings if "not detected" in w]
    assert "3 of 5 tested rows could have missed a x1.01 change" in warning
    assert f"embed p95_s (x{p95.detectable:.3g})" in warning
    assert fine.as_dict()["summary"]["not detected"] == len(fine.undetected) == 3


def test_the_warning_says_more_than_fifty_runs_rather_than_nothing(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1, n=30))
    b = load(make_run(tmp_path / "b", seed=2, n=30))
    (warning,) = [w for w in compare(a, b).warnings if "not detected" in w]
    assert "more than 50 runs a side" in warning and "analyze p99_s" in warning
    assert "p95" in warning and "p50" in warning  # every quantile, not p95 alone


def test_rendered_rows_show_not_detected_with_its_detectable_change(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1))
    b = load(make_run(tmp_path / "b", seed=2, failed=40))
    comparison = compare(a, b)
    text = render_terminal(comparison)
    assert "detectable" in text and "not detected" in text
    blind = comparison.undetected[0]
    assert blind.detectable is not None and math.isfinite(blind.detectable)
    line = next(
        x for x in text.splitlines() if x.startswith(f"{blind.name} ") and blind.metric in x
    )
    assert f"{blind.detectable:.3g}x" in line and line.endswith("not detected")
    assert "B-A [+" in next(x for x in text.splitlines() if "error_rate" in x)
    data = json.loads(json.dumps(comparison.as_dict(), allow_nan=False))
    section = comparison_section(data, tmp_path)
    cells = {(r[0].text, r[1].text): r for r in section.tables[0].rows}
    verdict = cells[(blind.name, blind.metric)][-1]
    assert verdict.text == "not detected" and "could have been missed" in (verdict.note or "")
    assert cells[(blind.name, blind.metric)][-2].text == f"×{blind.detectable:.3g}"
    infinite = [r for r in comparison.rows if r.detectable == math.inf]
    assert infinite and all(cells[(r.name, r.metric)][-2].text == "∞" for r in infinite)
    assert cells[("records", "error_rate")][5].text.startswith("B−A +")


def test_the_shipped_calibration_is_a_weak_prior_and_says_so(tmp_path: Path) -> None:
    a = load(make_run(tmp_path / "a", seed=1, uss_mb=200))
    b = load(make_run(tmp_path / "b", seed=2, uss_mb=205))
    machine = a[0].run["machine"]
    found = calibration.find_calibration(machine, "smoke", tmp_path / "cache")
    assert not found.own and "weak prior" in found.source
    assert max(found.calibration.df.values()) <= calibration.DEFAULT_PRIOR_DF
    shipped = calibration.read_calibration(calibration.DEFAULT_FILE)
    assert shipped is not None and max(shipped.df.values()) > calibration.DEFAULT_PRIOR_DF
    comparison = compare_runs(a, b, cache_dir=tmp_path / "cache")
    (warning,) = [w for w in comparison.warnings if "calibration of its own" in w]
    assert "untested on this machine" in warning
    assert "python -m workloads.bench verdicts" in warning
    memory = row(comparison, "replicas", "memory_peak_mb")
    assert memory.verdict != "not testable"  # the weak prior still allows for some drift

    runs = [RunFigures.of(r) for r in (*a, *b)]
    own = calibration.build(machine, "smoke", runs, [200.0, 205.0])
    calibration.save(own, machine, tmp_path / "cache")
    mine = calibration.find_calibration(machine, "smoke", tmp_path / "cache")
    assert mine.own and "pooled with the shipped default" in mine.source
    assert mine.calibration.df["memory"] == own.df["memory"] + calibration.DEFAULT_PRIOR_DF
    again = compare_runs(a, b, cache_dir=tmp_path / "cache")
    assert not [w for w in again.warnings if "calibration of its own" in w]
    assert calibration.find(machine, "smoke", tmp_path / "cache")[1] == mine.source


def test_own_calibration_of_few_runs_is_pooled_with_the_shipped_prior() -> None:
    shipped = calibration.read_calibration(calibration.DEFAULT_FILE)
    assert shipped is not None
    few = calibration.Calibration(
        "m", "p", 4, {"memory": 0.002, "retrieve:p95": 0.0, "odd": 0.5}, {"memory": 3.0}, {}, {}
    )
    pooled = calibration.with_prior(few, shipped)
    # Four runs that agreed on memory do not make memory drift-free: half the weight is the
    # prior's, so the sd is at least sqrt(1/2) of the shipped one.
    assert pooled.sigma["memory"] >= math.sqrt(0.5) * shipped.sigma["memory"]
    assert pooled.df["memory"] == 3.0 + calibration.DEFAULT_PRIOR_DF
    # An op the shipped file lacks borrows its kind's drift; a key with no kind keeps its own.
    assert pooled.sigma["retrieve:p95"] > 0.0
    assert pooled.sigma["odd"] == 0.5
    many = calibration.Calibration("m", "p", 100, {"memory": 0.002}, {"memory": 3000.0}, {}, {})
    assert calibration.with_prior(many, shipped).sigma["memory"] < 0.004  # own data outweighs


def test_mixed_share_scale_weighs_each_ops_shift_and_inverts_it() -> None:
    from profiling.verdict.figures import MixedShareScale

    fast = ShareScale.of(np.linspace(0.01, 0.03, 200), 0.02)
    slow = ShareScale.of(np.linspace(0.5, 1.5, 200), 1.0)
    assert fast is not None and slow is not None
    mixed = MixedShareScale(((0.75, fast), (0.25, slow)))
    assert mixed.shift(1.0) == 0.0
    assert mixed.shift(1.1) == pytest.approx(0.75 * fast.shift(1.1) + 0.25 * slow.shift(1.1))
    for ratio in (0.8, 1.05, 1.3):
        assert mixed.ratio(mixed.shift(ratio)) == pytest.approx(ratio, rel=1e-6)
    assert mixed.ratio(2.0) == math.inf  # no slowdown moves the share by more than one
