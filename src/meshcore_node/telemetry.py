"""What a node measures about itself: free memory, swapping, throughput.

``psutil`` reads the OS; the decisions (is the machine swapping? how many tokens
a second?) are small pure functions of successive samples, so they are tested
without a machine that swaps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import psutil

__all__ = ["MemorySample", "SwapWatch", "ThroughputMeter", "sample_memory"]


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading of the machine's memory.

    Attributes:
        available_bytes: memory available to new work without swapping.
        swapped_in_bytes: bytes swapped in since boot (a counter).
    """

    available_bytes: int
    swapped_in_bytes: int


def sample_memory() -> MemorySample:
    """Read the machine's memory counters now."""
    return MemorySample(psutil.virtual_memory().available, psutil.swap_memory().sin)


class SwapWatch:
    """Tells whether the OS is swapping: swap-ins grew between two samples.

    A node that swaps serves tokens at a fraction of its speed; it stops
    reporting READY until the swapping stops.
    """

    def __init__(self) -> None:
        self._last: int | None = None

    def update(self, sample: MemorySample) -> bool:
        """Take a sample; return whether swap-ins grew since the last one."""
        grew = self._last is not None and sample.swapped_in_bytes > self._last
        self._last = sample.swapped_in_bytes
        return grew


class ThroughputMeter:
    """Tokens a second over a sliding window.

    Args:
        window_s: how far back to count, in seconds.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self._window_s = window_s
        self._times: deque[float] = deque()

    def record(self, now: float) -> None:
        """Count one token at time ``now``."""
        self._times.append(now)

    def rate(self, now: float) -> float:
        """Tokens a second over the window ending at ``now``."""
        while self._times and self._times[0] <= now - self._window_s:
            self._times.popleft()
        return len(self._times) / self._window_s
