"""``meshcore router``: run the router until SIGINT or SIGTERM.

Plain click options; the top-level ``meshcore`` group layers ``MESHCORE_ROUTER_*``
environment variables and the config file's ``[router]`` table over them.  Once
the server listens, one line goes to stdout, which launchers parse::

    meshcore router listening on http://127.0.0.1:8080
"""

from __future__ import annotations

import asyncio
import signal

import click

from meshcore_router.config import RouterConfig
from meshcore_router.server import serve

__all__ = ["LISTENING", "router_command"]

LISTENING = "meshcore router listening on {url}"
"""The line printed once the router listens; ``{url}`` is ``http://HOST:PORT`` with the real port."""

_DEFAULTS = RouterConfig()


@click.command("router")
@click.option("--host", default=_DEFAULTS.host, show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=_DEFAULTS.port,
    show_default=True,
    help="TCP port to listen on (0: any free port).",
)
@click.option(
    "--heartbeat-interval-s",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULTS.heartbeat_interval_s,
    show_default=True,
    help="How often nodes send a heartbeat, in seconds.",
)
def router_command(host: str, port: int, heartbeat_interval_s: float) -> None:
    """Run the router: the mesh's control plane and its OpenAI-compatible API."""
    config = RouterConfig(host=host, port=port, heartbeat_interval_s=heartbeat_interval_s)
    asyncio.run(_run(config))


async def _run(config: RouterConfig) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tasks:
        server = tasks.create_task(serve(config, ready=_announce))

        def stop() -> None:
            if not server.cancelling():  # a second signal must not cut the graceful shutdown short
                server.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)


def _announce(url: str) -> None:
    click.echo(LISTENING.format(url=url))  # click.echo flushes, so launchers see the line at once
