"""ChatMeshcore without a network: LangChain's standard unit suite, then our own checks through MockTransport."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel

from meshcore_sdk import AsyncClient, Client, ConfigError, Mode
from meshcore_sdk.config import AVAILABLE_MODES
from meshcore_sdk.langchain import ChatMeshcore, tool_choice_param

from .canned import MODEL, ScriptedRouter, chat_chunks, chat_completion, json_response, sse_response

pytestmark = pytest.mark.timeout(60)

ROUTER = "http://router.test:8080"


class TestChatMeshcoreStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatMeshcore]:
        return ChatMeshcore

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": MODEL, "base_url": "http://127.0.0.1:1/v1"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        env = {"MESHCORE_API_KEY": "k", "MESHCORE_ROUTER_URL": "http://router.test:9/v1"}
        return env, {"model": MODEL}, {"api_key": "k", "router_url": "http://router.test:9/v1"}

    @property
    def model_override_value(self) -> str:
        return "sha256:" + "ab" * 32


# --- our own checks -----------------------------------------------------------------------------


class Person(BaseModel):
    """Someone's name and age."""

    name: str
    age: int


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def tool_call_completion() -> dict[str, Any]:
    answer = chat_completion("")
    answer["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
        {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": "{not json"}},
    ]
    answer["choices"][0]["finish_reason"] = "tool_calls"
    return answer


@pytest.fixture
def sync_model() -> Iterator[tuple[ChatMeshcore, ScriptedRouter]]:
    router = ScriptedRouter([json_response(chat_completion("Hello there"))])
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        yield ChatMeshcore(model=MODEL, client=client, max_tokens=8, temperature=0), router


def test_construction_reads_the_environment_and_touches_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCORE_ROUTER_URL", "http://nowhere.invalid:1")
    llm = ChatMeshcore(model=MODEL, mode="swarm")
    assert llm.router_url == "http://nowhere.invalid:1"
    assert llm.mode == "swarm"


@pytest.mark.parametrize("mode", [mode.value for mode in Mode])
def test_the_mode_goes_to_the_sdk_at_call_time(mode: str) -> None:
    llm = ChatMeshcore(model=MODEL, base_url=ROUTER, mode=mode)  # never refused here
    if Mode(mode) not in AVAILABLE_MODES:
        with pytest.raises(ConfigError, match=mode):
            llm.invoke("Hi")
        return
    with llm._sync_client() as client:
        assert client.config.mode == Mode(mode)


def test_bad_settings_fail_at_call_time_with_the_sdk_error() -> None:
    llm = ChatMeshcore(model=MODEL, base_url="ftp://router.test")
    with pytest.raises(ConfigError, match="router_url"):
        llm.invoke("Hi")


async def test_bad_settings_fail_at_call_time_async() -> None:
    llm = ChatMeshcore(model=MODEL, base_url="ftp://router.test")
    with pytest.raises(ConfigError, match="router_url"):
        await llm.ainvoke("Hi")


def test_invoke_sends_openai_messages_and_reads_usage(sync_model: tuple[ChatMeshcore, ScriptedRouter]) -> None:
    llm, router = sync_model
    reply = llm.invoke([SystemMessage("Be brief."), HumanMessage("Hi")], stop=["\n"])
    (body,) = router.bodies()
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert body | {"messages": None} == {
        "model": MODEL,
        "messages": None,
        "stream": False,
        "max_tokens": 8,
        "temperature": 0,
        "stop": ["\n"],
    }
    assert reply.content == "Hello there"
    assert reply.usage_metadata == {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert reply.response_metadata["model_name"] == MODEL
    assert reply.response_metadata["model_provider"] == "meshcore"
    assert reply.response_metadata["worker_id"] == "node-a"


def test_a_call_may_name_another_model(sync_model: tuple[ChatMeshcore, ScriptedRouter]) -> None:
    llm, router = sync_model
    llm.invoke("Hi", model="sha256:" + "cd" * 32, max_tokens=2)
    (body,) = router.bodies()
    assert body["model"] == "sha256:" + "cd" * 32
    assert body["max_tokens"] == 2
    assert llm._get_ls_params(model="other")["ls_model_name"] == "other"


def test_bound_tools_are_sent_and_tool_calls_read_back() -> None:
    router = ScriptedRouter([json_response(tool_call_completion())])
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        llm = ChatMeshcore(model=MODEL, client=client)
        reply = llm.bind_tools([add], tool_choice="any").invoke("What is 2 + 3?")
    (body,) = router.bodies()
    assert body["tool_choice"] == "required"
    assert body["tools"][0]["function"]["name"] == "add"
    assert body["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]
    assert isinstance(reply, AIMessage)
    assert reply.tool_calls == [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}]
    assert [call["id"] for call in reply.invalid_tool_calls] == ["call_2"]


def test_tool_messages_go_back_in_openai_shape() -> None:
    router = ScriptedRouter([json_response(chat_completion("5"))])
    history = [
        HumanMessage("What is 2 + 3?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1"}]),
        ToolMessage("5", tool_call_id="call_1"),
    ]
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        ChatMeshcore(model=MODEL, client=client).invoke(history)
    messages = router.bodies()[0]["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert messages[2] == {"role": "tool", "content": "5", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("any", "required"),
        ("auto", "auto"),
        ("none", "none"),
        ("add", {"type": "function", "function": {"name": "add"}}),
        (True, {"type": "function", "function": {"name": "add"}}),
    ],
)
def test_tool_choice_spellings(choice: Any, expected: Any) -> None:
    assert tool_choice_param(choice, [{"type": "function", "function": {"name": "add"}}]) == expected


def test_structured_output_sends_the_json_schema_and_parses_the_answer() -> None:
    router = ScriptedRouter([json_response(chat_completion('{"name": "Ada", "age": 36}'))])
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        llm = ChatMeshcore(model=MODEL, client=client)
        person = llm.with_structured_output(Person, strict=True).invoke("Ada is 36.")
    assert person == Person(name="Ada", age=36)
    response_format = router.bodies()[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Person"
    assert response_format["json_schema"]["strict"] is True
    assert set(response_format["json_schema"]["schema"]["properties"]) == {"name", "age"}


def test_structured_output_with_raw_reports_a_parsing_error() -> None:
    router = ScriptedRouter([json_response(chat_completion("not json"))])
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        llm = ChatMeshcore(model=MODEL, client=client)
        result = llm.with_structured_output(Person, method="json_mode", include_raw=True).invoke("Ada")
    assert router.bodies()[0]["response_format"] == {"type": "json_object"}
    assert result["parsed"] is None and result["parsing_error"] is not None
    assert result["raw"].content == "not json"


def test_structured_output_by_function_calling_forces_the_tool() -> None:
    answer = tool_call_completion()
    answer["choices"][0]["message"]["tool_calls"] = [
        {"id": "c", "type": "function", "function": {"name": "Person", "arguments": '{"name": "Ada", "age": 36}'}}
    ]
    router = ScriptedRouter([json_response(answer)])
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        llm = ChatMeshcore(model=MODEL, client=client)
        person = llm.with_structured_output(Person, method="function_calling").invoke("Ada is 36.")
    assert person == Person(name="Ada", age=36)
    assert router.bodies()[0]["tool_choice"] == {"type": "function", "function": {"name": "Person"}}


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_stream_yields_tokens_then_one_last_chunk_with_usage() -> None:
    router = ScriptedRouter([sse_response(chat_chunks(["Hel", "lo"], include_usage=True))])
    recorder = TokenRecorder()
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        llm = ChatMeshcore(model=MODEL, client=client)
        chunks = list(llm.stream("Hi", config={"callbacks": [recorder]}))
    assert router.bodies()[0]["stream_options"] == {"include_usage": True}
    assert [chunk.content for chunk in chunks] == ["Hel", "lo", ""]
    assert recorder.tokens == ["Hel", "lo", ""]  # LangChain reports every chunk, the closing one too
    full = chunks[0] + chunks[1] + chunks[2]
    assert isinstance(full, AIMessageChunk)
    assert full.chunk_position == "last"
    assert full.usage_metadata == {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}
    assert full.response_metadata["model_name"] == MODEL
    assert full.response_metadata["finish_reason"] == "stop"


def test_streamed_tool_call_parts_merge_into_a_call() -> None:
    parts = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2,'}},
        {"index": 0, "function": {"arguments": ' "b": 3}'}},
    ]
    events = chat_chunks(["", ""], finish_reason="tool_calls", include_usage=True)
    events[1]["choices"][0]["delta"] = {"tool_calls": [parts[0]]}
    events[2]["choices"][0]["delta"] = {"tool_calls": [parts[1]]}
    router = ScriptedRouter([sse_response(events)])
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        llm = ChatMeshcore(model=MODEL, client=client)
        full: Any = None
        for chunk in llm.bind_tools([add]).stream("What is 2 + 3?"):
            full = chunk if full is None else full + chunk
    assert full.tool_calls == [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}]


@pytest.fixture
async def async_model() -> AsyncIterator[tuple[ChatMeshcore, ScriptedRouter]]:
    router = ScriptedRouter([sse_response(chat_chunks(["A", "B"], include_usage=True))])
    async with AsyncClient(ROUTER, transport=httpx.MockTransport(router)) as client:
        yield ChatMeshcore(model=MODEL, async_client=client), router


async def test_astream_is_native_async(async_model: tuple[ChatMeshcore, ScriptedRouter]) -> None:
    llm, _router = async_model
    chunks = [chunk async for chunk in llm.astream("Hi")]
    assert [chunk.content for chunk in chunks] == ["A", "B", ""]
    assert chunks[-1].usage_metadata == {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}


async def test_ainvoke_with_streaming_on_assembles_the_stream(
    async_model: tuple[ChatMeshcore, ScriptedRouter],
) -> None:
    llm, router = async_model
    reply = await llm.model_copy(update={"streaming": True}).ainvoke("Hi")
    assert router.bodies()[0]["stream"] is True
    assert reply.content == "AB"
    assert reply.usage_metadata == {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}


def test_importing_the_sdk_does_not_import_langchain() -> None:
    code = "import sys, meshcore_sdk; meshcore_sdk.Client; print(any(m.startswith('langchain') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"


def test_serialized_settings_hide_the_key() -> None:
    llm = ChatMeshcore(model=MODEL, api_key="secret", base_url=ROUTER)
    assert "secret" not in json.dumps(llm.model_dump(mode="json"))
