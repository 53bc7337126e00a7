"""The async client's resources, shaped as the OpenAI SDK's: ``chat.completions``, ``completions``, ``models``.

Each method builds a body (:mod:`meshcore_sdk._params`), hands it to the client's
:class:`~meshcore_sdk._base.Transport`, and parses the answer into the models of
:mod:`meshcore_sdk.types`.  The sync twins in :mod:`meshcore_sdk._sync` call these
through their portal.
"""

# ruff: noqa: ASYNC109  # ``timeout=`` is the OpenAI SDK's per-call option, which users expect by that name

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload
from urllib.parse import quote

import pydantic

from meshcore_sdk._base import NOT_GIVEN, NotGiven, Transport, resolve_timeout_s
from meshcore_sdk._params import MessageParam, SamplingArgs, chat_body, completion_body
from meshcore_sdk.events import EventLog
from meshcore_sdk.protocol.errors import RemoteProtocolError
from meshcore_sdk.streaming import AsyncStream, StreamChunk
from meshcore_sdk.types import ChatCompletion, ChatCompletionChunk, Completion, CompletionChunk, Model, ModelList

__all__ = ["AsyncChat", "AsyncChatCompletions", "AsyncCompletions", "AsyncModels"]

AnswerT = TypeVar("AnswerT", bound=pydantic.BaseModel)
ChunkT = TypeVar("ChunkT", bound=StreamChunk)


class _Resource:
    """What every resource shares: the transport, the client's timeout and clock."""

    def __init__(self, transport: Transport, *, timeout_s: float | None, clock: Callable[[], float]) -> None:
        self._transport = transport
        self._timeout_s = timeout_s
        self._clock = clock

    async def _answer(
        self,
        model: type[AnswerT],
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        timeout: float | NotGiven | None,
    ) -> AnswerT:
        data = await self._transport.request(
            method, path, body=body, timeout_s=resolve_timeout_s(timeout, self._timeout_s)
        )
        return parse_answer(model, data)

    async def _stream(
        self, parse: Callable[[Any], ChunkT], path: str, body: Mapping[str, Any], timeout: float | NotGiven | None
    ) -> AsyncStream[ChunkT]:
        log = EventLog(self._clock)
        timeout_s = resolve_timeout_s(timeout, self._timeout_s)
        source, request_id = await self._transport.open_stream(path, body=body, timeout_s=timeout_s, log=log)
        return AsyncStream(source, parse=parse, log=log, request_id=request_id)


def parse_answer(model: type[AnswerT], data: Any) -> AnswerT:
    """Validate a decoded JSON answer as ``model``.

    Raises:
        RemoteProtocolError: the answer does not have the model's shape.
    """
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"]) or "answer"
        raise RemoteProtocolError(f"the router sent a malformed {model.__name__}: {where}: {problem['msg']}") from exc


class AsyncChatCompletions(_Resource):
    """``client.chat.completions``: chat completions, whole or streamed."""

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[MessageParam],
        stream: Literal[False] = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[MessageParam],
        stream: Literal[True],
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
    ) -> AsyncStream[ChatCompletionChunk]: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[MessageParam],
        stream: bool,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]: ...

    async def create(
        self,
        *,
        model: str,
        messages: Iterable[MessageParam],
        stream: bool = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """Create a chat completion (``POST /v1/chat/completions``).

        Args:
            model: a served model id (``gemma-3-270m``) or ``sha256:<hex>``.
            messages: the conversation, OpenAI-shaped.
            stream: return an :class:`AsyncStream` of chunks instead of one completion.
            max_tokens: the most tokens to generate (``max_completion_tokens`` is the newer name).
            max_completion_tokens: the same limit, by OpenAI's newer name.
            temperature: sampling temperature; 0 picks the likeliest token.
            top_p: nucleus sampling mass.
            stop: one or more strings that end generation (not included in the output).
            seed: sampling seed, for repeatable output.
            stream_options: ``{"include_usage": True}`` adds a last chunk with token counts.
            top_k: sample from the k likeliest tokens (llama.cpp; 0 means all).
            min_p: drop tokens less likely than this fraction of the likeliest (llama.cpp).
            repeat_penalty: penalty on repeated tokens (llama.cpp; 1 means none).
            extra_body: more fields to send, merged last.
            timeout: connect and read timeout of this call in seconds; ``None`` waits for ever.

        Raises:
            MeshError: see :mod:`meshcore_sdk.errors`; only before anything was delivered
                are failures retried.
        """
        sampling = SamplingArgs(
            max_tokens=max_tokens,
            max_completion_tokens=max_completion_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            seed=seed,
            stream_options=stream_options,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
        )
        body = chat_body(model=model, messages=messages, stream=stream, sampling=sampling, extra_body=extra_body)
        if stream:
            return await self._stream(ChatCompletionChunk.model_validate, "/v1/chat/completions", body, timeout)
        return await self._answer(ChatCompletion, "POST", "/v1/chat/completions", body, timeout)


class AsyncChat:
    """``client.chat``: holds ``completions``."""

    def __init__(self, completions: AsyncChatCompletions) -> None:
        self.completions = completions


class AsyncCompletions(_Resource):
    """``client.completions``: raw-prompt text completions, whole or streamed."""

    @overload
    async def create(
        self,
        *,
        model: str,
        prompt: str,
        stream: Literal[False] = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
    ) -> Completion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        prompt: str,
        stream: Literal[True],
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
    ) -> AsyncStream[CompletionChunk]: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        prompt: str,
        stream: bool,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
    ) -> Completion | AsyncStream[CompletionChunk]: ...

    async def create(
        self,
        *,
        model: str,
        prompt: str,
        stream: bool = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
    ) -> Completion | AsyncStream[CompletionChunk]:
        """Complete a raw prompt, without a chat template (``POST /v1/completions``).

        The arguments are those of :meth:`AsyncChatCompletions.create`, with ``prompt``
        (the text to continue) in place of ``messages``.
        """
        sampling = SamplingArgs(
            max_tokens=max_tokens,
            max_completion_tokens=max_completion_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            seed=seed,
            stream_options=stream_options,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
        )
        body = completion_body(model=model, prompt=prompt, stream=stream, sampling=sampling, extra_body=extra_body)
        if stream:
            return await self._stream(CompletionChunk.model_validate, "/v1/completions", body, timeout)
        return await self._answer(Completion, "POST", "/v1/completions", body, timeout)


class AsyncModels(_Resource):
    """``client.models``: the models the mesh serves now."""

    async def list(self, *, timeout: float | NotGiven | None = NOT_GIVEN) -> ModelList:
        """List the models that some registered node serves (``GET /v1/models``)."""
        return await self._answer(ModelList, "GET", "/v1/models", None, timeout)

    async def retrieve(self, model: str, *, timeout: float | NotGiven | None = NOT_GIVEN) -> Model:
        """Describe one model by served id or ``sha256:<hex>`` (``GET /v1/models/{id}``).

        Raises:
            ModelNotFound: no node serves it.
        """
        return await self._answer(Model, "GET", f"/v1/models/{quote(model, safe=':')}", None, timeout)
