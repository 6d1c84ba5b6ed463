"""Two-sample statistics on constructed samples (pure numpy, no scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from profiling.statistics import (
    bootstrap_ratio_ci,
    mann_whitney_u,
    quantile,
    t_critical,
    t_two_sided_p,
    two_proportion_test,
    welch_log_ratio,
)


def lognormal(seed: int, n: int = 200, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(mean=-1.0, sigma=0.5, size=n) * scale


@pytest.mark.parametrize("n", [1, 2, 5, 10, 201])
@pytest.mark.parametrize("q", [0.0, 0.01, 0.25, 0.5, 0.95, 0.99, 1.0])
def test_quantile_matches_numpy_linear(n: int, q: float) -> None:
    values = np.random.default_rng(n).normal(size=n)
    assert quantile(values, q) == np.quantile(values, q)
    assert quantile(list(values), q) == np.quantile(values, q)


def test_quantile_rejects_empty_samples_and_bad_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        quantile([1.0], 95)


def test_mann_whitney_u_matches_a_hand_computed_example() -> None:
    # No overlap: every a is below every b, so U = 0. mean n_a*n_b/2 = 4.5,
    # variance 3*3/12 * (6+1) = 5.25, z = (4.5 - 0.5) / sqrt(5.25) = 1.7457.
    u, p = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert u == 0.0
    assert p == pytest.approx(math.erfc(4.0 / math.sqrt(5.25) / math.sqrt(2)))
    assert p == pytest.approx(0.0808556, abs=1e-6)  # scipy's asymptotic value


def test_mann_whitney_u_with_ties_uses_mean_ranks_and_corrected_variance() -> None:
    # Pooled: 1(a) 2(a) 2(a) 2(b) 3(a) 3(b) 4(b) 5(b); the three 2s share rank 3, the two
    # 3s rank 5.5. Rank sum of a = 1 + 3 + 3 + 5.5 = 12.5, U = 12.5 - 4*5/2 = 2.5.
    # Tie term: (27 - 3) + (8 - 2) = 30; variance = 16/12 * (9 - 30/56).
    u, p = mann_whitney_u([1, 2, 2, 3], [2, 3, 4, 5])
    assert u == 2.5
    z = (abs(2.5 - 8.0) - 0.5) / math.sqrt(16 / 12 * (9 - 30 / 56))
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_mann_whitney_u_is_symmetric() -> None:
    a, b = lognormal(1, 30), lognormal(2, 40)
    u_ab, p_ab = mann_whitney_u(a, b)
    u_ba, p_ba = mann_whitney_u(b, a)
    assert u_ab + u_ba == pytest.approx(30 * 40)
    assert p_ab == pytest.approx(p_ba)


def test_a_known_shift_is_detected() -> None:
    a, b = lognormal(1), lognormal(2, scale=1.5)
    _, p = mann_whitney_u(a, b)
    ratio, low, high = bootstrap_ratio_ci(a, b, q=0.5)
    assert p < 0.01
    assert 1.0 < low <= ratio <= high
    assert ratio == pytest.approx(quantile(b, 0.5) / quantile(a, 0.5))


def test_the_same_distribution_is_not_a_change() -> None:
    a, b = lognormal(1), lognormal(2)
    _, p = mann_whitney_u(a, b)
    assert p > 0.05
    for q in (0.5, 0.95):
        _, low, high = bootstrap_ratio_ci(a, b, q=q)
        assert low < 1.0 < high


def test_identical_samples_give_p_one_and_ratio_one() -> None:
    a = lognormal(3)
    assert mann_whitney_u(a, a.copy())[1] == 1.0
    ratio, low, high = bootstrap_ratio_ci(a, a.copy(), q=0.95)
    assert ratio == 1.0
    assert low <= 1.0 <= high
    assert mann_whitney_u([2.0] * 5, [2.0] * 7) == (17.5, 1.0)


def test_bootstrap_is_deterministic_by_seed() -> None:
    a, b = lognormal(1, 50), lognormal(2, 50)
    assert bootstrap_ratio_ci(a, b, seed=7) == bootstrap_ratio_ci(a, b, seed=7)
    assert bootstrap_ratio_ci(a, b, seed=7) != bootstrap_ratio_ci(a, b, seed=8)


@pytest.mark.parametrize("q", [0.5, 0.9])
def test_bootstrap_interval_agrees_with_brute_force_resampling(q: float) -> None:
    a, b = lognormal(4, 60), lognormal(5, 80, scale=1.2)
    rng = np.random.default_rng(0)
    boot_a = np.quantile(a[rng.integers(0, a.size, (8000, a.size))], q, axis=1)
    boot_b = np.quantile(b[rng.integers(0, b.size, (8000, b.size))], q, axis=1)
    low, high = np.quantile(boot_b / boot_a, [0.025, 0.975])
    _, fast_low, fast_high = bootstrap_ratio_ci(a, b, q=q, n_boot=8000)
    assert fast_low == pytest.approx(low, rel=0.03)
    assert fast_high == pytest.approx(high, rel=0.03)


def test_bootstrap_handles_one_value_and_rejects_bad_arguments() -> None:
    assert bootstrap_ratio_ci([1.0], [2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([], [1.0])
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([1.0], [1.0], confidence=1.0)


def test_student_t_matches_known_values() -> None:
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| > 1) = 1/2
    assert t_two_sided_p(0.0, 4) == pytest.approx(1.0)
    assert t_two_sided_p(2.0, 5) == pytest.approx(0.101939, abs=1e-6)
    assert t_critical(0.95, 10) == pytest.approx(2.228139, abs=1e-6)
    assert t_critical(0.95, 1e9) == pytest.approx(1.959964, abs=1e-6)


def test_welch_log_ratio_on_per_run_figures() -> None:
    ratio, low, high, p = welch_log_ratio([10.0, 10.4, 9.8], [15.1, 15.6, 14.9])
    assert ratio == pytest.approx(1.5, rel=0.02)
    assert 1.0 < low < ratio < high
    assert p < 0.01
    assert welch_log_ratio([3.0, 3.0, 3.0], [3.0, 3.0, 3.0]) == (1.0, 1.0, 1.0, 1.0)
    _, low, high, p = welch_log_ratio([10.0, 11.0, 9.0], [10.5, 9.5, 10.2])
    assert low < 1.0 < high and p > 0.05


def test_two_proportion_test() -> None:
    ratio, low, high, p = two_proportion_test(0, 200, 20, 200)
    assert math.isinf(ratio)
    assert 1.0 < low < high < math.inf
    assert p < 0.001
    ratio, low, high, p = two_proportion_test(5, 500, 5, 500)
    assert ratio == 1.0 and p == 1.0 and low < 1.0 < high
    ratio, low, high, p = two_proportion_test(0, 100, 0, 100)
    assert ratio == 1.0 and p == 1.0 and math.isnan(low)
