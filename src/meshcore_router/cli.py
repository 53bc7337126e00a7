"""``meshcore router``: run the router until SIGINT or SIGTERM.

Plain click options; the top-level ``meshcore`` group layers ``MESHCORE_ROUTER_*``
environment variables and the config file's ``[router]`` table over them.  Once
the server listens, one line goes to stdout, which launchers parse::

    meshcore router listening on http://127.0.0.1:8080
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import click

from meshcore_router.audits.config import AuditConfig
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
@click.option(
    "--ledger",
    default=None,
    help="The SQLite ledger of credits and audits (default: meshcore/ledger.sqlite in the user's data "
    "directory; ':memory:' keeps nothing).",
)
@click.option(
    "--trusted-auditor",
    "trusted_auditors",
    multiple=True,
    help="A node id trusted to audit other nodes' work; repeat for several (no audits run without one).",
)
@click.option(
    "--audit-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="Audit this share of every node's jobs (default: the share each node's standing gives).",
)
@click.option(
    "--shadow-interval-s",
    type=click.FloatRange(min=0),
    default=_DEFAULTS.audits.shadow_interval_s,
    show_default=True,
    help="How often a node on probation gets a shadow prompt, in seconds (0: never).",
)
@click.option(
    "--hedge-budget-max-tokens",
    type=click.FloatRange(min=0),
    default=_DEFAULTS.hedge_budget_max_tokens,
    show_default=True,
    help="Size of the router's hedging budget: hedges (extra swarm copies) are refused while it holds "
    "half of this or less (0: never place a hedge).",
)
@click.option(
    "--hedge-budget-token-ratio",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULTS.hedge_budget_token_ratio,
    show_default=True,
    help="Tokens each completed request gives back to the hedging budget.",
)
def router_command(
    host: str,
    port: int,
    heartbeat_interval_s: float,
    ledger: str | None,
    trusted_auditors: tuple[str, ...],
    audit_rate: float | None,
    shadow_interval_s: float,
    hedge_budget_max_tokens: float,
    hedge_budget_token_ratio: float,
) -> None:
    """Run the router: the mesh's control plane and its OpenAI-compatible API."""
    audits = dataclasses.replace(
        AuditConfig(),
        ledger_path=ledger or str(_default_ledger()),
        trusted_auditors=trusted_auditors,
        audit_rate=audit_rate,
        shadow_interval_s=shadow_interval_s,
    )
    config = RouterConfig(
        host=host,
        port=port,
        heartbeat_interval_s=heartbeat_interval_s,
        audits=audits,
        hedge_budget_max_tokens=hedge_budget_max_tokens,
        hedge_budget_token_ratio=hedge_budget_token_ratio,
    )
    asyncio.run(_run(config))


def _default_ledger() -> Path:
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = data / "meshcore" / "ledger.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


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
