"""The retry policy, a pure table: statuses, server hints, caps and backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_sdk._retry import RetryPolicy, retry_after_hint_s, retry_delay_s, should_retry
from meshcore_sdk.protocol.errors import BadRequest, ConnectError, InternalError, MeshError, NoCapacity

POLICY = RetryPolicy(max_retries=2, max_retry_after_s=60.0)
NOW_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("attempt", "error", "status", "headers", "expected"),
    [
        (0, NoCapacity("busy"), 503, {}, True),
        (1, NoCapacity("busy"), 503, {}, True),
        (2, NoCapacity("busy"), 503, {}, False),  # attempts used up
        (0, BadRequest("bad"), 400, {}, False),
        (0, BadRequest("bad"), 408, {}, True),
        (0, BadRequest("bad"), 409, {}, True),
        (0, BadRequest("bad"), 429, {}, True),
        (0, InternalError("x"), 500, {"x-should-retry": "false"}, False),
        (0, BadRequest("bad"), 400, {"x-should-retry": "true"}, True),
        (0, NoCapacity("busy"), 503, {"retry-after": "61"}, False),  # hint beyond the cap
        (0, NoCapacity("busy"), 503, {"retry-after": "60"}, True),
        (0, ConnectError("refused"), None, {}, True),  # no answer: the error class decides
        (0, MeshError("unknown"), None, {}, False),
        (0, MeshError("unknown", retryable=True), None, {}, True),
    ],
)
def test_should_retry(
    attempt: int, error: MeshError, status: int | None, headers: dict[str, str], expected: bool
) -> None:
    assert should_retry(POLICY, attempt=attempt, error=error, status=status, headers=headers, now_s=NOW_S) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the finer one wins
        ({"retry-after": "Tue, 14 Nov 2023 22:13:30 GMT"}, 10.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "inf"}, None),
    ],
)
def test_retry_after_hint(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_hint_s(headers, now_s=NOW_S) == expected


def test_delay_obeys_the_server_hint_within_the_cap() -> None:
    rng = random.Random(0)
    assert retry_delay_s(POLICY, attempt=0, rng=rng, headers={"retry-after": "3"}, now_s=NOW_S) == 3.0


@given(attempt=st.integers(0, 20), seed=st.integers(0, 2**32))
def test_backoff_delay_stays_within_its_cap(attempt: int, seed: int) -> None:
    """Without a hint, the delay is full jitter under min(max_s, initial_s * 2**attempt)."""
    delay = retry_delay_s(POLICY, attempt=attempt, rng=random.Random(seed), headers={}, now_s=NOW_S)
    assert 0.0 <= delay <= POLICY.backoff.cap_s(attempt) <= POLICY.backoff.max_s
