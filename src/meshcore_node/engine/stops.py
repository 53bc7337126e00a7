"""Stop strings over a token stream: release text that can no longer start a stop.

Theory of operation: tokens arrive one at a time with their bytes.  A token is
*held* while the text at the end of the stream could still be the beginning of a
stop string, and *released* once it cannot.  When a stop string appears, every
token before it is released, the token in which it begins is released cut to the
bytes before it (or dropped, when the stop begins at the token's first byte), and
the stream ends.  The released text is therefore always exactly the generated
text up to the first stop string, and never a byte of the stop itself.

This module is pure: tokens and bytes in, released tokens out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Piece", "StopMatcher"]


@dataclass(frozen=True, slots=True)
class Piece:
    """A token and the bytes of it that are to be shown."""

    token_id: int
    data: bytes


class StopMatcher:
    """Holds back tokens until they cannot be part of a stop string.

    Args:
        stops: the stop strings; empty ones are ignored.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s.encode("utf-8") for s in stops if s]
        self._held: list[Piece] = []
        self.stopped = False

    def feed(self, token_id: int, data: bytes) -> list[Piece]:
        """Add one token; return the pieces that are now safe to release."""
        if self.stopped:
            return []
        self._held.append(Piece(token_id, data))
        if not self._stops:
            return self._release_all()
        text = b"".join(piece.data for piece in self._held)
        hit = self._first_stop(text)
        if hit is not None:
            self.stopped = True
            return self._cut_at(hit)
        return self._release_before(len(text) - self._open_prefix(text))

    def flush(self) -> list[Piece]:
        """Release whatever is still held (the stream ended without a stop)."""
        return [] if self.stopped else self._release_all()

    def _first_stop(self, text: bytes) -> int | None:
        found = [index for stop in self._stops if (index := text.find(stop)) >= 0]
        return min(found) if found else None

    def _open_prefix(self, text: bytes) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release_before(self, limit: int) -> list[Piece]:
        """Release whole leading tokens whose bytes all lie before ``limit``."""
        released: list[Piece] = []
        offset = 0
        while self._held and offset + len(self._held[0].data) <= limit:
            piece = self._held.pop(0)
            offset += len(piece.data)
            released.append(piece)
        return released

    def _cut_at(self, limit: int) -> list[Piece]:
        released = self._release_before(limit)
        offset = sum(len(piece.data) for piece in released)
        if self._held and offset < limit:
            head = self._held[0]
            released.append(Piece(head.token_id, head.data[: limit - offset]))
        self._held.clear()
        return released

    def _release_all(self) -> list[Piece]:
        released, self._held = self._held, []
        return released
