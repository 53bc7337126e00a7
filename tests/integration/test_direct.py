"""Direct mode end to end: a real router, a real node on the real model, coturn, and a blocked path.

The client gathers host candidates on 127.0.0.2 and the node on 127.0.0.3; coturn
listens on 127.0.0.1 with a static auth secret on free ports.  Blocking the direct
path adds nft rules that drop 127.0.0.2 <-> 127.0.0.3 (coturn still reaches both),
and the fixture always deletes its table.  Needs root, ``turnserver`` and ``nft``;
each test is skipped with the reason when one is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from meshcore_node.config import NodeConfig
from meshcore_node.daemon import Node
from meshcore_node.models import inspect_model
from meshcore_router import RouterConfig, create_app
from meshcore_router.direct import check_turn
from meshcore_router.server import serve
from meshcore_sdk import AsyncClient, ClientConfig, DirectConnected, RelayUsed
from meshcore_sdk.config import DirectOptions, Mode
from meshcore_sdk.errors import ConnectError, MeshTimeout, TicketReplayed, TicketWrongAudience

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.timeout(180)]

CLIENT_IP = "127.0.0.2"
NODE_IP = "127.0.0.3"
TURN_SECRET = "meshcore-test-secret"
MESSAGES = [{"role": "user", "content": "Count from one to five."}]


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def turn_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """coturn on 127.0.0.1, REST credentials with a static secret; stopped by its pid."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn is not installed (apt-get install coturn; scripts/install.sh does it)")
    workdir = tmp_path_factory.mktemp("coturn")
    port = _free_port()
    low = 50000 + (os.getpid() % 100) * 100
    process = subprocess.Popen(
        [
            binary,
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            f"--min-port={low}",
            f"--max-port={low + 99}",
            "--use-auth-secret",
            f"--static-auth-secret={TURN_SECRET}",
            "--realm=meshcore.test",
            "--allow-loopback-peers",
            "--no-multicast-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-rfc5780",
            "--no-software-attribute",
            "--fingerprint",
            f"--userdb={workdir / 'turndb'}",
            f"--pidfile={workdir / 'turnserver.pid'}",
            f"--log-file={workdir / 'turn.log'}",
            "--simple-log",
            "--no-stdout-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"turn:127.0.0.1:{port}?transport=udp"
    try:
        deadline = time.monotonic() + 10
        while not asyncio.run(check_turn(url, timeout_s=0.5)):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"coturn did not start; see {workdir / 'turn.log'}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def blocked_direct_path() -> Iterator[None]:
    """Drop every packet between the client's and the node's address, both ways; always removed."""
    nft = shutil.which("nft")
    if nft is None or os.geteuid() != 0:
        pytest.skip("blocking the direct path needs root and nft (apt-get install nftables)")
    table = f"meshcore_direct_{os.getpid()}"
    script = (
        f"add table inet {table}\n"
        f"add chain inet {table} out {{ type filter hook output priority 0 ; }}\n"
        f"add rule inet {table} out ip saddr {CLIENT_IP} ip daddr {NODE_IP} drop\n"
        f"add rule inet {table} out ip saddr {NODE_IP} ip daddr {CLIENT_IP} drop\n"
    )
    subprocess.run([nft, "-f", "-"], input=script, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run([nft, "delete", "table", "inet", table], check=False)


@dataclass
class Mesh:
    router_url: str
    node: Node
    app_state: object


async def _start_mesh(model_path: Path, turn_urls: tuple[str, ...]) -> AsyncIterator[Mesh]:
    config = RouterConfig(
        port=0, turn_urls=turn_urls, turn_secret=TURN_SECRET if turn_urls else None, turn_health_interval_s=0.5
    )
    app = create_app(config)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    model = inspect_model(model_path)
    async with asyncio.TaskGroup() as group:
        server = group.create_task(serve(config, app=app, ready=ready.set_result))
        url = await ready
        node = Node(
            NodeConfig(
                router_url=url,
                node_id="node-a",
                model_path=model_path,
                n_ctx=1024,
                n_threads=2,
                ice_host_addresses=(NODE_IP,),
            ),
            model,
        )
        node_task = group.create_task(node.run())
        router = app.state.router
        direct = app.state.direct
        async with asyncio.timeout(120):
            await router.wait_until(lambda registry: registry.ready_count(now=router.clock()) > 0)
            if turn_urls:
                await direct.wait_turn_healthy()
        try:
            yield Mesh(url, node, app.state)
        finally:
            node_task.cancel()
            server.cancel()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(model_path: Path, turn_url: str) -> AsyncIterator[Mesh]:
    async for running in _start_mesh(model_path, (turn_url,)):
        yield running


def client_for(mesh: Mesh, **options: object) -> AsyncClient:
    direct = DirectOptions(host_addresses=(CLIENT_IP,), min_connect_deadline_s=2.0, **options)  # type: ignore[arg-type]
    config = ClientConfig(router_url=mesh.router_url, mode=Mode.DIRECT, direct=direct, timeout_s=60)
    return AsyncClient.from_config(config)


async def _complete(client: AsyncClient) -> tuple[str, list[object]]:
    stream = await client.chat.completions.create(
        model="gemma-3-270m", messages=MESSAGES, stream=True, max_tokens=12, temperature=0
    )
    text = ""
    async with stream:
        async for chunk in stream:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    return text, list(stream.events)


def _connected(events: list[object]) -> DirectConnected:
    found = [event for event in events if isinstance(event, DirectConnected)]
    assert len(found) == 1, events
    return found[0]


pytestmark.append(pytest.mark.asyncio(loop_scope="module"))


async def test_direct_streams_a_completion_over_the_direct_path(mesh: Mesh) -> None:
    async with client_for(mesh) as client:
        text, events = await _complete(client)

    connected = _connected(events)
    assert text.strip()
    assert (connected.relay, connected.local_candidate, connected.remote_candidate) == (False, "host", "host")
    assert not any(isinstance(event, RelayUsed) for event in events)


async def test_with_the_direct_path_blocked_the_relay_carries_the_same_request(mesh: Mesh) -> None:
    async with client_for(mesh) as client:
        direct_text, _ = await _complete(client)
        with blocked_direct_path():
            relayed_text, events = await _complete(client)

    assert relayed_text == direct_text
    assert _connected(events).relay
    assert any(isinstance(event, RelayUsed) for event in events)


async def test_with_the_relay_forced_from_the_start_the_request_completes(mesh: Mesh) -> None:
    async with client_for(mesh, force_relay=True) as client:
        text, events = await _complete(client)

    assert text.strip()
    assert (_connected(events).relay, _connected(events).local_candidate) == (True, "relay")


async def test_a_replayed_ticket_is_refused_by_the_worker(mesh: Mesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.router_url) as http:
        grant = (await http.post("/v1/tickets", json={"model": "gemma-3-270m", "n": 1})).json()["tickets"][0]
        bodies = [_offer(grant, grant["node_id"]) for _ in range(2)]
        first = await http.post("/mesh/v1/signal", json=bodies[0])
        second = await http.post("/mesh/v1/signal", json=bodies[1])

    assert first.status_code == 200
    assert (second.status_code, second.json()["error"]["code"]) == (403, TicketReplayed.code.value)


async def test_a_ticket_for_another_worker_is_refused_and_starts_nothing(mesh: Mesh) -> None:
    direct = mesh.app_state.direct  # type: ignore[attr-defined]
    sha = mesh.node.direct._config.model_sha256
    ticket, _ = direct.keys.mint(
        node_id="node-b", client_id="c-x", model_sha256=sha, max_tokens=8, jti="jti-other-node-1", now=time.time()
    )
    grant = {"ticket": ticket, "model": f"sha256:{sha}"}
    before = mesh.node.engine.in_flight
    async with httpx.AsyncClient(base_url=mesh.router_url) as http:
        refused = await http.post("/mesh/v1/signal", json=_offer(grant, "node-a"))

    assert (refused.status_code, refused.json()["error"]["code"]) == (403, TicketWrongAudience.code.value)
    assert mesh.node.engine.in_flight <= before  # nothing new was submitted


def _offer(grant: dict[str, object], node_id: str) -> dict[str, object]:
    generate = {
        "type": "generate",
        "request_id": "direct",
        "model": grant["model"],
        "prompt": "Hi",
        "params": {"max_tokens": 4},
    }
    sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    return {
        "node_id": node_id,
        "offer": {
            "type": "signal",
            "kind": "offer",
            "request_id": "direct",
            "ticket": grant["ticket"],
            "sdp": sdp,
            "generate": generate,
        },
    }


async def test_a_dead_turn_server_costs_no_more_than_the_worker_deadline(model_path: Path, mesh: Mesh) -> None:
    dead = f"turn:127.0.0.1:{_free_port()}?transport=udp"
    async with httpx.AsyncClient(base_url=mesh.router_url) as http:
        grant = (await http.post("/v1/tickets", json={"model": "gemma-3-270m", "n": 1})).json()
    assert grant["tickets"][0]["ice_servers"], "the live TURN server is handed out"
    # A TURN server that dies after its health check: the client's own deadline bounds the cost.
    options = DirectOptions(host_addresses=(CLIENT_IP,), min_connect_deadline_s=0.3, workers=1)
    config = ClientConfig(router_url=mesh.router_url, mode=Mode.DIRECT, direct=options, timeout_s=60, max_retries=0)
    transport = _DeadTurnRouter(dead, mesh.router_url)
    client = AsyncClient.from_config(config, transport=transport)
    started = time.monotonic()
    with pytest.raises(ConnectError) as raised:
        await client.chat.completions.create(model="gemma-3-270m", messages=MESSAGES, stream=True, max_tokens=4)
    elapsed = time.monotonic() - started
    await client.aclose()

    assert isinstance(raised.value.__cause__, MeshTimeout)
    assert elapsed < 1.5, f"took {elapsed:.2f} s, aiortc alone would wait 5 s"


class _DeadTurnRouter(httpx.AsyncBaseTransport):
    """Forwards to the real router, but hands out a dead TURN server in the tickets."""

    def __init__(self, dead_url: str, router_url: str) -> None:
        self._dead_url = dead_url
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path != "/v1/tickets":
            return response
        body = json.loads(await response.aread())
        for grant in body.get("tickets", []):
            for server in grant["ice_servers"]:
                server["urls"] = [self._dead_url]
        return httpx.Response(response.status_code, json=body, headers={"x-request-id": "t"})

    async def aclose(self) -> None:
        await self._inner.aclose()
