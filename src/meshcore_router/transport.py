"""The seam between the router and its websockets, and the session handshake on it.

Every websocket the router accepts (a node's control link, a client's frame
stream) is seen through :class:`FrameConnection`: receive one message, send one
message, close with a code.  :class:`StarletteConnection` adapts Starlette's
websocket and maps its exceptions to :class:`ConnectionLost`, so no foreign
exception goes further in.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
from typing import Protocol

from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketDisconnect

from meshcore_sdk.protocol import (
    ErrorFrame,
    Frame,
    FrameLimits,
    HelloFrame,
    Role,
    WelcomeFrame,
    decode_frame,
    encode_frame,
    negotiate,
)
from meshcore_sdk.protocol.errors import (
    ConnectionLost,
    FrameTooLarge,
    MeshError,
    MeshTimeout,
    OutOfOrderFrame,
    ProtocolError,
)

__all__ = [
    "CloseCode",
    "FrameConnection",
    "StarletteConnection",
    "accept_hello",
    "close_code_for",
    "error_frame",
    "receive_frame",
    "refuse",
    "send_frame",
]

_REFUSE_TIMEOUT_S = 1.0  # how long a refusal waits to deliver its error frame before closing


class CloseCode(enum.IntEnum):
    """Websocket close codes the router uses (``docs/protocol.md`` §4)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    EXPIRED = 4408
    REPLACED = 4409


class FrameConnection(Protocol):
    """One accepted websocket, as the router uses it."""

    async def receive(self) -> str | bytes:
        """The next message; raises ConnectionLost once the peer is gone."""
        ...

    async def send(self, text: str) -> None:
        """Send one text message; raises ConnectionLost once the peer is gone."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``; never raises."""
        ...


class StarletteConnection:
    """A Starlette websocket seen as a :class:`FrameConnection`."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def receive(self) -> str | bytes:
        """The next message; raises ConnectionLost once the peer is gone."""
        try:
            message = await self._websocket.receive()
        except (RuntimeError, OSError) as exc:
            raise ConnectionLost(f"websocket gone: {exc}") from exc
        if message["type"] == "websocket.disconnect":
            raise ConnectionLost(f"websocket closed by the peer with code {message.get('code')}")
        text: str | None = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def send(self, text: str) -> None:
        """Send one text message; raises ConnectionLost once the peer is gone."""
        try:
            await self._websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise ConnectionLost(f"websocket gone: {exc}") from exc

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``; never raises."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._websocket.close(code, reason[:120])


def close_code_for(exc: MeshError) -> CloseCode:
    """The close code that follows an error frame for ``exc`` (§4.5)."""
    if isinstance(exc, FrameTooLarge):
        return CloseCode.MESSAGE_TOO_BIG
    if isinstance(exc, ProtocolError | MeshTimeout):
        return CloseCode.POLICY_VIOLATION
    return CloseCode.INTERNAL_ERROR


def error_frame(exc: MeshError, *, request_id: str | None = None) -> ErrorFrame:
    """The ``error`` frame that reports ``exc``."""
    return ErrorFrame(
        request_id=request_id if request_id is not None else exc.request_id,
        code=exc.code,
        message=exc.message[:4096],
        retryable=exc.retryable,
        retry_after_s=exc.retry_after_s,
    )


async def send_frame(conn: FrameConnection, frame: BaseModel) -> None:
    """Encode and send one frame."""
    await conn.send(encode_frame(frame))


async def receive_frame(conn: FrameConnection, limits: FrameLimits) -> Frame:
    """Receive and decode one frame, caps first (§1.2)."""
    return decode_frame(await conn.receive(), limits)


async def accept_hello(conn: FrameConnection, limits: FrameLimits, *, role: Role, timeout_s: float) -> int:
    """Run the acceptor's side of the session handshake (§2); returns the version agreed.

    Raises:
        MeshTimeout: no hello came within ``timeout_s``.
        OutOfOrderFrame: the first frame was not a hello from a peer in ``role``.
        VersionMismatch: the peer speaks no version this router speaks.
        RemoteProtocolError: the first frame broke the caps or the schema.
        ConnectionLost: the peer went away.
    """
    try:
        async with asyncio.timeout(timeout_s):
            frame = await receive_frame(conn, limits)
    except TimeoutError as exc:
        raise MeshTimeout(f"no hello within {timeout_s} s") from exc
    if not isinstance(frame, HelloFrame):
        raise OutOfOrderFrame(f"expected hello, got a {frame.type} frame")
    if frame.role is not role:
        raise OutOfOrderFrame(f"this endpoint takes a hello from a {role.value}, not a {frame.role.value}")
    version = negotiate(frame)
    await send_frame(conn, WelcomeFrame(version=version, session_id=f"s-{secrets.token_hex(8)}"))
    return version


async def refuse(conn: FrameConnection, exc: MeshError) -> None:
    """Send an ``error`` frame for ``exc`` and close with the matching code (§4.5)."""
    try:
        async with asyncio.timeout(_REFUSE_TIMEOUT_S):
            await send_frame(conn, error_frame(exc))
    except (ConnectionLost, TimeoutError):
        pass
    await conn.close(close_code_for(exc), exc.message)
