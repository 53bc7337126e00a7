"""The async client, :class:`AsyncClient`: the one implementation both twins run.

The constructor is the one place the SDK reads the environment
(``MESHCORE_ROUTER_URL``, ``MESHCORE_API_KEY``), and it does no network I/O.
"""

from __future__ import annotations

import importlib.util
import os
from types import TracebackType
from typing import TYPE_CHECKING, Self

import httpx

from meshcore_sdk._base import Runtime, Transport
from meshcore_sdk._resources import AsyncChat, AsyncChatCompletions, AsyncCompletions, AsyncModels
from meshcore_sdk.config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    ClientConfig,
    Mode,
    require_available,
    resolve_config,
)
from meshcore_sdk.protocol.errors import ConfigError
from meshcore_sdk.proxy.transport import ProxyTransport

if TYPE_CHECKING:
    from meshcore_sdk.direct.dial import Dialer

__all__ = ["AsyncClient"]


def _transport_for(
    config: ClientConfig,
    runtime: Runtime,
    transport: httpx.AsyncBaseTransport | None,
    http_client: httpx.AsyncClient | None,
) -> Transport:
    """The transport of ``config.mode``; direct mode's, and swarm's direct legs, need aiortc (the ``direct`` extra)."""
    if config.mode is Mode.SWARM:
        return _swarm_transport(config, runtime, transport, http_client)
    if config.mode is not Mode.DIRECT:
        return ProxyTransport(config, runtime=runtime, transport=transport, http_client=http_client)
    try:
        from meshcore_sdk.direct.transport import DirectTransport
    except ImportError as exc:
        raise ConfigError("mode='direct' needs aiortc: pip install 'meshcore[direct]'") from exc
    return DirectTransport(config, runtime=runtime, transport=transport, http_client=http_client)


def _swarm_transport(
    config: ClientConfig,
    runtime: Runtime,
    transport: httpx.AsyncBaseTransport | None,
    http_client: httpx.AsyncClient | None,
) -> Transport:
    """Swarm mode over direct legs (a :class:`Dialer`), or over the router's frame stream when asked.

    ``legs="auto"`` takes direct legs when aiortc is installed (the ``direct`` extra), else proxy legs.
    """
    from meshcore_sdk.swarm.transport import SwarmTransport

    legs = config.swarm.legs
    if legs == "auto":
        legs = "direct" if importlib.util.find_spec("aiortc") is not None else "proxy"
    dialer: Dialer | None = None
    if legs == "direct":
        try:
            from meshcore_sdk.direct.dial import Dialer
        except ImportError as exc:
            raise ConfigError(
                "swarm mode over direct legs needs aiortc: pip install 'meshcore[direct]', "
                "or ask for proxy legs with SwarmOptions(legs='proxy')"
            ) from exc
        dialer = Dialer(config, runtime=runtime, transport=transport, http_client=http_client)
    router = (
        dialer.router
        if dialer is not None
        else ProxyTransport(config, runtime=runtime, transport=transport, http_client=http_client)
    )
    return SwarmTransport(
        router,
        router_url=config.router_url,
        swarm_size=config.swarm_size,
        options=config.swarm,
        runtime=runtime,
        dialer=dialer,
    )


class AsyncClient:
    """An async client of a Meshcore mesh, shaped as OpenAI's ``AsyncOpenAI``::

        async with AsyncClient() as client:
            completion = await client.chat.completions.create(
                model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}]
            )

    Args:
        router_url: the router's address; default ``MESHCORE_ROUTER_URL``, then
            ``http://127.0.0.1:8080``.  A trailing ``/v1`` is accepted.
        api_key: sent as a bearer token; default ``MESHCORE_API_KEY``, else none.
        mode: ``"proxy"`` (through the router's HTTP API) or ``"direct"`` (straight to a
            worker over WebRTC, with a ticket from the router; needs the ``direct`` extra).
            ``"swarm"`` sends each completion's prompt to ``swarm_size`` workers at once (over direct
            connections when aiortc is installed, else through the router; ``SwarmOptions.legs``);
            the first to answer leads, and a follower takes over mid-stream if it fails.
        swarm_size: how many workers a swarm request fans out to, 1 to 5.
        timeout: connect and read timeout in seconds (a read is one piece of a
            stream); ``None`` waits for ever.  Each call may override it.
        max_retries: retries of a failed request before it delivered anything.
        transport: an httpx transport to send through, e.g. ``MockTransport(handler)`` in tests.
        http_client: an httpx client to use; the caller keeps ownership and closes it.
        runtime: sleep, random numbers and clocks; tests pass fakes.

    Raises:
        ConfigError: an argument is invalid or names an unavailable mode.
    """

    def __init__(
        self,
        router_url: str | None = None,
        api_key: str | None = None,
        *,
        mode: Mode | str = Mode.PROXY,
        swarm_size: int = 3,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        config = resolve_config(
            router_url=router_url,
            api_key=api_key,
            mode=mode,
            swarm_size=swarm_size,
            timeout_s=timeout,
            max_retries=max_retries,
            environ=os.environ,
        )
        self._setup(config, transport=transport, http_client=http_client, runtime=runtime)

    @classmethod
    def from_config(
        cls,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        runtime: Runtime | None = None,
    ) -> Self:
        """Build a client from a complete :class:`ClientConfig`; the environment is not read.

        Raises:
            ConfigError: ``config.mode`` is not available in this version.
        """
        client = cls.__new__(cls)
        client._setup(config, transport=transport, http_client=http_client, runtime=runtime)
        return client

    def _setup(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None,
        http_client: httpx.AsyncClient | None,
        runtime: Runtime | None,
    ) -> None:
        require_available(config.mode)
        runtime = runtime or Runtime()
        self._config = config
        self._transport: Transport = _transport_for(config, runtime, transport, http_client)
        timeout_s, clock = config.timeout_s, runtime.clock
        self.chat = AsyncChat(AsyncChatCompletions(self._transport, timeout_s=timeout_s, clock=clock))
        self.completions = AsyncCompletions(self._transport, timeout_s=timeout_s, clock=clock)
        self.models = AsyncModels(self._transport, timeout_s=timeout_s, clock=clock)
        self._closed = False

    @property
    def config(self) -> ClientConfig:
        """The settings this client runs with."""
        return self._config

    async def aclose(self) -> None:
        """Release the client's connections; safe to call more than once."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {self._config.mode.value} router_url={self._config.router_url!r}>"
