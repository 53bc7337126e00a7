"""When to repeat a failed request, and how long to wait first: a pure policy.

Theory of operation.  A request is retried only before its stream has
delivered anything (a retry after that would repeat tokens the caller has
already seen), and at most ``max_retries`` times.  For each failure the driver
asks :func:`should_retry` and, on yes, waits :func:`retry_delay_s`.  Both read
the server's hints first, as openai-python does:

============================  =====================================================
hint (response header)         effect
============================  =====================================================
``x-should-retry: true``       retry, whatever the status (attempts permitting)
``x-should-retry: false``      never retry
``retry-after-ms: <ms>``       wait exactly that long, if at most the cap
``retry-after: <s or date>``   the same, in seconds or as an HTTP date
a hint above the cap           no retry: the error is raised with ``retry_after_s``
============================  =====================================================

Without hints, a response is retried on 408, 409, 429 and every 5xx; an
exception (no response) is retried when its class is retryable (connection
failures and timeouts are).  Without a usable ``retry-after``, the delay is
exponential backoff with full jitter from an injected ``rng``.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from meshcore_sdk.protocol.backoff import Backoff
from meshcore_sdk.protocol.errors import MeshError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "retry_after_hint_s", "retry_delay_s", "should_retry"]

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Statuses below 500 that are worth repeating (timeout, conflict, rate limit)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries.

    Attributes:
        max_retries: retries after the first attempt.
        backoff: delays when the server gives no hint.
        max_retry_after_s: the longest server-requested wait that is obeyed, in seconds.
    """

    max_retries: int = 2
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=0.5, max_s=8.0))
    max_retry_after_s: float = 60.0


def should_retry(
    policy: RetryPolicy,
    *,
    attempt: int,
    error: MeshError,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    now_s: float = 0.0,
) -> bool:
    """Decide whether to repeat a request after ``attempt`` (0-based) failed with ``error``.

    Args:
        policy: the client's retry policy.
        attempt: the number of the attempt that failed, 0 for the first.
        error: the failure, already mapped into the error tree.
        status: the HTTP status, when the router answered at all.
        headers: the response's headers, when it answered (keys in lower case).
        now_s: the wall clock in seconds since the epoch, to read a date in ``retry-after``.
    """
    if attempt >= policy.max_retries:
        return False
    headers = headers or {}
    hint = retry_after_hint_s(headers, now_s=now_s)
    if hint is not None and hint > policy.max_retry_after_s:
        return False
    explicit = headers.get("x-should-retry", "").strip().lower()
    if explicit in ("true", "false"):
        return explicit == "true"
    if status is not None:
        return status in RETRYABLE_STATUSES or status >= 500
    return error.retryable


def retry_delay_s(
    policy: RetryPolicy,
    *,
    attempt: int,
    rng: random.Random,
    headers: Mapping[str, str] | None = None,
    now_s: float = 0.0,
) -> float:
    """How long to wait before retrying after ``attempt`` (0-based) failed.

    The server's ``retry-after-ms`` or ``retry-after`` wins when it is at most
    ``policy.max_retry_after_s``; otherwise backoff with full jitter from ``rng``.
    """
    hint = retry_after_hint_s(headers or {}, now_s=now_s)
    if hint is not None and hint <= policy.max_retry_after_s:
        return hint
    return policy.backoff.delay_s(attempt, rng)


def retry_after_hint_s(headers: Mapping[str, str], *, now_s: float) -> float | None:
    """Read the server's requested wait from ``retry-after-ms`` or ``retry-after``, in seconds.

    ``retry-after`` may be seconds or an HTTP date (compared with ``now_s``).
    Unreadable or negative values count as no hint; a date in the past is 0.
    """
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return seconds
    return _seconds_until(raw, now_s=now_s)


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _seconds_until(date: str, *, now_s: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)
