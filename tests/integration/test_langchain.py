"""LangChain on a real local mesh: the standard integration suite for ChatMeshcore, and ChatOpenAI unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from meshcore_sdk.langchain import ChatMeshcore
from meshcore_sdk.mesh import LocalMesh

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.timeout(120)]

SERVED_NAME = "gemma-3-270m"
MAX_TOKENS = 64
"""Small answers keep the suite quick on two cores; the standard tests only need a few words."""

_mesh: dict[str, str] = {}
"""The shared mesh's router URL and model hash, set by the fixture below for the suite's properties."""


@pytest.fixture(autouse=True)
def _on_the_shared_mesh(shared_mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MESHCORE_ROUTER_URL", shared_mesh.router_url)
    _mesh["router_url"] = shared_mesh.router_url
    yield


# The router does not yet turn `tools` / `response_format` into a grammar (the engine's grammar work
# is in progress), so the 270M model answers in prose and no tool call or JSON object comes back.
NO_GRAMMAR_TOOLS = (
    "the router ignores `tools`/`tool_choice` until grammar-constrained tool calls land in the engine; "
    "the 270M model answers in prose, so the reply has no tool_calls"
)
NO_GRAMMAR_JSON = (
    "the router ignores `response_format` until JSON-schema grammars land in the engine; "
    "the 270M model answers in prose, which does not parse as the schema"
)


class TestChatMeshcoreOnALocalMesh(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatMeshcore]:
        return ChatMeshcore

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Built with the model's hash; the override test names it by its served id, which answers carry.
        return {"model": model_hash(), "max_tokens": MAX_TOKENS}

    @property
    def model_override_value(self) -> str:
        return SERVED_NAME

    @property
    def supports_json_mode(self) -> bool:
        return True

    @pytest.mark.xfail(reason=NO_GRAMMAR_TOOLS)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=NO_GRAMMAR_TOOLS)
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice, force_tool_call=force_tool_call)

    @pytest.mark.xfail(reason=NO_GRAMMAR_TOOLS)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=NO_GRAMMAR_TOOLS)
    def test_bind_runnables_as_tools(self, model: BaseChatModel) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(reason=NO_GRAMMAR_TOOLS)
    def test_tool_choice(self, model: BaseChatModel) -> None:
        super().test_tool_choice(model)

    @pytest.mark.xfail(reason=NO_GRAMMAR_TOOLS)
    def test_tool_calling_with_no_arguments(self, model: BaseChatModel) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @pytest.mark.xfail(reason=NO_GRAMMAR_TOOLS)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=NO_GRAMMAR_JSON)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model: BaseChatModel, schema_type: str) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=NO_GRAMMAR_JSON)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(self, model: BaseChatModel, schema_type: str) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=NO_GRAMMAR_JSON)
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=NO_GRAMMAR_JSON)
    def test_structured_output_optional_param(self, model: BaseChatModel) -> None:
        super().test_structured_output_optional_param(model)

    @pytest.mark.xfail(reason=NO_GRAMMAR_JSON)
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)


_hash: list[str] = []


def model_hash() -> str:
    """``sha256:<hex>`` of the model the shared mesh serves."""
    if not _hash:
        import httpx

        models = httpx.get(f"{_mesh['router_url']}/v1/models", timeout=10).json()["data"]
        _hash.append("sha256:" + models[0]["meshcore"]["sha256"])
    return _hash[0]


# --- LangChain's own OpenAI class, unchanged ---------------------------------------------------


def chat_openai(router_url: str, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=SERVED_NAME, base_url=f"{router_url}/v1", api_key="unused", max_tokens=8, temperature=0, **options
    )


def test_chat_openai_invokes_with_usage(shared_mesh: LocalMesh) -> None:
    reply = chat_openai(shared_mesh.router_url).invoke("Name a colour.")
    assert isinstance(reply.content, str) and reply.content
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0
    assert reply.response_metadata["model_name"] == SERVED_NAME


def test_chat_openai_streams_with_usage(shared_mesh: LocalMesh) -> None:
    full: AIMessageChunk | None = None
    for chunk in chat_openai(shared_mesh.router_url, stream_usage=True).stream("Name a colour."):
        full = chunk if full is None else full + chunk
    assert full is not None and full.text
    assert full.usage_metadata is not None and full.usage_metadata["input_tokens"] > 0


async def test_chat_openai_streams_async(shared_mesh: LocalMesh) -> None:
    chunks = [chunk async for chunk in chat_openai(shared_mesh.router_url).astream("Name a colour.")]
    assert "".join(chunk.text for chunk in chunks)
