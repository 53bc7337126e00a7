"""The router's own routes: health, metrics, mesh status, and the two websockets.

- ``GET /health``: 200 ``{"status": "ok"}`` once a node is READY, 503 ``{"status": "unavailable"}`` before;
- ``GET /metrics``: Prometheus text;
- ``GET /mesh/v1/status``: the registry and the hedging budget as JSON;
- ``GET /mesh/v1/nodes/watch?node_id=...``: server-sent events, one ``{"node_id": ...}`` for each
  watched node that leaves the mesh (its link closed), ``docs/protocol.md`` §8.5;
- ``WS /mesh/v1/node``: a node's control link (``docs/protocol.md`` §4);
- ``WS /mesh/v1/stream``: a client's frame stream (§5).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.responses import Response, StreamingResponse

from meshcore_router.client_stream import serve_client
from meshcore_router.http_api import router_of
from meshcore_router.metrics import CONTENT_TYPE
from meshcore_router.registry import NodeRecord, NodeRegistry
from meshcore_router.router import Router
from meshcore_router.transport import StarletteConnection
from meshcore_sdk.protocol.direct import MAX_TICKETS_PER_REQUEST

__all__ = ["departed", "mesh_routes"]


def mesh_routes() -> APIRouter:
    """The routes outside ``/v1``."""
    routes = APIRouter()
    routes.add_api_route("/health", health, methods=["GET"])
    routes.add_api_route("/metrics", metrics, methods=["GET"])
    routes.add_api_route("/mesh/v1/status", status, methods=["GET"])
    routes.add_api_route("/mesh/v1/nodes/watch", watch_nodes, methods=["GET"])
    routes.add_api_websocket_route("/mesh/v1/node", node_link)
    routes.add_api_websocket_route("/mesh/v1/stream", client_stream)
    return routes


async def health(request: Request) -> JSONResponse:
    """Ready once some node is READY."""
    router = router_of(request)
    if router.registry.ready_count(now=router.clock()) > 0:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


async def metrics(request: Request) -> Response:
    """The router's metrics in Prometheus' text format."""
    return Response(router_of(request).metrics.render(), media_type=CONTENT_TYPE)


async def status(request: Request) -> dict[str, Any]:
    """Every registered node (status, models, telemetry, how long ago it was last heard from) and the hedging budget."""
    router = router_of(request)
    snapshot = router.registry.snapshot(now=router.clock())
    return {
        "nodes": [_node_json(router, record, snapshot.now) for record in snapshot.nodes],
        "hedging": dataclasses.asdict(router.hedging.stats()),
    }


def departed(registry: NodeRegistry, watched: Iterable[str]) -> list[str]:
    """The watched nodes that left the mesh (their link closed, so the registry dropped them)."""
    return [node_id for node_id in watched if registry.get(node_id) is None]


async def watch_nodes(
    request: Request,
    node_id: Annotated[list[str], Query(min_length=1, max_length=4 * MAX_TICKETS_PER_REQUEST)],
) -> StreamingResponse:
    """Server-sent events: each watched node that leaves the mesh, once; the stream ends when all have.

    A swarm's direct legs watch their workers here: a worker killed outright is seen by the
    router the moment its link closes, long before the client would see the stall.  A node
    not in the mesh when the watch starts is reported at once.
    """
    router = router_of(request)
    watched = dict.fromkeys(node_id)

    async def events() -> AsyncIterator[str]:
        yield ": watching\n\n"  # a comment: the client knows the watch is in place
        while watched:
            await router.wait_until(lambda registry: bool(departed(registry, watched)))
            for node in departed(router.registry, watched):
                del watched[node]
                yield _left_event(node)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def _left_event(node_id: str) -> str:
    return f"data: {json.dumps({'node_id': node_id, 'event': 'left'})}\n\n"


def _node_json(router: Router, record: NodeRecord, now: float) -> dict[str, Any]:
    return {
        "node_id": record.node_id,
        "status": record.status.value,
        "models": [model.model_dump() for model in record.models],
        "max_sequences": record.max_sequences,
        "in_flight": router.in_flight(record.node_id),
        "telemetry": record.telemetry.model_dump(),
        "last_seen_age_s": round(max(0.0, now - record.last_seen), 3),
        "connected_for_s": round(max(0.0, now - record.registered_at), 3),
    }


async def node_link(websocket: WebSocket) -> None:
    """A node's control link."""
    await websocket.accept()
    await _router_of_socket(websocket).serve_node(StarletteConnection(websocket))


async def client_stream(websocket: WebSocket) -> None:
    """A client's frame stream."""
    await websocket.accept()
    await serve_client(_router_of_socket(websocket), StarletteConnection(websocket))


def _router_of_socket(websocket: WebSocket) -> Router:
    router: Router = websocket.app.state.router
    return router
