"""Tool calling: ``tools``/``tool_choice`` become a grammar, the constrained answer becomes ``tool_calls``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from meshcore_sdk.openai_format import ChatCompletionRequest
from meshcore_sdk.openai_tools import (
    MAX_PARALLEL_CALLS,
    FunctionSpec,
    call_id,
    parse_reply,
    parse_tool_call,
    parse_tool_calls,
    tool_schema,
)
from meshcore_sdk.protocol import ResponseFormat

from .conftest import RunningRouter, StartNode
from .fake_node import Plan
from .test_http_api import assert_openai_error, sse_events

WEATHER_PARAMS: dict[str, object] = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER_PARAMS},
}
TIME = {"type": "function", "function": {"name": "get_time"}}
CHAT: dict[str, Any] = {
    "model": "tiny-model",
    "messages": [{"role": "user", "content": "Weather in Paris?"}],
    "tools": [WEATHER, TIME],
}
WEATHER_TOOL: openai.types.chat.ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER_PARAMS},
}
ANSWER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
CALL_PLAN = Plan(tokens=[b'{"name": "get_weather", ', b'"arguments": {"city": ', b'"Paris"}}'])


def frame_of(body: dict[str, Any]) -> Any:
    return ChatCompletionRequest.model_validate(body).to_frame("r")


def one_tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": parameters}}


# --- pure: request to frame ---------------------------------------------------------------


@pytest.mark.parametrize("choice", [None, "auto", "required"])
def test_every_tool_is_an_alternative_of_the_schema(choice: str | None) -> None:
    frame = frame_of(CHAT | {"tool_choice": choice})
    schema = frame.params.response_format.json_schema
    alternatives = schema["anyOf"]
    if choice != "required":  # auto (the default with tools): a reply in text is the last alternative
        reply = alternatives.pop()
        assert reply["properties"] == {"content": {"type": "string"}} and reply["required"] == ["content"]
    assert [a["properties"]["name"] for a in alternatives] == [{"const": "get_weather"}, {"const": "get_time"}]
    assert alternatives[0]["properties"]["arguments"] == WEATHER_PARAMS
    assert alternatives[1]["properties"]["arguments"] == {"type": "object", "properties": {}}
    assert all(a["required"] == ["name", "arguments"] and a["additionalProperties"] is False for a in alternatives)


def test_a_named_tool_is_the_only_one_allowed() -> None:
    frame = frame_of(CHAT | {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    schema = frame.params.response_format.json_schema
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == WEATHER_PARAMS


def test_tool_choice_none_is_free_text() -> None:
    frame = frame_of(CHAT | {"tool_choice": "none"})
    assert frame.params.response_format is None
    assert [m.role for m in frame.messages] == ["user"]


def test_instructions_go_first_in_the_system_message() -> None:
    messages = [{"role": "developer", "content": "Be brief."}, *CHAT["messages"]]
    frame = frame_of(CHAT | {"messages": messages})
    system, user = frame.messages
    assert system.role == "system" and system.content.endswith("\n\nBe brief.")
    assert (
        "get_weather: Weather now" in system.content
        and json.dumps(WEATHER_PARAMS, separators=(",", ":")) in system.content
    )
    assert "get_time: (no description)" in system.content
    assert user.content == "Weather in Paris?"


def test_tool_history_is_rendered_as_text() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "name": "get_time", "content": "noon"},
    ]
    frame = frame_of({"model": "m", "messages": messages})
    assert [(m.role, m.content) for m in frame.messages] == [
        ("user", "Weather in Paris and Rome?"),
        ("assistant", '{"name": "get_weather", "arguments": {"city": "Paris"}}'),
        ("user", "Result of get_weather: sunny\nResult of get_time: noon"),
    ]


def test_tool_call_content_parts_repeating_the_calls_are_dropped() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    part = {"type": "tool_call", "id": "c", "name": "get_time", "args": {}}
    message = {"role": "assistant", "content": [part], "tool_calls": [call]}
    frame = frame_of({"model": "m", "messages": [{"role": "user", "content": "Time?"}, message]})
    assert frame.messages[1].content == '{"name": "get_time", "arguments": {}}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ANSWER, ("get_weather", '{"city": "Paris"}')),
        ('{"name": "get_time", "arguments": {}}', ("get_time", "{}")),
        ('{"name": "get_weather", "arguments": {"ci', None),  # cut off
        ('{"name": "other", "arguments": {}}', None),
        ("[1]", None),
    ],
)
def test_parse_tool_call(text: str, expected: tuple[str, str] | None) -> None:
    functions = [FunctionSpec(name="get_weather"), FunctionSpec(name="get_time")]
    call = parse_tool_call(text, functions)
    assert (None if call is None else (call.name, call.arguments)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"content": "It is sunny."}', "It is sunny."),
        ('{"content": "a", "extra": 1}', '{"content": "a", "extra": 1}'),
        ('{"content": 3}', '{"content": 3}'),
        ('{"content": "cut', '{"content": "cut'),
        ("plain", "plain"),
    ],
)
def test_a_reply_in_text_is_the_content_of_its_object(text: str, expected: str) -> None:
    assert parse_reply(text) == expected


def test_the_instructions_offer_a_reply_in_text_only_with_auto() -> None:
    auto = frame_of(CHAT).messages[0].content
    required = frame_of(CHAT | {"tool_choice": "required"}).messages[0].content
    assert '{"content": <your answer>}' in auto and "content" not in required


def test_parallel_tool_calls_ask_for_an_array_of_calls() -> None:
    schema = frame_of(CHAT | {"tool_choice": "required", "parallel_tool_calls": True}).params.response_format
    assert schema is not None and schema.json_schema is not None
    array = schema.json_schema
    assert (array["type"], array["minItems"], array["maxItems"]) == ("array", 1, MAX_PARALLEL_CALLS)
    assert [a["properties"]["name"] for a in array["items"]["anyOf"]] == [
        {"const": "get_weather"},
        {"const": "get_time"},
    ]
    auto = frame_of(CHAT | {"parallel_tool_calls": True}).params.response_format
    assert auto is not None and auto.json_schema is not None
    assert [a["type"] for a in auto.json_schema["anyOf"]] == ["array", "object"]  # calls, or a reply in text
    assert (
        frame_of(CHAT | {"parallel_tool_calls": False}).params.response_format == frame_of(CHAT).params.response_format
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ANSWER, ["get_weather"]),
        (f'[{ANSWER}, {{"name": "get_time", "arguments": {{}}}}]', ["get_weather", "get_time"]),
        (f'[{ANSWER}, {{"name": "other", "arguments": {{}}}}]', None),  # one bad call spoils the answer
        ("[]", None),
        (f"[{ANSWER}", None),  # cut off
    ],
)
def test_parse_tool_calls(text: str, expected: list[str] | None) -> None:
    calls = parse_tool_calls(text, [FunctionSpec(name="get_weather"), FunctionSpec(name="get_time")])
    assert (None if calls is None else [call.name for call in calls]) == expected


def test_call_ids_are_derived_from_the_request() -> None:
    assert call_id("r") == call_id("r") != call_id("s")
    assert call_id("r").startswith("call_") and len(call_id("r")) == 29


def test_the_schema_is_a_valid_response_format() -> None:
    schema = tool_schema([FunctionSpec(name="f", parameters={"type": "object"})])
    assert ResponseFormat(type="json_schema", json_schema=schema).json_schema == one_tool("f", {"type": "object"}) | {
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


# --- over HTTP ------------------------------------------------------------------------------


async def test_the_node_gets_the_schema_and_the_answer_is_a_tool_call(
    http: httpx.AsyncClient, start_node: StartNode
) -> None:
    node = await start_node("node-a", plan=CALL_PLAN)
    response = await http.post("/v1/chat/completions", json=CHAT | {"tool_choice": "required"})
    assert response.status_code == 200, response.text
    generate = node.generated[0]
    assert generate.params.response_format is not None and generate.params.response_format.type == "json_schema"
    assert generate.messages is not None and generate.messages[0].role == "system"
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id(response.headers["x-request-id"]),
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }


async def test_a_streamed_tool_call_comes_as_openai_deltas(http: httpx.AsyncClient, start_node: StartNode) -> None:
    await start_node("node-a", plan=CALL_PLAN)
    body = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    *chunks, usage, done = sse_events((await http.post("/v1/chat/completions", json=body)).text)
    assert done == "[DONE]" and usage["usage"]["completion_tokens"] == 3
    deltas = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]
    head = deltas[0][0]["tool_calls"][0]
    assert head["id"].startswith("call_") and head["function"] == {"name": "get_weather", "arguments": ""}
    assert deltas[1] == ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]}, None)
    assert deltas[2] == ({}, "tool_calls")
    assert len(deltas) == 3


async def test_a_cut_off_call_is_text_with_finish_length(http: httpx.AsyncClient, start_node: StartNode) -> None:
    await start_node("node-a", plan=CALL_PLAN)
    response = await http.post("/v1/chat/completions", json=CHAT | {"max_tokens": 2})
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"] == {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": '}
    chunks = sse_events((await http.post("/v1/chat/completions", json=CHAT | {"max_tokens": 2, "stream": True})).text)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == ["length"]
    assert chunks[0]["choices"][0]["delta"]["content"] == choice["message"]["content"]


async def test_parallel_calls_come_back_as_several_tool_calls(http: httpx.AsyncClient, start_node: StartNode) -> None:
    plan = Plan(
        tokens=[
            b'[{"name": "get_weather", "arguments": {"city": "Paris"}}, ',
            b'{"name": "get_time", ',
            b'"arguments": {}}]',
        ]
    )
    await start_node("node-a", plan=plan)
    body = CHAT | {"tool_choice": "required", "parallel_tool_calls": True}
    response = await http.post("/v1/chat/completions", json=body)
    calls = response.json()["choices"][0]["message"]["tool_calls"]
    request_id = response.headers["x-request-id"]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [
        (call_id(request_id, 0), "get_weather"),
        (call_id(request_id, 1), "get_time"),
    ]
    chunks = sse_events((await http.post("/v1/chat/completions", json=body | {"stream": True})).text)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert [d["tool_calls"][0]["index"] for d in deltas[:-1]] == [0, 0, 1, 1]
    assert [d["tool_calls"][0]["function"].get("name") for d in deltas[:-1]] == ["get_weather", None, "get_time", None]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_with_auto_the_model_may_answer_in_text(http: httpx.AsyncClient, start_node: StartNode) -> None:
    await start_node("node-a", plan=Plan(tokens=[b'{"content": ', b'"Sunny, ', b'20 C."}']))
    choice = (await http.post("/v1/chat/completions", json=CHAT)).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "Sunny, 20 C."}
    chunks = sse_events((await http.post("/v1/chat/completions", json=CHAT | {"stream": True})).text)
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["Sunny, 20 C."]


async def test_tool_choice_none_answers_in_text(http: httpx.AsyncClient, start_node: StartNode) -> None:
    node = await start_node("node-a")
    response = await http.post("/v1/chat/completions", json=CHAT | {"tool_choice": "none"})
    assert response.json()["choices"][0]["message"]["content"] == "Hello world"
    assert node.generated[0].params.response_format is None


@pytest.mark.parametrize(
    "body",
    [
        CHAT | {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
        CHAT | {"tools": [{"type": "retrieval"}]},
        CHAT | {"tools": [WEATHER, WEATHER]},
        CHAT | {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
        CHAT | {"tools": [], "tool_choice": "required"},
        CHAT | {"response_format": {"type": "json_object"}},
    ],
)
async def test_bad_tools_are_400(http: httpx.AsyncClient, start_node: StartNode, body: dict[str, Any]) -> None:
    await start_node("node-a")
    assert_openai_error(await http.post("/v1/chat/completions", json=body), 400, "invalid_request")


# --- the official client ------------------------------------------------------------------


@pytest.fixture
async def client(mesh: RunningRouter) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{mesh.url}/v1", api_key="sk-unused", max_retries=0) as client:
        yield client


async def test_the_openai_client_reads_tool_calls(client: openai.AsyncOpenAI, start_node: StartNode) -> None:
    await start_node("node-a", plan=CALL_PLAN)
    completion = await client.chat.completions.create(
        model="tiny-model",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and message.content is None
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert isinstance(call, openai.types.chat.ChatCompletionMessageFunctionToolCall)
    function = call.function
    assert (function.name, json.loads(function.arguments)) == ("get_weather", {"city": "Paris"})


async def test_the_openai_client_streams_tool_calls(client: openai.AsyncOpenAI, start_node: StartNode) -> None:
    await start_node("node-a", plan=CALL_PLAN)
    stream = await client.chat.completions.create(
        model="tiny-model",
        messages=[{"role": "user", "content": "Hi"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    calls = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or ()]
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert "".join(call.function.arguments or "" for call in calls if call.function) == '{"city": "Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
