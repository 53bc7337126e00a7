"""The swarm's driver through its link seam: an in-memory link, frames queued before each read.

Every scenario queues what the workers said before the source reads it, so the source never
waits on the machine's deadlines: no sleep, no clock to move.  The same source runs over the
router's frame stream and over direct legs; only the link differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from meshcore_sdk.config import SwarmOptions
from meshcore_sdk.events import EventLog, Failover, LeaderElected, WorkerPaused
from meshcore_sdk.protocol import (
    AcceptedFrame,
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    FinishReason,
    GenerateFrame,
    PauseFrame,
    ResumeFrame,
    TokenFrame,
    Usage,
)
from meshcore_sdk.protocol.errors import ErrorCode, SwarmExhausted
from meshcore_sdk.swarm.budget import HedgeBudget
from meshcore_sdk.swarm.links import FrameArrived, LegControl, LegsLost, LinkEvent
from meshcore_sdk.swarm.transport import SwarmSource

pytestmark = pytest.mark.timeout(10)

REQUEST = "swarm-t"
LEGS = [f"{REQUEST}.{index}" for index in range(3)]


class MemoryLink:
    """A :class:`LegLink` in memory: records what the source sends, hands it what the test queued."""

    def __init__(self) -> None:
        self.opened: list[GenerateFrame] = []
        self.added: list[GenerateFrame] = []
        self.sent: list[tuple[str, LegControl]] = []
        self.closed = False
        self._inbox: asyncio.Queue[LinkEvent] = asyncio.Queue()

    async def open(self, generates: Sequence[GenerateFrame]) -> None:
        self.opened = list(generates)

    async def add(self, generate: GenerateFrame) -> None:
        self.added.append(generate)

    async def send(self, leg: str, frame: LegControl) -> None:
        self.sent.append((leg, frame))

    async def receive(self) -> LinkEvent:
        return self._inbox.get_nowait()  # a test that lets the source read past its script fails here

    async def aclose(self) -> None:
        self.closed = True

    def say(self, leg: str, *frames: Any) -> None:
        for frame in frames:
            self._inbox.put_nowait(FrameArrived(leg, frame))

    def lose(self, cause: str, *legs: str) -> None:
        self._inbox.put_nowait(LegsLost(legs, cause))


def accepted(leg: str, worker: str) -> AcceptedFrame:
    return AcceptedFrame(request_id=leg, worker_id=worker, model="m", prompt_tokens=4)


def token(leg: str, seq: int, attempt: int = 0) -> TokenFrame:
    return TokenFrame(
        request_id=leg, attempt=attempt, seq=seq, token_id=100 + seq, text_bytes=b"t%d " % seq, t_worker=0.0
    )


def done(leg: str, tokens: int) -> DoneFrame:
    usage = Usage(prompt_tokens=4, completion_tokens=tokens, total_tokens=4 + tokens)
    return DoneFrame(request_id=leg, finish_reason=FinishReason.LENGTH, usage=usage)


async def started(copies: int = 3) -> tuple[SwarmSource, MemoryLink, EventLog]:
    link = MemoryLink()
    log = EventLog(time.monotonic)
    frame = GenerateFrame(request_id=REQUEST, model="m", prompt="Hi", params={"max_tokens": 8})
    source = SwarmSource(
        link,
        frame,
        kind="text",
        include_usage=False,
        tools=(),
        copies=copies,
        options=SwarmOptions(),
        budget=HedgeBudget(),
        log=log,
    )
    await source.start()
    return source, link, log


async def read(source: SwarmSource, count: int) -> list[tuple[str, int | None, str]]:
    """``count`` chunks, as (worker, seq, text)."""
    chunks = []
    for _ in range(count):
        chunk = await source.receive()
        assert chunk is not None
        meta = chunk["meshcore"]
        chunks.append((meta["worker_id"], meta.get("seq"), chunk["choices"][0]["text"]))
    return chunks


async def test_every_copy_goes_out_on_the_link_named_by_its_leg_and_grouped() -> None:
    _, link, _ = await started()

    assert [(g.request_id, g.group) for g in link.opened] == [(leg, REQUEST) for leg in LEGS]


async def test_the_first_token_at_seq_0_commits_and_the_others_are_paused_on_their_legs() -> None:
    source, link, log = await started()
    link.say(LEGS[0], accepted(LEGS[0], "w0"))
    link.say(LEGS[1], accepted(LEGS[1], "w1"), token(LEGS[1], 0))

    assert await read(source, 1) == [("w1", 0, "t0 ")]
    assert link.sent == [(LEGS[0], PauseFrame(request_id=LEGS[0])), (LEGS[2], PauseFrame(request_id=LEGS[2]))]
    assert [type(e) for e in log.events] == [LeaderElected, WorkerPaused, WorkerPaused]


async def test_a_lost_leader_leg_fails_over_to_a_follower_without_a_lost_or_repeated_token() -> None:
    source, link, log = await started()
    link.say(LEGS[0], accepted(LEGS[0], "w0"), token(LEGS[0], 0), token(LEGS[0], 1))
    link.say(LEGS[1], accepted(LEGS[1], "w1"), token(LEGS[1], 0))
    assert await read(source, 2) == [("w0", 0, "t0 "), ("w0", 1, "t1 ")]

    link.lose("the data channel to worker w0 closed", LEGS[0])
    link.say(LEGS[1], token(LEGS[1], 1), token(LEGS[1], 2, attempt=1), token(LEGS[1], 3, attempt=1))
    link.say(LEGS[1], done(LEGS[1], 4))
    chunks = await read(source, 2)

    assert chunks == [("w1", 2, "t2 "), ("w1", 3, "t3 ")]  # w1's stale seq 1, from before its resume, is dropped
    resume = ResumeFrame(request_id=LEGS[1], from_seq=2, token_ids=[101], attempt=1)
    assert (LEGS[1], resume) in link.sent
    failover = next(e for e in log.events if isinstance(e, Failover))
    assert (failover.from_worker_id, failover.to_worker_id, failover.from_seq) == ("w0", "w1", 2)
    assert failover.reason == "the data channel to worker w0 closed"
    while (chunk := await source.receive()) is not None:
        assert chunk["choices"][0]["finish_reason"] == "length"
    assert (LEGS[2], CancelFrame(request_id=LEGS[2])) in link.sent


async def test_with_no_follower_left_one_more_copy_is_added_and_resumed_from_the_delivered_ids() -> None:
    source, link, _ = await started(copies=1)
    link.say(LEGS[0], accepted(LEGS[0], "w0"), token(LEGS[0], 0))
    assert await read(source, 1) == [("w0", 0, "t0 ")]

    link.lose("stalled", LEGS[0])
    cold = LEGS[1]
    link.say(cold, accepted(cold, "w9"), token(cold, 0), token(cold, 1, attempt=1))

    assert await read(source, 1) == [("w9", 1, "t1 ")]
    assert [(g.request_id, g.group) for g in link.added] == [(cold, REQUEST)]
    assert (cold, ResumeFrame(request_id=cold, from_seq=1, token_ids=[100], attempt=1)) in link.sent


async def test_when_every_leg_is_lost_the_stream_raises_with_each_cause() -> None:
    source, link, _ = await started(copies=2)
    link.say(LEGS[0], ErrorFrame(request_id=LEGS[0], code=ErrorCode.NO_CAPACITY, message="full"))
    link.lose("worker_dropped: no channel in 300 ms", LEGS[1])

    with pytest.raises(SwarmExhausted) as raised:
        await source.receive()

    assert raised.value.failures == {LEGS[0]: "no_capacity: full", LEGS[1]: "worker_dropped: no channel in 300 ms"}


async def test_a_frame_for_a_leg_the_stream_does_not_know_is_ignored() -> None:
    source, link, _ = await started(copies=1)
    link.say("someone-else", token("someone-else", 0))
    link.say(LEGS[0], accepted(LEGS[0], "w0"), token(LEGS[0], 0))

    assert await read(source, 1) == [("w0", 0, "t0 ")]


async def test_closing_cancels_every_running_copy_then_closes_the_link() -> None:
    source, link, _ = await started()

    await source.aclose()
    await source.aclose()

    assert link.sent == [(leg, CancelFrame(request_id=leg)) for leg in LEGS]
    assert link.closed
