"""Binomial bounds against known values, and Wald's SPRT decisions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_sdk.proof.stats import (
    SprtDecision,
    binomial_tail,
    clopper_pearson,
    sprt_llr,
    sprt_thresholds,
    upper_bound,
    wald_sprt,
)
from meshcore_sdk.protocol.errors import ConfigError


def test_zero_flags_in_3000_audits() -> None:
    """Rule of three: one-sided 95% bound 0.000998 (= 1 - 0.05**(1/3000)); the two-sided interval reaches 0.00123."""
    assert upper_bound(0, 3000) == pytest.approx(1 - 0.05 ** (1 / 3000), rel=1e-9)
    assert upper_bound(0, 3000) == pytest.approx(0.000998, abs=1e-6)
    assert clopper_pearson(0, 3000) == pytest.approx((0.0, 1 - 0.025 ** (1 / 3000)), rel=1e-9)
    assert clopper_pearson(0, 3000, confidence=0.90)[1] == pytest.approx(upper_bound(0, 3000), rel=1e-9)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (5, 100, 0.01643188, 0.11283491),  # R: binom.test(5, 100)$conf.int
        (50, 100, 0.39832113, 0.60167887),
        (1, 10, 0.00252858, 0.44501612),
        (10, 10, 0.69150289, 1.0),
    ],
)
def test_clopper_pearson_known_values(k: int, n: int, low: float, high: float) -> None:
    assert clopper_pearson(k, n) == pytest.approx((low, high), abs=2e-8)


@given(st.integers(1, 400), st.data())
def test_the_interval_holds_the_estimate_and_its_tails_are_exact(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    low, high = clopper_pearson(k, n)
    assert low <= k / n <= high
    if k > 0:
        assert binomial_tail(k, n, low, upper=True) == pytest.approx(0.025, rel=1e-6)
    if k < n:
        assert binomial_tail(k, n, high, upper=False) == pytest.approx(0.025, rel=1e-6)


def test_binomial_tail_small_cases() -> None:
    assert binomial_tail(0, 5, 0.3, upper=False) == pytest.approx(0.7**5)
    assert binomial_tail(5, 5, 0.3, upper=True) == pytest.approx(0.3**5)
    assert binomial_tail(2, 4, 0.5, upper=True) == pytest.approx(11 / 16)
    assert binomial_tail(0, 4, 0.0, upper=False) == 1.0 and binomial_tail(1, 4, 1.0, upper=False) == 0.0


D, F, ALPHA, BETA = 0.9, 1e-3, 1e-7, 1e-3


def test_thresholds_are_walds() -> None:
    assert sprt_thresholds(ALPHA, BETA) == (math.log(BETA / (1 - ALPHA)), math.log((1 - BETA) / ALPHA))


def test_repeated_flags_confirm_a_cheat_and_clean_audits_accept_honesty() -> None:
    """A flag adds log(0.9/0.001) = 6.8, 16.1 confirms: three flags.

    A clean audit adds log(0.1/0.999) = -2.30, -6.91 accepts: four clean audits (three reach -6.907).
    """
    assert wald_sprt([True, True], D, F, ALPHA, BETA) is SprtDecision.CONTINUE
    assert wald_sprt([True, True, True], D, F, ALPHA, BETA) is SprtDecision.CONFIRM_CHEAT
    assert wald_sprt([False] * 3, D, F, ALPHA, BETA) is SprtDecision.CONTINUE
    assert wald_sprt([False] * 4, D, F, ALPHA, BETA) is SprtDecision.ACCEPT_HONEST
    assert wald_sprt([], D, F, ALPHA, BETA) is SprtDecision.CONTINUE


def test_the_test_stops_at_the_first_crossing() -> None:
    assert wald_sprt([False] * 4 + [True] * 5, D, F, ALPHA, BETA) is SprtDecision.ACCEPT_HONEST
    assert sprt_llr([True, False], D, F) == pytest.approx(math.log(D / F) + math.log((1 - D) / (1 - F)))


@pytest.mark.parametrize(
    ("d", "f", "alpha", "beta"), [(0.1, 0.2, 0.01, 0.01), (0.9, 0.0, 0.01, 0.01), (0.9, 0.1, 0.6, 0.01)]
)
def test_bad_rates_are_config_errors(d: float, f: float, alpha: float, beta: float) -> None:
    with pytest.raises(ConfigError):
        wald_sprt([True], d, f, alpha, beta)


def test_bad_counts_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        clopper_pearson(4, 3)
    with pytest.raises(ConfigError):
        upper_bound(0, 10, confidence=1.0)
