"""The router's client stream at ``/mesh/v1/stream`` (``docs/protocol.md`` §5).

A client opens a websocket, says ``hello`` as a client, then sends ``generate``,
``pause``, ``resume`` and ``cancel`` frames, many requests at once, told apart by
the client's ``request_id``.  Requests that name the same ``group`` (a swarm's
copies of one prompt) go to distinct nodes while there are enough.  A request
whose group has another request in flight on the connection is a hedge, which
the router's hedging budget may refuse (``meshcore_router.hedging``): it gets
an ``error`` (``no_capacity``, not retryable) and its siblings go on.  The
router answers each request as a worker would (§3.3): an ``accepted`` naming
the worker, ``token`` frames, then ``done`` or ``error``.

Each request gets a fresh router-side id on its node's link (client ids are
unique only per connection) and one relay task that copies the node's frames
back under the client's id.  A request the router cannot place (unknown model,
no capacity) gets an ``error`` frame and the connection stays.  A frame that
breaks the protocol (bad caps or schema, a frame a client never sends, a second
``generate`` with an id in flight, a ``cancel`` for an id never seen) gets an
``error`` frame and the connection is closed; its requests are cancelled on
their nodes, and nothing else is disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Final

from pydantic import BaseModel

from meshcore_router.dispatch import Dispatch
from meshcore_router.router import Router, new_request_id
from meshcore_router.transport import FrameConnection, accept_hello, error_frame, receive_frame, refuse
from meshcore_sdk.protocol import (
    AcceptedFrame,
    CancelFrame,
    DoneFrame,
    GenerateFrame,
    PauseFrame,
    ResumeFrame,
    Role,
    encode_frame,
)
from meshcore_sdk.protocol.errors import ConnectionLost, MeshError, OutOfOrderFrame, RemoteProtocolError

__all__ = ["ENDPOINT", "serve_client"]

ENDPOINT: Final = "/mesh/v1/stream"
_ENDED_MEMORY: Final = 1024  # ended request ids remembered, so that a late cancel is not an error


async def serve_client(router: Router, conn: FrameConnection) -> None:
    """Serve one client's frame stream until it closes."""
    config = router.config
    try:
        await accept_hello(conn, config.frame_limits, role=Role.CLIENT, timeout_s=config.handshake_timeout_s)
    except ConnectionLost:
        return
    except MeshError as exc:
        await refuse(conn, exc)
        return
    await _ClientSession(router, conn).run()


class _ClientSession:
    def __init__(self, router: Router, conn: FrameConnection) -> None:
        self._router = router
        self._conn = conn
        self._relays: dict[str, asyncio.Task[None]] = {}
        self._dispatches: dict[str, Dispatch] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        violation: RemoteProtocolError | None = None
        async with asyncio.TaskGroup() as tasks:
            try:
                await self._read_loop(tasks)
            except ConnectionLost:
                pass
            except RemoteProtocolError as exc:
                violation = exc
            finally:
                for relay in self._relays.values():
                    relay.cancel()
        if violation is not None:
            await refuse(self._conn, violation)

    async def _read_loop(self, tasks: asyncio.TaskGroup) -> None:
        while True:
            frame = await receive_frame(self._conn, self._router.config.frame_limits)
            match frame:
                case GenerateFrame():
                    await self._start(frame, tasks)
                case CancelFrame():
                    self._cancel(frame.request_id)
                case PauseFrame():
                    if dispatch := self._in_flight(frame.request_id):
                        dispatch.pause()
                case ResumeFrame():
                    if dispatch := self._in_flight(frame.request_id):
                        dispatch.resume(frame)
                case _:
                    raise OutOfOrderFrame(f"a client does not send {frame.type} frames")

    async def _start(self, frame: GenerateFrame, tasks: asyncio.TaskGroup) -> None:
        client_id = frame.request_id
        if client_id in self._relays:
            raise OutOfOrderFrame(f"request {client_id} is already in flight", request_id=client_id)
        started = self._router.clock()
        try:
            dispatch = self._place(frame.model_copy(update={"request_id": new_request_id()}))
        except MeshError as exc:
            self._observe(exc.http_status, started)
            await self._send(error_frame(exc, request_id=client_id))
            return
        self._dispatches[client_id] = dispatch
        self._relays[client_id] = tasks.create_task(self._relay(client_id, dispatch, started))

    def _place(self, frame: GenerateFrame) -> Dispatch:
        """Dispatch ``frame``, away from the nodes its group already uses when another node can take it.

        With a sibling in flight, ``frame`` is a hedge: it goes only where the hedging rule allows.
        """
        siblings = {d.worker_id for d in self._dispatches.values() if d.group is not None and d.group == frame.group}
        return self._router.dispatch(frame, avoid=siblings, hedge=bool(siblings))

    def _in_flight(self, client_id: str) -> Dispatch | None:
        """The request to pause or resume; None if it ended a moment ago (its end is on its way)."""
        dispatch = self._dispatches.get(client_id)
        if dispatch is None and client_id not in self._ended:
            raise OutOfOrderFrame(f"request {client_id} was never started", request_id=client_id)
        return dispatch

    def _cancel(self, client_id: str) -> None:
        dispatch = self._dispatches.get(client_id)
        if dispatch is not None:
            dispatch.cancel()  # its relay sends the frames already received, then done (cancelled)
        elif client_id not in self._ended:
            raise OutOfOrderFrame(f"cancel for request {client_id}, which was never started", request_id=client_id)

    async def _relay(self, client_id: str, dispatch: Dispatch, started: float) -> None:
        status = 200
        try:
            while True:
                frame = await dispatch.next_frame()
                update: dict[str, str] = {"request_id": client_id}
                if isinstance(frame, AcceptedFrame):
                    update["worker_id"] = dispatch.worker_id
                await self._send(frame.model_copy(update=update))
                if isinstance(frame, DoneFrame):
                    return
        except MeshError as exc:
            status = exc.http_status
            await self._send(error_frame(exc, request_id=client_id))
        finally:
            dispatch.cancel()
            self._dispatches.pop(client_id, None)
            self._relays.pop(client_id, None)
            self._ended[client_id] = None
            if len(self._ended) > _ENDED_MEMORY:
                self._ended.popitem(last=False)
            self._observe(status, started)

    async def _send(self, frame: BaseModel) -> None:
        async with self._send_lock:
            # a lost connection is the read loop's to notice: it winds the session down
            with contextlib.suppress(ConnectionLost):
                await self._conn.send(encode_frame(frame))

    def _observe(self, status: int, started: float) -> None:
        self._router.metrics.observe_request(ENDPOINT, status, self._router.clock() - started)
