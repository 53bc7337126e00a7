"""Canned router answers, built to ``docs/protocol.md`` §6, and a scripted router for MockTransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

REQUEST_ID = "req-1"
WORKER_ID = "node-a"
MODEL = "gemma-3-270m"

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def meta(seq: int | None, *, worker_id: str = WORKER_ID, token_id: int | None = None) -> dict[str, Any]:
    """The ``meshcore`` object of a chunk."""
    return {
        "request_id": REQUEST_ID,
        "worker_id": worker_id,
        "seq": seq,
        "token_id": token_id if token_id is not None or seq is None else 100 + seq,
        "attempt": 0,
    }


def chat_chunks(
    texts: Sequence[str], *, finish_reason: str = "stop", include_usage: bool = False, worker_id: str = WORKER_ID
) -> list[dict[str, Any]]:
    """The chunks of a streamed chat completion: a role chunk, one chunk per token, then usage if asked."""
    usage_field: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None, seq: int | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **usage_field,
            "meshcore": meta(seq, worker_id=worker_id),
        }

    chunks = [chunk({"role": "assistant", "content": ""}, None, None)]
    for seq, text in enumerate(texts):
        last = seq == len(texts) - 1
        chunks.append(chunk({"content": text}, finish_reason if last else None, seq))
    if include_usage:
        chunks.append(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": MODEL,
                "choices": [],
                "usage": {"prompt_tokens": 7, "completion_tokens": len(texts), "total_tokens": 7 + len(texts)},
                "meshcore": meta(None),
            }
        )
    return chunks


def completion_chunks(texts: Sequence[str], *, finish_reason: str = "length") -> list[dict[str, Any]]:
    """The chunks of a streamed text completion, one per token."""
    return [
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "text": text, "finish_reason": finish_reason if seq == len(texts) - 1 else None}],
            "meshcore": meta(seq),
        }
        for seq, text in enumerate(texts)
    ]


def chat_completion(text: str = "Hello!") -> dict[str, Any]:
    """A non-streaming chat completion."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        "meshcore": {"request_id": REQUEST_ID, "worker_id": WORKER_ID},
        "system_fingerprint": None,
    }


def text_completion(text: str = " world") -> dict[str, Any]:
    """A non-streaming text completion."""
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        "meshcore": {"request_id": REQUEST_ID, "worker_id": WORKER_ID},
    }


def model_list() -> dict[str, Any]:
    """The answer of ``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {
                "id": MODEL,
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": "meshcore",
                "meshcore": {"sha256": "ab" * 32, "nodes": 3, "ready_nodes": 2, "n_ctx": 4096},
            }
        ],
    }


def sse_text(events: Iterable[Mapping[str, Any] | str], *, done: bool = True) -> str:
    """Server-sent events, one ``data:`` line each, then ``[DONE]`` unless told otherwise."""
    lines = [f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n" for event in events]
    return "".join(lines) + ("data: [DONE]\n\n" if done else "")


def sse_response(events: Iterable[Mapping[str, Any] | str], *, done: bool = True) -> httpx.Response:
    """A 200 event-stream response carrying ``events``."""
    return event_stream(sse_text(events, done=done))


def event_stream(text: str) -> httpx.Response:
    """A 200 event-stream response whose body is ``text`` as it stands."""
    headers = {"content-type": "text/event-stream", "x-request-id": REQUEST_ID}
    return httpx.Response(200, text=text, headers=headers)


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """A JSON response with an ``x-request-id``."""
    return httpx.Response(status, json=body, headers={"x-request-id": REQUEST_ID, **(headers or {})})


def error_response(
    status: int, code: str, message: str = "it failed", headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """An OpenAI-shaped error answer."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return json_response(body, status, headers)


def error_event(code: str, message: str = "the worker went away") -> dict[str, Any]:
    """The one event that ends a stream that failed after it started."""
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


def broken_stream(first: str, failure: Exception) -> httpx.Response:
    """A 200 event-stream whose body delivers ``first`` and then raises ``failure``."""

    async def body() -> AsyncIterator[bytes]:
        yield first.encode()
        raise failure

    return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})


@dataclass
class ScriptedRouter:
    """Answers each request with the next scripted reply; keeps every request it saw."""

    replies: list[Reply]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return _fresh(reply)
        return reply(request)

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the requests seen."""
        return [json.loads(request.content) for request in self.requests if request.content]


def _fresh(response: httpx.Response) -> httpx.Response:
    """A copy of a canned response, so one reply may be served more than once."""
    if isinstance(response.stream, httpx.ByteStream):
        return httpx.Response(response.status_code, content=b"".join(response.stream), headers=response.headers)
    return response
