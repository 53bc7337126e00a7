"""Direct-mode tickets: the router's signing keys, their JWKS, and minting (``docs/protocol.md`` §8).

Theory of operation.  A ticket is a JWT signed with Ed25519 (``alg: EdDSA``,
``typ: meshcore-ticket+jwt``, ``kid`` naming the key).  :class:`TicketKeys`
holds the router's keys: one *current* key that signs, and older keys that are
still published so that tickets they signed stay verifiable until they expire.
Rotation never needs a restart::

    state               event                        result
    {current: a}        rotate(b, now)               {current: b, published: a, b}
    {current: b, a}     retire_expired(now)          a dropped once now > rotated_at(a) + lifetime + leeway

Nodes fetch the JWKS (``GET /mesh/v1/jwks``) and refetch it, rate-limited, when a
ticket names a ``kid`` they do not know, so a freshly rotated key is picked up
on its first use.

Pure: keys, ids and ``now`` come in as arguments; nothing here reads a clock or
draws randomness.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshcore_sdk.protocol import MAX_TICKET_LIFETIME_S, TICKET_ALGORITHM, TICKET_TYPE, TicketClaims
from meshcore_sdk.protocol.errors import ConfigError

__all__ = ["SigningKey", "TicketKeys", "public_jwk"]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One of the router's Ed25519 keys, named by ``kid``; ``retired_at`` is set once it stops signing."""

    kid: str
    private_key: Ed25519PrivateKey
    retired_at: float | None = None


def public_jwk(key: SigningKey) -> dict[str, str]:
    """The public half of ``key`` as a JWK (RFC 8037: ``kty: OKP``, ``crv: Ed25519``)."""
    raw = key.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": key.kid, "alg": TICKET_ALGORITHM, "use": "sig"}


class TicketKeys:
    """The router's ticket keys: one signs, all that may still verify a live ticket are published.

    Args:
        first: the key to sign with at start.
        issuer: the ``iss`` of every ticket.
        lifetime_s: how long each ticket lives, at most :data:`MAX_TICKET_LIFETIME_S`.
        leeway_s: clock skew a verifier allows; a retired key stays published this much longer.
    """

    def __init__(self, first: SigningKey, *, issuer: str, lifetime_s: float, leeway_s: float) -> None:
        if not 0 < lifetime_s <= MAX_TICKET_LIFETIME_S:
            raise ConfigError(f"ticket lifetime must be in (0, {MAX_TICKET_LIFETIME_S}] s, got {lifetime_s}")
        self.issuer = issuer
        self.lifetime_s = lifetime_s
        self.leeway_s = leeway_s
        self._keys: list[SigningKey] = [first]

    @property
    def current(self) -> SigningKey:
        """The key that signs new tickets."""
        return self._keys[-1]

    def rotate(self, new: SigningKey, *, now: float) -> None:
        """Sign with ``new`` from now on; the old key stays published until its tickets expired.

        Raises:
            ConfigError: ``new.kid`` is already in use.
        """
        if any(key.kid == new.kid for key in self._keys):
            raise ConfigError(f"key id {new.kid!r} is already in use")
        old = self._keys.pop()
        self._keys += [SigningKey(old.kid, old.private_key, retired_at=now), new]
        self.retire_expired(now=now)

    def retire_expired(self, *, now: float) -> None:
        """Stop publishing retired keys whose last ticket has expired."""
        grace_s = self.lifetime_s + self.leeway_s
        self._keys = [key for key in self._keys if key.retired_at is None or now <= key.retired_at + grace_s]

    def jwks(self) -> dict[str, Any]:
        """The published key set (RFC 7517), newest last."""
        return {"keys": [public_jwk(key) for key in self._keys]}

    def mint(
        self, *, node_id: str, client_id: str, model_sha256: str, max_tokens: int, jti: str, now: float
    ) -> tuple[str, TicketClaims]:
        """A signed ticket for ``node_id`` and its claims."""
        issued = int(now)
        claims = TicketClaims(
            iss=self.issuer,
            sub=client_id,
            aud=node_id,
            iat=issued,
            nbf=issued,
            exp=issued + int(self.lifetime_s),
            jti=jti,
            model_sha256=model_sha256,
            max_tokens=max_tokens,
        )
        key = self.current
        token = jwt.encode(
            claims.model_dump(),
            key.private_key,
            algorithm=TICKET_ALGORITHM,
            headers={"kid": key.kid, "typ": TICKET_TYPE},
        )
        return token, claims
