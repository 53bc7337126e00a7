"""Read the router's server-sent events into chunk payloads (``docs/protocol.md`` §6).

A stream is ``data: <chunk>`` events, then ``data: [DONE]``.  A failure after
the stream started is one ``data: {"error": {...}}`` event and the end of the
stream, without ``[DONE]``; it is raised as the error its code names.  A body
that ends with neither was cut off, and raises :class:`ConnectionLost`.  Each
event's data is checked against the protocol's size and depth caps before it is
parsed (§1.2).  Comments and events without data (keep-alive pings) are skipped.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final

import anyio
import httpx
import httpx_sse

from meshcore_sdk.protocol.codec import FrameLimits, json_depth
from meshcore_sdk.protocol.errors import (
    ConnectionLost,
    FrameTooDeep,
    FrameTooLarge,
    MalformedFrame,
    MeshError,
    StreamClosed,
)
from meshcore_sdk.proxy.http_errors import error_from_payload, map_httpx_errors

__all__ = ["DONE", "SseChunkSource", "decode_event_data"]

DONE: Final = "[DONE]"
"""The data of the event that ends a successful stream."""

DEFAULT_LIMITS: Final = FrameLimits()
"""The protocol's caps (``docs/protocol.md`` §1.2), applied to each event's data."""


def decode_event_data(data: str, limits: FrameLimits = DEFAULT_LIMITS) -> Mapping[str, Any]:
    """Check one event's data against ``limits``, then parse it as a JSON object.

    Raises:
        FrameTooLarge: the data is longer than the size cap.
        FrameTooDeep: the data nests deeper than the depth cap.
        MalformedFrame: the data is not a JSON object.
    """
    raw = data.encode("utf-8", "surrogatepass")
    if len(raw) > limits.max_frame_bytes:
        raise FrameTooLarge(f"event of {len(raw)} bytes exceeds the cap of {limits.max_frame_bytes} bytes")
    if json_depth(raw, give_up_above=limits.max_depth) > limits.max_depth:
        raise FrameTooDeep(f"event nests deeper than {limits.max_depth} levels")
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise MalformedFrame(f"event data is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise MalformedFrame(f"event data is a JSON {type(parsed).__name__}, not an object")
    return parsed


class SseChunkSource:
    """The chunks of one streamed response, read event by event.

    Args:
        response: an open streamed response with status 200.
        limits: the caps applied to each event's data.
    """

    def __init__(self, response: httpx.Response, *, limits: FrameLimits = DEFAULT_LIMITS) -> None:
        self._response = response
        self._limits = limits
        self._events: AsyncGenerator[httpx_sse.ServerSentEvent, None] = httpx_sse.EventSource(response).aiter_sse()
        self._closed = False
        self._done = False
        self.request_id: str | None = response.headers.get("x-request-id")

    async def receive(self) -> Mapping[str, Any] | None:
        """The next chunk payload, or ``None`` after ``[DONE]``.

        Raises:
            MeshError: the stream carried an error event, broke, or was malformed;
                the response is closed before the error is raised.
        """
        if self._closed:
            if self._done:
                return None
            raise StreamClosed("the stream is closed", request_id=self.request_id)
        try:
            payload = await self._next_payload()
        except BaseException:
            with anyio.CancelScope(shield=True):  # close even when the read was cancelled
                await self.aclose()
            raise
        if payload is None:
            self._done = True
            await self.aclose()
        return payload

    async def aclose(self) -> None:
        """Close the response; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        # Closing is best effort: the connection may already be broken, and the
        # caller is either done or is about to see the error that broke it.
        with contextlib.suppress(MeshError), map_httpx_errors(request_id=self.request_id):
            try:
                await self._events.aclose()
            finally:
                await self._response.aclose()

    async def _next_payload(self) -> Mapping[str, Any] | None:
        while True:
            with map_httpx_errors(request_id=self.request_id):
                event = await anext(self._events, None)
            if event is None:
                raise ConnectionLost("the stream ended before [DONE]", request_id=self.request_id)
            if event.data.startswith(DONE):
                return None
            if event.data:
                return self._check(decode_event_data(event.data, self._limits))

    def _check(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        if "error" in payload:
            meta = payload.get("meshcore")
            worker_id = meta.get("worker_id") if isinstance(meta, Mapping) else None
            raise error_from_payload(payload, request_id=self.request_id, worker_id=worker_id)
        return payload
