"""The router's driver: node links, liveness, and sending requests to nodes.

:class:`Router` ties the pure cores (:class:`NodeRegistry`, :mod:`matchmaking`)
to the websockets.  It has three jobs:

- :meth:`Router.serve_node` runs one node's control link (``docs/protocol.md``
  §4): ``hello``/``welcome``, ``register``/``registered``, then the link's frames
  until it closes.  A new registration of a ``node_id`` closes the old link (4409).
- :meth:`Router.run_expiry` is the one task that enforces liveness: it sleeps
  until the registry's next deadline (or until a registration moves it earlier),
  then closes the links of the nodes that expired (4408).
- :meth:`Router.dispatch` picks a node for a ``generate`` frame and sends it
  there; the caller reads the answer from the returned :class:`Dispatch`.  A
  hedge (an extra copy of a swarm's request) goes through the router's
  :class:`HedgeGate` first, which may refuse it (``meshcore_router.hedging``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import Counter
from collections.abc import Callable, Collection

from meshcore_router.audits.service import AuditService
from meshcore_router.audits.shadow import ShadowPlanner, shadow_request
from meshcore_router.config import RouterConfig
from meshcore_router.dispatch import Dispatch
from meshcore_router.hedging import HedgeGate, HedgeRefused
from meshcore_router.links import NodeLink
from meshcore_router.matchmaking import Route, route
from meshcore_router.metrics import RouterMetrics
from meshcore_router.registry import SHA256_PREFIX, NodeRegistry
from meshcore_router.transport import CloseCode, FrameConnection, accept_hello, receive_frame, refuse
from meshcore_sdk.protocol import (
    DoneFrame,
    GenerateFrame,
    HeartbeatFrame,
    NodeStatus,
    RegisteredFrame,
    RegisterFrame,
    Role,
    encode_frame,
)
from meshcore_sdk.protocol.errors import BadRequest, ConnectionLost, MeshError, MeshTimeout, OutOfOrderFrame

__all__ = ["Router", "new_request_id"]

logger = logging.getLogger(__name__)


def new_request_id() -> str:
    """A fresh request id, unique enough to never repeat on a link."""
    return f"r-{secrets.token_hex(12)}"


class Router:
    """The control plane of one router process.

    Args:
        config: the router's settings.
        clock: monotonic seconds, for liveness and latency measurements.
        wall_clock: seconds since the Unix epoch, for the ``created`` fields of answers.
    """

    def __init__(self, config: RouterConfig, *, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.wall_clock = wall_clock
        self.started_unix = int(wall_clock())
        self.registry = NodeRegistry(expire_after_s=config.expire_after_s)
        self.hedging = HedgeGate(config.hedge_budget)
        """The router-wide hedging budget, and the rule that places or refuses each hedge."""
        self.metrics = RouterMetrics(self.count_by_status, self.hedging.stats)
        self._links: dict[str, NodeLink] = {}
        self._timer_moved = asyncio.Event()
        self._registry_changed = asyncio.Event()
        self.audits: AuditService | None = None
        """Receipt checks and audits (``meshcore_router.audits``), when the app runs them."""

    # --- requests -------------------------------------------------------------------------

    def dispatch(
        self,
        frame: GenerateFrame,
        *,
        exclude: Collection[str] = (),
        avoid: Collection[str] = (),
        hedge: bool = False,
    ) -> Dispatch:
        """Send a request to the best node for its model.

        ``frame.model`` may be a served id or ``sha256:<hex>``; the node always gets the
        latter.  ``frame.request_id`` must be fresh (see :func:`new_request_id`).  Nodes in
        ``avoid`` are picked only when no other can take the request.  A ``hedge`` goes only
        to a node with a free slot that takes hedges, and only while the hedging budget allows.

        Raises:
            ModelNotFound: no node has ever served the model.
            NoCapacity: no READY node can take the request now, or the hedge was refused
                (then not retryable).
            BadRequest: the request is larger than a node accepts.
        """

        def pick(as_hedge: bool) -> Route:
            return route(
                self.registry,
                frame.model,
                now=self.clock(),
                in_flight=self.in_flight,
                exclude=exclude,
                avoid=avoid,
                max_load=self.config.max_node_load,
                retry_after_s=self.config.no_capacity_retry_after_s,
                weight=self.routing_weight,
                hedge=as_hedge,
            )

        chosen = self.hedging.place(hedge=hedge, pick=pick)
        if isinstance(chosen, HedgeRefused):
            raise chosen.error(request_id=frame.request_id)
        outgoing = frame.model_copy(update={"model": SHA256_PREFIX + chosen.sha256})
        size = len(encode_frame(outgoing).encode())
        if size > self.config.max_frame_bytes:
            raise BadRequest(f"the request takes {size} bytes, more than the {self.config.max_frame_bytes} allowed")
        link = self._links[chosen.node_id]
        channel = link.open_request(outgoing)
        if self.audits is not None:
            self.audits.dispatched(chosen.node_id, outgoing)
        return Dispatch(
            chosen,
            link,
            channel,
            config=self.config,
            metrics=self.metrics,
            clock=self.clock,
            group=frame.group,
            hedging=self.hedging,
        )

    def routing_weight(self, node_id: str) -> float:
        """A node's share of traffic from its audit standing (1.0 without audits; 0: banned)."""
        return 1.0 if self.audits is None else self.audits.routing_weight(node_id)

    def ready_nodes(self) -> list[tuple[str, frozenset[str]]]:
        """The READY nodes connected now, with the model hashes each holds."""
        now = self.clock()
        return [
            (record.node_id, frozenset(model.sha256 for model in record.models))
            for record in self.registry
            if record.alive_at(now) and record.status is NodeStatus.READY and record.node_id in self._links
        ]

    def link_of(self, node_id: str) -> NodeLink | None:
        """The control link of a connected node, if it is connected."""
        link = self._links.get(node_id)
        return None if link is None or link.closing else link

    def in_flight(self, node_id: str) -> int:
        """How many requests the router has in flight on a node."""
        link = self._links.get(node_id)
        return 0 if link is None else link.in_flight

    async def wait_until(self, predicate: Callable[[NodeRegistry], bool]) -> None:
        """Wait until ``predicate(registry)`` holds, checking again after each registry change.

        For launchers and tests that need, say, a node to be READY; bound it with a timeout.
        """
        while True:
            changed = self._registry_changed
            if predicate(self.registry):
                return
            await changed.wait()

    def _notify_change(self) -> None:
        self._registry_changed.set()
        self._registry_changed = asyncio.Event()

    def count_by_status(self) -> dict[NodeStatus, int]:
        """How many live nodes are in each status."""
        now = self.clock()
        return dict(Counter(record.status for record in self.registry if record.alive_at(now)))

    # --- node links -----------------------------------------------------------------------

    async def serve_node(self, conn: FrameConnection) -> None:
        """Run one node's control link until it closes (§4)."""
        try:
            await accept_hello(
                conn, self.config.frame_limits, role=Role.NODE, timeout_s=self.config.handshake_timeout_s
            )
            register = await self._receive_register(conn)
        except ConnectionLost:
            return
        except MeshError as exc:
            await refuse(conn, exc)
            return
        link = self._admit(conn, register)
        link.send_nowait(
            RegisteredFrame(node_id=register.node_id, heartbeat_interval_s=self.config.heartbeat_interval_s)
        )
        audits = self.audits
        if audits is not None:
            audits.node_registered(register.node_id, register.public_key, register.build_id)
            await link.run(
                lambda frame: self._on_heartbeat(link, frame),
                lambda frame: audits.receipt_arrived(link.node_id, frame),
            )
        else:
            await link.run(lambda frame: self._on_heartbeat(link, frame))

    async def _receive_register(self, conn: FrameConnection) -> RegisterFrame:
        try:
            async with asyncio.timeout(self.config.handshake_timeout_s):
                frame = await receive_frame(conn, self.config.frame_limits)
        except TimeoutError as exc:
            raise MeshTimeout(f"no register within {self.config.handshake_timeout_s} s") from exc
        if not isinstance(frame, RegisterFrame):
            raise OutOfOrderFrame(f"expected register, got a {frame.type} frame")
        return frame

    def _admit(self, conn: FrameConnection, frame: RegisterFrame) -> NodeLink:
        record = self.registry.register(frame, now=self.clock())
        link = NodeLink(
            conn,
            node_id=record.node_id,
            incarnation=record.incarnation,
            limits=self.config.frame_limits,
            request_queue_frames=self.config.request_queue_frames,
            send_queue_frames=self.config.link_send_queue_frames,
            on_close=lambda: self._release(link),
        )
        old = self._links.get(record.node_id)
        self._links[record.node_id] = link
        if old is not None:
            old.close(CloseCode.REPLACED, "replaced by a new registration of the same node")
        self._timer_moved.set()
        self._notify_change()
        logger.info("node %s registered with %d models", record.node_id, len(record.models))
        return link

    def _release(self, link: NodeLink) -> None:
        """Stop routing to a link that is closing; its node leaves the registry (if not replaced)."""
        if self._links.get(link.node_id) is link:
            del self._links[link.node_id]
        if self.registry.remove(link.node_id, incarnation=link.incarnation):
            logger.info("node %s left", link.node_id)
            self._notify_change()

    def _on_heartbeat(self, link: NodeLink, frame: HeartbeatFrame) -> None:
        if self.registry.heartbeat(link.node_id, frame, now=self.clock(), incarnation=link.incarnation):
            self._notify_change()

    # --- shadow prompts -------------------------------------------------------------------

    async def run_shadows(self, rng: random.Random) -> None:
        """Send nodes on probation or under escalation shadow prompts, forever (``meshcore_router.audits.shadow``)."""
        audits = self.audits
        interval_s = self.config.audits.shadow_interval_s
        if audits is None or interval_s <= 0:
            return
        planner = ShadowPlanner(interval_s, rng)
        async with asyncio.TaskGroup() as tasks:
            while True:
                probation = [node for node, _ in self.ready_nodes() if audits.wants_shadows(node)]
                for node_id in planner.due(probation, now=self.clock()):
                    tasks.create_task(self._shadow(node_id, rng))
                deadline = planner.get_timer()
                await asyncio.sleep(interval_s if deadline is None else max(0.05, deadline - self.clock()))

    async def _shadow(self, node_id: str, rng: random.Random) -> None:
        """One shadow prompt to ``node_id``, read to its end like a client would."""
        record = self.registry.get(node_id)
        if record is None or not record.models or self.audits is None:
            return
        model = "sha256:" + rng.choice(record.models).sha256
        frame = shadow_request(rng, request_id=new_request_id(), model=model)
        others = [node for node, _ in self.ready_nodes() if node != node_id]
        try:
            dispatch = self.dispatch(frame, exclude=others)
            self.audits.mark_shadow(frame.request_id)
            while not isinstance(await dispatch.next_frame(), DoneFrame):
                pass
        except MeshError as exc:
            logger.info("shadow prompt to %s: %s", node_id, exc)
        except Exception:  # a shadow prompt's bug must not stop the others
            logger.exception("shadow prompt to %s failed", node_id)

    # --- liveness -------------------------------------------------------------------------

    async def run_expiry(self) -> None:
        """Close the links of nodes that miss their heartbeats, forever (§4.2)."""
        loop = asyncio.get_running_loop()
        while True:
            deadline = self.registry.get_timer()
            when = None if deadline is None else loop.time() + (deadline - self.clock())
            try:
                async with asyncio.timeout_at(when):
                    await self._timer_moved.wait()
            except TimeoutError:
                pass
            self._timer_moved.clear()
            self._expire()

    def _expire(self) -> None:
        for node_id in self.registry.handle_timer(now=self.clock()):
            logger.warning("node %s missed %d heartbeats", node_id, self.config.missed_heartbeats)
            link = self._links.pop(node_id, None)
            if link is not None:
                link.close(CloseCode.EXPIRED, f"no heartbeat for {self.config.expire_after_s} s")
            self._notify_change()
