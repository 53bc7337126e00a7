"""The audit routes: what anyone may check of the router's audits (``docs/protocol.md`` §9.4).

- ``GET /mesh/v1/audits``: the lottery's epochs (commitments, and secrets once revealed) and
  every known node's standing, routing weight, audit rate and balances;
- ``GET /mesh/v1/ledger?after=<seq>&limit=<n>``: ledger entries with their hashes, in order,
  so that anyone can re-walk the chain and replay the audit transcripts.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query, Request

from meshcore_router.audits.service import AuditService
from meshcore_sdk.protocol.errors import ModelNotFound

__all__ = ["audit_routes"]

_MAX_PAGE = 1000


def audit_routes() -> APIRouter:
    """The audit routes."""
    routes = APIRouter()
    routes.add_api_route("/mesh/v1/audits", audits, methods=["GET"])
    routes.add_api_route("/mesh/v1/ledger", ledger, methods=["GET"])
    return routes


def _service(request: Request) -> AuditService:
    service: AuditService | None = request.app.state.router.audits
    if service is None:
        raise ModelNotFound("this router runs no audits")
    return service


async def audits(request: Request) -> dict[str, Any]:
    """Epochs and standings."""
    service = _service(request)
    balances = service.ledger.balances()
    nodes = {}
    for node_id in sorted(set(service.book.node_ids()) | set(balances)):
        nodes[node_id] = {
            "standing": service.book.standing(node_id).value,
            "routing_weight": service.book.routing_weight(node_id),
            "audit_rate": service.book.audit_rate(node_id),
            "balance": asdict(balances[node_id]) if node_id in balances else None,
        }
    return {"epochs": service.epochs(), "nodes": nodes, "auditors": [a.node_id for a in service.auditors()]}


async def ledger(
    request: Request,
    after: int = Query(default=0, ge=0),
    limit: int = Query(default=100, ge=1, le=_MAX_PAGE),
) -> dict[str, Any]:
    """A page of ledger entries after ``after``."""
    entries = []
    for entry in _service(request).ledger.entries(after_seq=after):
        entries.append({**asdict(entry), "kind": entry.kind.value})
        if len(entries) >= limit:
            break
    return {"entries": entries}
