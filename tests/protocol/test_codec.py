"""The codec: caps before parsing, then one schema per ``type`` (docs/protocol.md §1.2)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_sdk.protocol import (
    CommandFrame,
    CommandKind,
    FrameLimits,
    MeshError,
    PauseFrame,
    TokenFrame,
    decode_frame,
    encode_frame,
)
from meshcore_sdk.protocol.codec import json_depth
from meshcore_sdk.protocol.errors import FrameTooDeep, FrameTooLarge, MalformedFrame

from .strategies import PROPERTY, generate_frames, json_values, token_frames

PAUSE = '{"type":"pause","request_id":"r-1"}'


def command_with_args(args_json: str) -> str:
    """A ``command`` frame whose ``args`` object is given as raw JSON text (depth 1 + depth of args)."""
    return '{"type":"command","command":"audit","args":' + args_json + "}"


def nested_args(levels: int) -> str:
    """An ``args`` object nesting ``levels`` objects deep, with brackets in every string."""
    return '{"k":' * (levels - 1) + '{"k":"[{["' + "}" * levels


def reference_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value: arrays and objects count one level each."""
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


# --- size cap ---------------------------------------------------------------------------


def test_a_frame_at_the_size_cap_is_decoded() -> None:
    """A frame of exactly ``max_frame_bytes`` bytes passes the size check."""
    limits = FrameLimits(max_frame_bytes=len(PAUSE))

    assert decode_frame(PAUSE, limits) == PauseFrame(request_id="r-1")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PAUSE + " ", id="one-byte-over"),
        pytest.param("[" * 40, id="deep-and-malformed"),
        pytest.param("x" * 40, id="not-json"),
        pytest.param('{"type":"pause","request_id":"ééé"}', id="fits-in-characters-not-in-utf8-bytes"),
    ],
)
def test_an_oversized_frame_is_refused_before_anything_else(data: str) -> None:
    """Size is checked first, in UTF-8 bytes: an oversized frame is never scanned for depth or parsed."""
    limits = FrameLimits(max_frame_bytes=len(PAUSE))
    assert len(data) <= len(PAUSE) + 5

    with pytest.raises(FrameTooLarge):
        decode_frame(data, limits)


def test_the_default_size_cap_is_one_mebibyte() -> None:
    """§1.2: at most 1 MiB of UTF-8, whether given as bytes or as text."""
    padding = 1024 * 1024 - len(command_with_args('{"pad":""}'))
    fits = command_with_args('{"pad":"' + "a" * padding + '"}')

    assert isinstance(decode_frame(fits), CommandFrame)
    with pytest.raises(FrameTooLarge):
        decode_frame(fits + " ")
    with pytest.raises(FrameTooLarge):
        decode_frame((fits + " ").encode())


# --- depth cap --------------------------------------------------------------------------


def test_a_frame_at_the_depth_cap_is_decoded() -> None:
    """A frame nesting exactly 16 levels (the frame object plus 15 in ``args``) passes."""
    frame = decode_frame(command_with_args(nested_args(15)))

    assert isinstance(frame, CommandFrame)
    assert frame.command is CommandKind.AUDIT


def test_a_frame_past_the_depth_cap_is_refused() -> None:
    """17 levels is one too many for the default cap of 16."""
    with pytest.raises(FrameTooDeep):
        decode_frame(command_with_args(nested_args(16)))


@pytest.mark.parametrize(
    ("args_json", "expected"),
    [
        pytest.param('{"k":"[[[[{{{{"}', CommandFrame, id="brackets-in-a-string"),
        pytest.param('{"k":"\\"[[[[{{{{"}', CommandFrame, id="escaped-quote-keeps-the-string-open"),
        pytest.param('{"[[[[":"]]]]"}', CommandFrame, id="brackets-in-a-key"),
        pytest.param('{"k":"\\\\","l":[[1]]}', FrameTooDeep, id="escaped-backslash-closes-the-string"),
        pytest.param('{"k":[[1]]}', FrameTooDeep, id="real-nesting"),
        pytest.param('{"k":[[', FrameTooDeep, id="deep-before-malformed"),
        pytest.param('{"k":[1]', MalformedFrame, id="shallow-malformed"),
    ],
)
def test_the_depth_scan_skips_strings(args_json: str, expected: type) -> None:
    """With a cap of 3, only brackets outside strings count; depth is refused before the JSON is parsed."""
    data = command_with_args(args_json)
    limits = FrameLimits(max_depth=3)

    if issubclass(expected, MeshError):
        with pytest.raises(expected):
            decode_frame(data, limits)
    else:
        assert decode_frame(data, limits) == CommandFrame(command=CommandKind.AUDIT, args=json.loads(args_json))


@PROPERTY
@given(value=json_values, cap=st.integers(0, 8))
def test_json_depth_decides_the_cap_as_a_parser_would(value: Any, cap: int) -> None:
    """For any JSON value the scan passes the cap exactly when the value nests deeper than the cap."""
    data = json.dumps(value, ensure_ascii=False).encode()

    assert (json_depth(data, give_up_above=cap) > cap) == (reference_depth(value) > cap)


@PROPERTY
@given(value=json_values, cap=st.integers(0, 8))
def test_json_depth_scans_to_the_exact_depth_or_one_past_the_cap(value: Any, cap: int) -> None:
    """With enough brackets to force a scan (some hidden in a string), the scan returns the true depth.

    The scan gives up at the first level past the cap and returns that level.
    """
    padded = [value, "[" * (cap + 1)]
    data = json.dumps(padded, ensure_ascii=False).encode()

    assert json_depth(data, give_up_above=cap) == min(reference_depth(padded), cap + 1)


# --- schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"null", id="null"),
        pytest.param(b'["pause"]', id="array"),
        pytest.param(PAUSE + PAUSE, id="two-frames"),
        pytest.param(b'{"request_id":"r-1"}', id="no-type"),
        pytest.param(b'{"type":"pasue","request_id":"r-1"}', id="unknown-type"),
        pytest.param(b'{"type":1,"request_id":"r-1"}', id="type-not-a-string"),
        pytest.param(b'{"type":"pause"}', id="missing-field"),
        pytest.param(b'{"type":"pause","request_id":7}', id="wrong-field-type"),
        pytest.param(b'{"type":"pause","request_id":"r-1","priority":9}', id="unknown-field"),
        pytest.param(b'{"type":"paused","request_id":"r-1","next_seq":-1}', id="negative-count"),
        pytest.param(
            b'{"type":"token","request_id":"r-1","seq":0,"token_id":1,"text_bytes":"!!!!","t_worker":0}',
            id="text-bytes-not-base64",
        ),
        pytest.param(
            b'{"type":"heartbeat","status":"READY","telemetry":{"ram_free_bytes":1,"gpu":true}}',
            id="unknown-nested-field",
        ),
    ],
)
def test_a_frame_that_matches_no_schema_is_malformed(data: str | bytes) -> None:
    """Anything that is not one valid frame raises MalformedFrame, with the code malformed_frame."""
    with pytest.raises(MalformedFrame) as info:
        decode_frame(data)

    assert (info.value.code, str(info.value).startswith("malformed frame: ")) == ("malformed_frame", True)


def test_tolerant_decoding_ignores_unknown_fields() -> None:
    """§1.1: the SDK reading a newer peer's answer drops fields it does not know."""
    frame = decode_frame('{"type":"pause","request_id":"r-1","priority":9}', tolerant=True)

    assert isinstance(frame, PauseFrame)
    assert frame.model_dump() == {"type": "pause", "request_id": "r-1"}


def test_tolerant_decoding_ignores_unknown_nested_fields() -> None:
    """A newer peer's ``done`` with an extra usage field still reads in tolerant mode."""
    data = (
        '{"type":"done","request_id":"r-1","finish_reason":"stop",'
        '"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"cached_tokens":1}}'
    )

    assert decode_frame(data, tolerant=True).model_dump(mode="json") == {
        "type": "done",
        "request_id": "r-1",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "proof": None,
    }


@pytest.mark.parametrize(
    "data",
    [
        pytest.param('{"type":"pasue","request_id":"r-1"}', id="unknown-type"),
        pytest.param('{"type":"pause","extra":1}', id="missing-field"),
        pytest.param('{"type":"paused","request_id":"r-1","next_seq":-1,"extra":1}', id="invalid-value"),
    ],
)
def test_tolerant_decoding_still_validates_what_it_knows(data: str) -> None:
    """Tolerance covers unknown fields only: unknown types and bad known fields are still malformed."""
    with pytest.raises(MalformedFrame):
        decode_frame(data, tolerant=True)


# --- properties -------------------------------------------------------------------------


@PROPERTY
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_mesh_errors(data: bytes) -> None:
    """Whatever bytes a peer sends, decoding yields a frame or raises from the MeshError tree."""
    with contextlib.suppress(MeshError):
        decode_frame(data, FrameLimits(max_frame_bytes=150, max_depth=4))


@PROPERTY
@given(data=st.text(st.characters(categories=["Cs"]) | st.sampled_from('{}[]":,\\ ') | st.characters(), max_size=60))
def test_arbitrary_text_raises_only_mesh_errors(data: str) -> None:
    """Text input (lone surrogates included) yields a frame or raises from the MeshError tree."""
    with contextlib.suppress(MeshError):
        decode_frame(data, FrameLimits(max_frame_bytes=100, max_depth=4))


FRAME_TYPES = [
    "hello", "welcome", "error", "generate", "accepted", "pause", "resume", "cancel",
    "token", "paused", "done", "register", "registered", "heartbeat", "signal", "command",
]  # fmt: skip


@PROPERTY
@given(
    frame_type=st.sampled_from(FRAME_TYPES),
    fields=st.dictionaries(
        st.sampled_from(["request_id", "seq", "usage", "messages", "prompt", "params", "text_bytes", "x"]),
        json_values,
        max_size=6,
    ),
    tolerant=st.booleans(),
)
def test_frame_shaped_objects_raise_only_mesh_errors(frame_type: str, fields: dict[str, Any], tolerant: bool) -> None:
    """Objects with a real ``type`` and junk fields reach every validator and still raise only MeshErrors."""
    with contextlib.suppress(MeshError):
        decode_frame(json.dumps({"type": frame_type, **fields}), tolerant=tolerant)


@PROPERTY
@given(frame=token_frames)
def test_token_frames_round_trip(frame: Any) -> None:
    """Any token frame, its raw bytes included, decodes from its encoding to an equal frame."""
    assert decode_frame(encode_frame(frame)) == frame


@PROPERTY
@given(frame=generate_frames)
def test_generate_frames_round_trip(frame: Any) -> None:
    """Any generate frame, by prompt or by messages, decodes from its encoding to an equal frame."""
    assert decode_frame(encode_frame(frame)) == frame


def test_token_bytes_travel_as_standard_base64() -> None:
    """§3.3: ``text_bytes`` is base64 (RFC 4648 §4), which any peer, a browser's ``atob`` included, can read."""
    frame = TokenFrame(request_id="r-1", seq=0, token_id=1, text_bytes=b"\xfb\xff\xbe", t_worker=0.0)

    assert encode_frame(frame) == (
        '{"type":"token","request_id":"r-1","attempt":0,"seq":0,"token_id":1,"text_bytes":"+/++","t_worker":0.0}'
    )
