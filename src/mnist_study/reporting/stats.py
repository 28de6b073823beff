"""The statistics of the report: a difference of two means over seeds, its Welch confidence interval and
t-test, and the words the report may use for it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05  # the level of the test; the interval is the matching 95 % one


@dataclass(frozen=True)
class Difference:
    """mean(treated) - mean(control); the interval, dof and p-value are NaN where no test is possible."""

    difference: float
    low: float
    high: float
    dof: float
    p_value: float
    n_treated: int
    n_control: int

    @property
    def testable(self) -> bool:
        return not math.isnan(self.p_value)

    @property
    def seeds(self) -> str:
        """The number of seeds, as in 'at 3 seeds' (or 'at 3 and 2 seeds' when the groups differ)."""
        if self.n_treated == self.n_control:
            return f"{self.n_treated} seed{'s' if self.n_treated != 1 else ''}"
        return f"{self.n_treated} and {self.n_control} seeds"


def welch(treated: Sequence[float], control: Sequence[float], confidence: float = 1 - ALPHA) -> Difference:
    """The difference of the means with Welch's confidence interval (t distribution, Welch–Satterthwaite
    degrees of freedom) and the two-sided Welch t-test p-value. Either group with fewer than 2 values, or
    two groups without any spread, leave the interval and the test undefined (NaN)."""
    if not treated or not control:
        raise ValueError("welch() needs at least one value in each group")
    n_t, n_c = len(treated), len(control)
    difference = statistics.fmean(treated) - statistics.fmean(control)
    undefined = Difference(difference, math.nan, math.nan, math.nan, math.nan, n_t, n_c)
    if n_t < 2 or n_c < 2:
        return undefined
    share_t, share_c = statistics.variance(treated) / n_t, statistics.variance(control) / n_c
    standard_error = math.sqrt(share_t + share_c)
    if standard_error == 0:
        return undefined
    dof = (share_t + share_c) ** 2 / (share_t**2 / (n_t - 1) + share_c**2 / (n_c - 1))
    half_width = float(stats.t.ppf(1 - (1 - confidence) / 2, dof)) * standard_error
    p_value = float(stats.ttest_ind(treated, control, equal_var=False).pvalue)
    return Difference(difference, difference - half_width, difference + half_width, dof, p_value, n_t, n_c)


def verdict(result: Difference, alpha: float = ALPHA, higher: str = "helps", lower: str = "hurts") -> str:
    """`higher` or `lower` (the treated group's mean against the control's) only for a significant difference
    (p < alpha); otherwise says why not."""
    if result.n_treated < 2 or result.n_control < 2:
        return "one seed: no test possible"
    if not result.testable:
        return f"no test possible: the {result.seeds} give identical results"
    if result.p_value < alpha:
        return higher if result.difference > 0 else lower
    return f"no significant difference at {result.seeds}"
