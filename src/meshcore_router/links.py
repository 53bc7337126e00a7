"""A node's control link: frames in, frames out, and the requests in flight on it.

A :class:`NodeLink` owns one registered node's websocket (``docs/protocol.md``
§4).  Its reader routes each request-bound frame to the :class:`RequestChannel`
of that request, after checking it with :class:`WorkerStream`; its writer is the
only task that sends on the websocket, fed by a bounded queue, so that sending a
``generate`` or a ``cancel`` never blocks the caller.

How a link treats what it reads (§3.3, §4.5):

- a frame that breaks the caps or the schema: ``error`` frame, close 1008 (1009 for size);
- a frame out of order for its request: that request fails, the node gets ``cancel``;
- a frame for a request the node was never given: ``error`` frame, the link stays;
- frames for a request the router cancelled: dropped until its ``done`` or ``error``;
- a ``signal`` answer (or an ``error``) for a relayed offer: handed to whoever waits for it (§8);
- a ``receipt``: handed to the router's audits; a ``revealed`` or ``audited`` answer (or an
  ``error`` naming the reveal or the audit): handed to whoever waits for it (§9).

Whenever the link closes, for any reason, every request still in flight on it
fails at once with :class:`WorkerLost`, and the router stops sending it requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, cast

from pydantic import BaseModel

from meshcore_router.transport import CloseCode, FrameConnection, close_code_for, error_frame, receive_frame
from meshcore_sdk.protocol import (
    AcceptedFrame,
    AuditedFrame,
    AuditFrame,
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    Frame,
    FrameLimits,
    GenerateFrame,
    HeartbeatFrame,
    PausedFrame,
    ReceiptFrame,
    RevealedFrame,
    RevealFrame,
    SignalFrame,
    TokenFrame,
    WorkerStream,
    encode_frame,
    error_from_code,
)
from meshcore_sdk.protocol.errors import (
    ConnectionLost,
    InternalError,
    MeshError,
    MeshTimeout,
    OutOfOrderFrame,
    RemoteProtocolError,
    WorkerLost,
)

__all__ = ["NodeLink", "RequestChannel", "WorkerFrame"]

logger = logging.getLogger(__name__)

WorkerFrame = AcceptedFrame | TokenFrame | PausedFrame | DoneFrame
"""The frames a request's reader receives; errors arrive as exceptions instead."""

_ENDED: Final = object()
_FINAL_FRAME_TIMEOUT_S: Final = 1.0  # how long a closing link waits to deliver its error frame
_CANCELLED_MEMORY: Final = 4096  # cancelled request ids remembered per link, to drop their late frames


class RequestChannel:
    """The frames of one request, from a node link to the one task that reads them.

    The request ends in one of three ways: a ``done`` frame (queued like the others),
    a failure (:meth:`fail`), or a cancellation by its reader (:meth:`cancel`).  An
    ending that is not a frame is delivered after the frames already queued.

    Args:
        request_id: the router's id of the request on the link.
        worker_id: the node serving it.
        capacity: how many frames may wait for the reader.
        attempt: the attempt number its tokens must carry.
    """

    def __init__(self, request_id: str, worker_id: str, *, capacity: int, attempt: int = 0) -> None:
        self.request_id = request_id
        self.worker_id = worker_id
        self.stream = WorkerStream(request_id, attempt=attempt)
        self._queue: asyncio.Queue[WorkerFrame | object] = asyncio.Queue(capacity)
        self._ended = False
        self._failure: MeshError | None = None

    def offer(self, frame: WorkerFrame) -> bool:
        """Queue a frame for the reader; False when the reader has fallen too far behind."""
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def fail(self, exc: MeshError) -> None:
        """End the request with ``exc``."""
        self._end(exc)

    def cancel(self) -> None:
        """End the request because its reader gave it up."""
        self._end(None)

    async def receive(self) -> WorkerFrame | None:
        """The next frame of the request, or None once it was cancelled.

        Raises:
            MeshError: the request failed (an ``error`` frame, a bad frame, a lost link).
        """
        if not (self._ended and self._queue.empty()):
            item = await self._queue.get()
            if item is not _ENDED:
                return cast(WorkerFrame, item)
        if self._failure is not None:
            raise self._failure
        return None

    def _end(self, failure: MeshError | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._failure = failure
        # with the queue full, the reader is not waiting: it finds the ending once it has drained the queue
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_ENDED)


class NodeLink:
    """The control link of one registered node.

    Args:
        conn: the node's websocket, after ``hello`` and ``register``.
        node_id: the node's id.
        incarnation: the registry's incarnation of this registration.
        limits: caps applied to every frame read.
        request_queue_frames: frames buffered per request for its reader.
        send_queue_frames: frames buffered for the writer before the link counts as stuck.
        on_close: called once, as soon as the link starts closing (to stop routing to it).
    """

    def __init__(
        self,
        conn: FrameConnection,
        *,
        node_id: str,
        incarnation: int,
        limits: FrameLimits,
        request_queue_frames: int,
        send_queue_frames: int,
        on_close: Callable[[], None],
    ) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self._conn = conn
        self._limits = limits
        self._request_queue_frames = request_queue_frames
        self._outbound: asyncio.Queue[str] = asyncio.Queue(send_queue_frames)
        self._pending: dict[str, RequestChannel] = {}
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._signals: dict[str, asyncio.Future[SignalFrame]] = {}
        self._answers: dict[tuple[str, str], asyncio.Future[Any]] = {}  # reveals and audits (§9)
        self._stop = asyncio.Event()
        self._closing: tuple[int, str, MeshError | None] | None = None
        self._on_close = on_close
        self._on_receipt: Callable[[ReceiptFrame], None] = lambda frame: None

    @property
    def in_flight(self) -> int:
        """How many requests are in flight on the link."""
        return len(self._pending)

    @property
    def closing(self) -> bool:
        """Whether the link has started closing."""
        return self._closing is not None

    def send_nowait(self, frame: BaseModel) -> None:
        """Queue a frame for the node; a link whose queue is full is closed as stuck."""
        if self._closing is not None:
            return
        try:
            self._outbound.put_nowait(encode_frame(frame))
        except asyncio.QueueFull:
            self.close(CloseCode.POLICY_VIOLATION, "the node does not read its link")

    def open_request(self, frame: GenerateFrame) -> RequestChannel:
        """Send ``frame`` to the node and return the channel its answer will arrive on.

        Raises:
            WorkerLost: the link is closing.
        """
        if self._closing is not None:
            raise WorkerLost(f"node {self.node_id} is going away", worker_id=self.node_id)
        channel = RequestChannel(
            frame.request_id, self.node_id, capacity=self._request_queue_frames, attempt=frame.attempt
        )
        self._pending[frame.request_id] = channel
        self.send_nowait(frame)
        return channel

    def open_signal(self, offer: SignalFrame) -> asyncio.Future[SignalFrame]:
        """Relay an offer to the node; the future gets its answer, or the node's refusal as a MeshError.

        The caller bounds the wait and calls :meth:`drop_signal` when it gives up.

        Raises:
            WorkerLost: the link is closing.
        """
        if self._closing is not None:
            raise WorkerLost(f"node {self.node_id} is going away", worker_id=self.node_id)
        answer: asyncio.Future[SignalFrame] = asyncio.get_running_loop().create_future()
        self._signals[offer.request_id] = answer
        self.send_nowait(offer)
        return answer

    def drop_signal(self, request_id: str) -> None:
        """Forget a relayed offer; a late answer is then dropped."""
        self._signals.pop(request_id, None)

    async def reveal(self, frame: RevealFrame, *, timeout_s: float) -> RevealedFrame:
        """Ask the node for records of a request it served (§9.2).

        Raises:
            MeshError: the node refused (its ``error``), the link closed, or no answer within ``timeout_s``.
        """
        answer: RevealedFrame = await self._ask(("revealed", frame.request_id), frame, timeout_s)
        return answer

    async def audit(self, frame: AuditFrame, *, timeout_s: float) -> AuditedFrame:
        """Ask the node (a trusted auditor) to audit a job (§9.3).

        Raises:
            MeshError: the node refused (its ``error``), the link closed, or no answer within ``timeout_s``.
        """
        answer: AuditedFrame = await self._ask(("audited", frame.audit_id), frame, timeout_s)
        return answer

    async def _ask(self, key: tuple[str, str], frame: BaseModel, timeout_s: float) -> Any:
        if self._closing is not None:
            raise WorkerLost(f"node {self.node_id} is going away", worker_id=self.node_id)
        if key in self._answers:
            raise InternalError(f"a {key[0]} answer for {key[1]} is already awaited")
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[key] = answer
        self.send_nowait(frame)
        try:
            async with asyncio.timeout(timeout_s):
                return await answer
        except TimeoutError as exc:
            raise MeshTimeout(f"node {self.node_id} sent no {key[0]} answer within {timeout_s} s") from exc
        finally:
            self._answers.pop(key, None)

    def cancel_request(self, request_id: str) -> None:
        """Stop a request: the node gets ``cancel`` and its late frames are dropped."""
        if self._pending.pop(request_id, None) is None or self._closing is not None:
            return
        self._cancelled[request_id] = None
        if len(self._cancelled) > _CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)
        self.send_nowait(CancelFrame(request_id=request_id))

    def close(self, code: int, reason: str, *, error: MeshError | None = None) -> None:
        """Start closing the link: fail its requests now, then (in :meth:`run`) close the socket.

        Args:
            code: the websocket close code.
            reason: why, for the close frame and the requests' errors.
            error: sent to the node as an ``error`` frame before closing, when given.
        """
        if self._closing is not None:
            return
        self._closing = (code, reason, error)
        pending, self._pending = self._pending, {}
        signals, self._signals = self._signals, {}
        for request_id, answer in signals.items():
            if not answer.done():
                answer.set_exception(
                    WorkerLost(f"the link to node {self.node_id} closed: {reason}", request_id=request_id)
                )
        for awaited in self._answers.values():
            if not awaited.done():
                awaited.set_exception(WorkerLost(f"the link to node {self.node_id} closed: {reason}"))
        for request_id, channel in pending.items():
            channel.fail(
                WorkerLost(
                    f"the link to node {self.node_id} closed: {reason}",
                    request_id=request_id,
                    worker_id=self.node_id,
                )
            )
        self._stop.set()
        self._on_close()

    async def run(
        self,
        on_heartbeat: Callable[[HeartbeatFrame], None],
        on_receipt: Callable[[ReceiptFrame], None] = lambda frame: None,
    ) -> None:
        """Serve the link until it closes, passing each heartbeat and each receipt on."""
        self._on_receipt = on_receipt
        try:
            async with asyncio.TaskGroup() as tasks:
                reader = tasks.create_task(self._read_loop(on_heartbeat))
                writer = tasks.create_task(self._write_loop())
                await self._stop.wait()
                reader.cancel()
                writer.cancel()
        finally:
            self.close(CloseCode.GOING_AWAY, "the router is shutting down")
            await self._say_goodbye()

    async def _say_goodbye(self) -> None:
        assert self._closing is not None
        code, reason, error = self._closing
        if error is not None:
            try:
                async with asyncio.timeout(_FINAL_FRAME_TIMEOUT_S):
                    await self._conn.send(encode_frame(error_frame(error)))
            except (ConnectionLost, TimeoutError):
                pass
        await self._conn.close(code, reason)

    async def _read_loop(self, on_heartbeat: Callable[[HeartbeatFrame], None]) -> None:
        try:
            while True:
                frame = await receive_frame(self._conn, self._limits)
                if isinstance(frame, HeartbeatFrame):
                    on_heartbeat(frame)
                else:
                    self._route(frame)
        except ConnectionLost as exc:
            self.close(CloseCode.NORMAL, str(exc))
        except RemoteProtocolError as exc:
            logger.warning("node %s broke the protocol: %s", self.node_id, exc)
            self.close(close_code_for(exc), exc.message, error=exc)

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._conn.send(await self._outbound.get())
        except ConnectionLost as exc:
            self.close(CloseCode.NORMAL, str(exc))

    def _route(self, frame: Frame) -> None:
        match frame:
            case AcceptedFrame() | TokenFrame() | PausedFrame() | DoneFrame():
                self._deliver(frame.request_id, frame)
            case SignalFrame(kind="answer"):
                self._answer_signal(frame.request_id, frame)
            case ReceiptFrame():
                self._on_receipt(frame)
            case RevealedFrame():
                self._answer(("revealed", frame.request_id), frame)
            case AuditedFrame():
                self._answer(("audited", frame.audit_id), frame)
            case ErrorFrame(request_id=str() as request_id) if ("revealed", request_id) in self._answers:
                self._answer(("revealed", request_id), self._error_of(frame))
            case ErrorFrame(request_id=str() as request_id) if ("audited", request_id) in self._answers:
                self._answer(("audited", request_id), self._error_of(frame))
            case ErrorFrame(request_id=str() as request_id) if request_id in self._signals:
                self._answer_signal(request_id, frame)
            case ErrorFrame(request_id=str() as request_id):
                self._deliver(request_id, frame)
            case ErrorFrame():
                logger.warning("node %s reported an error: %s: %s", self.node_id, frame.code, frame.message)
            case _:
                raise OutOfOrderFrame(f"a node does not send {frame.type} frames on its link")

    def _answer_signal(self, request_id: str, frame: SignalFrame | ErrorFrame) -> None:
        answer = self._signals.pop(request_id, None)
        if answer is None or answer.done():
            return  # the offer was given up on; a late answer means nothing
        if isinstance(frame, SignalFrame):
            answer.set_result(frame)
        else:
            answer.set_exception(self._error_of(frame))

    def _answer(self, key: tuple[str, str], answer: BaseModel | MeshError) -> None:
        awaited = self._answers.get(key)
        if awaited is None or awaited.done():
            return  # given up on: a late answer means nothing
        if isinstance(answer, MeshError):
            awaited.set_exception(answer)
        else:
            awaited.set_result(answer)

    def _deliver(self, request_id: str, frame: WorkerFrame | ErrorFrame) -> None:
        if request_id in self._cancelled:
            if isinstance(frame, DoneFrame | ErrorFrame):
                del self._cancelled[request_id]
            return
        channel = self._pending.get(request_id)
        if channel is None:
            if not isinstance(frame, ErrorFrame):  # never answer an error with an error
                unknown = OutOfOrderFrame(f"no request {request_id} is in flight on this link")
                self.send_nowait(error_frame(unknown, request_id=request_id))
            return
        try:
            if not channel.stream.receive(frame):
                return  # sent before the node saw the latest resume: stale (§3.3)
        except OutOfOrderFrame as exc:
            self._fail(channel, OutOfOrderFrame(exc.message, request_id=request_id, worker_id=self.node_id))
            return
        if isinstance(frame, ErrorFrame):
            del self._pending[request_id]
            channel.fail(self._error_of(frame))
        elif not channel.offer(frame):
            self._fail(channel, InternalError(f"request {request_id}: the reader fell behind the node"))
        elif isinstance(frame, DoneFrame):
            del self._pending[request_id]

    def _fail(self, channel: RequestChannel, exc: MeshError) -> None:
        """Fail one request and cancel it on the node; the link and other requests go on."""
        logger.warning("node %s: %s", self.node_id, exc)
        channel.fail(exc)
        self.cancel_request(channel.request_id)

    def _error_of(self, frame: ErrorFrame) -> MeshError:
        return error_from_code(
            frame.code,
            frame.message,
            request_id=frame.request_id,
            worker_id=self.node_id,
            retry_after_s=frame.retry_after_s,
            retryable=frame.retryable,
        )
