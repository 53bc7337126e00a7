"""How the frames of a swarm's legs travel: the seam between the swarm's driver and its transport.

A *leg* is one copy of the prompt.  The driver (:class:`meshcore_sdk.swarm.transport.SwarmSource`)
names its legs (``swarm-ab12cd.0``, ``swarm-ab12cd.1``, ...) and the machine knows its workers by
these names; a :class:`LegLink` carries each leg's frames:

- :meth:`LegLink.open` sends the first copies; it raises when the request cannot start at all;
- :meth:`LegLink.add` sends one more copy (a cold catch-up); a failure is reported as a loss by
  :meth:`LegLink.receive` (or, on the router's stream, raised as the stream's own failure);
- :meth:`LegLink.send` carries a leg's ``pause``, ``resume`` and ``cancel``;
- :meth:`LegLink.receive` waits for the next thing that happened to any leg: a frame
  (:class:`FrameArrived`) or a loss (:class:`LegsLost`: a closed connection, a connection that
  never opened, a frame that does not parse).  After a loss of every leg it simply waits: the
  caller bounds every wait with the machine's deadline.

Frames cross the seam named by their leg: the link maps a leg's name to the request id on the wire
and back.  On the router's stream they are the same; a direct leg's request is named by the router
when it relays the offer, so its wire id is known only once signaling is done.

Two links implement the seam: :class:`RouterStreamLink` (proxy legs: every copy multiplexed on one
websocket to the router's frame stream, ``docs/protocol.md`` §5) and
:class:`meshcore_sdk.swarm.direct_legs.DirectLegs` (one WebRTC data channel per leg, §8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from meshcore_sdk.protocol import (
    SUPPORTED_VERSIONS,
    CancelFrame,
    ErrorFrame,
    Frame,
    FrameLimits,
    GenerateFrame,
    HelloFrame,
    PauseFrame,
    ResumeFrame,
    Role,
    WelcomeFrame,
    decode_frame,
    encode_frame,
    error_from_code,
)
from meshcore_sdk.protocol.errors import (
    ConnectError,
    MeshTimeout,
    OutOfOrderFrame,
    RemoteProtocolError,
    StreamClosed,
)

__all__ = ["FrameArrived", "LegControl", "LegLink", "LegsLost", "LinkEvent", "RouterStreamLink"]

LegControl = PauseFrame | ResumeFrame | CancelFrame
"""What the driver sends a leg once its copy is out."""


@dataclass(frozen=True, slots=True)
class FrameArrived:
    """``frame`` came for ``leg``; its ``request_id``, if it has one naming the leg, is the leg's name."""

    leg: str
    frame: Frame


@dataclass(frozen=True, slots=True)
class LegsLost:
    """``legs`` can carry nothing more, because of ``cause``."""

    legs: tuple[str, ...]
    cause: str


LinkEvent = FrameArrived | LegsLost


class LegLink(Protocol):
    """Carries the frames of a swarm's legs (see the module's docstring)."""

    async def open(self, generates: Sequence[GenerateFrame]) -> None:
        """Send the first copies, each a ``generate`` whose ``request_id`` is its leg's name.

        Raises:
            MeshError: the request cannot start (the router refused it, or cannot be reached).
        """
        ...

    async def add(self, generate: GenerateFrame) -> None:
        """Send one more copy (a cold catch-up)."""
        ...

    async def send(self, leg: str, frame: LegControl) -> None:
        """Send ``frame`` (whose ``request_id`` is ``leg``) to the leg's worker.

        Raises:
            StreamClosed: the one connection every leg shares has closed.
        """
        ...

    async def receive(self) -> LinkEvent:
        """The next frame or loss, waiting as long as it takes."""
        ...

    async def aclose(self) -> None:
        """Close every connection; safe to call more than once."""
        ...


class RouterStreamLink:
    """Proxy legs: every copy on one websocket to the router's frame stream (``docs/protocol.md`` §5).

    The router places the copies of one ``group`` on distinct workers and relays their frames
    back on the same websocket; a frame names its leg by ``request_id``.  If the websocket closes,
    or the router sends a frame that does not parse, every leg is lost at once.

    Args:
        connection: an open frame stream, past its hello (see :meth:`connect`).
        limits: caps on each frame read.
    """

    def __init__(self, connection: ClientConnection, *, limits: FrameLimits) -> None:
        self._connection = connection
        self._limits = limits
        self._legs: list[str] = []
        self._closed = False

    @classmethod
    async def connect(cls, url: str, *, open_timeout_s: float, limits: FrameLimits) -> RouterStreamLink:
        """Open the router's frame stream at ``url`` and say hello.

        Raises:
            ConnectError: the stream could not be opened, or closed during the handshake.
            MeshTimeout: it did not open within ``open_timeout_s``.
            MeshError: the router refused the hello (its error frame's class).
        """
        try:
            connection = await connect(url, open_timeout=open_timeout_s, max_size=limits.max_frame_bytes)
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectError(f"cannot open the router's frame stream at {url}: {exc}") from exc
        except TimeoutError as exc:
            raise MeshTimeout(f"the router's frame stream did not open in {open_timeout_s} s") from exc
        try:
            hello = HelloFrame(versions=sorted(SUPPORTED_VERSIONS), role=Role.CLIENT, agent="meshcore-sdk")
            await connection.send(encode_frame(hello))
            welcome = decode_frame(await connection.recv(), limits, tolerant=True)
        except ConnectionClosed as exc:
            raise ConnectError("the router closed its frame stream during the handshake") from exc
        if isinstance(welcome, ErrorFrame):
            await connection.close()
            raise error_from_code(welcome.code, welcome.message)
        if not isinstance(welcome, WelcomeFrame):
            await connection.close()
            raise OutOfOrderFrame(f"expected welcome, got a {welcome.type} frame")
        return cls(connection, limits=limits)

    async def open(self, generates: Sequence[GenerateFrame]) -> None:
        """Send every copy on the stream."""
        for generate in generates:
            await self.add(generate)

    async def add(self, generate: GenerateFrame) -> None:
        """Send one more copy of the group.

        Raises:
            StreamClosed: the frame stream has closed.
        """
        self._legs.append(generate.request_id)
        await self._send(generate)

    async def send(self, leg: str, frame: LegControl) -> None:
        """Send a leg's control frame on the stream (the leg's name is its request id)."""
        await self._send(frame)

    async def receive(self) -> LinkEvent:
        """The next frame for a leg, or the loss of every leg."""
        while not self._closed:
            try:
                message = await self._connection.recv()
            except ConnectionClosed:
                self._closed = True
                return LegsLost(tuple(self._legs), "the router's frame stream closed")
            try:
                frame = decode_frame(message, self._limits, tolerant=True)
            except RemoteProtocolError as exc:
                return LegsLost(tuple(self._legs), f"the router sent a bad frame: {exc}")
            request_id = getattr(frame, "request_id", None)
            if request_id in self._legs:
                return FrameArrived(request_id, frame)
        await asyncio.Event().wait()  # nothing more will come: the caller's deadline ends the wait
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close the websocket."""
        self._closed = True
        await self._connection.close()

    async def _send(self, frame: GenerateFrame | LegControl) -> None:
        try:
            await self._connection.send(encode_frame(frame))
        except ConnectionClosed as exc:
            raise StreamClosed("the router's frame stream closed") from exc
