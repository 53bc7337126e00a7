"""Run the router under uvicorn in the current event loop, with a started handshake.

:func:`serve` binds, then calls ``ready(url)`` with the address it actually
listens on (the real port when the config says port 0), and serves until it is
cancelled; cancelling it shuts the server down gracefully.  It installs no signal
handlers: the command line does that, so tests can run routers in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Callable, Generator

import uvicorn
from fastapi import FastAPI

from meshcore_router.app import create_app
from meshcore_router.config import RouterConfig

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """uvicorn's server, minus its signal handlers, plus a callback once it listens."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[str], None] | None) -> None:
        super().__init__(config)
        self._ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._ready is not None:
            self._ready(self.url)

    @property
    def url(self) -> str:
        """The address the server listens on."""
        address = self.servers[0].sockets[0].getsockname()
        host = self.config.host
        return f"http://[{host}]:{address[1]}" if ":" in host else f"http://{host}:{address[1]}"


async def serve(
    config: RouterConfig | None = None,
    *,
    ready: Callable[[str], None] | None = None,
    app: FastAPI | None = None,
) -> None:
    """Serve the router until cancelled.

    Args:
        config: the router's settings (host, port, caps).
        ready: called with the URL (``http://host:port``) once the server listens.
        app: the app to serve; :func:`create_app` of ``config`` by default.
    """
    config = config or RouterConfig()
    server = _Server(
        uvicorn.Config(
            app or create_app(config),
            host=config.host,
            port=config.port,
            ws_max_size=config.ws_max_message_bytes,
            timeout_graceful_shutdown=math.ceil(config.shutdown_timeout_s),
            log_config=None,
            access_log=False,
        ),
        ready,
    )
    try:
        await server.serve()
    except asyncio.CancelledError:
        if server.started:
            server.should_exit = True
            await server.shutdown()
        raise
