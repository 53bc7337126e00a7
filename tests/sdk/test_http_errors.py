"""Mapping the router's error bodies and events, and httpx's exceptions, into the error tree."""

from __future__ import annotations

import json

import httpx
import httpx_sse
import pydantic
import pytest

from meshcore_sdk.protocol.codec import FrameLimits
from meshcore_sdk.protocol.errors import (
    ERROR_TABLE,
    BadRequest,
    ConfigError,
    ConnectError,
    ConnectionLost,
    EngineCrashed,
    ErrorCode,
    FrameTooDeep,
    FrameTooLarge,
    InternalError,
    MalformedFrame,
    MeshError,
    MeshTimeout,
    NoCapacity,
    RateLimited,
    RemoteProtocolError,
    RouterError,
    TransportError,
    WorkerError,
)
from meshcore_sdk.proxy.http_errors import error_from_payload, error_from_response, map_httpx_errors
from meshcore_sdk.proxy.sse import decode_event_data


def _body(code: object, message: str = "m") -> bytes:
    return json.dumps({"error": {"message": message, "type": "t", "param": None, "code": code}}).encode()


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_wire_code_maps_to_its_class(code: ErrorCode) -> None:
    """The code decides, whatever the status, through the protocol's one table."""
    error = error_from_response(500, _body(code.value), {"x-request-id": "r-9"})
    assert type(error) is ERROR_TABLE[code]
    assert (error.message, error.request_id) == ("m", "r-9")


@pytest.mark.parametrize(
    ("status", "content", "expected"),
    [
        (429, _body("too_many"), RateLimited),
        (503, _body(None), NoCapacity),
        (500, b"Internal Server Error", InternalError),
        (599, b"", InternalError),
        (418, b"{}", RouterError),
        (422, json.dumps({"detail": [{"loc": ["body"], "msg": "bad"}]}).encode(), BadRequest),
        (400, b"[1, 2]", BadRequest),
        (502, _body(7), WorkerError),
    ],
)
def test_unknown_codes_fall_back_on_the_status(status: int, content: bytes, expected: type[MeshError]) -> None:
    error = error_from_response(status, content, {})
    assert type(error) is expected
    assert f"HTTP {status}" in error.message


def test_retry_after_is_carried() -> None:
    error = error_from_response(503, _body("no_capacity"), {"retry-after": "4"})
    assert error.retry_after_s == 4.0 and error.retryable


def test_error_event_payloads() -> None:
    known = error_from_payload({"error": {"message": "boom", "code": "engine_crashed"}}, request_id="r", worker_id="w")
    assert type(known) is EngineCrashed and (known.request_id, known.worker_id) == ("r", "w")
    assert type(error_from_payload({"error": "flat"})) is WorkerError


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx.ConnectTimeout("t"), MeshTimeout),
        (httpx.ReadTimeout("t"), MeshTimeout),
        (httpx.WriteTimeout("t"), MeshTimeout),
        (httpx.PoolTimeout("t"), MeshTimeout),
        (httpx.ConnectError("c"), ConnectError),
        (httpx.ReadError("r"), ConnectionLost),
        (httpx.WriteError("w"), ConnectionLost),
        (httpx.RemoteProtocolError("p"), ConnectionLost),
        (httpx.UnsupportedProtocol("u"), ConfigError),
        (httpx.InvalidURL("u"), ConfigError),
        (httpx.DecodingError("d"), RemoteProtocolError),
        (httpx_sse.SSEError("s"), RemoteProtocolError),
        (json.JSONDecodeError("j", "x", 0), RemoteProtocolError),
        (httpx.ProxyError("x"), TransportError),
        (httpx.StreamConsumed(), TransportError),
    ],
)
def test_httpx_exceptions_are_mapped_and_chained(raised: Exception, expected: type[MeshError]) -> None:
    with pytest.raises(expected) as caught, map_httpx_errors(request_id="r-1"):
        raise raised
    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised
    assert caught.value.request_id == "r-1"


def test_pydantic_errors_are_mapped() -> None:
    with pytest.raises(RemoteProtocolError), map_httpx_errors():
        pydantic.TypeAdapter(int).validate_python("x")


def test_mesh_errors_pass_through_untouched() -> None:
    original = NoCapacity("busy")
    with pytest.raises(NoCapacity) as caught, map_httpx_errors():
        raise original
    assert caught.value is original


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("x" * 100, FrameTooLarge),
        ("[" * 9 + "]" * 9, FrameTooDeep),
        ("{oops", MalformedFrame),
        ("[1]", MalformedFrame),
    ],
)
def test_event_data_is_capped_before_parsing(data: str, expected: type[MeshError]) -> None:
    with pytest.raises(expected):
        decode_event_data(data, FrameLimits(max_frame_bytes=64, max_depth=8))


def test_event_data_within_the_caps_parses() -> None:
    assert decode_event_data('{"a": [1]}') == {"a": [1]}
