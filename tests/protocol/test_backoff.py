"""Reconnect backoff: exponential caps with full jitter, randomness injected."""

from __future__ import annotations

import itertools
import random

import pytest

from meshcore_sdk.protocol import Backoff

SEEDS = [0, 1, 7, 20_240_601]
POLICIES = [Backoff(), Backoff(initial_s=0.1, max_s=30.0, multiplier=3.0), Backoff(initial_s=1.0, max_s=1.0)]


@pytest.mark.parametrize(
    ("policy", "caps"),
    [
        (Backoff(), [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]),
        (Backoff(initial_s=1.0, max_s=60.0, multiplier=3.0), [1.0, 3.0, 9.0, 27.0, 60.0, 60.0, 60.0, 60.0]),
        (Backoff(initial_s=2.0, max_s=2.0), [2.0] * 8),
        (Backoff(initial_s=0.5, max_s=5.0, multiplier=1.0), [0.5] * 8),
    ],
)
def test_caps_grow_geometrically_up_to_the_maximum(policy: Backoff, caps: list[float]) -> None:
    """Attempt n waits at most min(max_s, initial_s * multiplier**n)."""
    assert [policy.cap_s(attempt) for attempt in range(8)] == caps


@pytest.mark.parametrize("attempt", [1_024, 1_100, 100_000])
def test_a_long_outage_stays_at_the_maximum(attempt: int) -> None:
    """A node that has retried for hours keeps waiting max_s; the growth never overflows."""
    assert Backoff().cap_s(attempt) == 10.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_delays_lie_within_zero_and_a_non_decreasing_cap(policy: Backoff, seed: int) -> None:
    """Each drawn delay is in [0, cap]; caps never shrink and never pass max_s."""
    print(f"seed={seed}")
    delays = list(itertools.islice(policy.delays_s(random.Random(seed)), 200))
    caps = [policy.cap_s(attempt) for attempt in range(200)]

    assert [
        attempt for attempt, (delay, cap) in enumerate(zip(delays, caps, strict=True)) if not 0 <= delay <= cap
    ] == []
    assert caps == sorted(caps)
    assert (max(caps), caps[-1]) == (policy.max_s, policy.max_s)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_same_seed_gives_the_same_delays(seed: int) -> None:
    """Delays depend on the injected rng alone, so a seeded run replays exactly."""
    print(f"seed={seed}")
    first = list(itertools.islice(Backoff().delays_s(random.Random(seed)), 20))
    again = [Backoff().delay_s(attempt, random.Random(seed)) for attempt in range(1)] + first[1:]

    assert first == list(itertools.islice(Backoff().delays_s(random.Random(seed)), 20))
    assert again == first
