"""The router's hedging budget: speculation never amplifies load on a saturated mesh.

Theory of operation
-------------------
A swarm sends copies of one prompt as requests of one ``group`` on the
router's client stream (``docs/protocol.md`` §5).  On a client connection, a
copy is a *hedge* when another copy of its group is in flight there, and the
*primary* otherwise: the first copy, or the next one once every earlier copy
has ended.  (A fresh worker that a swarm asks for while its stalled leader
still runs is a hedge too.)

Every client keeps a budget of its own (:class:`HedgeBudget`), but a client may
ignore it, and many well-behaved clients together can still swamp a mesh.  So
the router keeps one :class:`HedgeBudget` for all its clients, a token bucket in
the spirit of gRPC's ``retryThrottling``, and asks :class:`HedgeGate` before it
places any copy:

=======  ==============  ======================  ===============================================
copy     bucket          a node takes a hedge    decision
=======  ==============  ======================  ===============================================
primary  any             -                       routed as any request (the budget is not asked)
hedge    half or less    -                       refused (``budget``)
hedge    over half       none                    refused (``capacity``); the bucket loses a token
hedge    over half       some                    placed on the best of them
=======  ==============  ======================  ===============================================

A node takes a hedge when it has a free sequence slot and does not push back
(:func:`meshcore_router.matchmaking.takes_hedge`), so a hedge never queues
behind real work.  A refused hedge is answered at once with ``no_capacity``
(not retryable), which the client's own budget counts as push-back; its swarm
carries on with the copies it has.

Direct mode's legs are hedges too when a swarm asks for their tickets together
(``TicketRequest.hedges``): the tickets after the first obey the same rule, but
a direct job ends out of the router's sight, so tickets neither take tokens
(not even a refusal for capacity) nor give them back.

Every request the router dispatches (a copy or not) feeds the bucket when it ends:

=========================================  ============================
end                                        bucket
=========================================  ============================
``done`` (``stop`` or ``length``)          gains ``token_ratio``
``done`` (``cancelled``)                   unchanged
a worker failure, push-back or timeout     loses one token
the request's own fault (``bad_request``)  unchanged
=========================================  ============================

Pure: no clock, no I/O; the router calls it from its drivers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from meshcore_sdk.protocol import FinishReason
from meshcore_sdk.protocol.errors import (
    AuthenticationError,
    BadRequest,
    MeshError,
    NoCapacity,
    PermissionDenied,
)
from meshcore_sdk.swarm.budget import HedgeBudget, HedgeBudgetConfig

__all__ = ["HedgeGate", "HedgeRefusal", "HedgeRefused", "HedgeStats", "is_worker_failure"]

_T = TypeVar("_T")

_REQUESTS_OWN_FAULT = (BadRequest, AuthenticationError, PermissionDenied)


class HedgeRefusal(enum.StrEnum):
    """Why a hedge was not placed (the ``reason`` label of ``meshcore_hedges_refused_total``)."""

    BUDGET = "budget"  # the router's bucket is at half or below
    CAPACITY = "capacity"  # no node has a free slot and takes hedges


@dataclass(frozen=True, slots=True)
class HedgeRefused:
    """A hedge the router will not place, and what to tell the client."""

    reason: HedgeRefusal
    message: str

    def error(self, *, request_id: str | None = None) -> NoCapacity:
        """The ``no_capacity`` error that answers the refused copy (not retryable: it is speculation)."""
        return NoCapacity(self.message, retryable=False, request_id=request_id)


@dataclass(frozen=True, slots=True)
class HedgeStats:
    """The gate's state, for metrics and ``GET /mesh/v1/status``."""

    tokens: float
    max_tokens: float
    allows_hedges: bool
    placed: int
    refused_budget: int
    refused_capacity: int


def is_worker_failure(error: MeshError) -> bool:
    """Whether a dispatched request's error says the mesh failed it (not the request's own fault)."""
    return not isinstance(error, _REQUESTS_OWN_FAULT)


class HedgeGate:
    """The router-wide budget, and the rule that places or refuses each hedge."""

    def __init__(self, config: HedgeBudgetConfig) -> None:
        self.budget = HedgeBudget(config)
        self.placed = 0
        self.refused = dict.fromkeys(HedgeRefusal, 0)

    def place(self, *, hedge: bool, pick: Callable[[bool], _T], drain: bool = True) -> _T | HedgeRefused:
        """Route a copy with ``pick(hedge)``, or refuse it if it is a hedge the mesh cannot afford.

        ``pick`` raises :class:`NoCapacity` when no node can take the copy; for a primary that
        error passes through, as for any request.  ``drain=False`` keeps a refusal for capacity
        from taking a token: for a direct-mode ticket, whose job ends out of the router's sight
        and so never gives one back.
        """
        if not hedge:
            return pick(False)
        if not self.budget.allows_hedges:
            return self._refuse(
                HedgeRefusal.BUDGET,
                f"hedge refused: the router's hedging budget is spent "
                f"({self.budget.tokens:.1f} of {self.budget.config.max_tokens:g} tokens)",
            )
        try:
            chosen = pick(True)
        except NoCapacity:
            if drain:
                self.budget.failed()
            return self._refuse(HedgeRefusal.CAPACITY, "hedge refused: no worker has a free slot for a hedge")
        self.placed += 1
        return chosen

    def finished(self, reason: FinishReason) -> None:
        """A dispatched request ended with ``done``."""
        if reason is not FinishReason.CANCELLED:
            self.budget.succeeded()

    def failed(self, error: MeshError) -> None:
        """A dispatched request ended with ``error``."""
        if is_worker_failure(error):
            self.budget.failed()

    def stats(self) -> HedgeStats:
        """A snapshot of the budget and the counts."""
        return HedgeStats(
            tokens=self.budget.tokens,
            max_tokens=self.budget.config.max_tokens,
            allows_hedges=self.budget.allows_hedges,
            placed=self.placed,
            refused_budget=self.refused[HedgeRefusal.BUDGET],
            refused_capacity=self.refused[HedgeRefusal.CAPACITY],
        )

    def _refuse(self, reason: HedgeRefusal, message: str) -> HedgeRefused:
        self.refused[reason] += 1
        return HedgeRefused(reason, message + "; the other copies of the request go on")
