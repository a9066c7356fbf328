"""Numbers over seeds: mean ± sample std, Welch's t-test, and what difference a few seeds can resolve.

Welch's t-test (Welch 1947) compares two means without assuming equal variances:
    t = (mean_a - mean_b) / se,   se^2 = s_a^2/n_a + s_b^2/n_b,
    df = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))      (Welch-Satterthwaite)
The p-value is scipy.stats.ttest_ind_from_stats(..., equal_var=False); the 95% confidence interval of the
difference is delta ± t_{0.975, df} se. The minimum detectable difference at the seeds' own spread,
    mdd = (t_{1-alpha/2, df} + t_{power, df}) se,
is the smallest true difference the test finds at level alpha with the stated power (the usual normal-theory
power formula with t quantiles): a smaller difference cannot be told apart from seed noise with these seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05  # two-sided level of every test
POWER = 0.80  # the power at which the minimum detectable difference is stated


@dataclass(frozen=True)
class Stat:
    """One column of one variant over its seeds."""
    mean: float
    std: float  # sample std (ddof=1); nan with fewer than two values
    n: int      # runs with a finite value
    of: int     # runs in the variant
    lo: float   # the smallest and largest run
    hi: float

    def __str__(self) -> str:
        text = pm(self.mean, self.std)
        return text if self.n in (0, self.of) else f"{text} ({self.n}/{self.of} runs)"


def stat(values: Sequence[float]) -> Stat:
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    mean = float(finite.mean()) if len(finite) else math.nan
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    if std <= 1e-12 * max(1.0, abs(mean)):  # equal values up to rounding: 0.8 three times has std 1e-16
        std = 0.0
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (math.nan, math.nan)
    return Stat(mean, std, len(finite), len(values), lo, hi)


def pm(mean: float, std: float) -> str:
    """'45.2 ± 3.1': the std to two significant digits and the mean to the same decimal place."""
    if math.isnan(mean):
        return "—"
    if not math.isfinite(std) or std == 0:
        return f"{mean:,.0f}" if abs(mean) >= 1e4 or float(mean).is_integer() else f"{mean:.4g}"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{mean:,.{decimals}f} ± {std:,.{decimals}f}"


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of mean_a - mean_b, with its confidence interval and minimum detectable difference."""
    delta: float
    n_a: int
    n_b: int
    t: float
    df: float
    p: float
    ci: tuple[float, float]  # 1 - ALPHA confidence interval of delta
    mdd: float               # minimum detectable difference at ALPHA and POWER

    @property
    def clear(self) -> bool:
        return self.p < ALPHA

    def __str__(self) -> str:
        if not math.isfinite(self.t):  # no spread on either side
            return f"every seed gave the same value ({self.n_a} vs {self.n_b} seeds)"
        return (f"Welch's t-test, {self.n_a} vs {self.n_b} seeds: t = {self.t:.3g} on {self.df:.2g} df, p = {self.p:.2g}; "
                f"95% CI of the difference [{self.ci[0]:.3g}, {self.ci[1]:.3g}]; these seeds resolve differences "
                f"above {self.mdd:.3g} ({POWER:.0%} power)")


def welch(a: Stat, b: Stat) -> Welch | None:
    """Welch's test on a - b from the summary statistics; None when a side has fewer than two seeds."""
    if a.n < 2 or b.n < 2:
        return None
    delta = a.mean - b.mean
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    if va + vb == 0:  # every seed equal on both sides: the difference is exact
        return Welch(delta, a.n, b.n, math.copysign(math.inf, delta) if delta else math.nan, math.inf,
                     0.0 if delta else 1.0, (delta, delta), 0.0)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    p = float(sps.ttest_ind_from_stats(a.mean, a.std, a.n, b.mean, b.std, b.n, equal_var=False).pvalue)
    q = float(sps.t.ppf(1 - ALPHA / 2, df))
    mdd = (q + float(sps.t.ppf(POWER, df))) * se
    return Welch(delta, a.n, b.n, delta / se, df, p, (delta - q * se, delta + q * se), mdd)


@dataclass(frozen=True)
class SpreadTest:
    """One-sided F-test that a's relative spread over seeds is larger than b's: F = var(log a) / var(log b).
    The std of log x is the coefficient of variation std/mean to first order, so the test ignores scale."""
    ratio: float       # std(log a) / std(log b)
    n_a: int
    n_b: int
    p: float           # P(F >= observed) under equal spread
    resolvable: float  # the std ratio this many seeds need for p < ALPHA

    @property
    def clear(self) -> bool:
        return self.p < ALPHA

    def __str__(self) -> str:
        return (f"F-test on var(log FID), {self.n_a} vs {self.n_b} seeds: std ratio {self.ratio:.3g}, one-sided "
                f"p = {self.p:.2g}; these seeds resolve only a ratio above {self.resolvable:.3g}")


def spread_test(a: Sequence[float], b: Sequence[float]) -> SpreadTest | None:
    """Is a's relative spread larger than b's? None when a side has fewer than two positive values."""
    la = np.log([x for x in a if math.isfinite(x) and x > 0])
    lb = np.log([x for x in b if math.isfinite(x) and x > 0])
    if len(la) < 2 or len(lb) < 2:
        return None
    va, vb = float(la.var(ddof=1)), float(lb.var(ddof=1))
    dfa, dfb = len(la) - 1, len(lb) - 1
    if vb == 0:
        f, p = (math.inf, 0.0) if va > 0 else (math.nan, 1.0)
    else:
        f = va / vb
        p = float(sps.f.sf(f, dfa, dfb))
    return SpreadTest(math.sqrt(f) if math.isfinite(f) else f, len(la), len(lb), p,
                      math.sqrt(float(sps.f.ppf(1 - ALPHA, dfa, dfb))))
