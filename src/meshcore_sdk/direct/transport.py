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

``stream.events`` gets :class:`DirectConnected` (with ``relay``), :class:`RelayUsed`
when a TURN relay carries the channel, and :class:`ResponseStarted`.  Other calls
(``models.list()``) go to the router's HTTP API as in proxy mode; whole (non-streamed)
completions are read off a direct stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import httpx
import pydantic
from aiortc import RTCPeerConnection, RTCSessionDescription

from meshcore_sdk._base import Runtime
from meshcore_sdk._framed import request_through_stream
from meshcore_sdk.config import ClientConfig, DirectOptions
from meshcore_sdk.direct.ice import host_addresses, rtc_configuration, selected_pair, tune_aioice
from meshcore_sdk.direct.source import ChannelSource
from meshcore_sdk.events import DirectConnected, EventLog, RelayUsed, ResponseStarted, WorkerDropped
from meshcore_sdk.openai_format import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_stream_request,
)
from meshcore_sdk.protocol import (
    FrameLimits,
    GenerateFrame,
    SignalFrame,
    SignalRequest,
    TicketGrant,
    TicketsResponse,
)
from meshcore_sdk.protocol.errors import ConnectError, MeshError, MeshTimeout, RemoteProtocolError
from meshcore_sdk.proxy.transport import ProxyTransport

__all__ = ["DirectTransport"]

_PLACEHOLDER_ID = "direct"  # the router gives the request its real id when it relays the offer


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
        self._options: DirectOptions = config.direct
        self._runtime = runtime
        self._limits = FrameLimits()
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=config.timeout_s)
        self._router = ProxyTransport(config, runtime=runtime, http_client=self._http)
        once = dataclasses.replace(config, max_retries=0)  # a relayed offer is never repeated: its ticket is spent
        self._signaling = ProxyTransport(once, runtime=runtime, http_client=self._http)
        tune_aioice(stun_retry_rto_s=self._options.stun_retry_rto_s)

    async def request(self, method: str, path: str, *, body: Mapping[str, Any] | None, timeout_s: float | None) -> Any:
        """A whole completion read off a direct stream; anything else from the router's HTTP API."""
        return await request_through_stream(
            self.open_stream, self._router, method, path, body=body, timeout_s=timeout_s, clock=self._runtime.clock
        )

    async def open_stream(
        self, path: str, *, body: Mapping[str, Any], timeout_s: float | None, log: EventLog
    ) -> tuple[ChannelSource, str | None]:
        """Open a direct stream to the first worker that connects within its deadline."""
        kind, request, frame = parse_stream_request(path, body, request_id=_PLACEHOLDER_ID, mode="direct")
        started_s = self._runtime.clock()
        answer = await self._router.request(
            "POST",
            "/v1/tickets",
            body={"model": request.model, "n": self._options.workers, "max_tokens": frame.params.max_tokens},
            timeout_s=timeout_s,
        )
        deadline_s = self._options.connect_deadline_s(self._runtime.clock() - started_s)
        grants = _parse_grants(answer)
        failure: MeshError | None = None
        for grant in grants:
            source = _new_source(grant, kind, request, timeout_s, self._options, self._limits)
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
        if self._owns_http:
            await self._http.aclose()

    async def _connect(
        self, source: ChannelSource, grant: TicketGrant, frame: GenerateFrame, *, deadline_s: float, log: EventLog
    ) -> None:
        pc, channel = source.pc, source.channel
        opened = asyncio.Event()
        channel.on("open", opened.set)
        offer_at_s = self._runtime.clock()
        try:
            with host_addresses(self._options.host_addresses):
                async with asyncio.timeout(deadline_s):
                    await pc.setLocalDescription(await pc.createOffer())
                    answer = await self._signal(grant, frame, pc.localDescription.sdp, deadline_s)
                    source.start(request_id=answer.request_id, worker_id=grant.node_id)
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
                    await opened.wait()
        except TimeoutError as exc:
            await _close_quietly(source)
            raise MeshTimeout(
                f"worker {grant.node_id} did not connect within {deadline_s * 1000:.0f} ms", worker_id=grant.node_id
            ) from exc
        except BaseException:
            await _close_quietly(source)
            raise
        pair = selected_pair(pc)
        relay = pair is not None and "relay" in pair
        log.record(
            DirectConnected(
                at_s=log.elapsed_s(),
                worker_id=grant.node_id,
                setup_s=self._runtime.clock() - offer_at_s,
                relay=relay,
                local_candidate=pair[0] if pair else None,
                remote_candidate=pair[1] if pair else None,
            )
        )
        if relay:
            log.record(RelayUsed(at_s=log.elapsed_s(), worker_id=grant.node_id))

    async def _signal(self, grant: TicketGrant, frame: GenerateFrame, sdp: str, deadline_s: float) -> SignalFrame:
        generate = frame.model_copy(update={"model": grant.model})
        offer = SignalFrame(kind="offer", request_id=_PLACEHOLDER_ID, ticket=grant.ticket, sdp=sdp, generate=generate)
        body = SignalRequest(node_id=grant.node_id, offer=offer).model_dump(mode="json", exclude_none=True)
        answer = await self._signaling.request("POST", grant.signal_path, body=body, timeout_s=deadline_s)
        try:
            return SignalFrame.model_validate(answer)
        except pydantic.ValidationError as exc:
            raise RemoteProtocolError(f"the router sent a malformed answer: {exc.error_count()} problems") from exc


def _new_source(
    grant: TicketGrant,
    kind: Literal["chat", "text"],
    request: ChatCompletionRequest | CompletionRequest,
    timeout_s: float | None,
    options: DirectOptions,
    limits: FrameLimits,
) -> ChannelSource:
    pc = RTCPeerConnection(rtc_configuration(grant.ice_servers, force_relay=options.force_relay))
    channel = pc.createDataChannel("meshcore", negotiated=True, id=0)
    return ChannelSource(
        pc,
        channel,
        kind=kind,
        model=request.model,
        include_usage=request.include_usage,
        read_timeout_s=timeout_s,
        limits=limits,
        tools=request.forced_functions if isinstance(request, ChatCompletionRequest) else (),
    )


async def _close_quietly(source: ChannelSource) -> None:
    with contextlib.suppress(MeshError):
        await source.aclose()


def _parse_grants(answer: Any) -> list[TicketGrant]:
    try:
        return TicketsResponse.model_validate(answer).tickets
    except pydantic.ValidationError as exc:
        raise RemoteProtocolError(f"the router sent malformed tickets: {exc.error_count()} problems") from exc
