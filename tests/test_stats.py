"""The report's statistics on small numbers worked out by hand: Welch's interval and t-test, and the wording."""

import math

import pytest

from mnist_study.reporting.stats import Difference, verdict, welch


def t_upper_tail(x: float, dof: float, steps: int = 20_000) -> float:
    """P(T > x) for Student's t, by the midpoint rule on its density (math only: independent of scipy).
    The substitution t = x / u maps (x, inf) onto (0, 1)."""
    scale = math.gamma((dof + 1) / 2) / (math.sqrt(dof * math.pi) * math.gamma(dof / 2))
    total = 0.0
    for i in range(steps):
        u = (i + 0.5) / steps
        t = x / u
        total += scale * (1 + t * t / dof) ** (-(dof + 1) / 2) * x / (u * u) / steps
    return total


def test_welch_by_hand() -> None:
    # [1, 2, 3]: mean 2, sample variance 1, n 3          -> variance of the mean 1/3
    # [4, 5, 6, 7]: mean 5.5, sample variance 5/3, n 4   -> variance of the mean 5/12
    # standard error = sqrt(1/3 + 5/12) = sqrt(3/4) = 0.8660
    # t = (2 - 5.5) / 0.8660 = -4.0415
    # dof = (3/4)^2 / ((1/3)^2 / 2 + (5/12)^2 / 3) = (9/16) / (49/432) = 243/49 = 4.9592
    result = welch([1, 2, 3], [4, 5, 6, 7])
    standard_error, t, dof = math.sqrt(3 / 4), -3.5 / math.sqrt(3 / 4), 243 / 49

    assert result.difference == pytest.approx(-3.5)
    assert result.dof == pytest.approx(dof)
    # Two-sided p = 2 P(T > 4.0415) at 4.9592 dof = 0.010077 (the midpoint rule above, without scipy).
    assert 2 * t_upper_tail(abs(t), dof) == pytest.approx(0.010077, abs=1e-6)
    assert result.p_value == pytest.approx(2 * t_upper_tail(abs(t), dof), rel=1e-5)
    # 95 % interval: -3.5 ± t_0.975(4.9592) x 0.8660 = -3.5 ± 2.5770 x 0.8660 = [-5.7317, -1.2683]
    half_width = (result.high - result.low) / 2
    assert (result.low + result.high) / 2 == pytest.approx(-3.5)
    assert half_width == pytest.approx(2.5770 * standard_error, abs=1e-3)
    assert t_upper_tail(half_width / standard_error, dof) == pytest.approx(0.025, abs=1e-6)
    assert (result.low, result.high) == pytest.approx((-5.7317, -1.2683), abs=1e-4)


def test_the_interval_is_symmetric_in_the_order_of_the_groups() -> None:
    forward, backward = welch([1, 2, 3], [4, 5, 6, 7]), welch([4, 5, 6, 7], [1, 2, 3])
    assert backward.difference == -forward.difference
    assert (backward.low, backward.high) == pytest.approx((-forward.high, -forward.low))
    assert backward.p_value == pytest.approx(forward.p_value)


def test_one_seed_allows_no_test() -> None:
    result = welch([0.985], [0.983, 0.984])
    assert result.difference == pytest.approx(0.0015)
    assert math.isnan(result.low) and math.isnan(result.high) and math.isnan(result.p_value)
    assert not result.testable
    assert verdict(result) == "one seed: no test possible"
    assert verdict(welch([0.985], [0.983])) == "one seed: no test possible"


def test_seeds_without_spread_allow_no_test() -> None:
    result = welch([0.5, 0.5], [0.4, 0.4])
    assert math.isnan(result.p_value)
    assert verdict(result) == "no test possible: the 2 seeds give identical results"


def test_helps_and_hurts_only_below_the_level() -> None:
    def diff(delta: float, p: float, n: int = 3) -> Difference:
        return Difference(delta, delta - 1, delta + 1, 4.0, p, n, n)

    assert verdict(diff(0.14, 0.01)) == "helps"
    assert verdict(diff(-0.54, 0.049)) == "hurts"
    assert verdict(diff(0.14, 0.05)) == "no significant difference at 3 seeds"
    assert verdict(diff(-0.54, 0.2, n=2)) == "no significant difference at 2 seeds"
    assert verdict(Difference(0.1, 0, 0.2, 3.0, 0.3, 3, 2)) == "no significant difference at 3 and 2 seeds"
    # From data: a clear gain, a clear loss, and noise.
    assert verdict(welch([0.9866, 0.9864, 0.9867], [0.9850, 0.9852, 0.9849])) == "helps"
    assert verdict(welch([0.9216, 0.9205, 0.9210], [0.9270, 0.9271, 0.9269])) == "hurts"
    assert verdict(welch([0.9840, 0.9870, 0.9855], [0.9850, 0.9852, 0.9849])).startswith("no significant")


def test_empty_groups_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        welch([], [1.0])
