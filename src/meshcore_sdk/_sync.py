"""The sync twin: :class:`Client` and :class:`Stream`, the same names as the async ones.

Theory of operation.  A :class:`Client` owns an :class:`AsyncClient` and a
private event loop running in a thread of its own, reached through an anyio
blocking portal (``anyio.from_thread.start_blocking_portal``).  The portal is
started by the instance and stopped by :meth:`Client.close` (or ``with``); it is
never shared between clients or started lazily by the module.  Each sync call
runs the async call on that loop and blocks until it returns, so a sync client
works the same from a plain script, from a thread, and from code already running
inside an event loop (a Jupyter cell), without ``nest_asyncio``.  In async code,
prefer :class:`AsyncClient`: a sync call blocks the loop it is called from.

A :class:`Stream` pulls one chunk per ``next()`` from its :class:`AsyncStream`
through the same portal.  An interrupt (Ctrl-C) while a call waits cancels the
call on the client's loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, overload

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from meshcore_sdk._base import NOT_GIVEN, NotGiven, Runtime
from meshcore_sdk._client import AsyncClient
from meshcore_sdk._params import MessageParam
from meshcore_sdk._resources import AsyncChatCompletions, AsyncCompletions, AsyncModels
from meshcore_sdk.config import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, ClientConfig, Mode
from meshcore_sdk.events import StreamEvent
from meshcore_sdk.protocol.errors import StreamClosed
from meshcore_sdk.streaming import AsyncStream, StreamChunk
from meshcore_sdk.types import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    CompletionUsage,
    Model,
    ModelList,
)

__all__ = ["Chat", "ChatCompletions", "Client", "Completions", "Models", "Stream"]

T = TypeVar("T")
ChunkT = TypeVar("ChunkT", bound=StreamChunk)


class _Portal:
    """A client's own event loop thread, and the one way sync code calls into it."""

    def __init__(self) -> None:
        self._context = start_blocking_portal(name="meshcore-client")
        self._portal: BlockingPortal = self._context.__enter__()
        self.stopped = False

    def call(self, function: Callable[[], Awaitable[T]]) -> T:
        """Run ``function()`` on the loop and wait for its result.

        Raises:
            StreamClosed: the client was closed.
        """
        if self.stopped:
            raise StreamClosed("the client is closed")
        future = self._portal.start_task_soon(function)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # an interrupt while waiting: cancel the call on the loop too
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread; safe to call more than once."""
        if not self.stopped:
            self.stopped = True
            self._context.__exit__(None, None, None)


async def _next_or_none(stream: AsyncStream[ChunkT]) -> ChunkT | None:
    return await anext(stream, None)


class Stream(Generic[ChunkT]):
    """The chunks of one streamed completion, read with ``for``; the twin of :class:`AsyncStream`.

    Use it as ``with`` (or call :meth:`close`) so the connection is released even
    when the loop stops early.
    """

    def __init__(self, stream: AsyncStream[ChunkT], portal: _Portal) -> None:
        self._async = stream
        self._portal = portal

    @property
    def events(self) -> list[StreamEvent]:
        """What happened so far, in order, each with ``at_s`` since the request was sent."""
        return self._async.events

    @property
    def request_id(self) -> str | None:
        """The router's id for the request."""
        return self._async.request_id

    @property
    def worker_id(self) -> str | None:
        """The worker that produced the latest token."""
        return self._async.worker_id

    @property
    def finish_reason(self) -> str | None:
        """Why generation stopped, once the stream has said so."""
        return self._async.finish_reason

    @property
    def usage(self) -> CompletionUsage | None:
        """Token counts, once a chunk carried them."""
        return self._async.usage

    def __iter__(self) -> Iterator[ChunkT]:
        return self

    def __next__(self) -> ChunkT:
        stream = self._async
        chunk = self._portal.call(lambda: _next_or_none(stream))
        if chunk is None:
            raise StopIteration
        return chunk

    def text(self) -> str:
        """Read the stream to its end and return all its text, including what was already read."""
        return self._portal.call(self._async.text)

    def close(self) -> None:
        """Stop reading and release the connection; safe to call more than once."""
        if not self._portal.stopped:  # a closed client already dropped its connections
            self._portal.call(self._async.aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._async).replace("<AsyncStream", "<Stream", 1)

    def _repr_html_(self) -> str:
        """The text read so far, how the stream ended and its timed events, for notebooks."""
        return self._async._repr_html_()


class ChatCompletions:
    """``client.chat.completions``: the twin of :class:`AsyncChatCompletions`."""

    def __init__(self, resource: AsyncChatCompletions, portal: _Portal) -> None:
        self._async = resource
        self._portal = portal

    @overload
    def create(
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
    def create(
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
    ) -> Stream[ChatCompletionChunk]: ...

    @overload
    def create(
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
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...

    def create(
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
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """Create a chat completion; see :meth:`AsyncChatCompletions.create`."""

        async def run() -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
            return await self._async.create(
                model=model,
                messages=messages,
                stream=stream,
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
                extra_body=extra_body,
                timeout=timeout,
            )

        result = self._portal.call(run)
        return Stream(result, self._portal) if isinstance(result, AsyncStream) else result


class Chat:
    """``client.chat``: holds ``completions``."""

    def __init__(self, completions: ChatCompletions) -> None:
        self.completions = completions


class Completions:
    """``client.completions``: the twin of :class:`AsyncCompletions`."""

    def __init__(self, resource: AsyncCompletions, portal: _Portal) -> None:
        self._async = resource
        self._portal = portal

    @overload
    def create(
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
    def create(
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
    ) -> Stream[CompletionChunk]: ...

    @overload
    def create(
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
    ) -> Completion | Stream[CompletionChunk]: ...

    def create(
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
    ) -> Completion | Stream[CompletionChunk]:
        """Complete a raw prompt; see :meth:`AsyncCompletions.create`."""

        async def run() -> Completion | AsyncStream[CompletionChunk]:
            return await self._async.create(
                model=model,
                prompt=prompt,
                stream=stream,
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
                extra_body=extra_body,
                timeout=timeout,
            )

        result = self._portal.call(run)
        return Stream(result, self._portal) if isinstance(result, AsyncStream) else result


class Models:
    """``client.models``: the twin of :class:`AsyncModels`."""

    def __init__(self, resource: AsyncModels, portal: _Portal) -> None:
        self._async = resource
        self._portal = portal

    def list(self, *, timeout: float | NotGiven | None = NOT_GIVEN) -> ModelList:
        """List the models that some registered node serves; see :meth:`AsyncModels.list`."""
        return self._portal.call(lambda: self._async.list(timeout=timeout))

    def retrieve(self, model: str, *, timeout: float | NotGiven | None = NOT_GIVEN) -> Model:
        """Describe one model; see :meth:`AsyncModels.retrieve`."""
        return self._portal.call(lambda: self._async.retrieve(model, timeout=timeout))


class Client:
    """A sync client of a Meshcore mesh, shaped as OpenAI's ``OpenAI``; the twin of :class:`AsyncClient`::

        with Client() as client:
            for chunk in client.chat.completions.create(model="gemma-3-270m", messages=msgs, stream=True):
                print(chunk.choices[0].delta.content or "", end="")

    The arguments are those of :class:`AsyncClient`; ``transport`` is an async
    httpx transport (``httpx.MockTransport`` serves both).  The client runs its
    own event loop in a thread it owns until :meth:`close`, so it also works
    inside a running loop (Jupyter).

    Raises:
        ConfigError: an argument is invalid or names an unavailable mode.
    """

    def __init__(
        self,
        router_url: str | None = None,
        api_key: str | None = None,
        *,
        mode: Mode | str = Mode.PROXY,
        swarm_size: int = 3,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self._setup(
            AsyncClient(
                router_url,
                api_key,
                mode=mode,
                swarm_size=swarm_size,
                timeout=timeout,
                max_retries=max_retries,
                transport=transport,
                http_client=http_client,
                runtime=runtime,
            )
        )

    @classmethod
    def from_config(
        cls,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        runtime: Runtime | None = None,
    ) -> Self:
        """Build a client from a complete :class:`ClientConfig`; the environment is not read."""
        client = cls.__new__(cls)
        client._setup(AsyncClient.from_config(config, transport=transport, http_client=http_client, runtime=runtime))
        return client

    def _setup(self, async_client: AsyncClient) -> None:
        self._async = async_client
        self._portal = _Portal()
        self.chat = Chat(ChatCompletions(async_client.chat.completions, self._portal))
        self.completions = Completions(async_client.completions, self._portal)
        self.models = Models(async_client.models, self._portal)

    @property
    def config(self) -> ClientConfig:
        """The settings this client runs with."""
        return self._async.config

    def close(self) -> None:
        """Release the client's connections and stop its loop thread; safe to call more than once."""
        if self._portal.stopped:
            return
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._portal.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._async).replace("<AsyncClient", "<Client", 1)
