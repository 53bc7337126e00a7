"""The hedging budget: speculation that backs off when the mesh is saturated.

A token bucket in the spirit of gRPC's ``retryThrottling``: it holds up to
``max_tokens``; a swarm whose workers fail or push back ("busy, don't hedge to
me") takes one token per failure, a successful one gives back ``token_ratio``.
While the bucket is more than half full a request may fan out to its full
size; below that it goes to one worker only, so speculation never amplifies
load on a mesh that is already refusing work.  Pure: no clock, no I/O.

The router keeps one of these for all its clients as well
(``meshcore_router.hedging``): there a refused copy is answered at once, so a
saturated mesh never sees the speculation of clients that ignore their own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HedgeBudget", "HedgeBudgetConfig"]


@dataclass(frozen=True, slots=True)
class HedgeBudgetConfig:
    """The bucket's size and refill.

    Attributes:
        max_tokens: how many failures the bucket absorbs from full.
        token_ratio: tokens a successful swarm gives back.
    """

    max_tokens: float = 10.0
    token_ratio: float = 0.1


class HedgeBudget:
    """How many copies of the next request may go out."""

    def __init__(self, config: HedgeBudgetConfig = HedgeBudgetConfig()) -> None:
        self.config = config
        self.tokens = config.max_tokens

    @property
    def allows_hedges(self) -> bool:
        """Whether the bucket holds more than half of ``max_tokens`` (never, with ``max_tokens`` 0)."""
        return self.tokens > self.config.max_tokens / 2

    def copies(self, wanted: int) -> int:
        """``wanted`` while the budget allows hedging, else 1."""
        return wanted if self.allows_hedges else 1

    def failed(self, count: int = 1) -> None:
        """``count`` workers failed or pushed back."""
        self.tokens = max(0.0, self.tokens - count)

    def succeeded(self) -> None:
        """A swarm request completed."""
        self.tokens = min(self.config.max_tokens, self.tokens + self.config.token_ratio)
