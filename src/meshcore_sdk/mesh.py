"""A local mesh on this machine: one router and N worker nodes, as real processes.

``meshcore up`` and ``meshcore demo`` use it, and so can notebooks and tests::

    async with LocalMesh(nodes=3) as mesh:
        async with AsyncClient(router_url=mesh.router_url) as client:
            ...

Each part runs as its own process (``python -m meshcore_router``,
``python -m meshcore_node``), exactly as an operator would start it, so a test
can kill a node and watch the mesh cope.  The SDK imports neither package: it
only starts their programs, which need the ``node`` and ``router`` extras.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from meshcore_sdk.protocol.errors import ConfigError, MeshTimeout

__all__ = ["LocalMesh", "MeshConfig"]


@dataclass(frozen=True)
class MeshConfig:
    """How to start a local mesh.

    Attributes:
        nodes: how many worker nodes to start.
        port: the router's port (0: any free port).
        model_path: the GGUF every node serves (None: the bundled Gemma 3 270M).
        heartbeat_interval_s: the router's heartbeat interval, in seconds (None: its default).
        node_threads: llama.cpp threads per node (None: its default).
        n_ctx: each node's context size in tokens.
        start_timeout_s: how long the whole mesh may take to become READY, in seconds.
        log_dir: where each process's output goes (None: a new temporary directory).
        passive_threads: nodes' idle llama.cpp threads sleep at once instead of spinning (None: when
            more than one node shares this machine).
        ice_host_addresses: the addresses each node's direct mode gathers host candidates on (None: every
            interface but loopback; ``("127.0.0.1",)`` lets a client on this machine connect directly).
        trusted_auditors: node ids the router trusts to audit the others' work (none: no audits).
        audit_rate: every node's audit rate (None: the router's default, from each node's standing).
        ledger_path: the router's ledger (None: ``ledger.sqlite`` in the log directory).
        shadow_interval_s: how often the router sends nodes on probation a shadow prompt (None: its default).
        hedge_budget_max_tokens: the size of the router's hedging budget (None: its default; 0: the
            router places no hedges).
        python: the interpreter that runs the parts.
    """

    nodes: int = 3
    port: int = 0
    model_path: Path | None = None
    heartbeat_interval_s: float | None = None
    node_threads: int | None = None
    n_ctx: int = 4096
    start_timeout_s: float = 180.0
    log_dir: Path | None = None
    passive_threads: bool | None = None
    ice_host_addresses: tuple[str, ...] | None = None
    trusted_auditors: tuple[str, ...] = ()
    audit_rate: float | None = None
    ledger_path: Path | None = None
    shadow_interval_s: float | None = None
    hedge_budget_max_tokens: float | None = None
    python: str = field(default_factory=lambda: sys.executable)


class LocalMesh:
    """Starts a router and its nodes, waits until every node is READY, stops them all on exit.

    Args:
        config: what to start.
    """

    def __init__(self, config: MeshConfig | None = None) -> None:
        self.config = config or MeshConfig()
        if self.config.nodes < 0:
            raise ConfigError("a mesh needs zero or more nodes")
        self.log_dir = self.config.log_dir or Path(tempfile.mkdtemp(prefix="meshcore-"))
        self.router: asyncio.subprocess.Process | None = None
        self.nodes: dict[str, asyncio.subprocess.Process] = {}
        self._router_url: str | None = None
        self._port: int | None = None

    @property
    def ledger_path(self) -> Path:
        """The router's ledger file."""
        return self.config.ledger_path or self.log_dir / "ledger.sqlite"

    @property
    def router_url(self) -> str:
        """The router's base URL (``http://127.0.0.1:PORT``)."""
        if self._router_url is None:
            raise ConfigError("the mesh is not running")
        return self._router_url

    async def __aenter__(self) -> LocalMesh:
        try:
            async with asyncio.timeout(self.config.start_timeout_s):
                await self._start_router()
                for index in range(self.config.nodes):
                    await self.start_node(f"node-{index}")
                await self.wait_ready(self.config.nodes)
        except TimeoutError as exc:
            await self.aclose()
            raise MeshTimeout(
                f"the local mesh was not READY within {self.config.start_timeout_s} s; logs in {self.log_dir}"
            ) from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start_node(self, node_id: str, *extra_args: str) -> asyncio.subprocess.Process:
        """Start one more node process with id ``node_id``."""
        args = [
            "-m",
            "meshcore_node",
            "--router",
            self.router_url,
            "--node-id",
            node_id,
            "--n-ctx",
            str(self.config.n_ctx),
            "--key",
            str(self.log_dir / f"{node_id}.key"),
        ]
        if self.config.model_path is not None:
            args += ["--model", str(self.config.model_path)]
        if self.config.node_threads is not None:
            args += ["--threads", str(self.config.node_threads)]
        passive = self.config.passive_threads
        if passive if passive is not None else self.config.nodes > 1:
            args.append("--passive-threads")
        for address in self.config.ice_host_addresses or ():
            args += ["--ice-host-address", address]
        process = await self._spawn(node_id, [*args, *extra_args])
        self.nodes[node_id] = process
        return process

    async def status(self) -> dict[str, object]:
        """The router's registry as JSON (``GET /mesh/v1/status``)."""
        async with httpx.AsyncClient(base_url=self.router_url, timeout=5.0) as http:
            response = await http.get("/mesh/v1/status")
            response.raise_for_status()
            result: dict[str, object] = response.json()
            return result

    async def nodes_status(self) -> list[dict[str, Any]]:
        """The registered nodes as the router lists them (``node_id``, ``status``, ``models``, ``telemetry``)."""
        nodes = (await self.status()).get("nodes", [])
        assert isinstance(nodes, list)
        return nodes

    async def node_statuses(self) -> dict[str, str]:
        """Each registered node's status, by node id."""
        return {str(node["node_id"]): str(node["status"]) for node in await self.nodes_status()}

    async def wait_ready(self, count: int, *, node_ids: Sequence[str] | None = None) -> None:
        """Wait until ``count`` nodes (or all of ``node_ids``) report READY."""
        while True:
            ready = {node for node, status in (await self.node_statuses()).items() if status == "READY"}
            if (node_ids is not None and ready.issuperset(node_ids)) or (node_ids is None and len(ready) >= count):
                return
            for node_id, process in self.nodes.items():
                if process.returncode is not None:
                    raise ConfigError(f"node {node_id} exited with code {process.returncode}; see {self.log_dir}")
            await asyncio.sleep(0.1)

    async def restart_router(self, *, kill: bool = True) -> None:
        """Stop the router (SIGKILL by default, as a crash would) and start a new one on the same port.

        Nodes keep running; they reconnect to the new router on their own.
        """
        if self.router is not None:
            if kill and self.router.returncode is None:
                self.router.kill()
            await _stop(self.router)
        await self._start_router()

    async def wait_node(self, node_id: str, status: str | None) -> None:
        """Wait until ``node_id`` reports ``status`` (None: until the router no longer lists it).

        The registry lives in the router's process, so this polls its status page.
        """
        while True:
            if (await self.node_statuses()).get(node_id) == status:
                return
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        """Stop every node, then the router (SIGTERM, then SIGKILL after 10 s)."""
        for process in [*self.nodes.values(), self.router]:
            if process is not None:
                await _stop(process)

    async def _start_router(self) -> None:
        if self._port is None:
            self._port = self.config.port or _free_port()
        port = self._port
        args = ["-m", "meshcore_router", "--port", str(port), "--ledger", str(self.ledger_path)]
        if self.config.heartbeat_interval_s is not None:
            args += ["--heartbeat-interval-s", str(self.config.heartbeat_interval_s)]
        for auditor in self.config.trusted_auditors:
            args += ["--trusted-auditor", auditor]
        if self.config.audit_rate is not None:
            args += ["--audit-rate", str(self.config.audit_rate)]
        if self.config.shadow_interval_s is not None:
            args += ["--shadow-interval-s", str(self.config.shadow_interval_s)]
        if self.config.hedge_budget_max_tokens is not None:
            args += ["--hedge-budget-max-tokens", str(self.config.hedge_budget_max_tokens)]
        self.router = await self._spawn("router", args)
        self._router_url = f"http://127.0.0.1:{port}"
        while True:
            with contextlib.suppress(httpx.TransportError):
                await self.status()
                return
            if self.router.returncode is not None:
                raise ConfigError(f"the router exited with code {self.router.returncode}; see {self.log_dir}")
            await asyncio.sleep(0.05)

    async def _spawn(self, name: str, args: list[str]) -> asyncio.subprocess.Process:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            return await asyncio.create_subprocess_exec(
                self.config.python,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the mesh through aclose, in order
            )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(10.0):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
