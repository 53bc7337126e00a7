"""What the modes that speak frames (direct, swarm) share: whole completions read off a stream.

A non-streamed ``create()`` in those modes still runs as a stream (the worker only
streams); the chunks are gathered here into the OpenAI completion the caller
expects.  Everything that is not a completion goes to the router's HTTP API.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from meshcore_sdk._base import Transport
from meshcore_sdk.events import EventLog
from meshcore_sdk.openai_format import CHAT_PATH, TEXT_PATH, ResponseMeta, chunk_texts, completion_body
from meshcore_sdk.protocol import DoneFrame

__all__ = ["FramedSource", "request_through_stream"]


class FramedSource(Protocol):
    """A chunk source that also keeps its answer's ``meta`` and final ``done`` frame."""

    @property
    def meta(self) -> ResponseMeta | None: ...

    @property
    def done(self) -> DoneFrame | None: ...

    async def receive(self) -> Mapping[str, Any] | None: ...

    async def aclose(self) -> None: ...


OpenStream = Callable[..., Awaitable[tuple[FramedSource, str | None]]]


async def request_through_stream(
    open_stream: OpenStream,
    router: Transport,
    method: str,
    path: str,
    *,
    body: Mapping[str, Any] | None,
    timeout_s: float | None,
    clock: Callable[[], float],
) -> Any:
    """A whole completion read off a stream from ``open_stream``; anything else from ``router``."""
    if method != "POST" or path not in (CHAT_PATH, TEXT_PATH) or body is None:
        return await router.request(method, path, body=body, timeout_s=timeout_s)
    source, _ = await open_stream(path, body={**body, "stream": True}, timeout_s=timeout_s, log=EventLog(clock))
    texts: list[str] = []
    call: dict[str, str] = {}
    try:
        while (chunk := await source.receive()) is not None:
            texts.extend(chunk_texts(chunk))
            _gather_tool_call(chunk, call)
    finally:
        await source.aclose()
    if source.done is None or source.meta is None:
        raise AssertionError("a stream that ended normally has its done frame and meta")
    if call:  # the stream carried the call as deltas: give completion_body the answer it was parsed from
        texts = [json.dumps({"name": call.get("name", ""), "arguments": json.loads(call.get("arguments") or "{}")})]
    return completion_body(source.meta, "".join(texts), source.done)


def _gather_tool_call(chunk: Mapping[str, Any], call: dict[str, str]) -> None:
    """Add the tool-call name and argument pieces a chunk's delta carries to ``call``."""
    for choice in chunk.get("choices", []):
        delta = choice.get("delta")
        for piece in (delta or {}).get("tool_calls") or []:
            function = piece.get("function") or {}
            if function.get("name"):
                call["name"] = function["name"]
            call["arguments"] = call.get("arguments", "") + (function.get("arguments") or "")
