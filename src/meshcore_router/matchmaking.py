"""Matchmaking: which node serves a request.

Theory of operation
-------------------
A request names a model (a served id or ``sha256:<hex>``).  :func:`route` turns
the name into the model's hash through the registry, then picks one node among
the live nodes holding it:

1. a name no node has ever served is :class:`ModelNotFound` (HTTP 404);
2. only ``READY`` nodes that are not excluded and whose load is below
   ``max_load`` are eligible; none eligible is :class:`NoCapacity` (HTTP 503,
   with a ``Retry-After`` hint);
3. a node's routing weight (from its audit standing, 1.0 for a node in good
   standing) scales its load: the effective load is ``load / weight``, so a node
   whose audits came out ambiguous gets less traffic, and a weight of 0 (a
   slashed node) is never eligible;
4. among the eligible, nodes the caller asks to ``avoid`` (those already
   serving a sibling copy of the request) come last; then the lowest effective
   load wins, ties broken by node id, so the choice is a total order and the
   same inputs always give the same node.

A *hedge* (a speculative copy of a request already running elsewhere,
``meshcore_router.hedging``) must never queue behind real work, so for a hedge
a node is eligible only if, besides the above, it has a free sequence slot
(load below 1.0) and does not push back (its telemetry's ``accepts_hedges``).
Nor does a hedge go to a node it should ``avoid``: a second copy on the node
that runs the first would survive nothing the first does not.

A node's load is the work it has relative to what it runs at once:
``max(active + queued from its last heartbeat, requests the router has in
flight on it) / max_sequences``.  The router's own count covers the time
between two heartbeats, when the node's numbers are stale.

The module is pure: no clock, no I/O; ``now`` and the in-flight counts come in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from meshcore_router.registry import NodeRecord, NodeRegistry
from meshcore_sdk.protocol import NodeStatus
from meshcore_sdk.protocol.errors import ModelNotFound, NoCapacity

__all__ = ["Route", "choose_node", "node_load", "route", "takes_hedge"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: the model's hash and served name, and the node."""

    sha256: str
    served_name: str
    node_id: str


def node_load(record: NodeRecord, in_flight: int) -> float:
    """The node's work relative to its capacity (1.0 = every sequence busy)."""
    reported = record.telemetry.active_sequences + record.telemetry.queued_requests
    return max(reported, in_flight) / record.max_sequences


def takes_hedge(record: NodeRecord, in_flight: int) -> bool:
    """Whether a hedge may go to the node: a free sequence slot, and no push-back."""
    return record.telemetry.accepts_hedges and node_load(record, in_flight) < 1.0


def _full_weight(node_id: str) -> float:
    return 1.0


def choose_node(
    records: Iterable[NodeRecord],
    *,
    in_flight: Callable[[str], int],
    exclude: Collection[str] = (),
    avoid: Collection[str] = (),
    max_load: float = float("inf"),
    weight: Callable[[str], float] = _full_weight,
    hedge: bool = False,
) -> str | None:
    """The eligible node with the lowest effective load, ties by node id; None when no node is eligible.

    Args:
        records: the live nodes holding the model.
        in_flight: how many requests the router has in flight on a node.
        exclude: nodes not to pick (for instance, ones that already failed this request).
        avoid: nodes to pick only when no other is eligible (ones serving a sibling copy).
        max_load: nodes at or above this load are not eligible.
        weight: a node's routing weight in [0, 1]; 0 is never eligible.
        hedge: the request is a hedge: only nodes that :func:`takes_hedge` and are not in ``avoid`` are eligible.
    """
    best: tuple[bool, float, str] | None = None
    for record in records:
        share = weight(record.node_id)
        if record.status is not NodeStatus.READY or record.node_id in exclude or share <= 0.0:
            continue
        flying = in_flight(record.node_id)
        load = node_load(record, flying)
        if load >= max_load or (hedge and (record.node_id in avoid or not takes_hedge(record, flying))):
            continue
        effective = (load + 1 / record.max_sequences) / share  # the load it would have with this request
        key = (record.node_id in avoid, effective, record.node_id)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def route(
    registry: NodeRegistry,
    model: str,
    *,
    now: float,
    in_flight: Callable[[str], int],
    exclude: Collection[str] = (),
    avoid: Collection[str] = (),
    max_load: float = float("inf"),
    retry_after_s: float = 1.0,
    weight: Callable[[str], float] = _full_weight,
    hedge: bool = False,
) -> Route:
    """Pick the node that serves a request for ``model`` (see :func:`choose_node` for the arguments).

    Raises:
        ModelNotFound: no node has ever served ``model``.
        NoCapacity: the model is known, but no READY node can take the request now (for a
            hedge: no node has a free slot and takes hedges).
    """
    sha256 = registry.resolve_model(model)
    info = None if sha256 is None else registry.model_info(sha256)
    if sha256 is None or info is None:
        raise ModelNotFound(f"no node in the mesh serves the model {model!r}")
    records = registry.candidates(sha256, now=now)
    node_id = choose_node(
        records, in_flight=in_flight, exclude=exclude, avoid=avoid, max_load=max_load, weight=weight, hedge=hedge
    )
    if node_id is None:
        what = "has a free slot for a hedge of" if hedge else "can serve"
        raise NoCapacity(
            f"no READY node {what} {model!r} now ({len(records)} connected hold it)",
            retry_after_s=retry_after_s,
        )
    return Route(sha256=sha256, served_name=info.served_name, node_id=node_id)
