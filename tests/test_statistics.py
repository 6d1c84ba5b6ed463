"""The comparison's statistics on constructed samples (numpy, and scipy.stats for t).

The two properties that matter most are checked on block-correlated series like load-test
latencies (an AR(1) process, neighbours moving together): identical configurations are
not called different, and a change in the tail alone is seen.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from profiling.verdict.statistics import (
    Level,
    Prior,
    autocorrelation_time,
    block_rate,
    compare_levels,
    exceedance,
    holm,
    n_blocks,
    power_rounds,
    t_critical,
    t_two_sided_p,
)

QS = (0.50, 0.95, 0.99)


def correlated(seed: int, n: int = 2000, rho: float = 0.9) -> np.ndarray:
    """Log-normal latencies whose logs follow an AR(1) process with coefficient ``rho``."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(size=n)
    z = np.empty(n)
    z[0] = shocks[0]
    for i in range(1, n):
        z[i] = rho * z[i - 1] + math.sqrt(1 - rho * rho) * shocks[i]
    return np.exp(-2.0 + 0.5 * z)


def slow_tail(values: np.ndarray, share: float = 0.03, factor: float = 3.0) -> np.ndarray:
    cut = np.quantile(values, 1 - share)
    return np.where(values >= cut, values * factor, values)


def row_p_values(a: np.ndarray, b: np.ndarray, prior: Prior | None = None) -> list[float]:
    """p of each quantile row, one run a side, as the comparison computes it."""
    out = []
    for q in QS:
        threshold = float(np.quantile(np.concatenate([a, b]), q))
        la = exceedance(a, threshold, n_blocks(a))
        lb = exceedance(b, threshold, n_blocks(b))
        out.append(compare_levels([la], [lb], prior).p)
    return out


def test_identical_block_correlated_series_are_rarely_called_different() -> None:
    flagged = sum(
        any(holm(row_p_values(correlated(2 * s), correlated(2 * s + 1)), 0.05)) for s in range(300)
    )
    assert flagged <= 18, f"{flagged} of 300 A/A comparisons flagged"  # 4.2% over 600 here


def test_records_as_independent_samples_would_flag_them_often() -> None:
    """The same series with blocks of one record (independence assumed) alarm far more."""

    def naive(a: np.ndarray, b: np.ndarray) -> bool:
        ps = []
        for q in QS:
            threshold = float(np.quantile(np.concatenate([a, b]), q))
            la, lb = exceedance(a, threshold, 1), exceedance(b, threshold, 1)
            ps.append(compare_levels([la], [lb], None).p)
        return any(holm(ps, 0.05))

    flagged = sum(naive(correlated(2 * s), correlated(2 * s + 1)) for s in range(60))
    assert flagged >= 30


def test_a_tail_only_slowdown_is_detected_in_the_p99_row_only() -> None:
    p99_found = p50_found = 0
    for s in range(40):
        a, b = correlated(100 + 2 * s, n=3000, rho=0.5), correlated(101 + 2 * s, n=3000, rho=0.5)
        p50, _, p99 = row_p_values(a, slow_tail(b))
        p99_found += holm([p50, p99], 0.05)[1]
        p50_found += holm([p50, p99], 0.05)[0]
    assert p99_found >= 38 and p50_found <= 6


def test_a_ten_percent_slowdown_is_detected_with_enough_records() -> None:
    found = sum(
        any(
            holm(
                row_p_values(
                    correlated(300 + 2 * s, n=4000, rho=0.3),
                    correlated(301 + 2 * s, n=4000, rho=0.3) * 1.1,
                ),
                0.05,
            )
        )
        for s in range(20)
    )
    assert found >= 18


def test_autocorrelation_time_and_block_count_follow_the_correlation() -> None:
    iid = np.random.default_rng(0).lognormal(size=4000)
    assert autocorrelation_time(iid) < 1.2
    assert autocorrelation_time(correlated(1, n=4000, rho=0.95)) > 15
    assert n_blocks(iid) == 20  # capped
    assert 2 <= n_blocks(correlated(1, n=400, rho=0.95)) <= 4
    assert n_blocks([1.0, 2.0]) == 1
    assert autocorrelation_time([3.0, 3.0, 3.0, 3.0, 3.0]) == 1.0


def test_exceedance_share_and_its_block_variance() -> None:
    values = np.array([1.0, 5.0, 1.0, 5.0, 1.0, 5.0, 1.0, 5.0])
    level = exceedance(values, 2.0, 4)
    assert level.value == 0.5 and level.df == 3
    assert level.var == 0.0  # every block holds one slow op: no spread between blocks
    clumped = exceedance(np.array([5.0] * 4 + [1.0] * 4), 2.0, 4)
    assert clumped.value == 0.5 and clumped.var > 0.05  # all slow ops in two blocks
    one = exceedance(values, 2.0, 1)
    assert one.var == pytest.approx(0.25 / 8)
    assert math.isnan(exceedance([], 1.0, 2).value)


def test_block_rate_is_a_log_rate_with_a_block_variance() -> None:
    times = np.arange(0.0, 100.0, 0.5)
    level = block_rate(times, 0.0, 100.0, 10)
    assert level.value == pytest.approx(math.log(2.0)) and level.var == pytest.approx(0.0)
    bursty = block_rate(np.concatenate([np.arange(0, 10, 0.05), [50.0]]), 0.0, 100.0, 10)
    assert bursty.var > 0.5 and bursty.df == 9
    assert math.isnan(block_rate([], 0.0, 1.0, 4).value)


def test_compare_levels_uses_runs_as_units_and_the_prior_for_drift() -> None:
    same = compare_levels([Level(0.1, 0.0001, 9)], [Level(0.1, 0.0001, 9)], None)
    assert same.diff == 0.0 and same.p == 1.0
    shifted = compare_levels([Level(0.10, 0.0001, 9)], [Level(0.16, 0.0001, 9)], None)
    assert shifted.p < 0.01 and shifted.low > 0
    drift = Prior(sigma=0.03, df=10, source="test")
    with_drift = compare_levels([Level(0.10, 0.0001, 9)], [Level(0.14, 0.0001, 9)], drift)
    assert with_drift.p > 0.2 and with_drift.sigma_between == pytest.approx(0.03)
    runs = [Level(x, 0.0001, 9) for x in (0.10, 0.11, 0.09, 0.10)]
    more = compare_levels(
        runs, [Level(x + 0.04, 0.0001, 9) for x in (0.10, 0.11, 0.09, 0.10)], drift
    )
    assert more.p < with_drift.p  # more runs a side see through the drift
    with pytest.raises(ValueError):
        compare_levels([], runs, None)


def test_holm_step_down() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]
    assert holm([0.001, 0.2], 0.05) == [True, False]
    assert holm([], 0.05) == []


def test_power_rounds_grow_with_drift() -> None:
    few = power_rounds(0.05, sigma=0.01, within=0.0001)
    many = power_rounds(0.05, sigma=0.03, within=0.0001)
    assert few is not None and many is not None and few < many
    assert power_rounds(0.05, sigma=1.0, within=0.0) is None
    assert power_rounds(0.0, sigma=0.01, within=0.0) is None
    assert power_rounds(0.05, sigma=0.0, within=0.0) == 1  # nothing varies (was 0/0)


def test_student_t_matches_known_values() -> None:
    assert t_critical(0.95, 10) == pytest.approx(2.228139, abs=1e-5)
    assert t_critical(0.95, math.inf) == pytest.approx(1.959964, abs=1e-5)
    assert t_two_sided_p(2.228139, 10) == pytest.approx(0.05, abs=1e-6)
    assert t_two_sided_p(0.0, 3) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        t_two_sided_p(1.0, 0)


@pytest.mark.parametrize("df", [1.0, 2.5, 7.3, 40.0, math.inf])
def test_t_critical_and_p_are_inverse_at_fractional_df(df: float) -> None:
    """Welch-Satterthwaite degrees of freedom are fractional; both directions agree."""
    for confidence in (0.8, 0.95, 0.99):
        assert t_two_sided_p(t_critical(confidence, df), df) == pytest.approx(1 - confidence)
    assert t_critical(0.99, 1.0) == pytest.approx(63.656741, rel=1e-6)
    assert t_two_sided_p(math.inf, df) == 0.0
    with pytest.raises(ValueError):
        t_critical(1.0, df)
    with pytest.raises(ValueError):
        t_critical(0.95, 0.0)
