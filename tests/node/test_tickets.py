"""Ticket verification at the worker: one error class per way a ticket can be wrong (docs/protocol.md §8)."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshcore_node.tickets import KeyRing, ReplayCache, parse_jwks, verify_ticket
from meshcore_router.tickets import SigningKey, TicketKeys
from meshcore_sdk.protocol import TICKET_TYPE
from meshcore_sdk.protocol.errors import (
    TicketError,
    TicketExpired,
    TicketForged,
    TicketReplayed,
    TicketUnknownKey,
    TicketWrongAlgorithm,
    TicketWrongAudience,
)

NOW = 1_767_225_600.0
SHA = "ab" * 32
ROUTER_KEY = SigningKey("k-1", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
FOREIGN_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def authority() -> TicketKeys:
    return TicketKeys(ROUTER_KEY, issuer="meshcore-router", lifetime_s=300, leeway_s=5)


def minted(node_id: str = "node-a", *, now: float = NOW, jti: str = "jti-00000001") -> str:
    token, _ = authority().mint(node_id=node_id, client_id="c-1", model_sha256=SHA, max_tokens=64, jti=jti, now=now)
    return token


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": "meshcore-router",
        "sub": "c-1",
        "aud": "node-a",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 300,
        "jti": "jti-00000002",
        "model_sha256": SHA,
        "max_tokens": 64,
    }
    return {**base, **changes}


def signed(payload: dict[str, Any], *, key: Any = ROUTER_KEY.private_key, **headers: Any) -> str:
    header = {"kid": "k-1", "typ": TICKET_TYPE, **headers}
    return jwt.encode(payload, key, algorithm="EdDSA", headers=header)


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


def verify(token: str, *, now: float = NOW, replay: ReplayCache | None = None) -> Any:
    keys = parse_jwks(authority().jwks())
    return verify_ticket(
        token,
        keys=keys,
        node_id="node-a",
        issuer="meshcore-router",
        replay=ReplayCache() if replay is None else replay,
        now=now,
        leeway_s=5,
    )


def public_pem() -> bytes:
    return ROUTER_KEY.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


CASES = [
    ("forged: signed by a foreign key", lambda: signed(claims(), key=FOREIGN_KEY), TicketForged),
    ("tampered payload", lambda: _tampered(), TicketForged),
    ("expired", lambda: signed(claims(iat=int(NOW) - 400, nbf=int(NOW) - 400, exp=int(NOW) - 100)), TicketExpired),
    ("not yet valid", lambda: signed(claims(nbf=int(NOW) + 120, exp=int(NOW) + 200)), TicketExpired),
    ("wrong audience", lambda: minted("node-b"), TicketWrongAudience),
    ("audience as a list", lambda: signed(claims(aud=["node-a"])), TicketWrongAudience),
    ("alg none", lambda: unsigned({"alg": "none", "typ": TICKET_TYPE, "kid": "k-1"}, claims()), TicketWrongAlgorithm),
    (
        "HS256 with the public key as secret",
        lambda: jwt.encode(claims(), "x" * 32, algorithm="HS256", headers={"kid": "k-1", "typ": TICKET_TYPE}),
        TicketWrongAlgorithm,
    ),
    ("unknown key id", lambda: signed(claims(), kid="k-unknown"), TicketUnknownKey),
    ("wrong typ", lambda: signed(claims(), typ="JWT"), TicketError),
    ("wrong issuer", lambda: signed(claims(iss="someone-else")), TicketError),
    ("missing jti", lambda: signed({k: v for k, v in claims().items() if k != "jti"}), TicketError),
    ("missing exp", lambda: signed({k: v for k, v in claims().items() if k != "exp"}), TicketError),
    ("one-day lifetime", lambda: signed(claims(exp=int(NOW) + 86_400)), TicketError),
    ("unknown crit header", lambda: signed(claims(), crit=["x-meshcore"], **{"x-meshcore": 1}), TicketError),
    ("not a JWT", lambda: "not-a-token", TicketError),
]


def _tampered() -> str:
    header, payload, signature = minted().split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["max_tokens"] = 100_000
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_a_fresh_ticket_is_accepted_with_its_claims() -> None:
    accepted = verify(minted())

    assert (accepted.aud, accepted.model_sha256, accepted.max_tokens, accepted.jti) == (
        "node-a",
        SHA,
        64,
        "jti-00000001",
    )


@pytest.mark.parametrize(("case", "make", "error"), CASES, ids=[case[0] for case in CASES])
def test_a_bad_ticket_is_refused_with_its_own_error(case: str, make: Any, error: type[TicketError]) -> None:
    with pytest.raises(TicketError) as raised:
        verify(make())

    assert type(raised.value) is error


def test_a_replayed_ticket_is_refused() -> None:
    replay = ReplayCache()
    token = minted()
    verify(token, replay=replay)

    with pytest.raises(TicketReplayed):
        verify(token, replay=replay, now=NOW + 1)


def test_a_refused_ticket_does_not_use_up_its_jti() -> None:
    replay = ReplayCache()
    with pytest.raises(TicketWrongAudience):
        verify(minted("node-b", jti="jti-shared-1"), replay=replay)

    assert len(replay) == 0


def test_the_replay_cache_forgets_a_jti_once_its_ticket_expired() -> None:
    replay = ReplayCache()
    replay.add("a", until=NOW + 305, now=NOW)

    assert replay.seen("a", now=NOW + 300)
    assert not replay.seen("a", now=NOW + 306)
    assert len(replay) == 0


def test_leeway_accepts_a_ticket_just_past_its_expiry() -> None:
    verify(minted(), now=NOW + 303)

    with pytest.raises(TicketExpired):
        verify(minted(jti="jti-00000003"), now=NOW + 306)


def test_rotation_publishes_the_new_key_and_keeps_the_old_until_its_tickets_expired() -> None:
    keys = authority()
    old_ticket, _ = keys.mint(
        node_id="node-a", client_id="c", model_sha256=SHA, max_tokens=8, jti="jti-old-0001", now=NOW
    )
    keys.rotate(SigningKey("k-2", FOREIGN_KEY), now=NOW + 10)
    new_ticket, _ = keys.mint(
        node_id="node-a", client_id="c", model_sha256=SHA, max_tokens=8, jti="jti-new-0001", now=NOW + 10
    )
    ring = parse_jwks(keys.jwks())

    assert sorted(ring) == ["k-1", "k-2"]
    assert jwt.get_unverified_header(new_ticket)["kid"] == "k-2"
    for token in (old_ticket, new_ticket):
        verify_ticket(token, keys=ring, node_id="node-a", issuer="meshcore-router", replay=ReplayCache(), now=NOW + 20)
    keys.retire_expired(now=NOW + 10 + 306)
    assert [jwk["kid"] for jwk in keys.jwks()["keys"]] == ["k-2"]


def test_unknown_key_refetches_are_rate_limited() -> None:
    ring = KeyRing(refetch_interval_s=30)

    assert [ring.may_refetch(now=t) for t in (0, 1, 29, 31, 32)] == [True, False, False, True, False]


def test_the_jwks_skips_keys_of_other_types() -> None:
    jwks = {
        "keys": [
            {"kty": "OKP", "crv": "Ed448", "x": "AA", "kid": "a"},
            {"kty": "RSA", "kid": "b"},
            {**authority().jwks()["keys"][0]},
        ]
    }

    assert list(parse_jwks(jwks)) == ["k-1"]
