"""A real local mesh for end-to-end tests: router and nodes as processes, the real model, loopback only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest_asyncio

from meshcore_sdk.mesh import LocalMesh, MeshConfig

HEARTBEAT_INTERVAL_S = 0.2


def mesh_config(model_path: Path, *, nodes: int, **overrides: object) -> MeshConfig:
    """A small, fast mesh: short heartbeats, a small context, one thread a node."""
    settings: dict[str, object] = {
        "nodes": nodes,
        "model_path": model_path,
        "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
        "n_ctx": 1024,
        "node_threads": 1,
        "start_timeout_s": 120.0,
    }
    return MeshConfig(**{**settings, **overrides})  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_mesh(model_path: Path) -> AsyncIterator[LocalMesh]:
    """Two nodes that tests share; tests that break nodes start a mesh of their own."""
    async with LocalMesh(mesh_config(model_path, nodes=2)) as mesh:
        yield mesh


@pytest_asyncio.fixture(loop_scope="session")
async def own_mesh(model_path: Path) -> AsyncIterator[LocalMesh]:
    """One node this test may break."""
    async with LocalMesh(mesh_config(model_path, nodes=1)) as mesh:
        yield mesh


def engine_pid(node: asyncio.subprocess.Process) -> int:
    """The pid of a node process's engine child (the llama.cpp process)."""
    (child,) = [p for p in psutil.Process(node.pid).children() if "meshcore_node.engine" in " ".join(p.cmdline())]
    return child.pid


async def wait_status(mesh: LocalMesh, node_id: str, status: str | None, *, timeout_s: float = 30.0) -> float:
    """Wait until ``node_id`` reports ``status`` (None: gone from the registry); return the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(timeout_s):
        await mesh.wait_node(node_id, status)
    return loop.time() - started
