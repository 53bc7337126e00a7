"""Node control links (docs/protocol.md §4): liveness, replacement, and misbehaving nodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from meshcore_router import RouterConfig
from meshcore_sdk.protocol import CancelFrame, ErrorFrame, HelloFrame, NodeStatus, Role, decode_frame, encode_frame

from .conftest import RunningRouter, StartNode, is_ready, running_router, wait_until
from .fake_node import FakeNode, Plan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

CHAT = {"model": "tiny-model", "messages": [{"role": "user", "content": "Hi"}]}


async def first_events(response: httpx.Response, count: int) -> tuple[list[Any], AsyncIterator[str]]:
    """Read ``count`` SSE data events of a streamed response; returns them and the rest of its lines."""
    lines = response.aiter_lines()
    events: list[Any] = []
    async for line in lines:
        if line.startswith("data: "):
            events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == count:
                break
    return events, lines


async def rest_of(lines: AsyncIterator[str]) -> list[Any]:
    data = [line.removeprefix("data: ") async for line in lines if line.startswith("data: ")]
    return [item if item == "[DONE]" else json.loads(item) for item in data]


async def test_a_silent_node_expires_its_link_closes_4408_and_its_requests_fail() -> None:
    config = RouterConfig(port=0, heartbeat_interval_s=0.1)
    async with running_router(config) as mesh, httpx.AsyncClient(base_url=mesh.url, timeout=10) as http:
        node = await FakeNode(mesh.url, plan=Plan(fault="hold")).start()
        try:
            await wait_until(mesh.router, is_ready("node-a"))
            request = asyncio.create_task(http.post("/v1/chat/completions", json=CHAT))
            await node.wait_for(lambda: len(node.generated) == 1)
            node.heartbeats_enabled = False
            async with asyncio.timeout(5):
                await node.closed.wait()
            assert node.close_code == 4408
            assert mesh.router.registry.get("node-a") is None
            response = await request
            assert response.status_code == 502
            assert response.json()["error"]["code"] == "worker_lost"
        finally:
            await node.stop()


async def test_a_new_registration_replaces_the_old_link_4409(start_node: StartNode, mesh: RunningRouter) -> None:
    old = await start_node("node-a")
    new = await start_node("node-a")
    async with asyncio.timeout(5):
        await old.closed.wait()
    assert old.close_code == 4409
    assert not new.closed.is_set()
    assert mesh.node_status("node-a") is NodeStatus.READY  # the new link's record
    assert mesh.router.in_flight("node-a") == 0


async def test_an_out_of_order_token_fails_that_request_cancels_it_and_keeps_the_link(
    http: httpx.AsyncClient, start_node: StartNode
) -> None:
    node = await start_node("node-a", plan=Plan(fault="out_of_order", fault_at=1))
    async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        events = await rest_of(response.aiter_lines())
    assert events[0]["choices"][0]["delta"]["content"] == "Hel"
    assert events[-1]["error"]["code"] == "out_of_order_frame"
    request_id = node.generated[0].request_id
    await node.wait_for(lambda: node.cancelled(request_id))
    node.plan = Plan()
    response = await http.post("/v1/chat/completions", json=CHAT)
    assert response.json()["choices"][0]["message"]["content"] == "Hello world"
    assert not node.closed.is_set()


@pytest.mark.parametrize(
    ("fault", "close_code", "code"),
    [
        ("malformed", 1008, "malformed_frame"),
        ("oversized", 1009, "frame_too_large"),
        ("too_deep", 1008, "frame_too_deep"),
        ("disconnect", 1000, None),
    ],
)
async def test_a_broken_link_fails_its_requests_with_worker_lost_and_leaves_other_nodes_alone(
    http: httpx.AsyncClient, start_node: StartNode, fault: str, close_code: int, code: str | None
) -> None:
    healthy = await start_node("node-b", plan=Plan(fault="gate", fault_at=1))
    async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as undisturbed:
        first, rest = await first_events(undisturbed, 1)
        assert first[0]["meshcore"]["worker_id"] == "node-b"
        bad = await start_node("node-a", plan=Plan(fault=fault, fault_at=1))  # type: ignore[arg-type]
        response = await http.post("/v1/chat/completions", json=CHAT)  # node-a is less loaded
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "worker_lost"
        async with asyncio.timeout(5):
            await bad.closed.wait()
        assert bad.close_code == close_code
        if code is not None:
            errors = bad.frames(ErrorFrame)
            assert [e.code for e in errors] == [code]  # type: ignore[union-attr]
        healthy.gate.set()
        events = await rest_of(rest)
    assert [e["choices"][0]["delta"].get("content") for e in events[:-1]] == ["lo", " world", None]
    assert events[-1] == "[DONE]"
    assert not healthy.closed.is_set()


async def test_a_too_large_message_is_refused_by_the_websocket_layer(
    http: httpx.AsyncClient, start_node: StartNode, mesh: RunningRouter
) -> None:
    size = mesh.router.config.ws_max_message_bytes + 1
    node = await start_node("node-a", plan=Plan(fault="oversized", fault_at=0, oversized_bytes=size))
    response = await http.post("/v1/chat/completions", json=CHAT)
    assert response.json()["error"]["code"] == "worker_lost"
    async with asyncio.timeout(5):
        await node.closed.wait()
    assert node.close_code == 1009


async def test_an_engine_crash_reaches_the_client_as_engine_crashed(
    http: httpx.AsyncClient, start_node: StartNode
) -> None:
    await start_node("node-a", plan=Plan(fault="engine_crashed", fault_at=0))
    response = await http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "engine_crashed"
    assert response.headers["x-should-retry"] == "true"  # nothing was generated yet


async def test_a_frame_for_an_unknown_request_gets_an_error_frame_and_the_link_stays(
    http: httpx.AsyncClient, start_node: StartNode
) -> None:
    node = await start_node("node-a")
    await node.send_raw('{"type": "paused", "request_id": "r-never", "next_seq": 0}')
    await node.wait_for(lambda: bool(node.frames(ErrorFrame)))
    (error,) = node.frames(ErrorFrame)
    assert (error.request_id, error.code) == ("r-never", "out_of_order_frame")  # type: ignore[union-attr]
    response = await http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert not node.closed.is_set()


async def test_a_client_that_goes_away_mid_stream_gets_its_request_cancelled(
    http: httpx.AsyncClient, start_node: StartNode, mesh: RunningRouter
) -> None:
    node = await start_node("node-a", plan=Plan(fault="hold", fault_at=1))
    async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        await first_events(response, 1)
    request_id = node.generated[0].request_id
    await node.wait_for(lambda: node.cancelled(request_id))
    assert mesh.router.in_flight("node-a") == 0  # the router lets go of a request before it sends cancel
    assert [f.request_id for f in node.frames(CancelFrame)] == [request_id]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ('{"type": "cancel", "request_id": "r-1"}', "out_of_order_frame"),
        (encode_frame(HelloFrame(versions=[99], role=Role.NODE)), "version_mismatch"),
        (encode_frame(HelloFrame(versions=[1], role=Role.CLIENT)), "out_of_order_frame"),
        ("not json", "malformed_frame"),
    ],
)
async def test_a_bad_handshake_is_refused_with_an_error_frame(mesh: RunningRouter, first: str, code: str) -> None:
    url = mesh.url.replace("http://", "ws://") + "/mesh/v1/node"
    async with connect(url, proxy=None) as ws:
        await ws.send(first)
        error = decode_frame(await ws.recv())
        assert isinstance(error, ErrorFrame)
        assert error.code == code
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008
