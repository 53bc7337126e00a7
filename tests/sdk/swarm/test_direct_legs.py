"""Direct legs through a fake dialer: tickets, concurrent connects, renaming, losses, events.

The fake dialer scripts each worker's connection: it either opens (and the worker's frames
follow on the channel, as the real one sends what it buffered) or fails.  Connect tasks run
whenever the test awaits the link, so nothing sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from meshcore_sdk.direct.dial import Tickets
from meshcore_sdk.events import DirectConnected, EventLog, WorkerDropped
from meshcore_sdk.protocol import (
    AcceptedFrame,
    FrameLimits,
    GenerateFrame,
    PauseFrame,
    ResumeFrame,
    SignalFrame,
    TicketGrant,
    TokenFrame,
    decode_frame,
    encode_frame,
)
from meshcore_sdk.protocol.errors import MeshTimeout, NoCapacity, TicketReplayed
from meshcore_sdk.swarm.direct_legs import DirectLegs
from meshcore_sdk.swarm.links import FrameArrived, LegsLost

pytestmark = pytest.mark.timeout(10)

DEADLINE_S = 0.3


class FakeChannel:
    def __init__(self) -> None:
        self.readyState = "connecting"
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.sent: list[Any] = []

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        self.handlers[event] = handler

    def send(self, data: str) -> None:
        self.sent.append(decode_frame(data, FrameLimits()))

    def emit(self, event: str, *args: Any) -> None:
        self.handlers[event](*args)


class FakePeer:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class FakeDialer:
    """Grants ``nodes`` in order; ``script[node]`` is what its worker sends once open (frames, or raw
    text), or the error its connection fails with."""

    def __init__(
        self, nodes: list[str], script: dict[str, list[Any] | Exception], *, leaving: Sequence[str] = ()
    ) -> None:
        self.nodes = nodes
        self.script = script
        self.leaving = list(leaving)  # what the router's watch reports, at once
        self.watched: list[list[str]] = []
        self.asked: list[int] = []
        self.offers: dict[str, GenerateFrame] = {}
        self.peers: dict[str, tuple[FakePeer, FakeChannel]] = {}
        self.deadlines: dict[str, float] = {}
        self.hedged: list[bool] = []

    async def tickets(
        self, model: str, *, n: int, max_tokens: int, timeout_s: float | None, hedges: bool = False
    ) -> Tickets:
        self.asked.append(n)
        self.hedged.append(hedges)
        if not self.nodes:
            raise NoCapacity("no worker is READY")
        grants = [
            TicketGrant(node_id=node, ticket=f"t-{node}", model="sha256:" + "ab" * 32, max_tokens=8, expires_at_unix=0)
            for node in self.nodes[:n]
        ]
        return Tickets(grants, DEADLINE_S)

    async def departures(self, node_ids: Sequence[str]) -> AsyncIterator[str]:
        self.watched.append(list(node_ids))
        for node_id in self.leaving:
            if node_id in node_ids:
                yield node_id

    def peer(self, grant: TicketGrant) -> tuple[FakePeer, FakeChannel]:
        self.peers[grant.node_id] = (FakePeer(), FakeChannel())
        return self.peers[grant.node_id]

    async def connect(
        self,
        pc: FakePeer,
        channel: FakeChannel,
        grant: TicketGrant,
        frame: GenerateFrame,
        *,
        deadline_s: float,
        answered: Callable[[SignalFrame], None],
    ) -> float:
        self.offers[grant.node_id] = frame
        self.deadlines[grant.node_id] = deadline_s
        outcome = self.script[grant.node_id]
        if isinstance(outcome, Exception):
            raise outcome
        answered(SignalFrame(kind="answer", request_id=wire(grant.node_id), sdp="v=0\r\n"))
        channel.readyState = "open"
        for sent in outcome:
            channel.emit("message", sent if isinstance(sent, str) else encode_frame(sent))
        return 0.04


def wire(node: str) -> str:
    return f"r-{node}"


def generate(leg: str) -> GenerateFrame:
    return GenerateFrame(request_id=leg, model="gemma", prompt="Hi", params={"max_tokens": 8}, group="swarm-t")


def accepted(node: str) -> AcceptedFrame:
    return AcceptedFrame(request_id=wire(node), worker_id=node, model="gemma", prompt_tokens=2)


def token(node: str, seq: int) -> TokenFrame:
    return TokenFrame(request_id=wire(node), seq=seq, token_id=7, text_bytes=b"x", t_worker=0.0)


def link(dialer: FakeDialer) -> tuple[DirectLegs, EventLog]:
    log = EventLog(lambda: 0.0)
    return DirectLegs(dialer, log=log, limits=FrameLimits(), timeout_s=5.0), log


async def test_one_ticket_request_for_every_copy_then_each_leg_reads_its_own_channel_renamed() -> None:
    dialer = FakeDialer(["a", "b"], {"a": [accepted("a")], "b": [accepted("b"), token("b", 0)]})
    legs, log = link(dialer)

    await legs.open([generate("s.0"), generate("s.1")])
    events = [await legs.receive() for _ in range(3)]

    assert dialer.asked == [2] and dialer.hedged == [True]  # the copies after the first are hedges
    assert [e.leg for e in events if isinstance(e, FrameArrived)] == ["s.0", "s.1", "s.1"]
    assert {e.frame.request_id for e in events if isinstance(e, FrameArrived)} == {"s.0", "s.1"}
    assert [(e.worker_id, e.relay) for e in log.events if isinstance(e, DirectConnected)] == [
        ("a", False),
        ("b", False),
    ]
    assert dialer.offers["a"].prompt == "Hi"


async def test_copies_beyond_the_grants_and_legs_that_fail_to_connect_are_lost_with_their_cause() -> None:
    dialer = FakeDialer(["a", "b"], {"a": MeshTimeout("a did not connect within 300 ms"), "b": []})
    legs, log = link(dialer)

    await legs.open([generate("s.0"), generate("s.1"), generate("s.2")])
    lost = [await legs.receive(), await legs.receive()]

    assert lost == [
        LegsLost(("s.2",), "no_capacity: the router granted 2 workers for this copy"),
        LegsLost(("s.0",), "timeout: a did not connect within 300 ms"),
    ]
    (dropped,) = [e for e in log.events if isinstance(e, WorkerDropped)]
    assert (dropped.worker_id, dropped.deadline_s, dropped.reason) == ("a", DEADLINE_S, "timeout")
    assert dialer.peers["a"][0].closed


async def test_a_leg_gets_at_least_the_swarms_minimum_to_connect() -> None:
    dialer = FakeDialer(["a", "b"], {"a": [accepted("a")], "b": [accepted("b")]})
    legs = DirectLegs(dialer, log=EventLog(lambda: 0.0), limits=FrameLimits(), timeout_s=5.0, min_connect_s=3.0)

    await legs.open([generate("s.0")])
    await legs.add(generate("s.1"))
    await legs.receive(), await legs.receive()
    await legs.aclose()

    assert dialer.deadlines == {"a": 3.0, "b": 3.0}  # not the tickets' DEADLINE_S


async def test_a_worker_the_router_says_left_the_mesh_is_lost_without_waiting_for_a_stall() -> None:
    dialer = FakeDialer(["a", "b"], {"a": [accepted("a")], "b": [accepted("b")]}, leaving=["a"])
    legs, _ = link(dialer)

    await legs.open([generate("s.0"), generate("s.1")])
    events = [await legs.receive() for _ in range(3)]

    assert dialer.watched == [["a", "b"]]
    assert LegsLost(("s.0",), "worker a left the mesh (its link to the router closed)") in events
    await legs.aclose()


async def test_a_refused_ticket_is_one_legs_loss_not_the_streams() -> None:
    dialer = FakeDialer(["a", "b"], {"a": TicketReplayed("replayed"), "b": [accepted("b")]})
    legs, _ = link(dialer)

    await legs.open([generate("s.0"), generate("s.1")])

    assert await legs.receive() == LegsLost(("s.0",), "ticket_replayed: replayed")
    assert isinstance(await legs.receive(), FrameArrived)


async def test_no_ticket_at_all_fails_the_open() -> None:
    legs, _ = link(FakeDialer([], {}))

    with pytest.raises(NoCapacity):
        await legs.open([generate("s.0")])


async def test_controls_for_a_leg_still_connecting_wait_for_its_channel_and_name_the_wire_request() -> None:
    dialer = FakeDialer(["a"], {"a": [accepted("a")]})
    legs, _ = link(dialer)
    await legs.open([generate("s.0")])

    await legs.send("s.0", PauseFrame(request_id="s.0"))  # the connect task has not run yet
    await legs.receive()
    await legs.send("s.0", ResumeFrame(request_id="s.0", from_seq=1, token_ids=[7], attempt=1))

    channel = dialer.peers["a"][1]
    assert channel.sent == [
        PauseFrame(request_id=wire("a")),
        ResumeFrame(request_id=wire("a"), from_seq=1, token_ids=[7], attempt=1),
    ]


async def test_a_closed_channel_is_lost_after_the_frames_it_sent_before_closing() -> None:
    dialer = FakeDialer(["a"], {"a": [accepted("a"), token("a", 0)]})
    legs, _ = link(dialer)
    await legs.open([generate("s.0")])
    first = await legs.receive()
    dialer.peers["a"][1].emit("close")

    rest = [await legs.receive(), await legs.receive()]

    assert isinstance(first, FrameArrived) and isinstance(rest[0], FrameArrived)
    assert rest[1] == LegsLost(("s.0",), "the data channel to worker a closed")
    await legs.send("s.0", PauseFrame(request_id="s.0"))
    assert dialer.peers["a"][1].sent == []


async def test_a_frame_that_does_not_parse_loses_only_its_leg() -> None:
    dialer = FakeDialer(["a", "b"], {"a": ["{not json", accepted("a")], "b": [accepted("b")]})
    legs, _ = link(dialer)
    await legs.open([generate("s.0"), generate("s.1")])

    lost, arrived = await legs.receive(), await legs.receive()

    assert isinstance(lost, LegsLost) and lost.legs == ("s.0",) and "worker a sent a bad frame" in lost.cause
    assert isinstance(arrived, FrameArrived) and arrived.leg == "s.1"  # a's later frames are dropped


async def test_a_cold_copy_is_ticketed_on_its_own_preferring_a_worker_the_swarm_has_not_used() -> None:
    dialer = FakeDialer(["a", "b", "c"], {"a": [accepted("a")], "b": [accepted("b")], "c": [accepted("c")]})
    legs, _ = link(dialer)
    await legs.open([generate("s.0"), generate("s.1")])
    await legs.receive()
    await legs.receive()

    await legs.add(generate("s.2"))
    arrived = await legs.receive()

    assert dialer.asked == [2, 3] and dialer.hedged == [True, False]  # a fresh worker replaces, it is no hedge
    assert isinstance(arrived, FrameArrived) and arrived.leg == "s.2"
    assert isinstance(arrived.frame, AcceptedFrame) and arrived.frame.worker_id == "c"


async def test_a_cold_copy_the_router_has_no_ticket_for_is_lost() -> None:
    dialer = FakeDialer(["a"], {"a": [accepted("a")]})
    legs, _ = link(dialer)
    await legs.open([generate("s.0")])
    await legs.receive()
    dialer.nodes = []

    await legs.add(generate("s.1"))

    assert await legs.receive() == LegsLost(("s.1",), "no_capacity: no worker is READY")


async def test_closing_stops_connect_tasks_and_closes_every_peer() -> None:
    dialer = FakeDialer(["a", "b"], {"a": [], "b": []})
    legs, _ = link(dialer)
    await legs.open([generate("s.0"), generate("s.1")])
    await legs.add(generate("s.2"))

    await legs.aclose()

    assert all(peer.closed for peer, _ in dialer.peers.values())
