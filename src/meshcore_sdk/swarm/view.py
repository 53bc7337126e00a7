"""A live view of a swarm stream, for the terminal (rich ``Live``) and notebooks.

:class:`SwarmView` reads what the application already has, the chunks it
consumed and the stream's events, and draws who leads, who waits paused, who
was released or lost, each failover, the inter-token gaps and the text so far::

    view = SwarmView(stream)
    with rich.live.Live(view, refresh_per_second=20):
        async for chunk in stream:
            view.add(chunk)

In a notebook, displaying the view renders its current state as HTML, with the same
drawing as plain text beside it; rich ``Live`` needs ipywidgets there, so update a display
handle instead::

    handle = display(view, display_id=True)
    for chunk in stream:
        view.add(chunk)
        handle.update(view)
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from meshcore_sdk.events import Failover, LeaderElected, StreamEvent, WorkerPaused, WorkerReleased

__all__ = ["SwarmView"]


class _Stream(Protocol):
    @property
    def events(self) -> list[StreamEvent]: ...


@dataclass
class _Worker:
    role: str = "racing"
    tokens: int = 0


@dataclass
class _Gaps:
    times_s: list[float] = field(default_factory=list)

    def gaps_s(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self.times_s, self.times_s[1:], strict=False)]


class SwarmView:
    """The state of one swarm stream, drawn with rich.

    Args:
        stream: the stream whose events to show.
        title: the panel's title.
        clock: a monotonic clock in seconds (tests pass a fake).
    """

    def __init__(
        self, stream: _Stream, *, title: str = "meshcore swarm", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._title = title
        self._clock = clock
        self._text = ""
        self._gaps = _Gaps()
        self._by_worker: dict[str, int] = {}

    def add(self, chunk: Any) -> None:
        """Take one chunk the application consumed."""
        meta = chunk.meshcore
        if meta.seq is not None:
            self._gaps.times_s.append(self._clock())
            self._by_worker[meta.worker_id] = self._by_worker.get(meta.worker_id, 0) + 1
        for choice in chunk.choices:
            delta = getattr(choice, "delta", None)
            self._text += (delta.content if delta is not None else choice.text) or ""

    def __rich__(self) -> RenderableType:
        workers = self._workers(self._stream.events)
        parts: list[RenderableType] = [_worker_table(workers), self._gap_line(), Text(self._text, style="bold")]
        failovers = [e for e in self._stream.events if isinstance(e, Failover)]
        if failovers:
            parts.insert(1, _failover_lines(failovers))
        return Panel(Group(*parts), title=self._title)

    def __repr__(self) -> str:
        events = self._stream.events
        leaders = [e.worker_id for e in events if isinstance(e, LeaderElected)]
        failovers = sum(isinstance(e, Failover) for e in events)
        leader = leaders[-1] if leaders else None
        return f"<SwarmView {len(self._gaps.times_s)} tokens, leader {leader}, {failovers} failover(s)>"

    def _repr_html_(self) -> str:
        return self._recorded().export_html(inline_styles=True)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, str]:
        """The view as HTML for notebooks, and the same drawing as text for plain front ends."""
        console = self._recorded()
        return {"text/plain": console.export_text(clear=False), "text/html": console.export_html(inline_styles=True)}

    def _recorded(self) -> Console:
        # force_jupyter=False: inside a kernel, rich would otherwise display what it prints, a second copy
        console = Console(record=True, width=100, file=io.StringIO(), force_jupyter=False)
        console.print(self)
        return console

    def _workers(self, events: Sequence[StreamEvent]) -> dict[str, _Worker]:
        workers: dict[str, _Worker] = {}
        for event in events:
            match event:
                case LeaderElected(worker_id=worker):
                    for other in workers.values():
                        other.role = "paused" if other.role == "leader" else other.role
                    workers.setdefault(worker, _Worker()).role = "leader"
                case WorkerPaused(worker_id=worker):
                    workers.setdefault(worker, _Worker()).role = "paused"
                case WorkerReleased(worker_id=worker):
                    released = workers.setdefault(worker, _Worker())
                    if not released.role.startswith("lost"):  # a lost leader is cancelled too: it stays lost
                        released.role = "released"
                case Failover(from_worker_id=worker, reason=reason):
                    workers.setdefault(worker, _Worker()).role = f"lost ({reason.split(':')[0]})"
        for worker, count in self._by_worker.items():
            workers.setdefault(worker, _Worker()).tokens = count
        return workers

    def _gap_line(self) -> Text:
        gaps = self._gaps.gaps_s()
        if not gaps:
            return Text("waiting for the first token", style="dim")
        median = statistics.median(gaps)
        return Text(
            f"{len(gaps) + 1} tokens · gap median {median * 1000:.0f} ms · max {max(gaps) * 1000:.0f} ms "
            f"· last {gaps[-1] * 1000:.0f} ms",
            style="cyan",
        )


def _worker_table(workers: dict[str, _Worker]) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("worker")
    table.add_column("role")
    table.add_column("tokens delivered", justify="right")
    styles = {"leader": "bold green", "paused": "yellow", "released": "dim"}
    for name, worker in workers.items():
        style = styles.get(worker.role, "red")
        table.add_row(name, Text(worker.role, style=style), str(worker.tokens))
    return table


def _failover_lines(failovers: list[Failover]) -> Text:
    lines = Text()
    for event in failovers:
        to = event.to_worker_id or "a fresh worker"
        lines.append(f"failover at {event.at_s * 1000:.0f} ms: {event.from_worker_id} -> {to} ", style="magenta")
        lines.append(f"from position {event.from_seq}\n", style="magenta")
    return lines
