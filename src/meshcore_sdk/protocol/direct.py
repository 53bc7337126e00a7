"""Direct mode's wire shapes: tickets, ICE servers and the signaling request (``docs/protocol.md`` §8).

A client asks the router for tickets (``POST /v1/tickets``, :class:`TicketRequest`)
and gets one :class:`TicketGrant` per chosen worker: a signed ticket, the ICE
servers this client may use, and where to signal.  It then posts a
:class:`SignalRequest` whose ``offer`` is a ``signal`` frame carrying the ticket,
its SDP offer and the ``generate`` frame; the router relays it over the
worker's control link and answers with the worker's ``signal`` answer.

:class:`TicketClaims` is the payload a ticket carries.  Signing and verifying
live outside this package (the router signs, the node verifies), since they need
a cryptography library; the constants they share are here.

Pure: pydantic and the standard library only.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from meshcore_sdk.protocol.frames import IceServer, NodeId, SignalFrame

__all__ = [
    "MAX_TICKETS_PER_REQUEST",
    "MAX_TICKET_LIFETIME_S",
    "SIGNAL_PATH",
    "TICKET_ALGORITHM",
    "TICKET_TYPE",
    "IceServer",
    "SignalRequest",
    "TicketClaims",
    "TicketGrant",
    "TicketRequest",
    "TicketsResponse",
]

TICKET_TYPE: Final = "meshcore-ticket+jwt"
"""The ``typ`` header every ticket carries; verifiers refuse any other (RFC 8725 §3.11)."""

TICKET_ALGORITHM: Final = "EdDSA"
"""The one signing algorithm tickets use (Ed25519 keys); verifiers refuse any other."""

MAX_TICKET_LIFETIME_S: Final = 300
"""The longest a ticket may live (``exp - iat``), in seconds, even with a valid signature."""

MAX_TICKETS_PER_REQUEST: Final = 5
"""The most tickets one request may ask for (the largest swarm)."""

SIGNAL_PATH: Final = "/mesh/v1/signal"
"""Where a client posts its offer, relative to the router's base address."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Tolerant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TicketRequest(_Strict):
    """``POST /v1/tickets``: up to ``n`` tickets for ``model``, each good for ``max_tokens``.

    ``hedges``: the tickets after the first are for speculative copies of one request (a
    swarm's legs), not alternatives to try in turn; the router grants them only as its
    hedging budget and its workers' free slots allow (``meshcore_router.hedging``).
    """

    model: str = Field(min_length=1, max_length=256)
    n: int = Field(default=1, ge=1, le=MAX_TICKETS_PER_REQUEST)
    max_tokens: int | None = Field(default=None, ge=1, le=131_072)
    hedges: bool = False


class TicketGrant(_Tolerant):
    """One ticket for one worker, with what the client needs to reach it."""

    node_id: str
    ticket: str
    model: str
    max_tokens: int
    expires_at_unix: float
    ice_servers: list[IceServer] = Field(default_factory=list)
    signal_path: str = SIGNAL_PATH


class TicketsResponse(_Tolerant):
    """The answer to ``POST /v1/tickets``: one grant per chosen worker, at least one."""

    tickets: list[TicketGrant] = Field(min_length=1, max_length=MAX_TICKETS_PER_REQUEST)


class SignalRequest(_Strict):
    """``POST /mesh/v1/signal``: an offer for the worker ``node_id``."""

    node_id: NodeId
    offer: SignalFrame


class TicketClaims(_Strict):
    """What a ticket asserts (a JWT payload).

    Attributes:
        iss: the router that signed it.
        sub: the client it was issued to (also the TURN username's user part).
        aud: the one worker that may accept it.
        iat: issued at, seconds since the epoch.
        nbf: not valid before, seconds since the epoch.
        exp: expires at, seconds since the epoch.
        jti: a unique id; a worker accepts each one once.
        model_sha256: the model file the ticket is for.
        max_tokens: the most tokens the worker may generate under it.
    """

    iss: str = Field(min_length=1, max_length=256)
    sub: str = Field(min_length=1, max_length=256)
    aud: NodeId
    iat: int
    nbf: int
    exp: int
    jti: str = Field(min_length=8, max_length=128)
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    max_tokens: int = Field(ge=1, le=131_072)
