"""The seams every client mode shares: time and chance, the transport, the chunk source.

A client talks to workers through a :class:`Transport` (proxy mode's is
:class:`meshcore_sdk.proxy.transport.ProxyTransport`; direct and swarm modes will
bring their own) and reads streams from a :class:`ChunkSource`.  Whatever waits,
draws random numbers or reads a clock does it through :class:`Runtime`, so tests
pass fakes and never sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio

from meshcore_sdk.events import EventLog

__all__ = ["NOT_GIVEN", "ChunkSource", "NotGiven", "Runtime", "Transport", "resolve_timeout_s"]


@dataclass(frozen=True, slots=True)
class Runtime:
    """A client's collaborators for time and chance; tests pass fakes.

    Attributes:
        sleep: waits that many seconds (between retries).
        rng: draws the jitter of retry delays.
        clock: a monotonic clock in seconds, for the times of stream events.
        wall_clock: seconds since the epoch, to read an HTTP date in ``Retry-After``.
    """

    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time


class NotGiven:
    """The type of :data:`NOT_GIVEN`: an argument left out, where ``None`` means something."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()
"""Marks a per-call option left out, so the client's setting applies."""


def resolve_timeout_s(per_call: float | NotGiven | None, client_default_s: float | None) -> float | None:
    """The timeout of one call: its own if given (``None`` waits for ever), else the client's."""
    return client_default_s if isinstance(per_call, NotGiven) else per_call


class ChunkSource(Protocol):
    """Where a stream's chunks come from, as decoded JSON objects."""

    async def receive(self) -> Mapping[str, Any] | None:
        """The next chunk, or ``None`` at the normal end of the stream.

        Raises:
            MeshError: the stream failed; the source is finished.
        """
        ...

    async def aclose(self) -> None:
        """Release the connection; safe to call more than once."""
        ...


class Transport(Protocol):
    """How a client reaches workers: one implementation per mode."""

    async def request(self, method: str, path: str, *, body: Mapping[str, Any] | None, timeout_s: float | None) -> Any:
        """Send one request and return its decoded JSON answer.

        Raises:
            MeshError: the request failed after any retries.
        """
        ...

    async def open_stream(
        self, path: str, *, body: Mapping[str, Any], timeout_s: float | None, log: EventLog
    ) -> tuple[ChunkSource, str | None]:
        """Start a streamed request; return its chunk source and request id.

        Retries happen here, before anything is delivered, and are recorded in ``log``.

        Raises:
            MeshError: the request failed after any retries.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; safe to call more than once."""
        ...
