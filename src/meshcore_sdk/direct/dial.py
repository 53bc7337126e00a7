"""Reaching ticketed workers over WebRTC: what direct mode and swarm's direct legs share (``docs/protocol.md`` §8).

:class:`Dialer` does the three steps of a direct connection and nothing else:

1. :meth:`Dialer.tickets`: ``POST /v1/tickets {model, n, max_tokens}``; the round trip sets the
   per-worker deadline, ``max(min_connect_deadline_s, connect_deadline_rtts x RTT)``;
2. :meth:`Dialer.peer`: a peer connection with the grant's ICE servers (the TURN relay
   included, so ICE falls back to it by itself) and a pre-negotiated data channel (id 0);
3. :meth:`Dialer.connect`: within the deadline, a complete offer that carries the ticket and
   the ``generate`` frame, relayed through the router (which names the request), the
   answer, the channel open.  The offer is never repeated: its ticket is spent.

Who reads the channel, and what a missed deadline costs (the next worker, or one leg of
a swarm), is the caller's business; :func:`log_connected` records what was connected.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pydantic
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from meshcore_sdk._base import Runtime
from meshcore_sdk.config import ClientConfig, DirectOptions
from meshcore_sdk.direct.ice import host_addresses, rtc_configuration, selected_pair, tune_aioice
from meshcore_sdk.events import DirectConnected, EventLog, RelayUsed
from meshcore_sdk.protocol import GenerateFrame, SignalFrame, SignalRequest, TicketGrant, TicketsResponse
from meshcore_sdk.protocol.errors import MeshTimeout, RemoteProtocolError
from meshcore_sdk.proxy.transport import ProxyTransport

__all__ = ["PLACEHOLDER_REQUEST_ID", "Dialer", "Tickets", "log_connected"]

PLACEHOLDER_REQUEST_ID = "direct"
"""The request id an offer carries; the router gives the request its real one when it relays the offer."""

CHANNEL_LABEL = "meshcore"

WATCH_PATH = "/mesh/v1/nodes/watch"
"""Where the router reports the nodes that leave the mesh (``docs/protocol.md`` §8.5)."""

_WATCH_CONNECT_S = 5.0


@dataclass(frozen=True, slots=True)
class Tickets:
    """The router's grants, and the deadline each worker gets to open its channel, in seconds."""

    grants: list[TicketGrant]
    deadline_s: float


class Dialer:
    """Tickets from the router and data channels to the workers they name.

    Args:
        config: the client's settings (``config.direct`` says how to connect).
        runtime: clocks.
        transport: an httpx transport for the router's HTTP API (tests).
        http_client: an httpx client to use; the caller keeps ownership.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        runtime: Runtime,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.options: DirectOptions = config.direct
        self._clock = runtime.clock
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=config.timeout_s)
        self.router = ProxyTransport(config, runtime=runtime, http_client=self._http)
        """The router's HTTP API (tickets, and whatever else the client asks it)."""
        once = dataclasses.replace(config, max_retries=0)  # a relayed offer is never repeated: its ticket is spent
        self._signaling = ProxyTransport(once, runtime=runtime, http_client=self._http)
        tune_aioice(stun_retry_rto_s=self.options.stun_retry_rto_s)

    async def tickets(
        self, model: str, *, n: int, max_tokens: int, timeout_s: float | None, hedges: bool = False
    ) -> Tickets:
        """Up to ``n`` grants for distinct workers of ``model`` (``hedges``: copies of one request, see
        :class:`~meshcore_sdk.protocol.TicketRequest`).

        Raises:
            MeshError: the router refused (``NoCapacity``, ``ModelNotFound``, ...) or could not be reached.
            RemoteProtocolError: the router's answer is malformed.
        """
        started_s = self._clock()
        body: dict[str, Any] = {"model": model, "n": n, "max_tokens": max_tokens}
        if hedges:
            body["hedges"] = True
        answer = await self.router.request("POST", "/v1/tickets", body=body, timeout_s=timeout_s)
        deadline_s = self.options.connect_deadline_s(self._clock() - started_s)
        try:
            grants = TicketsResponse.model_validate(answer).tickets
        except pydantic.ValidationError as exc:
            raise RemoteProtocolError(f"the router sent malformed tickets: {exc.error_count()} problems") from exc
        return Tickets(grants, deadline_s)

    async def departures(self, node_ids: Sequence[str]) -> AsyncIterator[str]:
        """Each of ``node_ids`` that leaves the mesh, as the router sees it: its link to the router closed.

        A worker killed outright goes silent on its data channel, which the client could tell
        only from the stall; the router sees its link close at once.

        Raises:
            MeshError: the router refused the watch or could not be reached, or the watch broke.
        """
        params = [("node_id", node_id) for node_id in node_ids]
        async for data in self.router.watch(WATCH_PATH, params=params, connect_timeout_s=_WATCH_CONNECT_S):
            node_id = data.get("node_id")
            if isinstance(node_id, str):
                yield node_id

    def peer(self, grant: TicketGrant) -> tuple[RTCPeerConnection, RTCDataChannel]:
        """A peer connection for ``grant``'s worker, and its pre-negotiated data channel."""
        pc = RTCPeerConnection(rtc_configuration(grant.ice_servers, force_relay=self.options.force_relay))
        return pc, pc.createDataChannel(CHANNEL_LABEL, negotiated=True, id=0)

    async def connect(
        self,
        pc: RTCPeerConnection,
        channel: RTCDataChannel,
        grant: TicketGrant,
        frame: GenerateFrame,
        *,
        deadline_s: float,
        answered: Callable[[SignalFrame], None],
    ) -> float:
        """Offer ``frame`` to ``grant``'s worker and wait for the channel to open; the seconds it took.

        ``answered`` gets the worker's answer, whose ``request_id`` names the request on the
        wire, before the channel can open.  The caller closes ``pc`` on failure.

        Raises:
            MeshTimeout: the channel did not open within ``deadline_s``.
            MeshError: the worker refused the offer (a ``TicketError`` for a bad ticket), or the
                router could not relay it.
        """
        opened = asyncio.Event()
        channel.on("open", opened.set)
        offer_at_s = self._clock()
        try:
            with host_addresses(self.options.host_addresses):
                async with asyncio.timeout(deadline_s):
                    await pc.setLocalDescription(await pc.createOffer())
                    answer = await self._signal(grant, frame, pc.localDescription.sdp, deadline_s)
                    answered(answer)
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
                    await opened.wait()
        except TimeoutError as exc:
            raise MeshTimeout(
                f"worker {grant.node_id} did not connect within {deadline_s * 1000:.0f} ms", worker_id=grant.node_id
            ) from exc
        return self._clock() - offer_at_s

    async def aclose(self) -> None:
        """Close the HTTP client if this dialer made it."""
        if self._owns_http:
            await self._http.aclose()

    async def _signal(self, grant: TicketGrant, frame: GenerateFrame, sdp: str, deadline_s: float) -> SignalFrame:
        generate = frame.model_copy(update={"model": grant.model, "request_id": PLACEHOLDER_REQUEST_ID})
        offer = SignalFrame(
            kind="offer", request_id=PLACEHOLDER_REQUEST_ID, ticket=grant.ticket, sdp=sdp, generate=generate
        )
        body = SignalRequest(node_id=grant.node_id, offer=offer).model_dump(mode="json", exclude_none=True)
        answer: Any = await self._signaling.request("POST", grant.signal_path, body=body, timeout_s=deadline_s)
        try:
            return SignalFrame.model_validate(answer)
        except pydantic.ValidationError as exc:
            raise RemoteProtocolError(f"the router sent a malformed answer: {exc.error_count()} problems") from exc


def log_connected(log: EventLog, worker_id: str, pc: RTCPeerConnection, *, setup_s: float) -> None:
    """Record :class:`DirectConnected` for an open channel, and :class:`RelayUsed` when a TURN relay carries it."""
    pair = selected_pair(pc)
    relay = pair is not None and "relay" in pair
    log.record(
        DirectConnected(
            at_s=log.elapsed_s(),
            worker_id=worker_id,
            setup_s=setup_s,
            relay=relay,
            local_candidate=pair[0] if pair else None,
            remote_candidate=pair[1] if pair else None,
        )
    )
    if relay:
        log.record(RelayUsed(at_s=log.elapsed_s(), worker_id=worker_id))
