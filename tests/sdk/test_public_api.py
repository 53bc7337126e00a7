"""The public surface: the exported names, the error re-exports, and async/sync parity."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import meshcore_sdk
from meshcore_sdk import errors
from meshcore_sdk._resources import AsyncChatCompletions, AsyncCompletions, AsyncModels
from meshcore_sdk._sync import ChatCompletions, Completions, Models
from meshcore_sdk.protocol import errors as protocol_errors

EXPORTED = [
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


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert meshcore_sdk.__all__ == EXPORTED
    for name in EXPORTED:
        assert getattr(meshcore_sdk, name) is not None


def test_the_whole_error_tree_is_reexported_unchanged() -> None:
    """meshcore_sdk.errors and the package root hand out the protocol's own classes."""
    assert errors.__all__ == protocol_errors.__all__
    for name in protocol_errors.__all__:
        assert getattr(errors, name) is getattr(protocol_errors, name)
    for cls in protocol_errors.ERROR_TABLE.values():
        if cls is not protocol_errors.MeshError:
            assert getattr(meshcore_sdk, cls.__name__) is cls


def _public(cls: type) -> dict[str, Any]:
    names = {name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))}
    return {name: getattr(cls, name) for name in names}


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


TWINS = [
    (meshcore_sdk.AsyncClient, meshcore_sdk.Client),
    (AsyncChatCompletions, ChatCompletions),
    (AsyncCompletions, Completions),
    (AsyncModels, Models),
    (meshcore_sdk.AsyncStream, meshcore_sdk.Stream),
]
RENAMED = {"aclose": "close"}


@pytest.mark.parametrize(("async_cls", "sync_cls"), TWINS, ids=lambda cls: cls.__name__)
def test_sync_twin_has_every_public_method_with_the_same_parameters(async_cls: type, sync_cls: type) -> None:
    """For each public method of an async class, the sync twin has one by the same name and parameters."""
    sync_methods = _public(sync_cls)
    for name, method in _public(async_cls).items():
        twin_name = RENAMED.get(name, name)
        assert twin_name in sync_methods, f"{sync_cls.__name__} lacks {twin_name}"
        assert _parameters(sync_methods[twin_name]) == _parameters(method), f"{sync_cls.__name__}.{twin_name}"
    if async_cls is meshcore_sdk.AsyncClient:
        assert _parameters(sync_cls) == _parameters(async_cls)  # the constructors


def test_sync_client_has_the_same_resources() -> None:
    """client.chat.completions, client.completions and client.models exist on both twins."""
    sync, asynchronous = meshcore_sdk.Client(), meshcore_sdk.AsyncClient()
    try:
        for path in ("chat.completions.create", "completions.create", "models.list", "models.retrieve"):
            for client in (sync, asynchronous):
                target: Any = client
                for part in path.split("."):
                    target = getattr(target, part)
                assert callable(target)
    finally:
        sync.close()


@pytest.mark.parametrize(("async_cls", "sync_cls"), [TWINS[0], TWINS[-1]], ids=["client", "stream"])
def test_twins_are_context_managers_and_streams_iterators(async_cls: type, sync_cls: type) -> None:
    """async with / async for on one side, with / for on the other."""
    for name in ("__aenter__", "__aexit__"):
        assert hasattr(async_cls, name)
    for name in ("__enter__", "__exit__"):
        assert hasattr(sync_cls, name)
    if sync_cls is meshcore_sdk.Stream:
        assert hasattr(async_cls, "__anext__") and hasattr(sync_cls, "__next__")
