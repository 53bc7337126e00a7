"""Swarm mode's driver: copies of one prompt on several workers, one stream out.

The transport sends the prompt as ``swarm_size`` copies (legs) and hands every frame that comes
back, checked (:class:`WorkerStream`), to the pure :class:`SwarmMachine`; the machine's actions
are carried out on the legs (``pause``, ``resume`` with a new attempt, ``cancel``, one more copy
for a cold catch-up) and its deliveries become the OpenAI chunks the application reads.

How the legs travel is a :class:`meshcore_sdk.swarm.links.LegLink`: over direct connections
(:class:`meshcore_sdk.swarm.direct_legs.DirectLegs`: a ticket and a WebRTC data channel per leg,
``docs/protocol.md`` §8) or through the router (:class:`meshcore_sdk.swarm.links.RouterStreamLink`:
every leg on one websocket to the frame stream ``/mesh/v1/stream``, §5, whose router places the
copies of one ``group`` on distinct workers).  The machine and the bookkeeping here are the same
for both.

:class:`SwarmSource` is pulled: each :meth:`SwarmSource.receive` reads the link and runs the
machine until a chunk is ready or a deadline of the machine passes, so no task runs behind the
application's back (but a direct leg's connect task, which its link owns).  The machine's clock
is the event loop's, the same one ``asyncio.timeout_at`` uses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from meshcore_sdk._base import Runtime, Transport
from meshcore_sdk._framed import request_through_stream
from meshcore_sdk.config import SwarmOptions
from meshcore_sdk.events import EventLog, Failover, LeaderElected, ResponseStarted, WorkerPaused, WorkerReleased
from meshcore_sdk.openai_format import (
    ChatCompletionRequest,
    ChunkFormatter,
    ResponseMeta,
    parse_stream_request,
)
from meshcore_sdk.openai_tools import FunctionSpec
from meshcore_sdk.protocol import (
    AcceptedFrame,
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    FinishReason,
    FrameLimits,
    GenerateFrame,
    PausedFrame,
    PauseFrame,
    ResumeFrame,
    TokenFrame,
    Usage,
    WorkerStream,
)
from meshcore_sdk.protocol.errors import OutOfOrderFrame, StreamClosed, SwarmExhausted
from meshcore_sdk.swarm.budget import HedgeBudget
from meshcore_sdk.swarm.links import FrameArrived, LegControl, LegLink, LegsLost, LinkEvent, RouterStreamLink
from meshcore_sdk.swarm.machine import (
    Cancel,
    CatchUp,
    Deliver,
    Fail,
    FailoverStarted,
    Finish,
    Pause,
    RequestWorker,
    Resume,
    SwarmAction,
    SwarmMachine,
    TokenReceived,
    WorkerAdded,
    WorkerFinished,
    WorkerLost,
)
from meshcore_sdk.swarm.machine import LeaderElected as Elected

if TYPE_CHECKING:
    from meshcore_sdk.direct.dial import Dialer

__all__ = ["SwarmSource", "SwarmTransport"]

_PUSH_BACK = frozenset({"no_capacity", "rate_limited"})


@dataclass
class _Leg:
    """One copy of the prompt, as the swarm knows it; ``request_id`` is its leg name (the link maps it to the wire)."""

    request_id: str
    stream: WorkerStream
    worker_id: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    attempt: int = 0
    cold: bool = False
    open: bool = True
    tokens: dict[int, TokenFrame] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.worker_id or self.request_id


class SwarmTransport:
    """A :class:`Transport` that races ``swarm_size`` workers for every streamed completion.

    Args:
        router: the HTTP transport to the router, for everything that is not a completion.
        router_url: the router's base URL.
        swarm_size: copies of each prompt, 1 to 5.
        options: thresholds and budgets.
        runtime: clocks and chance.
        dialer: reaches workers over direct connections; with it the legs are direct, without
            it they go through the router's frame stream.
    """

    def __init__(
        self,
        router: Transport,
        *,
        router_url: str,
        swarm_size: int,
        options: SwarmOptions,
        runtime: Runtime,
        dialer: Dialer | None = None,
    ) -> None:
        self._router = router
        self._stream_url = router_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self._stream_url = self._stream_url.rstrip("/") + "/mesh/v1/stream"
        self._size = swarm_size
        self._options = options
        self._runtime = runtime
        self._dialer = dialer
        self._limits = FrameLimits()
        self.budget = HedgeBudget(options.budget)

    async def request(self, method: str, path: str, *, body: Mapping[str, Any] | None, timeout_s: float | None) -> Any:
        """A whole completion read off a swarm stream; anything else from the router's HTTP API."""
        return await request_through_stream(
            self.open_stream, self._router, method, path, body=body, timeout_s=timeout_s, clock=self._runtime.clock
        )

    async def open_stream(
        self, path: str, *, body: Mapping[str, Any], timeout_s: float | None, log: EventLog
    ) -> tuple[SwarmSource, str | None]:
        """Send the prompt to the swarm; the returned source yields the leader's chunks."""
        request_id = f"swarm-{secrets.token_hex(6)}"
        kind, request, frame = parse_stream_request(path, body, request_id=request_id, mode="swarm")
        if frame.params.seed is None and frame.params.temperature > 0:
            # one job key for every copy, so that a follower continues exactly as the leader would have
            seed = self._runtime.rng.getrandbits(62)
            frame = frame.model_copy(update={"params": frame.params.model_copy(update={"seed": seed})})
        link = await self._link(log, timeout_s)
        source = SwarmSource(
            link,
            frame,
            kind=kind,
            include_usage=request.include_usage,
            tools=request.forced_functions if isinstance(request, ChatCompletionRequest) else (),
            copies=self.budget.copies(self._size),
            options=self._options,
            budget=self.budget,
            log=log,
        )
        try:
            await source.start()
        except BaseException:
            await source.aclose()
            raise
        log.record(ResponseStarted(at_s=log.elapsed_s(), request_id=request_id, attempts=1))
        return source, request_id

    async def aclose(self) -> None:
        """Close the router transport (and the dialer's HTTP client)."""
        await self._router.aclose()
        if self._dialer is not None:
            await self._dialer.aclose()

    async def _link(self, log: EventLog, timeout_s: float | None) -> LegLink:
        if self._dialer is not None:
            from meshcore_sdk.swarm.direct_legs import DirectLegs

            return DirectLegs(
                self._dialer,
                log=log,
                limits=self._limits,
                timeout_s=timeout_s,
                min_connect_s=self._options.min_leg_connect_s,
            )
        return await RouterStreamLink.connect(
            self._stream_url, open_timeout_s=self._options.open_timeout_s, limits=self._limits
        )


class SwarmSource:
    """The chunks of one swarm request (a :class:`ChunkSource`)."""

    def __init__(
        self,
        link: LegLink,
        frame: GenerateFrame,
        *,
        kind: Literal["chat", "text"],
        include_usage: bool,
        tools: tuple[FunctionSpec, ...],
        copies: int,
        options: SwarmOptions,
        budget: HedgeBudget,
        log: EventLog,
    ) -> None:
        self._link = link
        self._frame = frame
        self._kind: Literal["chat", "text"] = kind
        self._include_usage = include_usage
        self._tools = tools
        self._budget = budget
        self._log = log
        self._names = (f"{frame.request_id}.{index}" for index in itertools.count())
        self._legs = {name: self._new_leg(name) for name in itertools.islice(self._names, copies)}
        loop = asyncio.get_running_loop()
        self._machine = SwarmMachine(list(self._legs), options.machine, now=loop.time())
        self._chunks: collections.deque[dict[str, Any]] = collections.deque()
        self._formatter: ChunkFormatter | None = None
        self._finished = False
        self.request_id = frame.request_id
        self.done: DoneFrame | None = None

    @property
    def meta(self) -> ResponseMeta | None:
        """What every chunk of the answer repeats, once the first token is in."""
        return self._formatter.meta if self._formatter is not None else None

    async def start(self) -> None:
        """Send every copy of the prompt."""
        await self._link.open([self._generate(leg) for leg in self._legs.values()])

    async def receive(self) -> Mapping[str, Any] | None:
        """The next chunk of the leader's answer, or None at its end.

        Raises:
            SwarmExhausted: no worker could finish the answer (every wait is bounded by the
                machine's deadlines: the first token, the stall threshold, the failover).
        """
        while not self._chunks:
            if self._finished:
                return None
            await self._advance()
        return self._chunks.popleft()

    async def aclose(self) -> None:
        """Cancel every copy still running and close the link; safe to call more than once."""
        self._finished = True
        for leg in self._legs.values():
            if leg.open:
                leg.open = False
                with contextlib.suppress(StreamClosed):
                    await self._link.send(leg.request_id, CancelFrame(request_id=leg.request_id))
        await self._link.aclose()

    # --- driving the machine --------------------------------------------------------------

    async def _advance(self) -> None:
        """Read one frame or loss off the link, or wait out the machine's next deadline; then carry out what it decides.

        The machine always has a deadline while the swarm is live (the first token, the
        next token, the failover), so this never waits for ever.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(self._machine.get_timer()):
                event = await self._link.receive()
        except TimeoutError:
            self._machine.handle_timer(now=loop.time())
        else:
            self._take(event, now=loop.time())
        for action in self._machine.actions():
            await self._execute(action)

    def _take(self, event: LinkEvent, *, now: float) -> None:
        if isinstance(event, LegsLost):
            for name in event.legs:
                self._machine.receive(WorkerLost(name, event.cause), now=now)
            return
        assert isinstance(event, FrameArrived)
        leg, frame = self._legs.get(event.leg), event.frame
        if leg is None or not isinstance(frame, AcceptedFrame | TokenFrame | PausedFrame | DoneFrame | ErrorFrame):
            return  # a frame for a copy this stream no longer tracks, or none a worker sends
        try:
            if not leg.stream.receive(frame):
                return  # sent before the worker saw its latest resume
        except OutOfOrderFrame as exc:
            self._lose(leg, f"out of order: {exc}", now)
            return
        self._on_frame(leg, frame, now)

    def _on_frame(self, leg: _Leg, frame: object, now: float) -> None:
        match frame:
            case AcceptedFrame():
                leg.worker_id, leg.model, leg.prompt_tokens = frame.worker_id, frame.model, frame.prompt_tokens
                if leg.cold:
                    self._machine.receive(WorkerAdded(leg.request_id), now=now)
            case TokenFrame():
                leg.tokens[frame.seq] = frame
                event = TokenReceived(leg.request_id, frame.seq, frame.token_id, frame.text_bytes)
                self._machine.receive(event, now=now)
            case DoneFrame():
                leg.open = False
                finished = WorkerFinished(leg.request_id, frame.finish_reason.value, frame.usage.completion_tokens)
                self._machine.receive(finished, now=now)
            case ErrorFrame():
                if frame.code.value in _PUSH_BACK:
                    self._budget.failed()
                self._lose(leg, f"{frame.code.value}: {frame.message}", now)

    def _lose(self, leg: _Leg, cause: str, now: float) -> None:
        leg.open = False
        self._machine.receive(WorkerLost(leg.request_id, cause), now=now)

    async def _execute(self, action: SwarmAction) -> None:
        at_s = self._log.elapsed_s()
        match action:
            case Deliver():
                self._deliver(action)
            case Elected(worker=name, term=term):
                self._log.record(LeaderElected(at_s=at_s, worker_id=self._legs[name].name, term=term))
            case Pause(worker=name):
                self._log.record(WorkerPaused(at_s=at_s, worker_id=self._legs[name].name))
                await self._send(name, PauseFrame(request_id=name))
            case Resume(worker=name, from_seq=from_seq, token_ids=token_ids):
                await self._resume(self._legs[name], from_seq, token_ids)
            case CatchUp(worker=name, from_seq=from_seq, token_ids=token_ids):
                await self._resume(self._legs[name], from_seq, token_ids, hold=True)
            case Cancel(worker=name, reason=reason):
                await self._cancel(self._legs[name], reason or "released")
            case RequestWorker():
                leg = self._new_leg(next(self._names), cold=True)
                self._legs[leg.request_id] = leg
                await self._guard(self._link.add(self._generate(leg)))
            case FailoverStarted(from_worker=old, to_worker=new, reason=reason):
                to = self._legs[new].name if new is not None else None
                event = Failover(
                    at_s=at_s,
                    from_worker_id=self._legs[old].name if old in self._legs else old,
                    to_worker_id=to,
                    from_seq=len(self._machine.delivered),
                    reason=reason,
                )
                self._log.record(event)
            case Finish(finish_reason=reason):
                self._finish(reason)
            case Fail(causes=causes):
                self._finished = True
                self._budget.failed(len(causes))
                failures = {self._legs[name].name if name in self._legs else name: why for name, why in causes}
                raise SwarmExhausted(
                    f"every worker of the swarm failed: {failures}", failures=failures, request_id=self.request_id
                )

    def _deliver(self, action: Deliver) -> None:
        leg = self._legs[action.worker]
        frame = leg.tokens.get(action.seq) or TokenFrame(
            request_id=leg.request_id,
            seq=action.seq,
            token_id=action.token_id,
            text_bytes=action.text_bytes,
            t_worker=0.0,
        )
        if self._formatter is None:
            meta = ResponseMeta(
                kind=self._kind,
                completion_id=f"{'chatcmpl' if self._kind == 'chat' else 'cmpl'}-{self.request_id}",
                created=int(time.time()),
                model=leg.model or self._frame.model,
                request_id=self.request_id,
                worker_id=leg.name,
                include_usage=self._include_usage,
                tools=self._tools,
            )
            self._formatter = ChunkFormatter(meta)
        for chunk in self._formatter.feed(frame):
            chunk["meshcore"]["worker_id"] = leg.name
            chunk["meshcore"]["attempt"] = leg.attempt
            self._chunks.append(chunk)

    def _finish(self, reason: str) -> None:
        self._finished = True
        self._budget.succeeded()
        leader = self._legs[self._machine.leader] if self._machine.leader is not None else None
        prompt_tokens = leader.prompt_tokens if leader is not None else 0
        completion = len(self._machine.delivered)
        usage = Usage(
            prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion
        )
        self.done = DoneFrame(request_id=self.request_id, finish_reason=FinishReason(reason), usage=usage)
        if self._formatter is not None:
            self._chunks.extend(self._formatter.done(self.done))

    async def _resume(self, leg: _Leg, from_seq: int, token_ids: tuple[int, ...], *, hold: bool = False) -> None:
        leg.attempt += 1
        leg.stream.resumed(attempt=leg.attempt, from_seq=from_seq)
        leg.tokens = {seq: frame for seq, frame in leg.tokens.items() if seq < from_seq}
        resume = ResumeFrame(
            request_id=leg.request_id, from_seq=from_seq, token_ids=list(token_ids), attempt=leg.attempt, hold=hold
        )
        await self._send(leg.request_id, resume)

    async def _cancel(self, leg: _Leg, why: str) -> None:
        if leg.open:
            leg.open = False
            self._log.record(WorkerReleased(at_s=self._log.elapsed_s(), worker_id=leg.name, reason=why))
            await self._send(leg.request_id, CancelFrame(request_id=leg.request_id))

    def _new_leg(self, name: str, *, cold: bool = False) -> _Leg:
        return _Leg(request_id=name, stream=WorkerStream(name), cold=cold)

    def _generate(self, leg: _Leg) -> GenerateFrame:
        return self._frame.model_copy(update={"request_id": leg.request_id, "group": self._frame.request_id})

    async def _send(self, name: str, frame: LegControl) -> None:
        await self._guard(self._link.send(name, frame))

    async def _guard(self, sending: Awaitable[None]) -> None:
        """Await a send on the link, naming this request in the error if the link has closed."""
        try:
            await sending
        except StreamClosed as exc:
            exc.request_id = self.request_id
            raise
