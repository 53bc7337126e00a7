"""Chat and text completions through both twins, against canned router answers (protocol.md §6)."""

from __future__ import annotations

import json

from meshcore_sdk import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    FirstToken,
    ResponseStarted,
    StreamFinished,
    WorkerAssigned,
)

from .canned import (
    MODEL,
    REQUEST_ID,
    WORKER_ID,
    ScriptedRouter,
    chat_chunks,
    chat_completion,
    completion_chunks,
    event_stream,
    json_response,
    model_list,
    sse_response,
    sse_text,
    text_completion,
)
from .conftest import Twin

MESSAGES = [{"role": "user", "content": "Hi"}]


async def test_chat_completion_carries_text_usage_and_meshcore_meta(twin: Twin) -> None:
    """A non-streaming chat answer parses into an OpenAI-shaped completion with its worker."""
    router = ScriptedRouter([json_response(chat_completion("Hello!"))])
    client = twin.client(router)

    completion = await twin.chat(client, model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)

    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "Hello!"
    assert completion.text == "Hello!"
    assert completion.usage is not None and completion.usage.total_tokens == 10
    assert (completion.meshcore.request_id, completion.meshcore.worker_id) == (REQUEST_ID, WORKER_ID)
    assert completion.system_fingerprint is None  # type: ignore[attr-defined]  # unknown fields are kept
    assert "Hello!" in completion._repr_html_()


async def test_chat_request_sends_only_given_options_and_extra_body(twin: Twin) -> None:
    """Options left at None are not sent; extra_body is merged last; the key goes as a bearer token."""
    router = ScriptedRouter([json_response(chat_completion())])
    client = twin.client(router, api_key="sk-test")

    await twin.chat(
        client, model=MODEL, messages=MESSAGES, max_completion_tokens=5, stop=("\n",), top_k=40, extra_body={"x": 1}
    )

    request = router.requests[0]
    assert request.url == "http://router.test:8080/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert json.loads(request.content) == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": False,
        "max_completion_tokens": 5,
        "stop": ["\n"],
        "top_k": 40,
        "x": 1,
    }


async def test_chat_stream_yields_chunks_with_meta_and_records_events(twin: Twin) -> None:
    """A streamed chat delivers each token's chunk with its seq and worker, and times the first token."""
    router = ScriptedRouter([sse_response(chat_chunks(["Hel", "lo", "!"]))])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    chunks, error = await twin.drain(stream)

    assert error is None
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "Hello!"
    assert [chunk.meshcore.seq for chunk in chunks] == [None, 0, 1, 2]
    assert {chunk.meshcore.worker_id for chunk in chunks} == {WORKER_ID}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert json.loads(router.requests[0].content)["stream"] is True
    assert router.requests[0].headers["accept"] == "text/event-stream"
    assert [type(event) for event in stream.events] == [ResponseStarted, WorkerAssigned, FirstToken, StreamFinished]
    assert [event.kind for event in stream.events] == ["response_started", "worker_assigned", "first_token", "finished"]
    first_token = stream.events[2]
    assert isinstance(first_token, FirstToken) and (first_token.worker_id, first_token.seq) == (WORKER_ID, 0)
    assert (stream.request_id, stream.worker_id, stream.finish_reason) == (REQUEST_ID, WORKER_ID, "stop")


async def test_include_usage_adds_a_last_chunk_without_choices(twin: Twin) -> None:
    """With include_usage, every chunk has usage null and one more chunk carries the counts."""
    router = ScriptedRouter([sse_response(chat_chunks(["a", "b"], include_usage=True))])
    client = twin.client(router)

    stream = await twin.chat(
        client, model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks, _ = await twin.drain(stream)

    assert json.loads(router.requests[0].content)["stream_options"] == {"include_usage": True}
    assert [chunk.usage for chunk in chunks[:-1]] == [None, None, None]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert stream.usage == chunks[-1].usage


async def test_stream_text_collects_all_text_including_what_was_read(twin: Twin) -> None:
    """text() drains the rest of the stream and returns the whole answer."""
    router = ScriptedRouter([sse_response(chat_chunks(["one", " two", " three"]))])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    if twin.sync:
        next(stream), next(stream)
        text = stream.text()
    else:
        await anext(stream), await anext(stream)
        text = await stream.text()

    assert text == "one two three"


async def test_worker_change_mid_stream_is_an_event(twin: Twin) -> None:
    """When the router fails over, chunks name a new worker and the stream notes the change."""
    first, second = chat_chunks(["a"]), chat_chunks(["b"], worker_id="node-b")
    second[1]["meshcore"]["seq"] = 1
    router = ScriptedRouter([sse_response([*first[:2], second[1]])])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    await twin.drain(stream)

    changes = [event for event in stream.events if isinstance(event, WorkerAssigned)]
    assert [(event.previous_worker_id, event.worker_id) for event in changes] == [
        (None, WORKER_ID),
        (WORKER_ID, "node-b"),
    ]


async def test_keepalive_comments_and_empty_events_are_skipped(twin: Twin) -> None:
    """Comments and data-less events (pings) do not become chunks."""
    chunks = chat_chunks(["x"])
    router = ScriptedRouter([event_stream(": ping\n\nevent: ping\n\n" + sse_text(chunks))])
    client = twin.client(router)

    stream = await twin.chat(client, model=MODEL, messages=MESSAGES, stream=True)
    received, error = await twin.drain(stream)

    assert error is None and len(received) == len(chunks)


async def test_text_completion_whole_and_streamed(twin: Twin) -> None:
    """completions.create sends the raw prompt and parses both answer shapes."""
    router = ScriptedRouter([json_response(text_completion(" world"))])
    client = twin.client(router)
    completion = await twin.complete(client, model=MODEL, prompt="Hello", max_tokens=1)
    assert isinstance(completion, Completion) and completion.text == " world"
    assert completion.meshcore.worker_id == WORKER_ID
    assert router.requests[0].url.path == "/v1/completions"
    assert json.loads(router.requests[0].content)["prompt"] == "Hello"

    router.replies[:] = [sse_response(completion_chunks([" a", " b"]))]
    stream = await twin.complete(client, model=MODEL, prompt="Hello", stream=True)
    chunks, error = await twin.drain(stream)
    assert error is None and all(isinstance(chunk, CompletionChunk) for chunk in chunks)
    assert [chunk.choices[0].text for chunk in chunks] == [" a", " b"]
    assert [chunk.meshcore.seq for chunk in chunks] == [0, 1]
    assert stream.finish_reason == "length"


async def test_models_list_and_retrieve(twin: Twin) -> None:
    """models.list returns an iterable list with Meshcore's per-model facts; retrieve names one model."""
    router = ScriptedRouter([json_response(model_list())])
    client = twin.client(router)

    models = await twin.call(client.models.list)
    assert [model.id for model in models] == [MODEL]
    assert models.data[0].meshcore is not None and models.data[0].meshcore.ready_nodes == 2
    assert MODEL in models._repr_html_()
    assert router.requests[0].method == "GET" and router.requests[0].url.path == "/v1/models"

    router.replies[:] = [json_response(model_list()["data"][0])]
    model = await twin.call(client.models.retrieve, model="sha256:" + "ab" * 32)
    assert model.id == MODEL
    assert router.requests[1].url.path == "/v1/models/sha256:" + "ab" * 32


async def test_per_call_timeout_overrides_the_clients(twin: Twin) -> None:
    """timeout= on a call sets httpx's connect/read/write/pool timeouts for that request only."""
    router = ScriptedRouter([json_response(chat_completion())])
    client = twin.client(router, timeout=30.0)

    await twin.chat(client, model=MODEL, messages=MESSAGES)
    await twin.chat(client, model=MODEL, messages=MESSAGES, timeout=2.5)
    await twin.chat(client, model=MODEL, messages=MESSAGES, timeout=None)

    timeouts = [request.extensions["timeout"] for request in router.requests]
    assert [t["read"] for t in timeouts] == [30.0, 2.5, None]
    assert [t["connect"] for t in timeouts] == [30.0, 2.5, None]
