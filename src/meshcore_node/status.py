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
"""

from __future__ import annotations

import enum

from meshcore_sdk.protocol import NodeStatus

__all__ = ["EngineState", "node_status"]


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
