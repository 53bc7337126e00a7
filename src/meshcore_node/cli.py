"""``meshcore node``: run a worker daemon.  The one place the node reads its settings."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import signal
from collections.abc import Callable
from pathlib import Path

import click

from meshcore_node.config import NodeConfig
from meshcore_node.daemon import Node
from meshcore_node.models import bundled_model_path, inspect_model
from meshcore_sdk.proof.receipt import NodeKey
from meshcore_sdk.protocol.errors import ConfigError

__all__ = ["node_command", "run_node"]


@click.command("node")
@click.option(
    "--router",
    envvar="MESHCORE_ROUTER_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The router's base URL.",
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="GGUF file to serve (default: the bundled Gemma 3 270M).",
)
@click.option("--node-id", default=None, help="This node's id in the mesh (default: node-<random>).")
@click.option("--n-ctx", type=click.IntRange(min=64), default=4096, show_default=True, help="Context size in tokens.")
@click.option("--threads", "n_threads", type=click.IntRange(min=1), default=None, help="llama.cpp threads.")
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Requests accepted at once before the node reports BUSY.",
)
@click.option(
    "--hedge-reserve-slots",
    type=click.IntRange(min=0),
    default=None,
    help="Sequence slots kept for primaries: the node pushes back hedges unless more are free "
    "(default: a quarter of --max-in-flight).",
)
@click.option(
    "--passive-threads/--spinning-threads",
    default=False,
    show_default=True,
    help="Let idle llama.cpp threads sleep at once (for machines that run several nodes).",
)
@click.option(
    "--ice-host-address",
    "ice_host_addresses",
    multiple=True,
    help="An address direct mode gathers host candidates on; repeat for several (default: every interface "
    "but loopback).",
)
@click.option(
    "--fault-token-delay-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    hidden=True,
    help="Testing only: delay each token frame by this many milliseconds.",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The node's Ed25519 signing key (PEM), created if missing (default: a fresh key for this run only).",
)
@click.option(
    "--fault-claim-sha256",
    default=None,
    hidden=True,
    help="Testing only: advertise and sign for this model hash whatever file is served (a cheating node).",
)
@click.option("--log-level", default="WARNING", show_default=True, help="Python logging level.")
def node_command(
    router: str,
    model: Path | None,
    node_id: str | None,
    n_ctx: int,
    n_threads: int | None,
    max_in_flight: int,
    hedge_reserve_slots: int | None,
    passive_threads: bool,
    ice_host_addresses: tuple[str, ...],
    fault_token_delay_ms: float,
    key_path: Path | None,
    fault_claim_sha256: str | None,
    log_level: str,
) -> None:
    """Run a worker that serves a GGUF model to the mesh."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = NodeConfig(
        router_url=router,
        node_id=node_id or f"node-{secrets.token_hex(4)}",
        model_path=model,
        n_ctx=n_ctx,
        n_threads=n_threads,
        max_in_flight=max_in_flight,
        hedge_reserve_slots=hedge_reserve_slots,
        passive_threads=passive_threads,
        ice_host_addresses=ice_host_addresses or None,
        fault_token_delay_s=fault_token_delay_ms / 1000,
    )
    try:
        key = NodeKey.load_or_create(key_path) if key_path is not None else None
        asyncio.run(run_node(config, key=key, claim_sha256=fault_claim_sha256, announce=click.echo))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


async def run_node(
    config: NodeConfig,
    *,
    key: NodeKey | None = None,
    claim_sha256: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run a node until SIGINT or SIGTERM; ``announce`` hears of each registration.

    ``claim_sha256`` is a fault for tests: the node claims to serve that model, whatever its file.
    """
    path = config.model_path if config.model_path is not None else await asyncio.to_thread(bundled_model_path)
    model = await asyncio.to_thread(inspect_model, path)
    if claim_sha256 is not None:
        model = dataclasses.replace(model, sha256=claim_sha256)
    node = Node(config, model, key=key, on_registered=announce)
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await node.run()
