"""The official ``openai`` client against the router, unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from .conftest import RunningRouter, StartNode
from .fake_node import Plan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
]


@pytest.fixture
async def client(mesh: RunningRouter) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{mesh.url}/v1", api_key="sk-unused", max_retries=0) as client:
        yield client


async def test_models_and_a_completion(client: openai.AsyncOpenAI, start_node: StartNode) -> None:
    node = await start_node("node-a")
    assert [model.id async for model in client.models.list()] == ["tiny-model"]
    completion = await client.chat.completions.create(
        model="tiny-model", messages=MESSAGES, max_completion_tokens=2, temperature=0, extra_body={"top_k": 5}
    )
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 2
    assert completion._request_id is not None
    params = node.generated[0].params
    assert (params.max_tokens, params.temperature, params.top_k) == (2, 0, 5)
    assert [m.role for m in node.generated[0].messages or []] == ["system", "user"]


async def test_a_stream_with_usage(client: openai.AsyncOpenAI, start_node: StartNode) -> None:
    await start_node("node-a")
    stream = await client.chat.completions.create(
        model="tiny-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Hello world"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    assert chunks[0].model_extra is not None and chunks[0].model_extra["meshcore"]["worker_id"] == "node-a"


async def test_legacy_completions(client: openai.AsyncOpenAI, start_node: StartNode) -> None:
    await start_node("node-a")
    completion = await client.completions.create(model="tiny-model", prompt="Once", max_tokens=3)
    assert completion.choices[0].text == "Hello world"


async def test_errors_map_to_the_clients_exceptions(client: openai.AsyncOpenAI, start_node: StartNode) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        await client.chat.completions.create(model="nope", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    await start_node("node-a", ready=False)
    with pytest.raises(openai.InternalServerError) as unavailable:
        await client.chat.completions.create(model="tiny-model", messages=MESSAGES)
    assert (unavailable.value.status_code, unavailable.value.code) == (503, "no_capacity")
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="tiny-model", messages=MESSAGES, temperature=7)
    assert bad.value.param == "temperature"


async def test_a_failure_mid_stream_raises_while_iterating(client: openai.AsyncOpenAI, start_node: StartNode) -> None:
    await start_node("node-a", plan=Plan(fault="engine_crashed", fault_at=1))
    stream = await client.chat.completions.create(model="tiny-model", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="engine died"):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["Hel"]
