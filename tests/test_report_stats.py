"""compare's statistics against textbook formulas computed by hand (closed forms and numerical integration)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genbench.report.stats import pm, spread_test, stat, welch


def t_quantile_df2(p: float) -> float:
    """Student's t with 2 degrees of freedom has a closed-form quantile: (2p - 1) / sqrt(2p(1 - p))."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def test_welch_on_two_df_matches_the_closed_form():
    """a = (1, 3), b = (4, 6): s^2 = 2 each, se^2 = 2/2 + 2/2 = 2, t = -3/sqrt(2), Welch-Satterthwaite df = 2.
    With 2 df the two-sided p-value is 1 - |t| / sqrt(2 + t^2)."""
    w = welch(stat([1.0, 3.0]), stat([4.0, 6.0]))
    t = -3 / math.sqrt(2)
    assert (w.delta, w.df, w.n_a, w.n_b) == (-3.0, pytest.approx(2.0), 2, 2) and w.t == pytest.approx(t)
    assert w.p == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), rel=1e-10)  # 0.168
    q = t_quantile_df2(0.975)  # 4.303
    assert w.ci == (pytest.approx(-3 - q * math.sqrt(2)), pytest.approx(-3 + q * math.sqrt(2)))
    assert w.mdd == pytest.approx((q + t_quantile_df2(0.80)) * math.sqrt(2))
    assert not w.clear


def test_welch_on_fractional_df_matches_the_integrated_t_density():
    """a = (10, 12, 14), b = (20, 30): t = -13 / sqrt(4/3 + 50/2) = -2.533 on
    df = (4/3 + 25)^2 / ((4/3)^2/2 + 25^2/1) = 1.108; p = 2 * integral of the t density beyond |t|."""
    w = welch(stat([10.0, 12.0, 14.0]), stat([20.0, 30.0]))
    se2 = 4 / 3 + 25
    df = se2**2 / ((4 / 3) ** 2 / 2 + 25**2 / 1)
    t = -13 / math.sqrt(se2)
    assert w.df == pytest.approx(df) and w.t == pytest.approx(t)
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    x = np.linspace(0, abs(t), 200_001)
    density = c * (1 + x**2 / df) ** (-(df + 1) / 2)
    inner = float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))  # trapezoid rule on [0, |t|]
    assert w.p == pytest.approx(1 - 2 * inner, abs=1e-6)  # 0.224


def test_welch_edge_cases():
    assert welch(stat([1.0]), stat([2.0, 3.0])) is None  # one seed: no test
    exact = welch(stat([0.8, 0.8, 0.8]), stat([0.4, 0.4]))  # every seed equal: the difference is exact
    assert exact.clear and exact.ci == (pytest.approx(0.4), pytest.approx(0.4)) and "every seed gave the same" in str(exact)
    same = welch(stat([1.0, 1.0]), stat([1.0, 1.0]))
    assert not same.clear
    assert "Welch's t-test, 2 vs 2 seeds: t = -2.12 on 2 df, p = 0.17" in str(welch(stat([1.0, 3.0]), stat([4.0, 6.0])))


def test_spread_test_matches_the_f_distribution_with_one_and_one_df():
    """log a = (0, 1), log b = (0, 0.5): F = 0.5 / 0.125 = 4 on (1, 1) df, whose CDF is (2/pi) atan(sqrt(F))."""
    s = spread_test([1.0, math.e], [1.0, math.exp(0.5)])
    assert s.ratio == pytest.approx(2.0) and (s.n_a, s.n_b) == (2, 2)
    assert s.p == pytest.approx(1 - 2 / math.pi * math.atan(2.0), rel=1e-10)  # 0.295
    assert s.resolvable == pytest.approx(math.sqrt(161.4476), rel=1e-4)  # F_0.95(1, 1) = 161.45
    assert spread_test([1.0], [1.0, 2.0]) is None
    assert spread_test([1.0, 2.0], [3.0, 3.0]).p == 0.0  # no spread on the other side


def test_mean_std_and_their_text():
    assert pm(45.2345, 3.14) == "45.2 ± 3.1" and pm(0.61234, 0.0213) == "0.612 ± 0.021" and pm(123456, 789) == "123,456 ± 789"
    assert pm(float("nan"), 1.0) == "—" and pm(20.0, float("nan")) == "20" and pm(3.14159, 0.0) == "3.142"
    s = stat([1.0, float("nan"), 3.0])
    assert (s.mean, s.std, s.n, s.of) == (2.0, pytest.approx(math.sqrt(2)), 2, 3) and str(s) == "2.0 ± 1.4 (2/3 runs)"
    assert stat([0.8, 0.8, 0.8]).std == 0.0  # not 1e-16
