"""LangChain on a real local mesh: the standard integration suite for ChatMeshcore, and ChatOpenAI unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from meshcore_sdk.langchain import ChatMeshcore
from meshcore_sdk.mesh import LocalMesh

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.timeout(120)]

SERVED_NAME = "gemma-3-270m"
MAX_TOKENS = 16
"""Small answers keep the suite quick on two cores; the standard tests only need a few words."""

_mesh: dict[str, str] = {}
"""The shared mesh's router URL and model hash, set by the fixture below for the suite's properties."""


@pytest.fixture(autouse=True)
def _on_the_shared_mesh(shared_mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MESHCORE_ROUTER_URL", shared_mesh.router_url)
    _mesh["router_url"] = shared_mesh.router_url
    yield


TOOL_MAX_TOKENS = 64
"""A forced tool call is a JSON object of 20 to 40 tokens: MAX_TOKENS would cut it off before it parses."""
TOOL = {"max_tokens": TOOL_MAX_TOKENS}
STRUCTURED = {"max_tokens": 64}
"""The suite's 16 tokens cut a Joke object off before its punchline; the grammar lets it close within 64."""
LONGER_ANSWER = (
    "not expected to fail: overridden only to run with the tool-calling model (max_tokens=64, as a call does not fit "
    "in the suite's 16 tokens), and langchain-tests allows an override only on an xfail test; it passes (XPASS)"
)
WRONG_ARGUMENT = (
    "the router's grammar forces a well-formed call to magic_function with an integer `input`, but the "
    "270M base model picks the number badly (it answers 3000000000000000 or 3675000000000001, not 3)"
)
EMPTY_ARGUMENT = (
    "the call is well-formed, but the 270M base model sometimes gives `answer_style` an empty string, which "
    "the test refuses (it passes on some runs)"
)
CALL_CUT_OFF = (
    "flaky (6 of 6 runs passed by hand, 1 of its 2 cases failed in a full run): when it fails, the first "
    "answer has no tool_call block, either because the call was cut off at TOOL_MAX_TOKENS (the 270M base "
    "model's `location` string runs long) or because the model answered in text, as tool_choice auto allows"
)
UNICODE_ARGUMENT = (
    "the call is well-formed, but the 270M base model starts the string argument in English ('Unico...') "
    "and does not write the Japanese text the test looks for"
)
JSON_RUNS_ON = (
    "the grammar admits only a Joke, but the 270M base model's `setup` string runs on for the whole 64 tokens "
    '(it wrote {"setup": "center-scroll-entry: 4ex; text-align: center;</thead> ...), so the object never '
    "reaches `punchline` and the pydantic schema refuses it; the typeddict and json_schema cases accept it"
)
ROOM_TO_CLOSE = (
    "not expected to fail but for the pydantic case (see its own mark): overridden only to run with 64 tokens, "
    "and langchain-tests allows an override only on an xfail test; the other cases pass (XPASS)"
)
PYDANTIC = pytest.param("pydantic", marks=pytest.mark.xfail(reason=JSON_RUNS_ON, strict=False))
JSON_MODE_ANY_KEYS = (
    "json_object mode only asks for some JSON object: the 270M base model picks its own keys instead of "
    "the Joke schema's (it fails with max_tokens=64 too)"
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

    @pytest.mark.xfail(reason=WRONG_ARGUMENT, strict=False)
    @pytest.mark.parametrize("model", [TOOL, {**TOOL, "output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=UNICODE_ARGUMENT, strict=False)
    @pytest.mark.parametrize("model", [TOOL], indirect=True)
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice, force_tool_call=force_tool_call)

    @pytest.mark.xfail(reason=WRONG_ARGUMENT, strict=False)
    @pytest.mark.parametrize("model", [TOOL], indirect=True)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=EMPTY_ARGUMENT, strict=False)
    @pytest.mark.parametrize("model", [TOOL], indirect=True)
    def test_bind_runnables_as_tools(self, model: BaseChatModel) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(reason=LONGER_ANSWER, strict=False)
    @pytest.mark.parametrize("model", [TOOL], indirect=True)
    def test_tool_choice(self, model: BaseChatModel) -> None:
        super().test_tool_choice(model)

    @pytest.mark.xfail(reason=LONGER_ANSWER, strict=False)
    @pytest.mark.parametrize("model", [TOOL], indirect=True)
    def test_tool_calling_with_no_arguments(self, model: BaseChatModel) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @pytest.mark.xfail(reason=CALL_CUT_OFF, strict=False)
    @pytest.mark.parametrize("model", [TOOL, {**TOOL, "output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=ROOM_TO_CLOSE, strict=False)
    @pytest.mark.parametrize("model", [STRUCTURED], indirect=True)
    @pytest.mark.parametrize("schema_type", [PYDANTIC, "typeddict", "json_schema"])
    def test_structured_output(self, model: BaseChatModel, schema_type: str) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=ROOM_TO_CLOSE, strict=False)
    @pytest.mark.parametrize("model", [STRUCTURED], indirect=True)
    @pytest.mark.parametrize("schema_type", [PYDANTIC, "typeddict", "json_schema"])
    async def test_structured_output_async(self, model: BaseChatModel, schema_type: str) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=JSON_RUNS_ON, strict=False)
    @pytest.mark.parametrize("model", [STRUCTURED], indirect=True)
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=JSON_MODE_ANY_KEYS)
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


# --- ChatMeshcore in direct and swarm modes ------------------------------------------------------


@pytest.mark.parametrize("mode", ["direct", "swarm"])
async def test_chat_meshcore_invokes_and_streams_in_direct_and_swarm_mode(shared_mesh: LocalMesh, mode: str) -> None:
    llm = ChatMeshcore(model=SERVED_NAME, mode=mode, swarm_size=2, max_tokens=8, temperature=0)
    reply = await llm.ainvoke("Name a colour.")
    assert isinstance(reply, AIMessage) and isinstance(reply.content, str) and reply.content
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0
    assert reply.response_metadata["model_name"] == SERVED_NAME

    chunks = [chunk async for chunk in llm.astream("Name a colour.")]
    assert "".join(chunk.text for chunk in chunks) == reply.content  # greedy: the same answer, token by token
    assert len(chunks) > 1
