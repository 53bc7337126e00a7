"""Proxy mode's driver: requests to the router's HTTP API, with retries, over httpx.

This is a thin driver (``STYLE.md`` rule 1): what to send is built by the
resources, whether and when to retry is decided by :mod:`meshcore_sdk._retry`,
and what an answer means is read by :mod:`meshcore_sdk.proxy.http_errors` and
:mod:`meshcore_sdk.proxy.sse`.  Here the request is sent, the answer read, and
the wait between attempts awaited through the injected ``Runtime.sleep``.

Retries happen only before a stream delivers anything: :meth:`open_stream`
returns once the router has answered 200, and from then on a failure is raised
to the reader.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import httpx_sse

from meshcore_sdk._base import Runtime
from meshcore_sdk._retry import RetryPolicy, retry_delay_s, should_retry
from meshcore_sdk.config import ClientConfig
from meshcore_sdk.events import EventLog, RequestRetried, ResponseStarted
from meshcore_sdk.protocol.backoff import Backoff
from meshcore_sdk.protocol.errors import MeshError
from meshcore_sdk.proxy.http_errors import error_from_response, map_httpx_errors
from meshcore_sdk.proxy.sse import SseChunkSource, decode_event_data

__all__ = ["ProxyTransport", "retry_policy_of"]

_JSON: Final = "application/json"
_EVENT_STREAM: Final = "text/event-stream"


def retry_policy_of(config: ClientConfig) -> RetryPolicy:
    """The retry policy that ``config`` describes."""
    return RetryPolicy(
        max_retries=config.max_retries,
        backoff=Backoff(initial_s=config.retry_initial_s, max_s=config.retry_max_s),
        max_retry_after_s=config.max_retry_after_s,
    )


class ProxyTransport:
    """Talks to the router's OpenAI-compatible HTTP API (``docs/protocol.md`` §6).

    Args:
        config: the client's settings.
        runtime: sleep, rng and clocks.
        transport: an httpx transport to send through (``httpx.MockTransport`` in tests).
        http_client: an httpx client to use instead of one of our own; it is not closed by us.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        runtime: Runtime,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._policy = retry_policy_of(config)
        self._runtime = runtime
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=config.timeout_s)
        self._base_url = config.router_url
        self._headers = _default_headers(config.api_key)

    async def request(self, method: str, path: str, *, body: Mapping[str, Any] | None, timeout_s: float | None) -> Any:
        """Send one request and return its decoded JSON answer, retrying as the policy says."""
        log = EventLog(self._runtime.clock)
        response = await self._send(method, path, body=body, timeout_s=timeout_s, accept=_JSON, log=log)
        with map_httpx_errors(request_id=response.headers.get("x-request-id")):
            return json.loads(response.content)

    async def open_stream(
        self, path: str, *, body: Mapping[str, Any], timeout_s: float | None, log: EventLog
    ) -> tuple[SseChunkSource, str | None]:
        """Start a streamed request; return its chunk source once the router answered 200."""
        response = await self._send("POST", path, body=body, timeout_s=timeout_s, accept=_EVENT_STREAM, log=log)
        source = SseChunkSource(response)
        attempts = 1 + sum(1 for event in log.events if isinstance(event, RequestRetried))
        log.record(ResponseStarted(at_s=log.elapsed_s(), request_id=source.request_id, attempts=attempts))
        return source, source.request_id

    async def watch(
        self, path: str, *, params: Sequence[tuple[str, str]], connect_timeout_s: float
    ) -> AsyncIterator[Mapping[str, Any]]:
        """The data of each server-sent event of a long ``GET`` (no read timeout, no retries), until it ends.

        Raises:
            MeshError: the router refused or could not be reached, or the stream broke.
        """
        request = self._http.build_request(
            "GET",
            self._base_url + path,
            params=list(params),
            headers={**self._headers, "accept": _EVENT_STREAM},
            timeout=httpx.Timeout(connect_timeout_s, read=None),
        )
        with map_httpx_errors():
            response = await self._http.send(request, stream=True)
        try:
            if not response.is_success:
                raise (await _failure_of(response, now_s=self._runtime.wall_clock())).error
            with map_httpx_errors():
                async for event in httpx_sse.EventSource(response).aiter_sse():
                    if event.data:
                        yield decode_event_data(event.data)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the httpx client if this transport made it."""
        if self._owns_http:
            with map_httpx_errors():
                await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None,
        timeout_s: float | None,
        accept: str,
        log: EventLog,
    ) -> httpx.Response:
        attempt = 0
        while True:
            outcome = await self._attempt(method, path, body=body, timeout_s=timeout_s, accept=accept)
            if isinstance(outcome, httpx.Response):
                return outcome
            delay_s = self._retry_delay_s(outcome, attempt)
            if delay_s is None:
                raise outcome.error
            attempt += 1
            log.record(
                RequestRetried(at_s=log.elapsed_s(), attempt=attempt, delay_s=delay_s, reason=outcome.error.code.value)
            )
            await self._runtime.sleep(delay_s)

    def _retry_delay_s(self, failure: _Failure, attempt: int) -> float | None:
        """How long to wait before retrying after ``failure``, or ``None`` to give up."""
        now_s = self._runtime.wall_clock()
        retry = should_retry(
            self._policy,
            attempt=attempt,
            error=failure.error,
            status=failure.status,
            headers=failure.headers,
            now_s=now_s,
        )
        if not retry:
            return None
        return retry_delay_s(self._policy, attempt=attempt, rng=self._runtime.rng, headers=failure.headers, now_s=now_s)

    async def _attempt(
        self, method: str, path: str, *, body: Mapping[str, Any] | None, timeout_s: float | None, accept: str
    ) -> httpx.Response | _Failure:
        request = self._http.build_request(
            method,
            self._base_url + path,
            json=body,
            headers={**self._headers, "accept": accept},
            timeout=httpx.Timeout(timeout_s),
        )
        try:
            with map_httpx_errors():
                response = await self._http.send(request, stream=True)
            if not response.is_success:
                return await _failure_of(response, now_s=self._runtime.wall_clock())
            if accept == _JSON:  # a whole answer is read inside the attempt, so a broken read is retried too
                await _read(response)
            return response
        except MeshError as error:  # no usable answer: the policy judges the error alone
            return _Failure(error, None, httpx.Headers())


@dataclass(frozen=True, slots=True)
class _Failure:
    """A failed attempt, with what the retry policy needs to judge it."""

    error: MeshError
    status: int | None
    headers: httpx.Headers


async def _failure_of(response: httpx.Response, *, now_s: float) -> _Failure:
    content = await _read(response)
    error = error_from_response(response.status_code, content, response.headers, now_s=now_s)
    return _Failure(error, response.status_code, response.headers)


async def _read(response: httpx.Response) -> bytes:
    """Read a whole body and close the response, mapping httpx's failures."""
    with map_httpx_errors(request_id=response.headers.get("x-request-id")):
        try:
            return await response.aread()
        finally:
            await response.aclose()


def _default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": f"meshcore-sdk/{_version()}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _version() -> str:
    try:
        return importlib.metadata.version("meshcore")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree without metadata
        return "0"
