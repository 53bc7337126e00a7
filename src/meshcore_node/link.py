"""The node's control link: an outbound websocket to the router, kept up for good.

The node dials the router (so it works behind NAT), says ``hello``, registers,
then runs three loops over the connection in one task group: a sender (one
queue, so frames never interleave), a heartbeat (every interval, and at once
when the status changes), and a receiver that hands the router's frames to the
daemon.  When the connection fails for any reason the link tells the daemon
(which cancels the requests that came over it), waits a jittered backoff delay
and dials again.  ``docs/protocol.md`` §2 and §4 are the spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TypeVar

from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from meshcore_node.config import NodeConfig
from meshcore_sdk.protocol import (
    SUPPORTED_VERSIONS,
    ErrorFrame,
    Frame,
    HeartbeatFrame,
    HelloFrame,
    RegisteredFrame,
    RegisterFrame,
    Role,
    TokenFrame,
    WelcomeFrame,
    decode_frame,
    encode_frame,
    error_from_code,
)
from meshcore_sdk.protocol.errors import MeshError, OutOfOrderFrame, RemoteProtocolError

__all__ = ["AGENT", "ControlLink"]

logger = logging.getLogger(__name__)

try:
    AGENT = f"meshcore-node/{version('meshcore')}"
except PackageNotFoundError:  # running from a source tree
    AGENT = "meshcore-node/dev"

_F = TypeVar("_F", bound=BaseModel)
_LINK_FAILURES = (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed, MeshError)
_POLICY_VIOLATION = 1008


class ControlLink:
    """Keeps the node registered with the router.

    Args:
        config: the node's configuration.
        registration: builds the ``register`` frame (called at each connection).
        heartbeat: builds the current ``heartbeat`` frame.
        on_frame: receives each frame the router sends after registration.
        on_registered: called each time the node is registered.
        on_disconnect: called each time an established connection ends.
        rng: randomness for the reconnect jitter.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        registration: Callable[[], RegisterFrame],
        heartbeat: Callable[[], HeartbeatFrame],
        on_frame: Callable[[Frame], Awaitable[None]],
        on_registered: Callable[[], None],
        on_disconnect: Callable[[], Awaitable[None]],
        rng: random.Random,
    ) -> None:
        self._config = config
        self._registration = registration
        self._heartbeat = heartbeat
        self._on_frame = on_frame
        self._on_registered = on_registered
        self._on_disconnect = on_disconnect
        self._rng = rng
        self._outbox: asyncio.Queue[BaseModel] | None = None
        self._status_changed = asyncio.Event()
        self.registered = asyncio.Event()
        """Set while the node is registered with the router."""

    def send(self, frame: BaseModel) -> None:
        """Queue a frame for the router; dropped when there is no connection.

        A frame for a request whose connection is gone has no reader: the router
        already failed that request when the link dropped.
        """
        if self._outbox is not None:
            self._outbox.put_nowait(frame)

    def status_changed(self) -> None:
        """Send a heartbeat now, not at the next interval."""
        self._status_changed.set()

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff, until cancelled."""
        attempt = 0
        while True:
            try:
                async with connect(
                    self._config.control_url,
                    max_size=self._config.limits.max_frame_bytes,
                    open_timeout=self._config.open_timeout_s,
                ) as websocket:
                    attempt = 0
                    await self._serve(websocket)
            except* _LINK_FAILURES as failures:
                logger.warning("control link to %s down: %s", self._config.control_url, _first(failures))
            except* Exception as failures:  # the daemon outlives any failure of one connection
                logger.error("control link failed", exc_info=_first(failures))
            delay = self._config.reconnect.delay_s(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    async def _serve(self, websocket: ClientConnection) -> None:
        interval = await self._handshake(websocket)
        self._outbox = asyncio.Queue()
        self.registered.set()
        self._on_registered()
        try:
            async with asyncio.TaskGroup() as group:
                sender = group.create_task(self._send_loop(websocket))
                beats = group.create_task(self._heartbeat_loop(interval))
                await self._receive_loop(websocket)
                sender.cancel()
                beats.cancel()
        finally:
            self._outbox = None
            self.registered.clear()
            await self._on_disconnect()

    async def _handshake(self, websocket: ClientConnection) -> float:
        hello = HelloFrame(versions=sorted(SUPPORTED_VERSIONS), role=Role.NODE, agent=AGENT)
        await websocket.send(encode_frame(hello))
        await self._expect(websocket, WelcomeFrame)
        await websocket.send(encode_frame(self._registration()))
        registered = await self._expect(websocket, RegisteredFrame)
        return registered.heartbeat_interval_s

    async def _expect(self, websocket: ClientConnection, kind: type[_F]) -> _F:
        frame = decode_frame(await websocket.recv(), self._config.limits)
        if isinstance(frame, ErrorFrame):
            raise error_from_code(frame.code, f"router refused the node: {frame.message}")
        if not isinstance(frame, kind):
            raise OutOfOrderFrame(f"expected {kind.__name__}, got a {frame.type} frame")
        return frame

    async def _receive_loop(self, websocket: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the link ended; run() reconnects
            await self._receive_frames(websocket)

    async def _receive_frames(self, websocket: ClientConnection) -> None:
        async for message in websocket:
            try:
                frame = decode_frame(message, self._config.limits)
            except RemoteProtocolError as exc:
                await websocket.send(encode_frame(ErrorFrame(code=exc.code, message=str(exc))))
                await websocket.close(_POLICY_VIOLATION, "bad frame")
                return
            await self._on_frame(frame)

    async def _send_loop(self, websocket: ClientConnection) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        delay_s = self._config.fault_token_delay_s
        while True:
            frame = await outbox.get()
            if delay_s and isinstance(frame, TokenFrame):
                await asyncio.sleep(delay_s)  # the fault layer: a slow machine, on purpose
            await websocket.send(encode_frame(frame))

    async def _heartbeat_loop(self, interval_s: float) -> None:
        while True:
            self.send(self._heartbeat())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._status_changed.wait()
            self._status_changed.clear()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of an exception group, for a one-line log."""
    first: BaseException = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
