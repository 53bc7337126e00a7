"""Hedges on the client frame stream: the router's budget and the workers' push-back (docs/protocol.md §5)."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from meshcore_router import RouterConfig
from meshcore_sdk.protocol import (
    AcceptedFrame,
    CancelFrame,
    ChatMessage,
    DoneFrame,
    ErrorFrame,
    GenerateFrame,
    decode_frame,
    encode_frame,
)

from .conftest import RunningRouter, StartNode
from .fake_node import Plan
from .test_client_stream import client_stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
def router_config() -> RouterConfig:
    """A tiny hedging budget: two tokens, so one refusal for capacity brings it to half."""
    return RouterConfig(port=0, hedge_budget_max_tokens=2.0)


async def send(ws: ClientConnection, request_id: str, group: str | None = "g") -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    frame = GenerateFrame(request_id=request_id, model="tiny-model", messages=messages, group=group)
    await ws.send(encode_frame(frame))


async def first_frame(ws: ClientConnection, request_id: str) -> AcceptedFrame | ErrorFrame:
    """The router's first answer to a request: where it went, or why not."""
    while True:
        frame = decode_frame(await ws.recv())
        if getattr(frame, "request_id", None) == request_id:
            assert isinstance(frame, AcceptedFrame | ErrorFrame), frame
            return frame


async def test_hedges_take_only_free_slots_without_push_back_and_stop_when_the_budget_is_spent(
    mesh: RunningRouter, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    held = Plan(fault="hold", fault_at=1)
    await start_node("node-a", max_sequences=1, plan=held)
    await start_node("node-b", max_sequences=4, plan=held, accepts_hedges=False)
    async with client_stream(mesh) as ws:
        where: dict[str, AcceptedFrame | ErrorFrame] = {}
        for request_id, group in [("c-1", "g"), ("c-2", "g"), ("c-3", "g"), ("c-4", "g"), ("c-5", None)]:
            await send(ws, request_id, group)
            where[request_id] = await first_frame(ws, request_id)
        worker = {rid: f.worker_id if isinstance(f, AcceptedFrame) else None for rid, f in where.items()}
        # the primary goes where it always would; the first hedge to the free slot on node-a;
        # the next finds node-a full and node-b pushing back; then the budget is at half
        assert worker == {"c-1": "node-b", "c-2": "node-a", "c-3": None, "c-4": None, "c-5": "node-b"}
        for refused, why in [("c-3", "free slot"), ("c-4", "budget")]:
            error = where[refused]
            assert isinstance(error, ErrorFrame)
            assert (error.code, error.retryable) == ("no_capacity", False)
            assert why in error.message
        metrics = (await http.get("/metrics")).text
        assert "meshcore_hedges_placed_total 1.0" in metrics
        assert 'meshcore_hedges_refused_total{reason="capacity"} 1.0' in metrics
        assert 'meshcore_hedges_refused_total{reason="budget"} 1.0' in metrics
        assert "meshcore_hedge_budget_tokens 1.0" in metrics
        status = (await http.get("/mesh/v1/status")).json()
        assert status["hedging"] == {
            "tokens": 1.0,
            "max_tokens": 2.0,
            "allows_hedges": False,
            "placed": 1,
            "refused_budget": 1,
            "refused_capacity": 1,
        }
        pushing_back = {node["node_id"]: node["telemetry"]["accepts_hedges"] for node in status["nodes"]}
        assert pushing_back == {"node-a": True, "node-b": False}
        for request_id in ("c-1", "c-2", "c-5"):
            await ws.send(encode_frame(CancelFrame(request_id=request_id)))


async def test_when_the_primary_ends_the_next_copy_is_a_primary_again(
    mesh: RunningRouter, start_node: StartNode
) -> None:
    await start_node("node-a", max_sequences=1)
    async with client_stream(mesh) as ws:
        await send(ws, "c-1")
        while not isinstance(frame := decode_frame(await ws.recv()), DoneFrame):
            assert not isinstance(frame, ErrorFrame), frame
        mesh.router.hedging.budget.failed(2)  # spent: only primaries go now
        await send(ws, "c-2")
        assert isinstance(await first_frame(ws, "c-2"), AcceptedFrame)
