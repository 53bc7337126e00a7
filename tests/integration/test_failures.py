"""What breaks, and what must not: engine crashes, router restarts, stalled nodes, hostile frames."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from meshcore_sdk import AsyncClient, EngineCrashed
from meshcore_sdk.mesh import LocalMesh

from .conftest import engine_pid, wait_status

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration, pytest.mark.model]

MODEL = "gemma-3-270m"
HELLO_CLIENT = json.dumps({"type": "hello", "versions": [1], "role": "client"})


async def test_engine_killed_mid_stream_gives_a_typed_error_and_the_node_recovers(own_mesh: LocalMesh) -> None:
    async with AsyncClient(router_url=own_mesh.router_url, max_retries=0) as client:
        stream = await client.completions.create(
            model=MODEL, prompt="Write a long story:", max_tokens=500, temperature=0, stream=True
        )
        received = 0
        with pytest.raises(EngineCrashed) as crash:
            async with stream:
                async for _chunk in stream:
                    received += 1
                    if received == 3:
                        os.kill(engine_pid(own_mesh.nodes["node-0"]), signal.SIGKILL)
        assert crash.value.retryable and crash.value.worker_id in (None, "node-0")
        assert 3 <= received < 500
        recovered_s = await wait_status(own_mesh, "node-0", "READY", timeout_s=30.0)
        print(f"node READY again {recovered_s:.2f} s after the crash was reported")
        assert own_mesh.nodes["node-0"].returncode is None  # the daemon never died
        again = await client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0)
    assert again.usage is not None and again.usage.completion_tokens == 4


async def test_nodes_come_back_after_the_router_restarts(own_mesh: LocalMesh) -> None:
    await own_mesh.restart_router(kill=True)
    await wait_status(own_mesh, "node-0", "READY", timeout_s=30.0)
    async with AsyncClient(router_url=own_mesh.router_url) as client:
        answer = await client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0)
    assert answer.meshcore.worker_id == "node-0"


async def test_a_stalled_node_expires_and_rejoins_when_it_wakes(shared_mesh: LocalMesh) -> None:
    stalled = shared_mesh.nodes["node-1"]
    stalled.send_signal(signal.SIGSTOP)
    try:
        await wait_status(shared_mesh, "node-1", None, timeout_s=10.0)  # three missed heartbeats
        async with AsyncClient(router_url=shared_mesh.router_url) as client:
            for _ in range(3):
                answer = await client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, temperature=0)
                assert answer.meshcore.worker_id == "node-0"
    finally:
        stalled.send_signal(signal.SIGCONT)
    await wait_status(shared_mesh, "node-1", "READY", timeout_s=30.0)


async def _stream_text(mesh: LocalMesh) -> str:
    async with AsyncClient(router_url=mesh.router_url) as client:
        stream = await client.completions.create(
            model=MODEL, prompt="Count: one, two,", max_tokens=24, temperature=0, stream=True
        )
        async with stream:
            return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])


async def _closing_error(url: str, frames: list[str | bytes]) -> tuple[dict[str, object], int | None]:
    """Send ``frames``; return the error frame the router answers with and its close code."""
    async with connect(url, max_size=None) as websocket:
        for frame in frames:
            await websocket.send(frame)
        reply: dict[str, object] = {}
        try:
            async for message in websocket:
                decoded = json.loads(message)
                if decoded.get("type") == "error":
                    reply = decoded
        except ConnectionClosed:
            pass
        return reply, websocket.close_code


@pytest.mark.parametrize(
    ("path", "frames", "code"),
    [
        ("/mesh/v1/stream", [HELLO_CLIENT, "{not json"], "malformed_frame"),
        ("/mesh/v1/stream", [HELLO_CLIENT, "[" * 64 + "]" * 64], "frame_too_deep"),
        (
            "/mesh/v1/stream",
            [HELLO_CLIENT, json.dumps({"type": "hello", "versions": [1], "role": "client", "agent": "x" * 3_000_000})],
            None,
        ),
        (
            "/mesh/v1/stream",
            [
                HELLO_CLIENT,
                json.dumps(
                    {"type": "token", "request_id": "r", "seq": 0, "token_id": 1, "text_bytes": "", "t_worker": 0}
                ),
            ],
            "out_of_order_frame",
        ),
        ("/mesh/v1/stream", [json.dumps({"type": "cancel", "request_id": "r"})], "out_of_order_frame"),
        (
            "/mesh/v1/node",
            [json.dumps({"type": "hello", "versions": [1], "role": "node"}), "\x00garbage"],
            "malformed_frame",
        ),
        ("/mesh/v1/node", [json.dumps({"type": "hello", "versions": [99], "role": "node"})], "version_mismatch"),
    ],
    ids=[
        "client-malformed",
        "client-too-deep",
        "client-oversized",
        "client-token",
        "client-before-hello",
        "node-malformed",
        "node-version",
    ],
)
async def test_hostile_frames_close_only_their_own_connection(
    shared_mesh: LocalMesh, path: str, frames: list[str | bytes], code: str | None
) -> None:
    url = shared_mesh.router_url.replace("http://", "ws://") + path
    streaming = asyncio.ensure_future(_stream_text(shared_mesh))
    try:
        error, close_code = await _closing_error(url, frames)
    finally:
        text = await streaming
    if code is not None:
        assert error.get("code") == code
    assert close_code is not None and close_code >= 1000
    assert text != ""  # the real request alongside was not disturbed
    assert set((await shared_mesh.node_statuses()).values()) == {"READY"}
