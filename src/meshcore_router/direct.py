"""Direct mode at the router: tickets, the JWKS, the signaling relay and TURN health (``docs/protocol.md`` §8).

- ``POST /v1/tickets {model, n, max_tokens?}``: up to ``n`` tickets, one per chosen worker,
  each with the ICE servers this client may use (the first healthy TURN server with fresh
  REST credentials, plus configured STUN servers) and where to signal;
- ``GET /mesh/v1/jwks``: the public keys that verify tickets, by ``kid``;
- ``POST /mesh/v1/signal {node_id, offer}``: relays an offer over the worker's control link
  (outbound from the worker, so it works behind NAT) and answers with the worker's answer,
  or with the worker's refusal as an error (a bad ticket: 403 and a ``ticket_*`` code).

The router does not judge tickets on the signaling path: the worker does, offline.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Request

from meshcore_router.hedging import HedgeRefused
from meshcore_router.matchmaking import route
from meshcore_router.router import Router, new_request_id
from meshcore_router.tickets import SigningKey, TicketKeys
from meshcore_router.turn import TurnHealth, binding_request, is_binding_success, parse_turn_url, turn_ice_server
from meshcore_sdk.protocol import (
    GenerateFrame,
    IceServer,
    SignalFrame,
    SignalRequest,
    TicketGrant,
    TicketRequest,
    TicketsResponse,
)
from meshcore_sdk.protocol.errors import (
    BadRequest,
    MeshError,
    MeshTimeout,
    NoCapacity,
    OutOfOrderFrame,
    WorkerLost,
)

__all__ = ["DirectService", "check_turn", "direct_routes", "new_signing_key"]

logger = logging.getLogger(__name__)


def new_signing_key() -> SigningKey:
    """A fresh Ed25519 key with a random ``kid``."""
    return SigningKey(kid=f"k-{secrets.token_hex(6)}", private_key=Ed25519PrivateKey.generate())


class DirectService:
    """The router's direct-mode state: signing keys and TURN health.

    Args:
        router: the router whose registry and links are used.
        wall_clock: seconds since the Unix epoch (tickets and TURN credentials carry absolute times).
    """

    def __init__(self, router: Router, *, wall_clock: Callable[[], float]) -> None:
        config = router.config
        self.router = router
        self.config = config
        self.wall_clock = wall_clock
        self.keys = TicketKeys(
            new_signing_key(),
            issuer=config.ticket_issuer,
            lifetime_s=config.ticket_lifetime_s,
            leeway_s=config.ticket_leeway_s,
        )
        self.turn = TurnHealth(config.turn_urls, stale_after_s=3 * config.turn_health_interval_s)
        self._turn_checked = asyncio.Event()

    def rotate_keys(self, new: SigningKey | None = None) -> SigningKey:
        """Sign with a new key from now on (no restart); the old one stays published until its tickets expire."""
        new = new or new_signing_key()
        self.keys.rotate(new, now=self.wall_clock())
        return new

    def ice_servers(self, user: str) -> list[IceServer]:
        """The ICE servers for one peer: the first healthy TURN server (REST credentials for ``user``), STUN."""
        servers = [IceServer(urls=[url]) for url in self.config.stun_urls]
        healthy = self.turn.healthy(now=self.router.clock())
        if healthy and self.config.turn_secret:
            expires = int(self.wall_clock() + self.config.turn_credential_ttl_s)
            servers.append(turn_ice_server(healthy[0], self.config.turn_secret, user=user, expires_at_unix=expires))
        return servers

    def issue(self, request: TicketRequest) -> TicketsResponse:
        """Tickets for up to ``request.n`` distinct READY workers of the model.

        With ``request.hedges`` the tickets after the first are hedges: granted only while
        the router's hedging budget allows, to workers with a free slot that take hedges;
        the first refused one ends the grants.

        Raises:
            ModelNotFound: no node has ever served the model.
            NoCapacity: no READY node can take a request now.
        """
        client_id = f"c-{secrets.token_hex(6)}"
        max_tokens = request.max_tokens or self.config.ticket_default_max_tokens
        grants: list[TicketGrant] = []
        chosen: list[str] = []
        self.keys.retire_expired(now=self.wall_clock())
        for index in range(request.n):
            hedge = request.hedges and index > 0
            try:
                picked = self.router.hedging.place(
                    hedge=hedge,
                    pick=lambda as_hedge: self._pick(request.model, exclude=chosen, hedge=as_hedge),
                    drain=False,
                )
            except NoCapacity:
                if grants:
                    break
                raise
            if isinstance(picked, HedgeRefused):
                break  # the swarm goes on with the copies granted so far
            chosen.append(picked.node_id)
            token, claims = self.keys.mint(
                node_id=picked.node_id,
                client_id=client_id,
                model_sha256=picked.sha256,
                max_tokens=max_tokens,
                jti=secrets.token_urlsafe(16),
                now=self.wall_clock(),
            )
            grants.append(
                TicketGrant(
                    node_id=picked.node_id,
                    ticket=token,
                    model=f"sha256:{picked.sha256}",
                    max_tokens=max_tokens,
                    expires_at_unix=claims.exp,
                    ice_servers=self.ice_servers(client_id),
                )
            )
        return TicketsResponse(tickets=grants)

    def _pick(self, model: str, *, exclude: list[str], hedge: bool = False) -> Any:
        router = self.router
        return route(
            router.registry,
            model,
            now=router.clock(),
            in_flight=router.in_flight,
            exclude=exclude,
            max_load=self.config.max_node_load,
            retry_after_s=self.config.no_capacity_retry_after_s,
            weight=self.router.routing_weight,
            hedge=hedge,
        )

    def _expect_receipt(self, node_id: str, generate: GenerateFrame | None) -> None:
        """A direct job is still the router's: its receipt comes over the worker's link (§9.1)."""
        audits = self.router.audits
        sha256 = None if generate is None else self.router.registry.resolve_model(generate.model)
        if audits is not None and generate is not None and sha256 is not None:
            audits.dispatched(node_id, generate.model_copy(update={"model": "sha256:" + sha256}))

    async def relay_offer(self, request: SignalRequest) -> SignalFrame:
        """Relay an offer to its worker and wait for the answer.

        The offer gets a fresh request id (so it never collides with the link's other
        requests), its ``generate`` frame the same id, and the worker's ICE servers.

        Raises:
            BadRequest: the offer is not an offer, or carries no ticket or ``generate`` frame.
            WorkerLost: the worker is not connected, or its link closed.
            MeshTimeout: the worker did not answer in ``signal_timeout_s``.
            MeshError: the worker refused the offer (a ``TicketError`` for a bad ticket).
        """
        offer = request.offer
        if offer.kind != "offer" or not offer.ticket or offer.generate is None:
            raise BadRequest("a signal request carries an offer with a ticket and a generate frame")
        link = self.router.link_of(request.node_id)
        if link is None:
            raise WorkerLost(f"node {request.node_id} is not connected", worker_id=request.node_id)
        request_id = new_request_id()
        relayed = offer.model_copy(
            update={
                "request_id": request_id,
                "generate": offer.generate.model_copy(update={"request_id": request_id}),
                "ice_servers": self.ice_servers(request.node_id),
            }
        )
        answer = link.open_signal(relayed)
        self._expect_receipt(request.node_id, relayed.generate)
        try:
            async with asyncio.timeout(self.config.signal_timeout_s):
                frame = await answer
        except TimeoutError as exc:
            raise MeshTimeout(
                f"node {request.node_id} did not answer in {self.config.signal_timeout_s} s", worker_id=request.node_id
            ) from exc
        except MeshError as exc:
            exc.worker_id = request.node_id
            raise
        finally:
            link.drop_signal(request_id)
        if frame.kind != "answer":
            raise OutOfOrderFrame(f"node {request.node_id} answered an offer with an offer", worker_id=request.node_id)
        return frame

    async def wait_turn_healthy(self) -> None:
        """Wait until some TURN server passed its health check (for launchers and tests; bound it)."""
        while not self.turn.healthy(now=self.router.clock()):
            checked = self._turn_checked
            await checked.wait()

    async def run_turn_health(self) -> None:
        """Check every TURN server now and then, forever."""
        if not self.config.turn_urls:
            return
        while True:
            results = await asyncio.gather(
                *(check_turn(url, timeout_s=self.config.turn_health_timeout_s) for url in self.config.turn_urls)
            )
            now = self.router.clock()
            for url, ok in zip(self.config.turn_urls, results, strict=True):
                if not ok:
                    logger.warning("TURN server %s failed its health check", url)
                self.turn.checked(url, ok=ok, now=now)
            self._turn_checked.set()
            self._turn_checked = asyncio.Event()
            await asyncio.sleep(self.config.turn_health_interval_s)


async def check_turn(url: str, *, timeout_s: float) -> bool:
    """Whether the TURN server at ``url`` answers a STUN binding request within ``timeout_s``."""
    endpoint = parse_turn_url(url)
    transaction_id = secrets.token_bytes(12)
    request = binding_request(transaction_id)
    try:
        async with asyncio.timeout(timeout_s):
            if endpoint.transport == "tcp":
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
                try:
                    writer.write(request)
                    return is_binding_success(await reader.readexactly(20), transaction_id)
                finally:
                    writer.close()
            return await _udp_binding(endpoint.host, endpoint.port, request, transaction_id)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False


class _BindingProtocol(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answered.done() and is_binding_success(data, self.transaction_id):
            self.answered.set_result(True)

    def error_received(self, exc: Exception) -> None:
        if not self.answered.done():
            self.answered.set_result(False)


async def _udp_binding(host: str, port: int, request: bytes, transaction_id: bytes) -> bool:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _BindingProtocol(transaction_id), remote_addr=(host, port)
    )
    try:
        transport.sendto(request)
        return await protocol.answered
    finally:
        transport.close()


# --- routes -----------------------------------------------------------------------------------


def direct_service_of(request: Request) -> DirectService:
    """The :class:`DirectService` of the app serving ``request``."""
    return cast(DirectService, request.app.state.direct)


def direct_routes() -> APIRouter:
    """``POST /v1/tickets``, ``GET /mesh/v1/jwks``, ``POST /mesh/v1/signal``."""
    routes = APIRouter()
    routes.add_api_route("/v1/tickets", tickets, methods=["POST"])
    routes.add_api_route("/mesh/v1/jwks", jwks, methods=["GET"])
    routes.add_api_route("/mesh/v1/signal", signal, methods=["POST"])
    return routes


async def tickets(request: Request, body: TicketRequest) -> dict[str, Any]:
    """Tickets for direct mode."""
    return direct_service_of(request).issue(body).model_dump(exclude_none=True)


async def jwks(request: Request) -> dict[str, Any]:
    """The published ticket keys."""
    return direct_service_of(request).keys.jwks()


async def signal(request: Request, body: SignalRequest) -> dict[str, Any]:
    """Relay an offer; answer with the worker's answer."""
    answer = await direct_service_of(request).relay_offer(body)
    return answer.model_dump(exclude_none=True)
