"""Direct mode's driver: a ticket from the router, then tokens straight from the worker over WebRTC.

For each streamed request (``docs/protocol.md`` §8):

1. ``POST /v1/tickets`` for up to ``DirectOptions.workers`` workers; the round trip
   sets the per-worker deadline, ``max(min_connect_deadline_s, connect_deadline_rtts x RTT)``;
2. per worker, in turn, within its deadline: a peer connection with the ticket's ICE
   servers (the TURN relay included, so ICE falls back to it by itself when the direct
   path is blocked), a pre-negotiated data channel, a complete offer that carries the
   ticket and the ``generate`` frame (the worker starts prefill at once), the answer
   through the router, the channel open.  A worker that misses its deadline is dropped
   (:class:`WorkerDropped`) and the next is tried; a refused ticket ends the request;
3. the stream reads frames from the channel (:class:`ChannelSource`).

Steps 1 and 2 are :class:`meshcore_sdk.direct.dial.Dialer`'s, which swarm mode's direct
legs use as well.

``stream.events`` gets :class:`DirectConnected` (with ``relay``), :class:`RelayUsed`
when a TURN relay carries the channel, and :class:`ResponseStarted`.  Other calls
(``models.list()``) go to the router's HTTP API as in proxy mode; whole (non-streamed)
completions are read off a direct stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from meshcore_sdk._base import Runtime
from meshcore_sdk._framed import request_through_stream
from meshcore_sdk.config import ClientConfig
from meshcore_sdk.direct.dial import PLACEHOLDER_REQUEST_ID, Dialer, log_connected
from meshcore_sdk.direct.source import ChannelSource
from meshcore_sdk.events import EventLog, ResponseStarted, WorkerDropped
from meshcore_sdk.openai_format import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_stream_request,
)
from meshcore_sdk.protocol import FrameLimits, GenerateFrame, TicketGrant
from meshcore_sdk.protocol.errors import ConnectError, MeshError, MeshTimeout

__all__ = ["DirectTransport"]


class DirectTransport:
    """Reaches workers over WebRTC data channels, with tickets and signaling from the router.

    Args:
        config: the client's settings (``config.direct`` for this mode).
        runtime: sleep, rng and clocks.
        transport: an httpx transport for the router's HTTP API (tests).
        http_client: an httpx client to use; the caller keeps ownership.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        runtime: Runtime,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._runtime = runtime
        self._limits = FrameLimits()
        self._dialer = Dialer(config, runtime=runtime, transport=transport, http_client=http_client)
        self._workers = config.direct.workers

    async def request(self, method: str, path: str, *, body: Mapping[str, Any] | None, timeout_s: float | None) -> Any:
        """A whole completion read off a direct stream; anything else from the router's HTTP API."""
        return await request_through_stream(
            self.open_stream,
            self._dialer.router,
            method,
            path,
            body=body,
            timeout_s=timeout_s,
            clock=self._runtime.clock,
        )

    async def open_stream(
        self, path: str, *, body: Mapping[str, Any], timeout_s: float | None, log: EventLog
    ) -> tuple[ChannelSource, str | None]:
        """Open a direct stream to the first worker that connects within its deadline."""
        kind, request, frame = parse_stream_request(path, body, request_id=PLACEHOLDER_REQUEST_ID, mode="direct")
        tickets = await self._dialer.tickets(
            request.model, n=self._workers, max_tokens=frame.params.max_tokens, timeout_s=timeout_s
        )
        deadline_s = tickets.deadline_s
        failure: MeshError | None = None
        for grant in tickets.grants:
            source = self._new_source(grant, kind, request, timeout_s)
            try:
                await self._connect(source, grant, frame, deadline_s=deadline_s, log=log)
            except (MeshTimeout, ConnectError) as exc:
                failure = exc
                log.record(
                    WorkerDropped(
                        at_s=log.elapsed_s(), worker_id=grant.node_id, deadline_s=deadline_s, reason=exc.code.value
                    )
                )
                continue
            log.record(ResponseStarted(at_s=log.elapsed_s(), request_id=source.request_id, attempts=1))
            return source, source.request_id
        assert failure is not None
        raise ConnectError(
            f"no worker of {request.model!r} could be reached within {deadline_s * 1000:.0f} ms: {failure}",
            retryable=True,
        ) from failure

    async def aclose(self) -> None:
        """Close the HTTP client if this transport made it."""
        await self._dialer.aclose()

    async def _connect(
        self, source: ChannelSource, grant: TicketGrant, frame: GenerateFrame, *, deadline_s: float, log: EventLog
    ) -> None:
        try:
            setup_s = await self._dialer.connect(
                source.pc,
                source.channel,
                grant,
                frame,
                deadline_s=deadline_s,
                answered=lambda answer: source.start(request_id=answer.request_id, worker_id=grant.node_id),
            )
        except BaseException:
            with contextlib.suppress(MeshError):
                await source.aclose()
            raise
        log_connected(log, grant.node_id, source.pc, setup_s=setup_s)

    def _new_source(
        self,
        grant: TicketGrant,
        kind: Literal["chat", "text"],
        request: ChatCompletionRequest | CompletionRequest,
        timeout_s: float | None,
    ) -> ChannelSource:
        pc, channel = self._dialer.peer(grant)
        return ChannelSource(
            pc,
            channel,
            kind=kind,
            model=request.model,
            include_usage=request.include_usage,
            read_timeout_s=timeout_s,
            limits=self._limits,
            tools=request.forced_functions if isinstance(request, ChatCompletionRequest) else (),
        )
