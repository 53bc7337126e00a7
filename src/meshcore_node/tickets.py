"""Ticket verification at the worker: offline, with a replay cache (``docs/protocol.md`` §8).

Theory of operation.  :func:`verify_ticket` is a pure function of the token, the
trusted keys, this node's id, the expected issuer, the replay cache and ``now``.
It follows RFC 8725 and refuses, each with its own error:

====================================================  =========================
what is wrong                                         error
====================================================  =========================
not a JWT, wrong ``typ``, bad claims, lifetime > 5 min  TicketError
``alg`` is not ``EdDSA`` (``none``, ``HS256`` ...)     TicketWrongAlgorithm
``kid`` names no trusted key                           TicketUnknownKey
signature does not verify                              TicketForged
``aud`` is not exactly this node                       TicketWrongAudience
past ``exp`` or before ``nbf`` (beyond the leeway)     TicketExpired
``jti`` already used                                   TicketReplayed
====================================================  =========================

PyJWT checks the signature, audience, issuer and required claims; its own clock
checks are off, since ``now`` is an argument here.  The ``typ`` header is checked
by hand (PyJWT does not).  Keys are Ed25519 public keys only, so the ``EdDSA``
family cannot silently widen to Ed448.

:class:`ReplayCache` remembers each accepted ``jti`` until its ticket expires,
which bounds its size by the issuance rate times the ticket lifetime.
:class:`KeyRing` holds the router's JWKS and decides when a refetch (on an
unknown ``kid``) is allowed, so random ``kid`` values cannot make the node hammer
the router.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Mapping
from typing import Any

import jwt
import pydantic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshcore_sdk.protocol import MAX_TICKET_LIFETIME_S, TICKET_ALGORITHM, TICKET_TYPE, TicketClaims
from meshcore_sdk.protocol.errors import (
    TicketError,
    TicketExpired,
    TicketForged,
    TicketReplayed,
    TicketUnknownKey,
    TicketWrongAlgorithm,
    TicketWrongAudience,
)

__all__ = ["KeyRing", "ReplayCache", "parse_jwks", "verify_ticket"]

_REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


class ReplayCache:
    """The ``jti`` of every accepted ticket, until the ticket expires."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._until)

    def seen(self, jti: str, *, now: float) -> bool:
        """Whether ``jti`` was accepted and its ticket may still be live."""
        self._forget_expired(now)
        return jti in self._until

    def add(self, jti: str, *, until: float, now: float) -> None:
        """Remember ``jti`` until ``until`` (its ticket's ``exp`` plus the leeway)."""
        self._forget_expired(now)
        self._until[jti] = until
        heapq.heappush(self._expiry, (until, jti))

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            until, jti = heapq.heappop(self._expiry)
            if self._until.get(jti) == until:
                del self._until[jti]


def parse_jwks(data: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 signing keys of a JWKS, by ``kid``; any other key is skipped."""
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in data.get("keys", []) if isinstance(data.get("keys"), list) else []:
        if not isinstance(jwk, Mapping) or (jwk.get("kty"), jwk.get("crv")) != ("OKP", "Ed25519"):
            continue
        if jwk.get("alg", TICKET_ALGORITHM) != TICKET_ALGORITHM or not isinstance(jwk.get("kid"), str):
            continue
        try:
            raw = base64.urlsafe_b64decode(str(jwk.get("x", "")) + "==")
            keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError):
            continue
    return keys


class KeyRing:
    """The router's ticket keys as this node knows them, and when it may fetch them again.

    Args:
        refetch_interval_s: the least time between two refetches caused by an unknown ``kid``.
    """

    def __init__(self, *, refetch_interval_s: float) -> None:
        self.keys: dict[str, Ed25519PublicKey] = {}
        self._refetch_interval_s = refetch_interval_s
        self._last_refetch: float | None = None

    def replace(self, jwks: Mapping[str, Any]) -> None:
        """Trust exactly the keys of ``jwks`` from now on."""
        self.keys = parse_jwks(jwks)

    def may_refetch(self, *, now: float) -> bool:
        """Whether an unknown ``kid`` may trigger a fetch now; if so, the fetch is counted."""
        if self._last_refetch is not None and now - self._last_refetch < self._refetch_interval_s:
            return False
        self._last_refetch = now
        return True


def verify_ticket(
    token: str,
    *,
    keys: Mapping[str, Ed25519PublicKey],
    node_id: str,
    issuer: str,
    replay: ReplayCache,
    now: float,
    leeway_s: float = 5.0,
) -> TicketClaims:
    """Check a ticket and mark it used; return its claims.

    Raises:
        TicketError: the ticket is refused; the subclass says why (see the module's table).
    """
    key = _key_for(token, keys)
    claims = _decode(token, key, node_id=node_id, issuer=issuer)
    if claims.exp - claims.iat > MAX_TICKET_LIFETIME_S:
        raise TicketError(f"ticket lives {claims.exp - claims.iat} s, more than {MAX_TICKET_LIFETIME_S} s")
    if now > claims.exp + leeway_s:
        raise TicketExpired(f"ticket expired {now - claims.exp:.0f} s ago")
    if now < claims.nbf - leeway_s:
        raise TicketExpired(f"ticket is not valid for another {claims.nbf - now:.0f} s")
    if replay.seen(claims.jti, now=now):
        raise TicketReplayed("ticket was already used")
    replay.add(claims.jti, until=claims.exp + leeway_s, now=now)
    return claims


def _key_for(token: str, keys: Mapping[str, Ed25519PublicKey]) -> Ed25519PublicKey:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TicketError(f"ticket is not a JWT: {exc}") from exc
    if header.get("alg") != TICKET_ALGORITHM:
        raise TicketWrongAlgorithm(f"ticket is signed with {header.get('alg')!r}, not {TICKET_ALGORITHM}")
    if header.get("typ") != TICKET_TYPE:
        raise TicketError(f"ticket has typ {header.get('typ')!r}, not {TICKET_TYPE!r}")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TicketUnknownKey(f"ticket names an unknown key {kid!r}")
    return key


def _decode(token: str, key: Ed25519PublicKey, *, node_id: str, issuer: str) -> TicketClaims:
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[TICKET_ALGORITHM],
            audience=node_id,
            issuer=issuer,
            options={
                "require": _REQUIRED,
                "strict_aud": True,
                "verify_exp": False,  # checked against ``now`` by the caller, not PyJWT's clock
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidAlgorithmError as exc:
        raise TicketWrongAlgorithm(f"ticket algorithm refused: {exc}") from exc
    except jwt.InvalidSignatureError as exc:
        raise TicketForged("ticket signature does not verify") from exc
    except jwt.InvalidAudienceError as exc:
        raise TicketWrongAudience(f"ticket is not for node {node_id}: {exc}") from exc
    except jwt.InvalidTokenError as exc:
        raise TicketError(f"ticket refused: {exc}") from exc
    try:
        return TicketClaims.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise TicketError(f"ticket claims are malformed: {exc.errors(include_url=False)[0]['msg']}") from exc
