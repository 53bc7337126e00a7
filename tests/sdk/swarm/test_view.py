"""SwarmView draws a swarm stream's roles, failovers, gaps and text from its events and chunks."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console

from meshcore_sdk.events import Failover, LeaderElected, StreamEvent, WorkerPaused, WorkerReleased
from meshcore_sdk.swarm.view import SwarmView


@dataclass
class FakeStream:
    events: list[StreamEvent] = field(default_factory=list)


@dataclass(frozen=True)
class FakeMeta:
    seq: int | None
    worker_id: str


@dataclass(frozen=True)
class FakeChoice:
    text: str
    delta: None = None


@dataclass(frozen=True)
class FakeChunk:
    meshcore: FakeMeta
    choices: list[FakeChoice]


def chunk(seq: int, worker: str, text: str) -> FakeChunk:
    return FakeChunk(meshcore=FakeMeta(seq=seq, worker_id=worker), choices=[FakeChoice(text=text)])


def fake_clock(times_s: list[float]) -> Callable[[], float]:
    ticks = iter(times_s)
    return lambda: next(ticks)


def rendered(view: SwarmView) -> str:
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(view)
    return console.export_text()


def rows(view: SwarmView) -> dict[str, str]:
    """Each worker's row of the table, without the panel's border."""
    inner = [line.strip("│ ") for line in rendered(view).splitlines()]
    return {line.split()[0]: line for line in inner if line.startswith("node-")}


def failover_stream() -> tuple[FakeStream, SwarmView]:
    stream = FakeStream(
        [
            LeaderElected(at_s=0.10, worker_id="node-a", term=1),
            WorkerPaused(at_s=0.11, worker_id="node-b"),
            WorkerPaused(at_s=0.11, worker_id="node-c"),
        ]
    )
    view = SwarmView(stream, clock=fake_clock([1.00, 1.02, 1.10, 1.13]))
    view.add(chunk(0, "node-a", " 6,"))
    view.add(chunk(1, "node-a", " 7,"))
    stream.events += [
        Failover(at_s=0.25, from_worker_id="node-a", to_worker_id="node-b", from_seq=2, reason="eof: closed"),
        LeaderElected(at_s=0.25, worker_id="node-b", term=2),
        WorkerReleased(at_s=0.30, worker_id="node-c", reason="leader healthy"),
    ]
    view.add(chunk(2, "node-b", " 8,"))
    view.add(chunk(3, "node-b", " 9,"))
    return stream, view


def test_before_any_token_the_view_waits() -> None:
    view = SwarmView(FakeStream([LeaderElected(at_s=0.1, worker_id="node-a", term=1)]), clock=fake_clock([]))
    text = rendered(view)
    assert "node-a" in text and "leader" in text
    assert "waiting for the first token" in text


def test_the_view_shows_roles_the_failover_the_gaps_and_the_text() -> None:
    _, view = failover_stream()
    row = rows(view)
    assert "lost (eof)" in row["node-a"] and row["node-a"].endswith("2")
    assert "leader" in row["node-b"] and row["node-b"].endswith("2")
    assert "released" in row["node-c"] and row["node-c"].endswith("0")
    text = rendered(view)
    assert "failover at 250 ms: node-a -> node-b from position 2" in text
    assert "4 tokens · gap median 30 ms · max 80 ms · last 30 ms" in text
    assert "6, 7, 8, 9," in text


def test_a_stalled_leader_cancelled_once_replaced_stays_lost() -> None:
    stream, view = failover_stream()
    stream.events.append(WorkerReleased(at_s=0.31, worker_id="node-a", reason="replaced by a faster follower"))
    assert "lost (eof)" in rows(view)["node-a"]


def test_a_paused_follower_shows_as_paused_while_the_leader_is_healthy() -> None:
    stream = FakeStream(
        [LeaderElected(at_s=0.1, worker_id="node-a", term=1), WorkerPaused(at_s=0.1, worker_id="node-b")]
    )
    view = SwarmView(stream, clock=fake_clock([1.0]))
    view.add(chunk(0, "node-a", "hi"))
    row = rows(view)
    assert "leader" in row["node-a"] and "paused" in row["node-b"]


def test_notebooks_get_html_and_a_plain_text_drawing() -> None:
    _, view = failover_stream()
    html = view._repr_html_()
    assert "<html" in html.lower() and "6, 7, 8, 9," in html and "failover" in html
    bundle = view._repr_mimebundle_()
    assert "failover at 250 ms" in bundle["text/plain"] and "6, 7, 8, 9," in bundle["text/html"]
    assert repr(view) == "<SwarmView 4 tokens, leader node-b, 1 failover(s)>"
