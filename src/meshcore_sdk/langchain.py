"""LangChain's chat model over a Meshcore mesh: :class:`ChatMeshcore` (extra ``meshcore[langchain]``).

::

    from meshcore_sdk.langchain import ChatMeshcore

    llm = ChatMeshcore(model="gemma-3-270m", max_tokens=64)   # MESHCORE_ROUTER_URL, then 127.0.0.1:8080
    print(llm.invoke("Hi").content)
    for chunk in llm.stream("Tell me a story"):
        print(chunk.content, end="")

Theory of operation.  :class:`ChatMeshcore` is a plain ``BaseChatModel`` that
talks to the mesh through the SDK's own :class:`~meshcore_sdk.Client` and
:class:`~meshcore_sdk.AsyncClient`, not through HTTP directly, so every mode the
SDK speaks (``proxy`` now; ``direct`` and ``swarm`` as they land) works here by
naming it in ``mode``.  A mode this version lacks raises the SDK's
:class:`~meshcore_sdk.ConfigError` when a call is made, never at construction.

Construction does no I/O: a call opens a client for its own duration and
closes it after (a fresh loopback or LAN connection costs far less than a
generation), unless ``client`` / ``async_client`` hand in clients the caller owns
and closes.  A call turns LangChain messages into OpenAI-shaped ones
(:func:`request_body`), sends them with ``tools``, ``tool_choice`` and
``response_format`` as extra body fields, and turns the answer back into an
``AIMessage`` with usage, tool calls and ``response_metadata`` (:func:`ai_message`,
:func:`ChunkAssembler`).  Streams request usage and end with one chunk that
carries usage, the model name and ``chunk_position="last"``.

Structured output: ``method="json_schema"`` (the default) sends OpenAI's
``response_format`` with the schema, which the router turns into a grammar that
constrains decoding; ``"json_mode"`` sends ``{"type": "json_object"}``;
``"function_calling"`` binds the schema as the one tool the model must call.

Importing :mod:`meshcore_sdk` never imports this module or LangChain.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.base import OutputParserLike
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
    make_invalid_tool_call,
    parse_tool_call,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils import from_env, secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_function, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, SecretStr

from meshcore_sdk._client import AsyncClient
from meshcore_sdk._sync import Client
from meshcore_sdk.config import DEFAULT_ROUTER_URL
from meshcore_sdk.types import ChatCompletion, ChatCompletionChunk, CompletionUsage

__all__ = ["ChatMeshcore", "ChunkAssembler", "ai_message", "request_body", "tool_choice_param"]

PROVIDER = "meshcore"

_CREATE_ARGS = ("max_tokens", "temperature", "top_p", "stop", "seed", "top_k", "min_p", "repeat_penalty", "timeout")
"""Per-call options that ``create(...)`` takes by name; any other keyword goes in the extra body."""

StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]


class ChatMeshcore(BaseChatModel):
    """A LangChain chat model served by a Meshcore mesh.

    Args:
        model: a served model id (``gemma-3-270m``) or ``sha256:<hex>``; a call may
            override it with ``model=``.
        base_url: the router's address (alias ``router_url``); default
            ``MESHCORE_ROUTER_URL``, then ``http://127.0.0.1:8080``.  A ``/v1`` suffix is accepted.
        api_key: sent as a bearer token; default ``MESHCORE_API_KEY``.
        mode: ``"proxy"``, ``"direct"`` or ``"swarm"``; a mode this version lacks
            raises :class:`~meshcore_sdk.ConfigError` when a call is made.
        swarm_size: how many workers a swarm request fans out to.
        temperature, max_tokens, top_p, seed, stop: sampling options, sent when set.
        timeout: connect and read timeout in seconds.
        max_retries: retries of a request that failed before it delivered anything.
        streaming: make ``invoke`` stream under the hood (callbacks see every token).
        extra_body: more request fields, sent with every call.
        client, async_client: clients the caller owns (and closes) to send through,
            instead of one per call.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model: str
    router_url: str = Field(
        default_factory=from_env("MESHCORE_ROUTER_URL", default=DEFAULT_ROUTER_URL), alias="base_url"
    )
    api_key: SecretStr | None = Field(default_factory=secret_from_env("MESHCORE_API_KEY", default=None))
    mode: Literal["proxy", "direct", "swarm"] = "proxy"
    swarm_size: int = 3
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int = 2
    streaming: bool = False
    extra_body: dict[str, Any] | None = None
    client: Client | None = Field(default=None, exclude=True)
    async_client: AsyncClient | None = Field(default=None, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "chat-meshcore"

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": "MESHCORE_API_KEY"}

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "mode": self.mode, "router_url": self.router_url, **self._default_options()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER, ls_model_name=str(kwargs.get("model", self.model)), ls_model_type="chat"
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stops := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = stops
        return params

    # --- calls ---------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        model, body = self._request(messages, stop, kwargs)
        with self._sync_client() as client:
            completion = client.chat.completions.create(model=model, messages=body.pop("messages"), **body)
        return ChatResult(generations=[ChatGeneration(message=ai_message(completion))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        model, body = self._request(messages, stop, kwargs)
        async with self._async_client() as client:
            completion = await client.chat.completions.create(model=model, messages=body.pop("messages"), **body)
        return ChatResult(generations=[ChatGeneration(message=ai_message(completion))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        model, body = self._request(messages, stop, kwargs)
        assembler = ChunkAssembler()
        with self._sync_client() as client:
            stream = client.chat.completions.create(
                model=model, messages=body.pop("messages"), stream=True, stream_options={"include_usage": True}, **body
            )
            with stream:
                for sdk_chunk in stream:
                    for chunk in assembler.feed(sdk_chunk):
                        if run_manager:
                            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
        yield assembler.last()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        model, body = self._request(messages, stop, kwargs)
        assembler = ChunkAssembler()
        async with self._async_client() as client:
            stream = await client.chat.completions.create(
                model=model, messages=body.pop("messages"), stream=True, stream_options={"include_usage": True}, **body
            )
            async with stream:
                async for sdk_chunk in stream:
                    for chunk in assembler.feed(sdk_chunk):
                        if run_manager:
                            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
        yield assembler.last()

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The model to ask and the rest of ``create(...)``'s arguments, per-call options winning."""
        options = {**self._default_options(), **kwargs}
        if stop is not None:
            options["stop"] = stop
        options.pop("stream", None)
        model = str(options.pop("model", self.model))
        return model, request_body(messages, options, self.extra_body)

    def _default_options(self) -> dict[str, Any]:
        given = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop or None,
            "timeout": self.timeout,
        }
        return {name: value for name, value in given.items() if value is not None}

    def _sync_client(self) -> contextlib.AbstractContextManager[Client]:
        if self.client is not None:
            return contextlib.nullcontext(self.client)
        return Client(self.router_url, self._api_key(), mode=self.mode, **self._client_options())

    def _async_client(self) -> contextlib.AbstractAsyncContextManager[AsyncClient]:
        if self.async_client is not None:
            return contextlib.nullcontext(self.async_client)
        return AsyncClient(self.router_url, self._api_key(), mode=self.mode, **self._client_options())

    def _api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"swarm_size": self.swarm_size, "max_retries": self.max_retries}
        if self.timeout is not None:
            options["timeout"] = self.timeout
        return options

    # --- tools and structured output -----------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model, OpenAI-shaped.

        Args:
            tools: LangChain tools, functions, pydantic classes or OpenAI tool dicts.
            tool_choice: ``"auto"``, ``"none"``, ``"any"``/``"required"`` (some tool),
                a tool's name, ``True`` (the only tool), or OpenAI's dict.
            strict: ask for arguments that match each schema exactly.
            parallel_tool_calls: allow more than one call in one answer.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = tool_choice_param(tool_choice, formatted)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: StructuredMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """A runnable that answers with ``schema`` filled in (a pydantic object or a dict).

        Args:
            schema: a pydantic class, a TypedDict, or a JSON schema / OpenAI function dict.
            method: ``"json_schema"`` (``response_format`` with the schema: decoding is
                constrained by a grammar), ``"json_mode"`` (any JSON object) or
                ``"function_calling"`` (the schema as the one tool to call).
            include_raw: answer ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``.
            strict: ask for output that matches the schema exactly.

        Raises:
            ValueError: ``method`` is none of the three, or extra keyword arguments were given.
        """
        if kwargs:
            raise ValueError(f"unexpected arguments: {sorted(kwargs)}")
        is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
        trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        llm: Runnable[LanguageModelInput, Any]
        parser: OutputParserLike[Any]
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name, strict=strict, ls_structured_output_format=trace)
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if is_model
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            llm = self.bind(response_format=response_format(schema, method, strict), ls_structured_output_format=trace)
            parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
        else:
            raise ValueError(f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}")
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")


# --- request ---------------------------------------------------------------------------------


def request_body(
    messages: Sequence[BaseMessage], options: Mapping[str, Any], extra_body: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The keyword arguments of ``client.chat.completions.create`` (without ``model``) for one call.

    Options ``create`` takes by name stay named; the rest (``tools``, ``tool_choice``,
    ``response_format``, anything the router may learn later) go in ``extra_body``.
    """
    named = {name: options[name] for name in _CREATE_ARGS if name in options}
    extra = {**(extra_body or {}), **{k: v for k, v in options.items() if k not in _CREATE_ARGS}}
    body: dict[str, Any] = {"messages": convert_to_openai_messages(list(messages), text_format="string"), **named}
    if extra:
        body["extra_body"] = extra
    return body


def tool_choice_param(choice: dict[str, Any] | str | bool, tools: Sequence[Mapping[str, Any]]) -> Any:
    """OpenAI's ``tool_choice`` for LangChain's spellings of it.

    Raises:
        ValueError: ``True`` with other than one tool.
    """
    if choice is True:
        if len(tools) != 1:
            raise ValueError("tool_choice=True needs exactly one tool")
        choice = tools[0]["function"]["name"]
    if choice == "any":
        return "required"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


def response_format(schema: dict[str, Any] | type, method: StructuredMethod, strict: bool | None) -> dict[str, Any]:
    """OpenAI's ``response_format`` for structured output."""
    if method == "json_mode":
        return {"type": "json_object"}
    function = convert_to_openai_function(schema, strict=strict)
    json_schema: dict[str, Any] = {"name": function["name"], "schema": function["parameters"]}
    if function.get("description"):
        json_schema["description"] = function["description"]
    if strict is not None:
        json_schema["strict"] = strict
    return {"type": "json_schema", "json_schema": json_schema}


# --- answers ---------------------------------------------------------------------------------


def usage_metadata(usage: CompletionUsage) -> UsageMetadata:
    """LangChain's usage record for the router's token counts."""
    return UsageMetadata(
        input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def ai_message(completion: ChatCompletion) -> AIMessage:
    """The ``AIMessage`` of a whole chat completion: text, tool calls, usage, metadata."""
    choice = completion.choices[0] if completion.choices else None
    raw_calls = (choice.message.model_extra or {}).get("tool_calls") if choice else None
    tool_calls, invalid_calls = [], []
    for raw in raw_calls or []:
        try:
            parsed = parse_tool_call(raw, return_id=True)
        except OutputParserException as exc:
            invalid_calls.append(make_invalid_tool_call(raw, str(exc)))
        else:
            if parsed is not None:
                tool_calls.append(parsed)
    return AIMessage(
        content=completion.text,
        id=completion.id or None,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid_calls,
        usage_metadata=usage_metadata(completion.usage) if completion.usage else None,
        response_metadata=_response_metadata(completion, choice.finish_reason if choice else None),
    )


def _response_metadata(answer: ChatCompletion | ChatCompletionChunk, finish_reason: str | None) -> dict[str, Any]:
    meta = answer.meshcore
    metadata = {
        "model_name": answer.model,
        "model_provider": PROVIDER,
        "finish_reason": finish_reason,
        "request_id": meta.request_id,
        "worker_id": meta.worker_id,
    }
    return {name: value for name, value in metadata.items() if value is not None}


@dataclass
class ChunkAssembler:
    """Turns the SDK's stream chunks into LangChain's, holding back what belongs on the last one.

    LangChain merges chunks by adding their fields, so the model name, finish
    reason and usage are said once, on the chunk that :meth:`last` returns.
    """

    finish_reason: str | None = None
    final: ChatCompletionChunk | None = None
    usage: CompletionUsage | None = None
    message_id: str | None = None

    def feed(self, chunk: ChatCompletionChunk) -> list[ChatGenerationChunk]:
        """The LangChain chunks for one SDK chunk: none, or one with text or tool-call parts."""
        self.message_id = self.message_id or chunk.id or None
        self.final = chunk
        self.usage = chunk.usage or self.usage
        if not chunk.choices:
            return []
        choice = chunk.choices[0]
        self.finish_reason = choice.finish_reason or self.finish_reason
        text = choice.delta.content or ""
        calls = [_tool_call_chunk(raw) for raw in (choice.delta.model_extra or {}).get("tool_calls") or []]
        if not text and not calls:
            return []
        return [ChatGenerationChunk(message=AIMessageChunk(content=text, id=self.message_id, tool_call_chunks=calls))]

    def last(self) -> ChatGenerationChunk:
        """The closing chunk: no text, the usage, the metadata, ``chunk_position="last"``."""
        metadata = _response_metadata(self.final, self.finish_reason) if self.final else {}
        message = AIMessageChunk(
            content="",
            id=self.message_id,
            usage_metadata=usage_metadata(self.usage) if self.usage else None,
            response_metadata=metadata,
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message, generation_info={"finish_reason": self.finish_reason})


def _tool_call_chunk(raw: Mapping[str, Any]) -> ToolCallChunk:
    function = raw.get("function") or {}
    return ToolCallChunk(
        name=function.get("name"), args=function.get("arguments"), id=raw.get("id"), index=raw.get("index")
    )
