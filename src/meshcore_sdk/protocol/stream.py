"""One request's frames from a worker, checked for order (``docs/protocol.md`` §3.3).

Theory of operation: a worker answers a ``generate`` with at most one
``accepted``, then ``token`` frames whose ``seq`` counts up from the position
the request started at, possibly interrupted by ``paused``, and ends with
exactly one ``done`` or ``error``.  :class:`WorkerStream` is a pure checker of
that grammar.  Whoever reads a worker (the router on a control link, the SDK on
a data channel) feeds it every frame for the request; a frame that breaks the
grammar raises :class:`OutOfOrderFrame`, and the reader then fails that one
request and nothing else.

===========  ==============================  ========  ==========================
phase        frame                           next      check
===========  ==============================  ========  ==========================
OPEN         accepted                        OPEN      once, before any token
OPEN         token                           OPEN      seq == next_seq, same attempt
OPEN         paused                          PAUSED    next_seq matches
PAUSED       token                           OPEN      seq == next_seq (resumed)
OPEN/PAUSED  done                            DONE      completion_tokens == next_seq
OPEN/PAUSED  error                           FAILED
DONE/FAILED  anything                        --        OutOfOrderFrame
===========  ==============================  ========  ==========================

After the reader sends ``resume`` with a new attempt (:meth:`WorkerStream.resumed`),
tokens and ``paused`` frames of older attempts are stale, sent before the worker
saw the resume: :meth:`WorkerStream.receive` returns False for them and the
reader drops them.  The first token of the new attempt must be at ``from_seq``.
"""

from __future__ import annotations

import codecs
import enum

from meshcore_sdk.protocol.errors import OutOfOrderFrame
from meshcore_sdk.protocol.frames import (
    AcceptedFrame,
    DoneFrame,
    ErrorFrame,
    Frame,
    PausedFrame,
    TokenFrame,
)

__all__ = ["StreamPhase", "Utf8Assembler", "WorkerStream"]


class StreamPhase(enum.Enum):
    """Where a request's answer stands."""

    OPEN = "open"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"


class WorkerStream:
    """Checks the frames a worker sends for one request.

    Args:
        request_id: the request the frames must name.
        attempt: the attempt number the tokens must carry.
        start_seq: the position of the first token expected (non-zero after a resume).
    """

    def __init__(self, request_id: str, *, attempt: int = 0, start_seq: int = 0) -> None:
        self.request_id = request_id
        self.attempt = attempt
        self.start_seq = start_seq
        self.next_seq = start_seq
        self.phase = StreamPhase.OPEN
        self._accepted = False

    @property
    def finished(self) -> bool:
        """Whether the stream has ended, with ``done`` or ``error``."""
        return self.phase in (StreamPhase.DONE, StreamPhase.FAILED)

    def receive(self, frame: Frame) -> bool:
        """Check ``frame`` against the grammar and advance.

        Returns:
            False for a stale frame (of an attempt older than the last resume), which the
            reader drops; True otherwise.

        Raises:
            OutOfOrderFrame: ``frame`` is not allowed here; the stream is failed.
        """
        if isinstance(frame, TokenFrame | PausedFrame) and self._is_stale(frame):
            return False
        try:
            self._check(frame)
        except OutOfOrderFrame:
            self.phase = StreamPhase.FAILED
            raise
        return True

    def resumed(self, *, attempt: int, from_seq: int) -> None:
        """The reader sent ``resume`` with ``attempt``: tokens of that attempt start at ``from_seq``."""
        if attempt <= self.attempt:
            raise OutOfOrderFrame(
                f"request {self.request_id}: resume attempt {attempt} is not newer than {self.attempt}"
            )
        self.attempt = attempt
        self.next_seq = from_seq
        if not self.finished:
            self.phase = StreamPhase.OPEN

    def _is_stale(self, frame: TokenFrame | PausedFrame) -> bool:
        return frame.request_id == self.request_id and frame.attempt < self.attempt and not self.finished

    def _check(self, frame: Frame) -> None:
        if self.finished:
            raise self._refuse(f"{frame.type} frame after the stream ended")
        if getattr(frame, "request_id", self.request_id) != self.request_id:
            raise self._refuse(f"{frame.type} frame names another request")
        match frame:
            case AcceptedFrame():
                if self._accepted or self.next_seq > self.start_seq:
                    raise self._refuse("accepted frame after the stream started")
                self._accepted = True
            case TokenFrame():
                self._check_token(frame)
            case PausedFrame():
                if frame.next_seq != self.next_seq:
                    raise self._refuse(f"paused at seq {frame.next_seq}, expected {self.next_seq}")
                self.phase = StreamPhase.PAUSED
            case DoneFrame():
                if frame.usage.completion_tokens != self.next_seq:
                    raise self._refuse(
                        f"done reports {frame.usage.completion_tokens} tokens, {self.next_seq} were sent"
                    )
                self.phase = StreamPhase.DONE
            case ErrorFrame():
                self.phase = StreamPhase.FAILED
            case _:
                raise self._refuse(f"{frame.type} frame is not part of a worker's answer")

    def _check_token(self, frame: TokenFrame) -> None:
        if frame.attempt != self.attempt:
            raise self._refuse(f"token of attempt {frame.attempt}, expected attempt {self.attempt}")
        if frame.seq != self.next_seq:
            raise self._refuse(f"token seq {frame.seq}, expected {self.next_seq}")
        self.next_seq += 1
        self.phase = StreamPhase.OPEN

    def _refuse(self, why: str) -> OutOfOrderFrame:
        return OutOfOrderFrame(f"request {self.request_id}: {why}", request_id=self.request_id)


class Utf8Assembler:
    """Turns token bytes into text, holding back a UTF-8 character split across tokens."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        """Return the text completed by ``data``."""
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Return what is held back at the end of the stream (U+FFFD for a broken tail)."""
        return self._decoder.decode(b"", final=True)
