"""The node's direct-mode answerer: offers in over the control link, frames out over a data channel.

Per offer (``docs/protocol.md`` §8), in one session task owned by :meth:`DirectServer.run`:

1. verify the ticket offline (:func:`meshcore_node.tickets.verify_ticket`); on an unknown
   ``kid`` refetch the router's JWKS once (rate-limited) and try again.  A refused
   ticket gets an ``error`` frame with its ``ticket_*`` code, and no engine work;
2. check the ``generate`` frame against the ticket (model, token budget) and submit it
   to the engine at once, so prefill runs while ICE, DTLS and SCTP come up;
3. answer with a complete SDP (aiortc gathers before it returns) over the link, with a
   pre-negotiated channel (id 0) and the ICE servers the router sent (never ``None``);
4. buffer the engine's frames until the channel opens, then send them in order, and the
   rest as they come.  The client's ``pause``, ``resume`` and ``cancel`` frames for the
   request go to the engine exactly as they do over the control link (§3.2), in the order
   they came: a swarm's follower is paused, caught up and resumed over its channel;
5. end when the request ended and the client closed, when the client cancelled or closed
   the channel, or when the channel does not open in time (the engine request is
   cancelled then, unless it had ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from meshcore_node.tickets import KeyRing, ReplayCache, verify_ticket
from meshcore_sdk.direct.ice import host_addresses, rtc_configuration, tune_aioice
from meshcore_sdk.protocol import (
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    FrameLimits,
    GenerateFrame,
    PauseFrame,
    ResumeFrame,
    SignalFrame,
    TicketClaims,
    decode_frame,
    encode_frame,
)
from meshcore_sdk.protocol.errors import BadRequest, MeshError, ModelUnavailable, TicketError, TicketUnknownKey

__all__ = ["DirectConfig", "DirectServer"]

logger = logging.getLogger(__name__)

Outgoing = Any  # a frame model the engine produced for a request
_CHANNEL_LABEL = "meshcore"


@dataclass(frozen=True, slots=True)
class DirectConfig:
    """The answerer's settings.

    Attributes:
        node_id: this node's id: the ``aud`` its tickets must name.
        model_sha256: the model this node serves; a ticket for another is refused.
        ticket_issuer: the ``iss`` tickets must name.
        ticket_leeway_s: clock skew allowed on ``exp`` and ``nbf``.
        jwks_refetch_interval_s: least time between two JWKS refetches caused by an unknown ``kid``.
        open_timeout_s: how long the data channel may take to open before the request is cancelled.
        linger_s: how long a session waits, after the request ended, for the client to close.
        ice_host_addresses: addresses to gather host candidates on (``None``: every interface).
        stun_retry_rto_s: aioice's first STUN retransmission timeout.
    """

    node_id: str
    model_sha256: str
    ticket_issuer: str = "meshcore-router"
    ticket_leeway_s: float = 5.0
    jwks_refetch_interval_s: float = 30.0
    open_timeout_s: float = 10.0
    linger_s: float = 5.0
    ice_host_addresses: tuple[str, ...] | None = None
    stun_retry_rto_s: float = 0.1


class _Session:
    """The frames of one direct request, held until its channel opens."""

    def __init__(self) -> None:
        self.buffered: list[str] = []
        self.channel: Any = None
        self.finished = False  # the engine sent the request's done or error
        self.ended = asyncio.Event()  # finished, or cancelled by the client
        self.closed = asyncio.Event()
        self.controls: asyncio.Queue[PauseFrame | ResumeFrame] = asyncio.Queue()

    def send(self, frame: Outgoing) -> None:
        text = encode_frame(frame)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        else:
            self.buffered.append(text)
        if isinstance(frame, DoneFrame | ErrorFrame):
            self.finished = True
            self.ended.set()

    def opened(self, channel: Any) -> None:
        self.channel = channel
        for text in self.buffered:
            channel.send(text)
        self.buffered.clear()


class DirectServer:
    """Serves direct-mode offers for one node.

    Args:
        config: the answerer's settings.
        submit: starts a ``generate`` on the engine.
        cancel: cancels an engine request by id.
        pause: pauses an engine request by id (it answers ``paused``).
        resume: resumes a paused engine request (§3.2).
        send_link: sends a frame to the router over the control link.
        fetch_jwks: fetches the router's JWKS.
        wall_clock: seconds since the Unix epoch (tickets carry absolute times).
        limits: caps on frames read from the data channel.
    """

    def __init__(
        self,
        config: DirectConfig,
        *,
        submit: Callable[[GenerateFrame], Awaitable[None]],
        cancel: Callable[[str], Awaitable[None]],
        pause: Callable[[str], Awaitable[None]],
        resume: Callable[[ResumeFrame], Awaitable[None]],
        send_link: Callable[[Any], None],
        fetch_jwks: Callable[[], Awaitable[Mapping[str, Any]]],
        wall_clock: Callable[[], float],
        limits: FrameLimits,
    ) -> None:
        self._config = config
        self._submit = submit
        self._cancel = cancel
        self._pause = pause
        self._resume = resume
        self._send_link = send_link
        self._fetch_jwks = fetch_jwks
        self._wall_clock = wall_clock
        self._limits = limits
        self._keys = KeyRing(refetch_interval_s=config.jwks_refetch_interval_s)
        self._replay = ReplayCache()
        self._offers: asyncio.Queue[SignalFrame] = asyncio.Queue()
        self._sessions: dict[str, _Session] = {}
        tune_aioice(stun_retry_rto_s=config.stun_retry_rto_s)

    def offer(self, frame: SignalFrame) -> None:
        """Take an offer relayed by the router; it is served by :meth:`run`."""
        self._offers.put_nowait(frame)

    def deliver(self, frame: Outgoing) -> bool:
        """Route an engine frame to its direct session; False if the request is not a direct one."""
        session = self._sessions.get(getattr(frame, "request_id", ""))
        if session is None:
            return False
        session.send(frame)
        return True

    async def refresh_keys(self) -> None:
        """Fetch the router's JWKS now (at each registration, and on an unknown ``kid``)."""
        try:
            self._keys.replace(await self._fetch_jwks())
        except MeshError as exc:
            logger.warning("could not fetch the router's ticket keys: %s", exc)

    async def run(self) -> None:
        """Serve offers until cancelled; each session is a task of this one's group."""
        async with asyncio.TaskGroup() as sessions:
            while True:
                offer = await self._offers.get()
                sessions.create_task(self.serve_offer(offer))

    async def serve_offer(self, offer: SignalFrame) -> None:
        """Serve one offer to its end: refuse it, or answer it and stream its request."""
        request_id = offer.request_id
        try:
            generate = await self.admit(offer)
        except MeshError as exc:
            logger.info("refused a direct offer: %s", exc)
            self._send_link(ErrorFrame(request_id=request_id, code=exc.code, message=exc.message))
            return
        session = _Session()
        self._sessions[request_id] = session
        try:
            with host_addresses(self._config.ice_host_addresses):
                await self._run_session(offer, generate, session)
        except Exception:
            logger.exception("direct session %s failed", request_id)
        finally:
            self._sessions.pop(request_id, None)
            if not session.finished:
                await self._cancel(request_id)

    async def admit(self, offer: SignalFrame) -> GenerateFrame:
        """Check an offer's ticket and request, and submit the request to the engine.

        Raises:
            TicketError: the ticket is refused (the subclass says why); nothing was submitted.
            ModelUnavailable: the ticket or request is for another model.
        """
        claims = await self._verify(offer.ticket or "")
        generate = offer.generate
        if generate is None:
            raise BadRequest("an offer carries the generate frame it is for")
        if generate.model != f"sha256:{claims.model_sha256}" or claims.model_sha256 != self._config.model_sha256:
            raise ModelUnavailable(f"the ticket is for sha256:{claims.model_sha256}, this node serves another model")
        if generate.params.max_tokens > claims.max_tokens:
            raise TicketError(f"max_tokens {generate.params.max_tokens} exceeds the ticket's {claims.max_tokens}")
        generate = generate.model_copy(update={"request_id": offer.request_id})
        await self._submit(generate)
        return generate

    async def _verify(self, token: str) -> TicketClaims:
        try:
            return self._check(token)
        except TicketUnknownKey:
            if not self._keys.may_refetch(now=self._wall_clock()):
                raise
        await self.refresh_keys()
        return self._check(token)

    def _check(self, token: str) -> TicketClaims:
        return verify_ticket(
            token,
            keys=self._keys.keys,
            node_id=self._config.node_id,
            issuer=self._config.ticket_issuer,
            replay=self._replay,
            now=self._wall_clock(),
            leeway_s=self._config.ticket_leeway_s,
        )

    async def _run_session(self, offer: SignalFrame, generate: GenerateFrame, session: _Session) -> None:
        pc = RTCPeerConnection(rtc_configuration(offer.ice_servers or []))
        try:
            channel = pc.createDataChannel(_CHANNEL_LABEL, negotiated=True, id=0)
            opened = asyncio.Event()
            channel.on("open", opened.set)
            channel.on("close", lambda: self._on_close(session))
            channel.on("message", lambda message: self.received(generate.request_id, message))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            self._send_link(SignalFrame(kind="answer", request_id=offer.request_id, sdp=pc.localDescription.sdp))
            async with asyncio.timeout(self._config.open_timeout_s):
                await opened.wait()
            session.opened(channel)
            await self._serve_controls(session)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.linger_s):
                    await session.closed.wait()
        finally:
            await pc.close()

    def received(self, request_id: str, message: str | bytes) -> None:
        """Take a frame the client sent on the channel of ``request_id``.

        ``cancel`` ends the session (its engine request is cancelled); ``pause`` and
        ``resume`` are queued for the engine, in order.  Frames for another request, and
        frames a client does not send, are dropped.
        """
        session = self._sessions.get(request_id)
        try:
            frame = decode_frame(message, self._limits)
        except MeshError as exc:
            logger.warning("direct request %s: bad frame from the client: %s", request_id, exc)
            return
        if session is None or getattr(frame, "request_id", None) != request_id:
            return
        match frame:
            case CancelFrame():
                session.ended.set()  # the session ends; its finally block cancels the engine request
            case PauseFrame() | ResumeFrame():
                session.controls.put_nowait(frame)
            case _:
                logger.warning("direct request %s: the client sent a %s frame", request_id, frame.type)

    async def _serve_controls(self, session: _Session) -> None:
        """Hand the client's pauses and resumes to the engine until the session ends."""
        async with asyncio.TaskGroup() as group:
            forward = group.create_task(self._forward_controls(session))
            await session.ended.wait()
            forward.cancel()

    async def _forward_controls(self, session: _Session) -> None:
        while True:
            frame = await session.controls.get()
            if isinstance(frame, PauseFrame):
                await self._pause(frame.request_id)
            else:
                await self._resume(frame)

    @staticmethod
    def _on_close(session: _Session) -> None:
        """The client closed the channel: nobody reads the answer any more, so the session ends."""
        session.closed.set()
        session.ended.set()
