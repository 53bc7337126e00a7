"""``meshcore``: the command line.

Settings come, first match wins, from flags, ``MESHCORE_*`` environment
variables (``MESHCORE_ROUTER_URL``, or ``MESHCORE_<COMMAND>_<OPTION>`` such as
``MESHCORE_NODE_N_CTX``), a TOML config file (``--config``, ``MESHCORE_CONFIG``,
or ``~/.config/meshcore/config.toml``; one table per command), then defaults.

``router`` and ``node`` come from the ``meshcore.commands`` entry points of the
``router`` and ``node`` extras, loaded only when used, so the SDK alone installs
light and ``meshcore --help`` always works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from meshcore_sdk._client import AsyncClient
from meshcore_sdk.config import ClientConfig, DirectOptions, Mode
from meshcore_sdk.mesh import LocalMesh, MeshConfig
from meshcore_sdk.protocol.errors import MeshError
from meshcore_sdk.swarm.view import SwarmView

__all__ = ["main"]

_DEFAULT_CONFIG = Path("~/.config/meshcore/config.toml").expanduser()
_ROUTER_URL = click.option(
    "--router",
    envvar="MESHCORE_ROUTER_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The router's base URL.",
)
_LOOPBACK = ("127.0.0.1",)
_DEMO_PROMPT = "The three most useful things to know about running language models on many small machines are"


class _Commands(click.Group):
    """Adds the subcommands that other Meshcore packages register, loading each only when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugins = [entry.name for entry in entry_points(group="meshcore.commands")]
        return sorted({*super().list_commands(ctx), *plugins})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        for entry in entry_points(group="meshcore.commands", name=cmd_name):
            try:
                loaded = entry.load()
            except ImportError as exc:
                return _missing_extra(cmd_name, exc)
            assert isinstance(loaded, click.Command)
            return loaded
        return None


def _missing_extra(name: str, error: ImportError) -> click.Command:
    """A stand-in for a command whose extra is not installed: it says how to install it."""
    fix = f'pip install "meshcore[{name}]"'

    def explain() -> None:
        raise click.ClickException(f"'meshcore {name}' needs the {name} extra: {fix} ({error})")

    return click.Command(
        name, callback=explain, help=f"(not installed: {fix})", context_settings={"ignore_unknown_options": True}
    )


def _load_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    path = value or (_DEFAULT_CONFIG if _DEFAULT_CONFIG.is_file() else None)
    if path is None:
        return None
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from exc
    ctx.default_map = {name: _options(table) for name, table in data.items() if isinstance(table, dict)}
    return path


def _options(table: dict[str, Any]) -> dict[str, Any]:
    """Config keys are option names (``n-ctx`` or ``n_ctx`` for ``--n-ctx``)."""
    return {key.replace("-", "_"): value for key, value in table.items()}


@click.group(cls=_Commands, context_settings={"auto_envvar_prefix": "MESHCORE", "help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MESHCORE_CONFIG",
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="TOML config file, one table per command.",
)
@click.version_option(package_name="meshcore")
def main() -> None:
    """Meshcore: peer-to-peer LLM inference on other people's machines."""


@main.command()
@_ROUTER_URL
@click.option("--mode", type=click.Choice(["proxy", "direct", "swarm"]), default="proxy", show_default=True)
@click.option("--model", default="gemma-3-270m", show_default=True, help="Served model id or sha256:<hex>.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.0, show_default=True)
@click.argument("prompt")
def chat(router: str, mode: str, model: str, max_tokens: int, temperature: float, prompt: str) -> None:
    """Send PROMPT as a chat message and stream the answer."""

    async def run() -> None:
        async with AsyncClient(router_url=router, mode=mode) as client:
            stream = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
            )
            async with stream:
                async for chunk in stream:
                    if chunk.choices:
                        click.echo(chunk.choices[0].delta.content or "", nl=False)
        click.echo()

    _run(run())


@main.command()
@_ROUTER_URL
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def status(router: str, as_json: bool) -> None:
    """Show the router's nodes and models."""
    try:
        response = httpx.get(router.rstrip("/") + "/mesh/v1/status", timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot read {router}: {exc}") from exc
    data = response.json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    Console().print(_node_table(data.get("nodes", [])))


@main.command()
@click.option("--nodes", type=click.IntRange(min=0), default=3, show_default=True, help="Local worker nodes.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Router port.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="GGUF file to serve.")
def up(nodes: int, port: int, model: Path | None) -> None:
    """Run a router and NODES local workers until Ctrl-C."""

    async def run() -> None:
        console = Console()
        async with contextlib.AsyncExitStack() as stack:
            with console.status(f"starting a router and {nodes} nodes"):
                mesh = await stack.enter_async_context(LocalMesh(MeshConfig(nodes=nodes, port=port, model_path=model)))
            console.print(f"meshcore mesh up: router listening on {mesh.router_url} (logs in {mesh.log_dir})")
            console.print(_node_table(await mesh.nodes_status()))
            await _until_signal()
            console.print("stopping the mesh")

    _run(run())


@main.command()
@click.option("--nodes", type=click.IntRange(min=2), default=3, show_default=True, help="Local worker nodes.")
@click.option("--prompt", default=_DEMO_PROMPT, show_default=False, help="The text to continue.")
@click.option("--max-tokens", type=click.IntRange(min=2), default=96, show_default=True)
@click.option(
    "--kill-leader-at",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="SIGKILL the leading worker after this many tokens (0: never), to show a failover.",
)
def demo(nodes: int, prompt: str, max_tokens: int, kill_leader_at: int) -> None:
    """A local mesh on the bundled model, a swarm request shown live, and its leader killed mid-stream."""

    async def run() -> None:
        console = Console()
        async with contextlib.AsyncExitStack() as stack:
            with console.status(f"starting a local mesh: a router and {nodes} nodes on the bundled model"):
                mesh = await stack.enter_async_context(LocalMesh(MeshConfig(nodes=nodes, ice_host_addresses=_LOOPBACK)))
            console.print(_node_table(await mesh.nodes_status()))
            await _swarm_demo(console, mesh, prompt, max_tokens, kill_leader_at)

    _run(run())


async def _swarm_demo(console: Console, mesh: LocalMesh, prompt: str, max_tokens: int, kill_leader_at: int) -> None:
    # every part runs on this machine: the swarm's direct legs connect over loopback, offline too
    config = ClientConfig(
        router_url=mesh.router_url,
        mode=Mode.SWARM,
        swarm_size=len(mesh.nodes),
        direct=DirectOptions(host_addresses=_LOOPBACK),
    )
    async with AsyncClient.from_config(config) as client:
        model = (await client.models.list()).data[0].id
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=max_tokens, stream=True, temperature=0
        )
        view = SwarmView(stream, title=f"meshcore demo: {model}, swarm of {len(mesh.nodes)}")
        tokens = 0
        with Live(view, console=console, refresh_per_second=20):
            async with stream:
                async for chunk in stream:
                    view.add(chunk)
                    tokens += chunk.meshcore.seq is not None
                    if tokens == kill_leader_at and chunk.meshcore.worker_id in mesh.nodes:
                        mesh.nodes[chunk.meshcore.worker_id].send_signal(signal.SIGKILL)
                        kill_leader_at = 0  # once


def _node_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(title="nodes")
    for column in ("node", "status", "models", "in flight", "tokens/s"):
        table.add_column(column)
    for node in nodes:
        telemetry = node.get("telemetry") or {}
        models = ", ".join(str(m.get("served_name", m.get("sha256", "?"))) for m in node.get("models", []))
        table.add_row(
            str(node.get("node_id")),
            str(node.get("status")),
            models,
            str(telemetry.get("active_sequences", "-")),
            f"{telemetry.get('tokens_per_s', 0.0):.1f}",
        )
    return table


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _run(coroutine: Any) -> None:
    try:
        asyncio.run(coroutine)
    except MeshError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    except KeyboardInterrupt:
        click.echo()  # end the line the terminal's ^C left open


if __name__ == "__main__":
    main()
