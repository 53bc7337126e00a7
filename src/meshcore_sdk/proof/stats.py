"""Small exact statistics for audits: binomial confidence bounds and Wald's sequential test.

Theory of operation (research §6.6, §7 T1)
--------------------------------------------
* :func:`clopper_pearson` is the exact two-sided binomial interval: the
  lower end is the ``p`` with ``P(X >= k) = (1 - confidence) / 2``, the upper
  the ``p`` with ``P(X <= k) = (1 - confidence) / 2``, found by bisection on
  the binomial tail (summed in log space with :func:`math.lgamma`).
  :func:`upper_bound` is the one-sided bound (all of ``1 - confidence`` in the
  upper tail), the "rule of three": 0 flags in 3,000 honest audits bounds the
  false-flag rate by 0.000998 at 95% (the two-sided interval's upper end is 0.00123).
* :func:`wald_sprt` is Wald's sequential probability ratio test between
  "honest" (each audit flags with probability ``f``) and "cheating" (each
  audit flags with probability ``d``).  It adds ``log(d/f)`` per flag and
  ``log((1-d)/(1-f))`` per clean audit and stops at the first crossing of
  ``log((1-beta)/alpha)`` (confirm a cheat; ``alpha`` is the false-slash rate)
  or ``log(beta/(1-alpha))`` (accept honest; ``beta`` is the rate of cheats let go).

Pure Python: no scipy.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Final

from meshcore_sdk.protocol.errors import ConfigError

__all__ = [
    "SprtDecision",
    "binomial_tail",
    "clopper_pearson",
    "sprt_llr",
    "sprt_thresholds",
    "upper_bound",
    "wald_sprt",
]

_BISECTIONS: Final = 100


def _log_term(n: int, i: int, log_p: float, log_q: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q


def _log_sum(terms: list[float]) -> float:
    top = max(terms)
    if top == -math.inf:
        return top
    return top + math.log(math.fsum(math.exp(t - top) for t in terms))


def _log_mass(n: int, span: range, p: float) -> float:
    log_p, log_q = math.log(p), math.log1p(-p)
    return _log_sum([_log_term(n, i, log_p, log_q) for i in span])


def _cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)``, summing the shorter side (absolute error about 1e-16)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if k + 1 <= n - k:
        return min(1.0, math.exp(_log_mass(n, range(k + 1), p)))
    return max(0.0, 1.0 - math.exp(_log_mass(n, range(k + 1, n + 1), p)))


def binomial_tail(k: int, n: int, p: float, *, upper: bool) -> float:
    """``P(X >= k)`` (``upper``) or ``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    if p <= 0.0 or p >= 1.0:
        certain = 0 if p <= 0.0 else n
        return float(certain >= k if upper else certain <= k)
    return 1.0 - _cdf(k - 1, n, p) if upper else _cdf(k, n, p)


def _bisect(k: int, n: int, target: float, *, upper: bool) -> float:
    """The ``p`` where the tail equals ``target`` (the tail is monotonic in ``p``)."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        mid = (low + high) / 2
        tail = binomial_tail(k, n, mid, upper=upper)
        # P(X >= k) grows with p; P(X <= k) shrinks with p.
        if (tail < target) == upper:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _check(k: int, n: int, confidence: float) -> None:
    if not 0 <= k <= n or n < 1:
        raise ConfigError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact two-sided interval for a binomial proportion after ``k`` successes in ``n`` trials."""
    _check(k, n, confidence)
    tail = (1.0 - confidence) / 2
    low = 0.0 if k == 0 else _bisect(k, n, tail, upper=True)
    high = 1.0 if k == n else _bisect(k, n, tail, upper=False)
    return low, high


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """The exact one-sided upper bound: the ``p`` with ``P(X <= k) = 1 - confidence``."""
    _check(k, n, confidence)
    return 1.0 if k == n else _bisect(k, n, 1.0 - confidence, upper=False)


class SprtDecision(enum.StrEnum):
    """Where a sequential test stands."""

    CONTINUE = "continue"
    ACCEPT_HONEST = "accept_honest"
    CONFIRM_CHEAT = "confirm_cheat"


def _check_rates(d: float, f: float, alpha: float, beta: float) -> None:
    if not 0.0 < f < d < 1.0:
        raise ConfigError(f"need 0 < f < d < 1, got d={d}, f={f}")
    if not (0.0 < alpha < 0.5 and 0.0 < beta < 0.5):
        raise ConfigError(f"alpha and beta must be in (0, 0.5), got {alpha}, {beta}")


def sprt_thresholds(alpha: float, beta: float) -> tuple[float, float]:
    """Wald's (accept honest, confirm cheat) log-likelihood-ratio thresholds."""
    return math.log(beta / (1.0 - alpha)), math.log((1.0 - beta) / alpha)


def sprt_llr(outcomes: Sequence[bool], d: float, f: float) -> float:
    """The log-likelihood ratio, cheating over honest, of audit outcomes (True: flagged)."""
    flags = sum(1 for flagged in outcomes if flagged)
    return flags * math.log(d / f) + (len(outcomes) - flags) * math.log((1.0 - d) / (1.0 - f))


def wald_sprt(outcomes: Sequence[bool], d: float, f: float, alpha: float, beta: float) -> SprtDecision:
    """Wald's SPRT over audit outcomes in order, stopping at the first threshold crossed.

    Args:
        outcomes: audit results in order (True: the audit flagged the worker).
        d: the probability that an audit of a cheating worker flags it.
        f: the probability that an audit of an honest worker flags it.
        alpha: the tolerated probability of confirming a cheat on an honest worker.
        beta: the tolerated probability of accepting a cheating worker as honest.
    """
    _check_rates(d, f, alpha, beta)
    accept, confirm = sprt_thresholds(alpha, beta)
    flag_step, clean_step = math.log(d / f), math.log((1.0 - d) / (1.0 - f))
    llr = 0.0
    for flagged in outcomes:
        llr += flag_step if flagged else clean_step
        if llr >= confirm:
            return SprtDecision.CONFIRM_CHEAT
        if llr <= accept:
            return SprtDecision.ACCEPT_HONEST
    return SprtDecision.CONTINUE
