"""What happened while a stream ran, as a list of timed, typed events.

Every stream keeps ``stream.events``: one :class:`StreamEvent` per notable moment,
in order, each with ``at_s``, the seconds since the request was first sent
(the client's monotonic clock).  Each kind of event is a frozen dataclass with
its own ``kind`` name, so a reader can match on the class or on the name::

    for event in stream.events:
        print(f"{event.at_s * 1000:7.1f} ms  {event.kind}")

Proxy mode records :class:`RequestRetried`, :class:`ResponseStarted`,
:class:`WorkerAssigned`, :class:`FirstToken`, :class:`StreamFinished` and
:class:`StreamFailed`.  Direct mode adds :class:`WorkerDropped` (a worker missed
its connection deadline), :class:`DirectConnected` (the data channel opened, and
whether a TURN relay carries it) and :class:`RelayUsed`.  Swarm mode adds
:class:`LeaderElected`, :class:`WorkerPaused`, :class:`Failover` and
:class:`WorkerReleased`.  Later versions may add kinds; readers should skip kinds
they do not know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "DirectConnected",
    "EventLog",
    "FirstToken",
    "RelayUsed",
    "RequestRetried",
    "ResponseStarted",
    "StreamEvent",
    "StreamFailed",
    "StreamFinished",
    "WorkerAssigned",
    "WorkerDropped",
    "LeaderElected",
    "WorkerPaused",
    "Failover",
    "WorkerReleased",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEvent:
    """Something that happened to a stream.

    Attributes:
        at_s: seconds since the request was first sent.
        kind: the event's name, one per subclass.
    """

    at_s: float
    kind: str = field(default="event", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRetried(StreamEvent):
    """An attempt failed before anything was delivered, and the client will try again.

    Attributes:
        attempt: the number of the attempt that will follow (1 for the first retry).
        delay_s: how long the client waits before it.
        reason: the failure, as the wire code of its error class.
    """

    attempt: int
    delay_s: float
    reason: str
    kind: str = field(default="request_retried", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseStarted(StreamEvent):
    """The router accepted the request and started the stream.

    Attributes:
        request_id: the router's id for the request (``x-request-id``).
        attempts: how many attempts it took, 1 when the first one succeeded.
    """

    request_id: str | None
    attempts: int
    kind: str = field(default="response_started", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerAssigned(StreamEvent):
    """A chunk named a worker other than the one before it (or the first one).

    Attributes:
        worker_id: the worker now producing tokens.
        previous_worker_id: the worker that produced tokens before, if any.
    """

    worker_id: str
    previous_worker_id: str | None = None
    kind: str = field(default="worker_assigned", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstToken(StreamEvent):
    """The first chunk that carries a token arrived; ``at_s`` is the time to first token.

    Attributes:
        worker_id: the worker that produced it.
        seq: its position, normally 0.
    """

    worker_id: str | None
    seq: int | None
    kind: str = field(default="first_token", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFinished(StreamEvent):
    """The stream ended normally.

    Attributes:
        finish_reason: why generation stopped (``stop``, ``length``, ``cancelled``), if said.
        chunks: how many chunks the stream delivered.
    """

    finish_reason: str | None
    chunks: int
    kind: str = field(default="finished", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFailed(StreamEvent):
    """The stream ended with an error, which was raised to the reader.

    Attributes:
        code: the wire code of the error's class.
        message: the error's sentence.
    """

    code: str
    message: str
    kind: str = field(default="failed", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectConnected(StreamEvent):
    """Direct mode: the data channel to a worker opened.

    Attributes:
        worker_id: the worker.
        setup_s: seconds from the offer's creation to the open channel.
        relay: whether a TURN relay carries the channel (the direct path was not used).
        local_candidate: the type of this side's selected candidate (``host``, ``srflx``, ``relay``).
        remote_candidate: the type of the worker's selected candidate.
    """

    worker_id: str
    setup_s: float
    relay: bool
    local_candidate: str | None = None
    remote_candidate: str | None = None
    kind: str = field(default="direct_connected", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayUsed(StreamEvent):
    """Direct mode: the stream goes through a TURN relay, not the direct path.

    Attributes:
        worker_id: the worker at the other end.
    """

    worker_id: str
    kind: str = field(default="relay_used", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDropped(StreamEvent):
    """Direct mode: a worker could not be reached within its deadline and was dropped.

    Attributes:
        worker_id: the worker.
        deadline_s: the deadline it missed, in seconds.
        reason: the failure, as the wire code of its error class.
    """

    worker_id: str
    deadline_s: float
    reason: str
    kind: str = field(default="worker_dropped", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderElected(StreamEvent):
    """Swarm mode: ``worker_id`` leads, in leadership ``term`` (1 for the first leader).

    Attributes:
        worker_id: the new leader.
        term: counts leaders, starting at 1.
    """

    worker_id: str
    term: int
    kind: str = field(default="leader_elected", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerPaused(StreamEvent):
    """Swarm mode: a follower was told to pause, keeping the prompt in its cache.

    Attributes:
        worker_id: the follower.
    """

    worker_id: str
    kind: str = field(default="paused", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failover(StreamEvent):
    """Swarm mode: the leader failed and another worker takes over at ``from_seq``.

    Attributes:
        from_worker_id: the leader that failed.
        to_worker_id: the follower resumed, or None when a fresh worker was asked for.
        from_seq: the first position the new worker is to produce.
        reason: why the leader was given up.
    """

    from_worker_id: str
    to_worker_id: str | None
    from_seq: int
    reason: str
    kind: str = field(default="failover", init=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReleased(StreamEvent):
    """Swarm mode: a worker was cancelled (released once the leader was healthy, or lost).

    Attributes:
        worker_id: the worker.
        reason: why.
    """

    worker_id: str
    reason: str
    kind: str = field(default="released", init=False)


class EventLog:
    """An append-only list of events, timed by one clock from one start.

    Args:
        clock: a monotonic clock in seconds.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start_s = clock()
        self.events: list[StreamEvent] = []

    def elapsed_s(self) -> float:
        """Seconds since the log was started."""
        return self._clock() - self._start_s

    def record(self, event: StreamEvent) -> None:
        """Append ``event``; build it with ``at_s=log.elapsed_s()``."""
        self.events.append(event)
