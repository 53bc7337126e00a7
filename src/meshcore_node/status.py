"""What a node tells the router about itself: its status, decided from plain facts.

Pure: the daemon gathers the facts, this module decides.

==========================================  ==========
fact (first that holds wins)                status
==========================================  ==========
shutting down                               DRAINING
engine loading or restarting                STARTING
the OS is swapping (thrash guard)           BUSY
requests in flight >= capacity              BUSY
otherwise                                   READY
==========================================  ==========

Push-back (``accepts_hedges`` in the telemetry, ``docs/protocol.md`` §4.2): a
node takes speculative copies (hedges) only while it is READY and more than
``reserve_slots`` of its sequence slots are free, so the last slots, and a node
that is full, swapping, starting or draining, are kept for real work.  Requests
waiting for admission count as slots in use (they are part of ``in_flight``).
"""

from __future__ import annotations

import enum

from meshcore_sdk.protocol import NodeStatus

__all__ = ["EngineState", "accepts_hedges", "default_hedge_reserve", "node_status"]


class EngineState(enum.Enum):
    """Whether the engine can take requests."""

    STARTING = "starting"
    READY = "ready"


def node_status(*, engine: EngineState, in_flight: int, capacity: int, swapping: bool, draining: bool) -> NodeStatus:
    """Decide the status a node reports (see the table above)."""
    if draining:
        return NodeStatus.DRAINING
    if engine is EngineState.STARTING:
        return NodeStatus.STARTING
    if swapping or in_flight >= capacity:
        return NodeStatus.BUSY
    return NodeStatus.READY


def default_hedge_reserve(capacity: int) -> int:
    """The slots a node keeps for primaries when its config names none: a quarter, rounded down."""
    return capacity // 4


def accepts_hedges(*, status: NodeStatus, in_flight: int, capacity: int, reserve_slots: int) -> bool:
    """Whether the node takes hedges: READY with more than ``reserve_slots`` slots free."""
    return status is NodeStatus.READY and capacity - in_flight > reserve_slots
