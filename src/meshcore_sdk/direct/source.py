"""One direct request's frames, read off its data channel and turned into OpenAI chunks.

The channel's ``message`` handler only queues the text (aiortc runs handlers
inline on the event loop); :meth:`ChannelSource.receive` checks each frame against
the caps (§1.2) and the answer grammar (:class:`WorkerStream`, §3.3) and formats
it with the same :class:`ChunkFormatter` the router's HTTP API uses, so a direct
stream's chunks look exactly like a proxied one's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

from aiortc import RTCDataChannel, RTCPeerConnection

from meshcore_sdk.openai_format import ChunkFormatter, ResponseMeta
from meshcore_sdk.openai_tools import FunctionSpec
from meshcore_sdk.protocol import (
    AcceptedFrame,
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    FrameLimits,
    TokenFrame,
    WorkerStream,
    decode_frame,
    encode_frame,
    error_from_code,
)
from meshcore_sdk.protocol.errors import ConnectionLost, MeshError, MeshTimeout, StreamClosed

__all__ = ["ChannelSource"]

_CLOSED: Final = object()


class ChannelSource:
    """The chunks of one direct request.

    Args:
        pc: the peer connection; closed with the source.
        channel: its data channel (pre-negotiated, id 0).
        kind: ``chat`` or ``text`` chunks.
        model: the model name the client asked for, until the worker names it.
        include_usage: whether a usage chunk ends the stream.
        read_timeout_s: the longest wait for one frame (``None``: for ever).
        limits: caps on each frame.
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        channel: RTCDataChannel,
        *,
        kind: Literal["chat", "text"],
        model: str,
        include_usage: bool,
        read_timeout_s: float | None,
        limits: FrameLimits,
        tools: tuple[FunctionSpec, ...] = (),
    ) -> None:
        self.pc = pc
        self._tools = tools
        self.channel = channel
        self._kind: Literal["chat", "text"] = kind
        self._model = model
        self._include_usage = include_usage
        self._read_timeout_s = read_timeout_s
        self._limits = limits
        self._queue: asyncio.Queue[str | bytes | object] = asyncio.Queue()
        self._pending: list[dict[str, Any]] = []
        self._formatter: ChunkFormatter | None = None
        self._stream: WorkerStream | None = None
        self._closed = False
        self.request_id: str | None = None
        self.worker_id: str | None = None
        self.done: DoneFrame | None = None
        channel.on("message", self._queue.put_nowait)
        channel.on("close", lambda: self._queue.put_nowait(_CLOSED))

    def start(self, *, request_id: str, worker_id: str) -> None:
        """Begin reading the answer to ``request_id`` from ``worker_id`` (once signaling is done)."""
        self.request_id = request_id
        self.worker_id = worker_id
        self._stream = WorkerStream(request_id)

    async def receive(self) -> Mapping[str, Any] | None:
        """The next chunk, or ``None`` after the last one.

        Raises:
            MeshError: the worker reported an error, broke the protocol, went silent or away.
        """
        while not self._pending:
            if self.done is not None or self._closed:
                if self.done is None:
                    raise StreamClosed("the stream is closed", request_id=self.request_id)
                return None
            try:
                self._pending = self._handle(await self._next_frame())
            except BaseException:
                await self.aclose()
                raise
        return self._pending.pop(0)

    async def aclose(self) -> None:
        """Cancel the request if it is still running, and close the connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.done is None and self.request_id is not None and self.channel.readyState == "open":
            self.channel.send(encode_frame(CancelFrame(request_id=self.request_id)))
        await self.pc.close()

    async def _next_frame(self) -> str | bytes:
        try:
            async with asyncio.timeout(self._read_timeout_s):
                item = await self._queue.get()
        except TimeoutError as exc:
            raise MeshTimeout(
                f"no frame from worker {self.worker_id} in {self._read_timeout_s} s",
                request_id=self.request_id,
                worker_id=self.worker_id,
            ) from exc
        if item is _CLOSED or not isinstance(item, str | bytes):
            raise ConnectionLost(
                f"the data channel to worker {self.worker_id} closed mid-stream",
                request_id=self.request_id,
                worker_id=self.worker_id,
            )
        return item

    def _handle(self, data: str | bytes) -> list[dict[str, Any]]:
        assert self._stream is not None, "start() comes before receive()"
        frame = decode_frame(data, self._limits, tolerant=True)
        self._stream.receive(frame)
        match frame:
            case AcceptedFrame():
                self._model = frame.model
                self._formatter_of()
                return []
            case TokenFrame():
                return self._formatter_of().feed(frame)
            case DoneFrame():
                self.done = frame
                return self._formatter_of().done(frame)
            case ErrorFrame():
                raise self._error_of(frame)
            case _:
                return []

    @property
    def meta(self) -> ResponseMeta | None:
        """What every chunk of the answer repeats, once the worker's first frame is in."""
        return None if self._formatter is None else self._formatter.meta

    def _formatter_of(self) -> ChunkFormatter:
        if self._formatter is None:
            assert self.request_id is not None and self.worker_id is not None
            meta = ResponseMeta(
                kind=self._kind,
                completion_id=("chatcmpl-" if self._kind == "chat" else "cmpl-") + self.request_id,
                created=int(time.time()),
                model=self._model,
                request_id=self.request_id,
                worker_id=self.worker_id,
                include_usage=self._include_usage,
                tools=self._tools,
            )
            self._formatter = ChunkFormatter(meta)
        return self._formatter

    def _error_of(self, frame: ErrorFrame) -> MeshError:
        return error_from_code(
            frame.code,
            frame.message,
            request_id=self.request_id,
            worker_id=self.worker_id,
            retry_after_s=frame.retry_after_s,
            retryable=frame.retryable,
        )
