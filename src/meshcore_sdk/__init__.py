"""Meshcore SDK: OpenAI-shaped clients for a peer-to-peer LLM mesh.

::

    from meshcore_sdk import Client

    with Client() as client:                       # MESHCORE_ROUTER_URL, then http://127.0.0.1:8080
        stream = client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        with stream:
            for chunk in stream:
                print(chunk.choices[0].delta.content or "", end="")
        print(stream.events)                       # timed events: first token, worker, finish

:class:`AsyncClient` has the same names, awaitable.  Every exception is a
:class:`MeshError` (:mod:`meshcore_sdk.errors`).  ``MockTransport`` (httpx's)
lets your own tests answer requests without a router.

Importing the package loads no I/O library: the clients (and httpx and anyio)
load on the first use of their names, so that ``meshcore_sdk.protocol`` stays
pure for the node and the router.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meshcore_sdk.config import ClientConfig, Mode
from meshcore_sdk.errors import (
    AuthenticationError,
    BadRequest,
    ConfigError,
    ConnectError,
    ConnectionLost,
    ContextLengthExceeded,
    EngineCrashed,
    ErrorCode,
    FrameTooDeep,
    FrameTooLarge,
    InternalError,
    LocalProtocolError,
    MalformedFrame,
    MeshError,
    MeshTimeout,
    ModelNotFound,
    ModelUnavailable,
    NoCapacity,
    OutOfOrderFrame,
    PermissionDenied,
    ProofError,
    ProtocolError,
    RateLimited,
    ReceiptInvalid,
    ReceiptLate,
    RecordInvalid,
    RemoteProtocolError,
    RouterError,
    StreamClosed,
    SwarmExhausted,
    TicketError,
    TicketExpired,
    TicketForged,
    TicketReplayed,
    TicketUnknownKey,
    TicketWrongAlgorithm,
    TicketWrongAudience,
    TransportError,
    VersionMismatch,
    WorkerError,
    WorkerLost,
)
from meshcore_sdk.events import (
    DirectConnected,
    Failover,
    FirstToken,
    LeaderElected,
    RelayUsed,
    RequestRetried,
    ResponseStarted,
    StreamEvent,
    StreamFailed,
    StreamFinished,
    WorkerAssigned,
    WorkerDropped,
    WorkerPaused,
    WorkerReleased,
)
from meshcore_sdk.types import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChoiceDelta,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionUsage,
    MeshcoreMeta,
    Model,
    ModelList,
    ModelMeta,
)

if TYPE_CHECKING:
    from httpx import MockTransport

    from meshcore_sdk._base import NOT_GIVEN, NotGiven, Runtime
    from meshcore_sdk._client import AsyncClient
    from meshcore_sdk._sync import Client, Stream
    from meshcore_sdk.streaming import AsyncStream

_LAZY: dict[str, str] = {
    "NOT_GIVEN": "meshcore_sdk._base",
    "NotGiven": "meshcore_sdk._base",
    "Runtime": "meshcore_sdk._base",
    "AsyncClient": "meshcore_sdk._client",
    "Client": "meshcore_sdk._sync",
    "Stream": "meshcore_sdk._sync",
    "AsyncStream": "meshcore_sdk.streaming",
    "MockTransport": "httpx",
}
"""Names whose modules import httpx or anyio, loaded when first asked for."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meshcore_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "NOT_GIVEN",
    "AsyncClient",
    "AsyncStream",
    "AuthenticationError",
    "BadRequest",
    "ChatChoice",
    "ChatChunkChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChoiceDelta",
    "Client",
    "ClientConfig",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionUsage",
    "ConfigError",
    "ConnectError",
    "ConnectionLost",
    "ContextLengthExceeded",
    "DirectConnected",
    "WorkerReleased",
    "WorkerPaused",
    "LeaderElected",
    "Failover",
    "EngineCrashed",
    "ErrorCode",
    "FirstToken",
    "FrameTooDeep",
    "FrameTooLarge",
    "InternalError",
    "LocalProtocolError",
    "MalformedFrame",
    "MeshError",
    "MeshTimeout",
    "MeshcoreMeta",
    "MockTransport",
    "Mode",
    "Model",
    "ModelList",
    "ModelMeta",
    "ModelNotFound",
    "ModelUnavailable",
    "NoCapacity",
    "NotGiven",
    "OutOfOrderFrame",
    "PermissionDenied",
    "ProofError",
    "ReceiptInvalid",
    "ReceiptLate",
    "RecordInvalid",
    "ProtocolError",
    "RateLimited",
    "RelayUsed",
    "RemoteProtocolError",
    "RequestRetried",
    "ResponseStarted",
    "RouterError",
    "Runtime",
    "Stream",
    "StreamClosed",
    "SwarmExhausted",
    "StreamEvent",
    "StreamFailed",
    "StreamFinished",
    "TicketError",
    "TicketExpired",
    "TicketForged",
    "TicketReplayed",
    "TicketUnknownKey",
    "TicketWrongAlgorithm",
    "TicketWrongAudience",
    "TransportError",
    "VersionMismatch",
    "WorkerAssigned",
    "WorkerDropped",
    "WorkerError",
    "WorkerLost",
]
