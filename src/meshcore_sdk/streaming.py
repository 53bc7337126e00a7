"""Streams of chunks: :class:`AsyncStream`, read with ``async for``.

A stream pulls one chunk per ``__anext__`` from its :class:`ChunkSource` (no
background task, so nothing is left running when a reader stops early), parses
it into the chunk model, and notes what happened in ``stream.events``
(:mod:`meshcore_sdk.events`).  It is an async context manager that closes the
connection; it also closes itself at the end of the stream and on any error.
The sync :class:`meshcore_sdk.Stream` pulls from one of these through its
client's portal.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import pydantic

from meshcore_sdk._base import ChunkSource
from meshcore_sdk.events import (
    EventLog,
    FirstToken,
    StreamEvent,
    StreamFailed,
    StreamFinished,
    WorkerAssigned,
)
from meshcore_sdk.protocol.errors import MeshError, RemoteProtocolError, StreamClosed
from meshcore_sdk.types import CompletionUsage, MeshcoreMeta

__all__ = ["AsyncStream", "ChunkProgress", "StreamChunk", "events_html"]


class StreamChunk(Protocol):
    """What a stream needs of a chunk model."""

    @property
    def text(self) -> str: ...

    @property
    def finish_reason(self) -> str | None: ...

    @property
    def meshcore(self) -> MeshcoreMeta: ...

    @property
    def usage(self) -> CompletionUsage | None: ...


ChunkT = TypeVar("ChunkT", bound=StreamChunk)


@dataclass(slots=True)
class ChunkProgress:
    """What a stream has seen so far; :meth:`observe` turns each chunk into events.

    This is pure: the time comes in as ``at_s``.
    """

    worker_id: str | None = None
    chunks: int = 0
    first_token_seen: bool = False
    finish_reason: str | None = None
    usage: CompletionUsage | None = None
    parts: list[str] = field(default_factory=list)

    def observe(self, chunk: StreamChunk, at_s: float) -> list[StreamEvent]:
        """Take in one chunk; return the events it causes."""
        self.chunks += 1
        self.parts.append(chunk.text)
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.usage = chunk.usage or self.usage
        meta = chunk.meshcore
        events: list[StreamEvent] = []
        if meta.worker_id is not None and meta.worker_id != self.worker_id:
            events.append(WorkerAssigned(at_s=at_s, worker_id=meta.worker_id, previous_worker_id=self.worker_id))
            self.worker_id = meta.worker_id
        if not self.first_token_seen and (meta.seq is not None or chunk.text):
            self.first_token_seen = True
            events.append(FirstToken(at_s=at_s, worker_id=meta.worker_id, seq=meta.seq))
        return events


class AsyncStream(Generic[ChunkT]):
    """The chunks of one streamed completion, in order.

    Use it as ``async with`` (or call :meth:`aclose`) so the connection is
    released even when the loop stops early::

        async with await client.chat.completions.create(..., stream=True) as stream:
            async for chunk in stream:
                print(chunk.choices[0].delta.content or "", end="")
        print(stream.events)

    Attributes:
        events: what happened, with times (:mod:`meshcore_sdk.events`).
        request_id: the router's id for the request.
    """

    def __init__(
        self,
        source: ChunkSource,
        *,
        parse: Callable[[Mapping[str, Any]], ChunkT],
        log: EventLog,
        request_id: str | None = None,
    ) -> None:
        self._source = source
        self._parse = parse
        self._log = log
        self._progress = ChunkProgress()
        self._ended = False
        self._closed_early = False
        self.request_id = request_id

    @property
    def events(self) -> list[StreamEvent]:
        """What happened so far, in order, each with ``at_s`` since the request was sent."""
        return self._log.events

    @property
    def worker_id(self) -> str | None:
        """The worker that produced the latest token."""
        return self._progress.worker_id

    @property
    def finish_reason(self) -> str | None:
        """Why generation stopped, once the stream has said so."""
        return self._progress.finish_reason

    @property
    def usage(self) -> CompletionUsage | None:
        """Token counts, once a chunk carried them (``stream_options={"include_usage": True}``)."""
        return self._progress.usage

    def __aiter__(self) -> AsyncStream[ChunkT]:
        return self

    async def __anext__(self) -> ChunkT:
        chunk = await self._next_or_none()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def text(self) -> str:
        """Read the stream to its end and return all its text, including what was already read."""
        while await self._next_or_none() is not None:
            pass
        return "".join(self._progress.parts)

    async def aclose(self) -> None:
        """Stop reading and release the connection; safe to call more than once."""
        if not self._ended:
            self._ended = self._closed_early = True
            await self._source.aclose()

    async def __aenter__(self) -> AsyncStream[ChunkT]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._ended else "open"
        return f"<AsyncStream {state} request_id={self.request_id!r} chunks={self._progress.chunks}>"

    def _repr_html_(self) -> str:
        """The text read so far, how the stream ended and its timed events, for notebooks."""
        progress = self._progress
        facts = [
            ("state", "ended" if self._ended else "open"),
            ("finish", progress.finish_reason),
            ("worker", progress.worker_id),
            ("request", self.request_id),
        ]
        if progress.usage is not None:
            facts.append(("tokens", f"{progress.usage.prompt_tokens} in, {progress.usage.completion_tokens} out"))
        caption = " · ".join(f"{name}: {html.escape(str(value))}" for name, value in facts if value)
        text = html.escape("".join(progress.parts))
        table = events_html(self.events)
        return f'<div><pre style="white-space: pre-wrap">{text}</pre><small>{caption}</small>{table}</div>'

    async def _next_or_none(self) -> ChunkT | None:
        """The next chunk, or ``None`` once the stream has ended."""
        if self._closed_early:
            raise StreamClosed("the stream was closed before its end", request_id=self.request_id)
        if self._ended:
            return None
        try:
            payload = await self._source.receive()
            chunk = None if payload is None else self._parse_chunk(payload)
        except MeshError as error:
            await self._fail(error)
            raise
        except BaseException:  # cancelled mid-read: the source closed itself, later reads must not look like an end
            self._ended = self._closed_early = True
            raise
        if chunk is None:
            self._finish()
        else:
            for event in self._progress.observe(chunk, self._log.elapsed_s()):
                self._log.record(event)
        return chunk

    def _parse_chunk(self, payload: Mapping[str, Any]) -> ChunkT:
        try:
            return self._parse(payload)
        except pydantic.ValidationError as exc:
            message = f"the router sent a malformed chunk: {exc.errors(include_url=False)[0]['msg']}"
            raise RemoteProtocolError(message, request_id=self.request_id) from exc

    def _finish(self) -> None:
        self._ended = True
        at_s = self._log.elapsed_s()
        self._log.record(StreamFinished(at_s=at_s, finish_reason=self.finish_reason, chunks=self._progress.chunks))

    async def _fail(self, error: MeshError) -> None:
        self._ended = True
        self._log.record(StreamFailed(at_s=self._log.elapsed_s(), code=error.code.value, message=error.message))
        await self._source.aclose()


def events_html(events: list[StreamEvent]) -> str:
    """A table of timed events, one row each: time, kind, and the event's own fields."""
    rows = []
    for event in events:
        details = ", ".join(
            f"{item.name}={getattr(event, item.name)!r}" for item in fields(event) if item.name not in ("at_s", "kind")
        )
        cells = (f"{event.at_s * 1000:.1f} ms", event.kind, details)
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    return f"<table><tr><th>at</th><th>event</th><th>details</th></tr>{''.join(rows)}</table>"
