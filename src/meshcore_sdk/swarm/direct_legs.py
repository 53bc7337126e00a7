"""Direct legs: each copy of a swarm's prompt on a WebRTC data channel of its own (``docs/protocol.md`` §8).

:class:`DirectLegs` is the :class:`meshcore_sdk.swarm.links.LegLink` of swarm mode over direct
connections.  :meth:`DirectLegs.open` asks the router for one ticket per copy (one
``POST /v1/tickets`` with ``n`` = the copies; the router grants distinct workers) and starts one
connect task per leg, all at once: each offers its copy (the ticket and the ``generate`` frame
ride the offer, so the worker starts prefill at once), takes the answer (which names the
request on the wire) and waits for its channel to open, within the per-worker deadline.  A cold
catch-up (:meth:`DirectLegs.add`) asks for one more ticket in its own connect task, preferring a
worker the swarm has not used yet (the router has no ``exclude``, so it asks for one ticket more
than the workers used and picks the first new one; failing that, whichever came).

Every leg's frames, and its loss (a refused or missing ticket, a missed deadline, a closed
channel, a frame that does not parse, its worker leaving the mesh), go to one queue that
:meth:`DirectLegs.receive` reads.  A worker killed outright only goes silent on its channel
(aiortc notices a dead peer after about 30 s), so the link also watches the granted workers at
the router (:meth:`Dialer.departures`), which sees a worker's link close at once: the machine
then fails over without waiting for the stall threshold.  Without the watch (an older router,
or a broken one) the stall threshold still catches a dead leader.
A leg that never connects is also recorded as :class:`WorkerDropped`; one that does, as
:class:`DirectConnected` (and :class:`RelayUsed` when a TURN relay carries it).  Frames the
driver sends a leg before its channel opens (a ``pause`` for a leg still connecting when
another wins the race) wait for the channel and go first.

The connect tasks and the watches are the only work this link runs on its own (besides
aiortc's); they belong to the link, which cancels and awaits them in :meth:`DirectLegs.aclose`,
and they never raise.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshcore_sdk.direct.dial import Tickets, log_connected
from meshcore_sdk.events import EventLog, WorkerDropped
from meshcore_sdk.protocol import (
    FrameLimits,
    GenerateFrame,
    SignalFrame,
    TicketGrant,
    decode_frame,
    encode_frame,
)
from meshcore_sdk.protocol.direct import MAX_TICKETS_PER_REQUEST
from meshcore_sdk.protocol.errors import ErrorCode, MeshError, RemoteProtocolError
from meshcore_sdk.swarm.links import FrameArrived, LegControl, LegsLost, LinkEvent

__all__ = ["DirectLegs", "Dialing"]

logger = logging.getLogger(__name__)


class Dialing(Protocol):
    """What direct legs need of :class:`meshcore_sdk.direct.dial.Dialer` (tests pass a fake)."""

    async def tickets(
        self, model: str, *, n: int, max_tokens: int, timeout_s: float | None, hedges: bool = False
    ) -> Tickets:
        """Up to ``n`` grants for distinct workers of ``model``, and their connect deadline."""
        ...

    def departures(self, node_ids: Sequence[str]) -> AsyncIterator[str]:
        """Each of ``node_ids`` that leaves the mesh, as the router sees it."""
        ...

    def peer(self, grant: TicketGrant) -> tuple[Any, Any]:
        """A peer connection for ``grant``'s worker and its data channel."""
        ...

    async def connect(
        self,
        pc: Any,
        channel: Any,
        grant: TicketGrant,
        frame: GenerateFrame,
        *,
        deadline_s: float,
        answered: Callable[[SignalFrame], None],
    ) -> float:
        """Offer ``frame`` and wait for the channel to open; the seconds it took."""
        ...


class _State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    GONE = "gone"


@dataclass(eq=False)
class _DirectLeg:
    """One copy of the prompt on its own peer connection."""

    name: str
    generate: GenerateFrame
    state: _State = _State.CONNECTING
    worker_id: str | None = None
    request_id: str | None = None  # on the wire: the router names it when it relays the offer
    pc: Any = None  # an aiortc RTCPeerConnection
    channel: Any = None  # its RTCDataChannel
    pending: list[LegControl] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    lost: bool = False  # its loss is queued; it is GONE once the loss is read

    def wire(self, frame: LegControl) -> str:
        """``frame`` as the worker reads it: naming the request the router named."""
        assert self.request_id is not None
        return encode_frame(frame.model_copy(update={"request_id": self.request_id}))


class DirectLegs:
    """A swarm's legs, each on a data channel of its own.

    Args:
        dialer: tickets and connections.
        log: the stream's events (``direct_connected``, ``relay_used``, ``worker_dropped``).
        limits: caps on each frame read.
        timeout_s: the longest wait for the router's tickets (``None``: for ever).
        min_connect_s: the least time a leg gets to open its channel (the tickets' deadline, if longer).
    """

    def __init__(
        self,
        dialer: Dialing,
        *,
        log: EventLog,
        limits: FrameLimits,
        timeout_s: float | None,
        min_connect_s: float = 0.0,
    ) -> None:
        self._dialer = dialer
        self._min_connect_s = min_connect_s
        self._log = log
        self._limits = limits
        self._timeout_s = timeout_s
        self._legs: dict[str, _DirectLeg] = {}
        self._watches: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[tuple[_DirectLeg, str | bytes] | LegsLost] = asyncio.Queue()
        self._closed = False

    async def open(self, generates: Sequence[GenerateFrame]) -> None:
        """Ticket every copy at once and start connecting them all; copies the router has no worker for are lost.

        Raises:
            MeshError: the router granted no ticket (``NoCapacity``, ``ModelNotFound``, ...).
        """
        first = generates[0]
        tickets = await self._dialer.tickets(
            first.model, n=len(generates), max_tokens=first.params.max_tokens, timeout_s=self._timeout_s, hedges=True
        )
        for index, generate in enumerate(generates):
            leg = self._new_leg(generate)
            if index < len(tickets.grants):
                deadline_s = max(tickets.deadline_s, self._min_connect_s)
                leg.task = asyncio.create_task(self._connect(leg, tickets.grants[index], deadline_s))
            else:
                self._lose(leg, f"no_capacity: the router granted {len(tickets.grants)} workers for this copy")
        self._watch([grant.node_id for grant in tickets.grants])

    async def add(self, generate: GenerateFrame) -> None:
        """Start one more copy on a fresh worker, ticket and all, without waiting for it."""
        leg = self._new_leg(generate)
        leg.task = asyncio.create_task(self._connect_cold(leg))

    async def send(self, leg: str, frame: LegControl) -> None:
        """Send ``frame`` on the leg's channel, once it is open; drop it for a leg that is gone."""
        found = self._legs.get(leg)
        if found is None or found.state is _State.GONE or found.lost:
            return
        if found.state is _State.CONNECTING:
            found.pending.append(frame)
        else:
            self._transmit(found, frame)

    async def receive(self) -> LinkEvent:
        """The next frame from a leg, or a leg's loss."""
        while True:
            item = await self._inbox.get()
            if isinstance(item, LegsLost):
                for name in item.legs:
                    self._legs[name].state = _State.GONE
                return item
            event = self._read(*item)
            if event is not None:
                return event

    async def aclose(self) -> None:
        """Stop every connect task and close every peer connection (which ends the workers' sessions)."""
        self._closed = True
        tasks = [leg.task for leg in self._legs.values() if leg.task is not None] + self._watches
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for leg in self._legs.values():
            leg.state = _State.GONE
            if leg.pc is not None:
                await leg.pc.close()

    # --- one leg ------------------------------------------------------------------------------

    def _new_leg(self, generate: GenerateFrame) -> _DirectLeg:
        leg = _DirectLeg(generate.request_id, generate)
        self._legs[leg.name] = leg
        return leg

    async def _connect_cold(self, leg: _DirectLeg) -> None:
        try:
            grant, deadline_s = await self._fresh_grant(leg.generate)
        except MeshError as exc:
            self._lose(leg, f"{exc.code.value}: {exc}")
            return
        self._watch([grant.node_id])
        await self._connect(leg, grant, deadline_s)

    async def _fresh_grant(self, generate: GenerateFrame) -> tuple[TicketGrant, float]:
        """One grant, for a worker this swarm has not used if the router offers one."""
        used = {leg.worker_id for leg in self._legs.values() if leg.worker_id is not None}
        tickets = await self._dialer.tickets(
            generate.model,
            n=min(MAX_TICKETS_PER_REQUEST, len(used) + 1),
            max_tokens=generate.params.max_tokens,
            timeout_s=self._timeout_s,
        )
        fresh = [grant for grant in tickets.grants if grant.node_id not in used]
        return (fresh or tickets.grants)[0], max(tickets.deadline_s, self._min_connect_s)

    async def _connect(self, leg: _DirectLeg, grant: TicketGrant, deadline_s: float) -> None:
        """Connect one leg within ``deadline_s``; report its loss, never raise (but when cancelled)."""
        leg.worker_id = grant.node_id

        def answered(answer: SignalFrame) -> None:
            leg.request_id = answer.request_id

        try:
            leg.pc, leg.channel = self._dialer.peer(grant)
            leg.channel.on("message", lambda message: self._inbox.put_nowait((leg, message)))
            leg.channel.on("close", lambda: self._lose(leg, f"the data channel to worker {grant.node_id} closed"))
            setup_s = await self._dialer.connect(
                leg.pc, leg.channel, grant, leg.generate, deadline_s=deadline_s, answered=answered
            )
        except Exception as exc:  # a foreign failure of aiortc is this leg's loss, as any other
            reason = (exc.code if isinstance(exc, MeshError) else ErrorCode.CONNECT).value
            self._log.record(
                WorkerDropped(at_s=self._log.elapsed_s(), worker_id=grant.node_id, deadline_s=deadline_s, reason=reason)
            )
            self._lose(leg, f"{reason}: {exc}")
            if leg.pc is not None:
                await leg.pc.close()
            return
        log_connected(self._log, grant.node_id, leg.pc, setup_s=setup_s)
        leg.state = _State.OPEN
        for frame in leg.pending:
            self._transmit(leg, frame)
        leg.pending.clear()

    def _watch(self, node_ids: list[str]) -> None:
        self._watches.append(asyncio.create_task(self._follow_departures(node_ids)))

    async def _follow_departures(self, node_ids: list[str]) -> None:
        """Lose the legs of each watched worker the router says left the mesh; never raise (but when cancelled)."""
        try:
            async for node_id in self._dialer.departures(node_ids):
                for leg in self._legs.values():
                    if leg.worker_id == node_id and leg.state is not _State.GONE:
                        self._lose(leg, f"worker {node_id} left the mesh (its link to the router closed)")
        except MeshError as exc:  # the stall threshold still catches a dead worker
            logger.debug("no departures from the router for %s: %s", node_ids, exc)

    @staticmethod
    def _transmit(leg: _DirectLeg, frame: LegControl) -> None:
        if leg.channel is not None and leg.channel.readyState == "open":
            leg.channel.send(leg.wire(frame))

    def _lose(self, leg: _DirectLeg, cause: str) -> None:
        """Queue the leg's loss behind the frames it sent before it (a closed channel's last frames count)."""
        if leg.lost or self._closed:
            return
        leg.lost = True
        self._inbox.put_nowait(LegsLost((leg.name,), cause))

    def _read(self, leg: _DirectLeg, message: str | bytes) -> LinkEvent | None:
        """A frame from ``leg``'s channel, renamed for its leg; a frame that does not parse loses the leg."""
        if leg.state is _State.GONE:
            return None
        try:
            frame = decode_frame(message, self._limits, tolerant=True)
        except RemoteProtocolError as exc:
            leg.state, leg.lost = _State.GONE, True
            return LegsLost((leg.name,), f"worker {leg.worker_id} sent a bad frame: {exc}")
        if getattr(frame, "request_id", None) == leg.request_id:
            frame = frame.model_copy(update={"request_id": leg.name})
        return FrameArrived(leg.name, frame)
