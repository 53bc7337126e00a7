"""Encode and decode frames, with size and depth caps applied before parsing.

A frame is refused in three layers (``docs/protocol.md`` §1.2): first by size
(:class:`FrameTooLarge`), then by nesting depth, found by a scan that parses
nothing (:class:`FrameTooDeep`), and only then parsed and validated against the
frame schemas (:class:`MalformedFrame`).  A hostile peer can therefore never make
the JSON parser or pydantic work on more than ``max_frame_bytes`` of input or
recurse deeper than ``max_depth``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from meshcore_sdk.protocol.errors import FrameTooDeep, FrameTooLarge, MalformedFrame
from meshcore_sdk.protocol.frames import FRAME, Frame

__all__ = ["FrameLimits", "decode_frame", "encode_frame", "json_depth"]

_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Caps applied to every received frame.

    Attributes:
        max_frame_bytes: largest accepted frame, in UTF-8 bytes.
        max_depth: deepest accepted nesting of JSON arrays and objects.
    """

    max_frame_bytes: int = 1 << 20
    max_depth: int = 16


def json_depth(data: bytes, *, give_up_above: int) -> int:
    """Return the nesting depth of JSON text without parsing it, as far as the cap needs.

    Brackets inside strings do not count.  The scan stops as soon as the depth
    passes ``give_up_above`` and returns that depth.  Text with at most
    ``give_up_above`` brackets in all cannot pass the cap and is not scanned: 0.
    """
    if data.count(b"[") + data.count(b"{") <= give_up_above:
        return 0  # cannot exceed the cap: skip the byte-by-byte scan
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > give_up_above:
                    return deepest
        elif byte in _CLOSE:
            depth -= 1
    return deepest


def decode_frame(data: str | bytes, limits: FrameLimits = FrameLimits(), *, tolerant: bool = False) -> Frame:
    """Check ``data`` against ``limits``, then parse it into a frame.

    Args:
        data: one frame as JSON text.
        limits: the caps to apply before parsing.
        tolerant: ignore unknown fields (a client reading a newer peer) instead of refusing them.

    Raises:
        FrameTooLarge: ``data`` is longer than ``limits.max_frame_bytes``.
        FrameTooDeep: ``data`` nests deeper than ``limits.max_depth``.
        MalformedFrame: ``data`` is not JSON or matches no frame schema.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > limits.max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(raw)} bytes exceeds the cap of {limits.max_frame_bytes} bytes")
    if json_depth(raw, give_up_above=limits.max_depth) > limits.max_depth:
        raise FrameTooDeep(f"frame nests deeper than {limits.max_depth} levels")
    try:
        return FRAME.validate_json(raw, extra="ignore" if tolerant else None)
    except ValidationError as exc:
        raise MalformedFrame(_describe(exc)) from exc


def encode_frame(frame: BaseModel) -> str:
    """Serialise a frame to compact JSON text."""
    return frame.model_dump_json(exclude_none=True)


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "frame"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"malformed frame: {where}: {first['msg']}{more}"
