"""Errors through both twins: HTTP error bodies, mid-stream error events, broken connections, retries."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from meshcore_sdk import (
    AuthenticationError,
    BadRequest,
    ConnectError,
    ConnectionLost,
    ContextLengthExceeded,
    MeshError,
    MeshTimeout,
    ModelNotFound,
    NoCapacity,
    RequestRetried,
    ResponseStarted,
    StreamClosed,
    StreamFailed,
    WorkerError,
    WorkerLost,
)

from .canned import (
    MODEL,
    REQUEST_ID,
    ScriptedRouter,
    broken_stream,
    chat_chunks,
    chat_completion,
    error_event,
    error_response,
    event_stream,
    json_response,
    sse_response,
    sse_text,
)
from .conftest import Twin

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error_response(400, "invalid_request"), BadRequest),
        (error_response(400, "context_length_exceeded"), ContextLengthExceeded),
        (error_response(404, "model_not_found"), ModelNotFound),
        (error_response(401, "invalid_api_key"), AuthenticationError),  # unknown code: the status decides
        (httpx.Response(404, json={"detail": "Not Found"}), ModelNotFound),
        (httpx.Response(418, text="teapot"), MeshError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_refusals_map_to_the_error_tree_and_are_not_retried(
    twin: Twin, reply: httpx.Response, expected: type[MeshError], stream: bool
) -> None:
    """A 4xx answer raises the class its code names, carries the request id, and is not repeated."""
    router = ScriptedRouter([reply])
    client = twin.client(router)

    with pytest.raises(expected) as caught:
        await twin.chat(client, model=MODEL, messages=MESSAGES, stream=stream)

    assert len(router.requests) == 1
    assert twin.fake_time.sleeps == []
    if "x-request-id" in reply.headers:
        assert caught.value.request_id == REQUEST_ID
        assert str(caught.value).startswith("it failed")


async def test_no_capacity_is_retried_after_the_servers_delay_then_succeeds(twin: Twin) -> None:
    """503 no_capacity with Retry-After is retried after exactly that wait; the stream then runs."""
    busy = error_response(503, "no_capacity", "no worker is ready", {"retry-after": "2"})
    router = ScriptedRouter([busy, sse_response(chat_chunks(["ok"]))])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    chunks, error = await twin.drain(stream)

    assert error is None and len(chunks) == 2
    assert twin.fake_time.sleeps == [2.0]
    retried = stream.events[0]
    assert isinstance(retried, RequestRetried)
    assert (retried.attempt, retried.delay_s, retried.reason) == (1, 2.0, "no_capacity")
    started = stream.events[1]
    assert isinstance(started, ResponseStarted) and started.attempts == 2


async def test_no_capacity_exhausts_the_retries(twin: Twin) -> None:
    """After max_retries, the last error is raised with the server's retry_after_s."""
    router = ScriptedRouter([error_response(503, "no_capacity", "busy", {"retry-after-ms": "250"})])
    client = twin.client(router, max_retries=2)

    with pytest.raises(NoCapacity) as caught:
        await twin.chat(client, model=MODEL, messages=MESSAGES)

    assert len(router.requests) == 3
    assert twin.fake_time.sleeps == [0.25, 0.25]
    assert caught.value.retry_after_s == 0.25
    assert caught.value.request_id == REQUEST_ID


async def test_a_retry_after_beyond_the_cap_is_raised_at_once(twin: Twin) -> None:
    """A server asking for an hour's wait is not waited for: the caller gets retry_after_s."""
    router = ScriptedRouter([error_response(503, "no_capacity", "busy", {"retry-after": "3600"})])
    client = twin.client(router)

    with pytest.raises(NoCapacity) as caught:
        await twin.chat(client, model=MODEL, messages=MESSAGES)

    assert len(router.requests) == 1 and caught.value.retry_after_s == 3600.0


async def test_x_should_retry_false_wins_over_the_status(twin: Twin) -> None:
    """A 502 marked x-should-retry: false is raised without retrying."""
    router = ScriptedRouter([error_response(502, "worker_lost", "gone", {"x-should-retry": "false"})])
    client = twin.client(router)

    with pytest.raises(WorkerLost):
        await twin.chat(client, model=MODEL, messages=MESSAGES)

    assert len(router.requests) == 1


async def test_error_event_mid_stream_raises_after_the_delivered_chunks(twin: Twin) -> None:
    """A failure after the stream started ends it with the mapped error; nothing is retried."""
    events = [*chat_chunks(["Hel", "lo"])[:2], error_event("worker_lost")]
    router = ScriptedRouter([sse_response(events, done=False), sse_response(chat_chunks(["x"]))])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    chunks, error = await twin.drain(stream)

    assert [chunk.text for chunk in chunks] == ["", "Hel"]
    assert isinstance(error, WorkerLost) and error.request_id == REQUEST_ID
    assert str(error) == "the worker went away"
    assert len(router.requests) == 1
    failed = stream.events[-1]
    assert isinstance(failed, StreamFailed) and failed.code == "worker_lost"


async def test_error_event_with_unknown_code_is_a_worker_error(twin: Twin) -> None:
    """An error event whose code this client does not know still raises inside the tree."""
    router = ScriptedRouter([sse_response([error_event("brand_new_code")], done=False)])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    _, error = await twin.drain(stream)

    assert type(error) is WorkerError


async def test_connection_refused_is_a_connect_error_after_retries(twin: Twin) -> None:
    """Nothing listening: ConnectError (chained to httpx's), after the backoff retries."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kind = type(twin.client(ScriptedRouter([json_response({})])))
    client = kind(router_url=f"http://127.0.0.1:{port}", runtime=twin.fake_time.runtime(), max_retries=2)
    twin._clients.append(client)

    with pytest.raises(ConnectError) as caught:
        await twin.chat(client, model=MODEL, messages=MESSAGES)

    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(twin.fake_time.sleeps) == 2
    assert all(0 <= delay <= cap for delay, cap in zip(twin.fake_time.sleeps, [0.5, 1.0], strict=True))


@pytest.mark.parametrize("failure", [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow")])
async def test_timeouts_are_mesh_timeouts_and_retried(twin: Twin, failure: httpx.TimeoutException) -> None:
    """httpx timeouts become MeshTimeout (also a TimeoutError), retried before anything was delivered."""
    router = ScriptedRouter([failure, json_response(chat_completion("late"))])
    client = twin.client(router, max_retries=1)
    completion = await twin.chat(client, model=MODEL, messages=MESSAGES)
    assert completion.text == "late" and len(router.requests) == 2

    router.replies[:] = [failure]
    with pytest.raises(MeshTimeout) as caught:
        await twin.chat(client, model=MODEL, messages=MESSAGES)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.__cause__ is failure


@pytest.mark.parametrize(
    ("failure", "expected"),
    [(httpx.ReadTimeout("stalled"), MeshTimeout), (httpx.RemoteProtocolError("peer closed"), ConnectionLost)],
)
async def test_a_stream_that_breaks_after_delivering_is_not_retried(
    twin: Twin, failure: Exception, expected: type[MeshError]
) -> None:
    """A read timeout or a dropped connection mid-stream is raised to the reader, once."""
    first = sse_text(chat_chunks(["a"])[:2], done=False)
    router = ScriptedRouter([broken_stream(first, failure)])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    chunks, error = await twin.drain(stream)

    assert len(chunks) == 2 and isinstance(error, expected)
    assert error.__cause__ is failure
    assert len(router.requests) == 1


async def test_a_stream_cut_off_before_done_is_connection_lost(twin: Twin) -> None:
    """A body that ends without [DONE] or an error event was truncated."""
    router = ScriptedRouter([sse_response(chat_chunks(["a"]), done=False)])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    chunks, error = await twin.drain(stream)

    assert len(chunks) == 2 and isinstance(error, ConnectionLost)


async def test_reading_a_closed_stream_raises_stream_closed(twin: Twin) -> None:
    """After close(), a read is a StreamClosed error; closing again is harmless."""
    router = ScriptedRouter([sse_response(chat_chunks(["a", "b"]))])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    if twin.sync:
        stream.close()
        stream.close()
        with pytest.raises(StreamClosed):
            next(stream)
    else:
        await stream.aclose()
        await stream.aclose()
        with pytest.raises(StreamClosed):
            await anext(stream)


def _bad_replies() -> list[object]:
    deep = "[" * 40 + "]" * 40
    return [
        httpx.ConnectTimeout("t"),
        httpx.ReadError("r"),
        httpx.WriteError("w"),
        httpx.RemoteProtocolError("p"),
        httpx.LocalProtocolError("l"),
        httpx.ProxyError("x"),
        httpx.UnsupportedProtocol("u"),
        httpx.Response(200, text="not json", headers={"content-type": "application/json"}),
        httpx.Response(200, json={"choices": "many"}),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, text="plain", headers={"content-type": "text/plain"}),
        event_stream("data: {not json}\n\n"),
        event_stream(f"data: {deep}\n\n"),
        event_stream('data: {"choices": 5}\n\n'),
        event_stream('data: {"error": "flat string"}\n\n'),
        event_stream("data: [1]\n\n"),
        httpx.Response(500, content=b"\xff\xfe"),
        httpx.Response(200, content=b"\xff\xfe", headers={"content-type": "text/event-stream"}),
    ]


@pytest.mark.parametrize("reply", _bad_replies(), ids=lambda reply: type(reply).__name__)
@pytest.mark.parametrize("stream", [False, True])
async def test_no_foreign_exception_leaks(twin: Twin, reply: object, stream: bool) -> None:
    """Whatever the transport raises or the router sends, callers only ever see a MeshError."""
    router = ScriptedRouter([reply])  # type: ignore[list-item]
    client = twin.client(router, max_retries=1)

    try:
        result = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=stream)
        if stream:
            _, error = await twin.drain(result)
            assert error is not None
    except MeshError:
        pass


async def test_a_whole_answer_whose_body_breaks_is_retried(twin: Twin) -> None:
    """Nothing of a non-streamed answer reached the caller, so a body cut off mid-read is repeated."""

    async def cut_off() -> AsyncIterator[bytes]:
        yield b'{"choices": ['
        raise httpx.ReadError("reset")

    router = ScriptedRouter(
        [
            httpx.Response(200, content=cut_off(), headers={"content-type": "application/json"}),
            json_response(chat_completion("again")),
        ]
    )
    client = twin.client(router)

    completion = await twin.chat(client, model=MODEL, messages=MESSAGES)

    assert completion.text == "again" and len(router.requests) == 2
