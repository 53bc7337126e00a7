"""Fixtures for router tests: a real router on 127.0.0.1 (port 0) in this event loop, and scripted nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from meshcore_router import RouterConfig, create_app, serve
from meshcore_router.registry import NodeRegistry
from meshcore_router.router import Router
from meshcore_sdk.protocol import NodeStatus

from .fake_node import FakeNode

STARTUP_TIMEOUT_S = 10.0


@dataclass
class RunningRouter:
    """A router serving on loopback, with its app for looking inside."""

    url: str
    app: FastAPI

    @property
    def router(self) -> Router:
        router: Router = self.app.state.router
        return router

    def node_status(self, node_id: str) -> NodeStatus | None:
        record = self.router.registry.get(node_id)
        return None if record is None else record.status


async def wait_until(router: Router, predicate: Callable[[NodeRegistry], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``predicate(registry)`` holds."""
    async with asyncio.timeout(timeout_s):
        await router.wait_until(predicate)


def is_ready(node_id: str) -> Callable[[NodeRegistry], bool]:
    """A predicate: the node is registered and READY."""

    def ready(registry: NodeRegistry) -> bool:
        record = registry.get(node_id)
        return record is not None and record.status is NodeStatus.READY

    return ready


@contextlib.asynccontextmanager
async def running_router(config: RouterConfig) -> AsyncIterator[RunningRouter]:
    """Serve a router until the block ends."""
    app = create_app(config)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(config, ready=ready.set_result, app=app))
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            await asyncio.wait((server, ready), return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()  # the server failed to start: raise why
        yield RunningRouter(url=ready.result(), app=app)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


@pytest.fixture
def router_config() -> RouterConfig:
    """The settings of the ``mesh`` router; override in a test module for other ones."""
    return RouterConfig(port=0, max_frame_bytes=64 * 1024, ws_max_message_bytes=128 * 1024)


@pytest.fixture
async def mesh(router_config: RouterConfig) -> AsyncIterator[RunningRouter]:
    """A router running on loopback."""
    async with running_router(router_config) as running:
        yield running


StartNode = Callable[..., Awaitable[FakeNode]]


@pytest.fixture
async def start_node(mesh: RunningRouter) -> AsyncIterator[StartNode]:
    """Start scripted nodes on ``mesh``, READY (or STARTING) when returned; all are stopped at the end."""
    nodes: list[FakeNode] = []

    async def start(node_id: str = "node-a", *, ready: bool = True, **kwargs: Any) -> FakeNode:
        node = FakeNode(mesh.url, node_id, **kwargs)
        node.status = NodeStatus.READY if ready else NodeStatus.STARTING
        nodes.append(node)
        await node.start()
        if ready:
            await wait_until(mesh.router, is_ready(node_id))
        return node

    yield start
    for node in nodes:
        await node.stop()


@pytest.fixture
async def http(mesh: RunningRouter) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``mesh``."""
    async with httpx.AsyncClient(base_url=mesh.url, timeout=10.0) as client:
        yield client
