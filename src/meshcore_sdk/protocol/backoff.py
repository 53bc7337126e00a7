"""Reconnect and retry delays as a pure policy: exponential backoff with full jitter.

The randomness comes in as an argument, so tests pass a seeded ``random.Random``
and drivers pass their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the core never draws randomness itself: the caller's rng comes in
    import random

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS Architecture Blog, 2015).

    Attributes:
        initial_s: the cap of the first delay, in seconds.
        max_s: the largest cap any delay may reach, in seconds.
        multiplier: how much the cap grows after each attempt.
    """

    initial_s: float = 0.25
    max_s: float = 10.0
    multiplier: float = 2.0

    def cap_s(self, attempt: int) -> float:
        """The largest delay before retry number ``attempt`` (0-based)."""
        try:
            return min(self.max_s, self.initial_s * self.multiplier**attempt)
        except OverflowError:  # multiplier**attempt left the float range: max_s was reached long before
            return self.max_s

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """A delay drawn uniformly in ``[0, cap_s(attempt)]``."""
        return rng.uniform(0.0, self.cap_s(attempt))

    def delays_s(self, rng: random.Random) -> Iterator[float]:
        """An endless series of delays, one per attempt."""
        attempt = 0
        while True:
            yield self.delay_s(attempt, rng)
            attempt += 1
