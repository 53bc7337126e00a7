"""Direct mode at the router: tickets, JWKS, the signaling relay, TURN credentials and health (docs/protocol.md §8)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
import httpx_sse
import jwt
import pytest
from tests.router.conftest import RunningRouter, StartNode
from tests.router.fake_node import MODEL

from meshcore_node.tickets import ReplayCache, parse_jwks, verify_ticket
from meshcore_router import RouterConfig
from meshcore_router.turn import (
    TurnHealth,
    binding_request,
    is_binding_success,
    mint_turn_credentials,
    parse_turn_url,
)
from meshcore_sdk.protocol import TICKET_TYPE, ErrorCode
from meshcore_sdk.protocol.errors import ConfigError

SECRET = "s3cret"


@pytest.fixture
def router_config() -> RouterConfig:
    return RouterConfig(
        port=0, turn_urls=("turn:127.0.0.1:9?transport=udp",), turn_secret=SECRET, turn_health_timeout_s=0.2
    )


def test_turn_rest_credentials_follow_coturn_s_scheme() -> None:
    username, password = mint_turn_credentials(SECRET, user="c-1", expires_at_unix=1_767_225_900)

    expected = base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
    assert (username, password) == ("1767225900:c-1", expected)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("turn:127.0.0.1:3478?transport=udp", ("127.0.0.1", 3478, "udp")),
        ("turn:turn.example?transport=tcp", ("turn.example", 3478, "tcp")),
        ("turns:turn.example:443?transport=tcp", ("turn.example", 443, "tcp")),
    ],
)
def test_turn_urls_are_read(url: str, endpoint: tuple[str, int, str]) -> None:
    parsed = parse_turn_url(url)

    assert (parsed.host, parsed.port, parsed.transport) == endpoint


@pytest.mark.parametrize("url", ["stun:127.0.0.1", "turn:", "turn:h?transport=sctp"])
def test_bad_turn_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        RouterConfig(turn_urls=(url,), turn_secret=SECRET)


def test_turn_urls_need_a_secret() -> None:
    with pytest.raises(ConfigError, match="turn_secret"):
        RouterConfig(turn_urls=("turn:127.0.0.1:3478",))


def test_turn_health_hands_out_only_fresh_good_servers() -> None:
    health = TurnHealth(["turn:a", "turn:b"], stale_after_s=3)
    assert health.healthy(now=0) == []

    health.checked("turn:b", ok=True, now=0)
    health.checked("turn:a", ok=True, now=1)
    assert health.healthy(now=2) == ["turn:a", "turn:b"]
    assert health.healthy(now=3.5) == ["turn:a"]
    health.checked("turn:a", ok=False, now=4)
    assert health.healthy(now=4) == []


def test_a_stun_binding_answer_is_recognised_by_its_transaction() -> None:
    tid = bytes(range(12))
    request = binding_request(tid)
    answer = b"\x01\x01\x00\x00" + request[4:8] + tid

    assert (len(request), is_binding_success(answer, tid), is_binding_success(answer, bytes(12))) == (20, True, False)


async def test_tickets_are_signed_for_each_chosen_worker(
    mesh: RunningRouter, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    await start_node("node-a")
    await start_node("node-b")

    grants = (await http.post("/v1/tickets", json={"model": "tiny-model", "n": 3, "max_tokens": 32})).json()["tickets"]
    keys = parse_jwks((await http.get("/mesh/v1/jwks")).json())

    assert sorted(grant["node_id"] for grant in grants) == ["node-a", "node-b"]
    for grant in grants:
        header = jwt.get_unverified_header(grant["ticket"])
        claims = verify_ticket(
            grant["ticket"],
            keys=keys,
            node_id=grant["node_id"],
            issuer="meshcore-router",
            replay=ReplayCache(),
            now=float(grant["expires_at_unix"]) - 10,
        )
        assert (header["alg"], header["typ"], header["kid"] in keys) == ("EdDSA", TICKET_TYPE, True)
        assert (claims.model_sha256, claims.max_tokens, claims.exp - claims.iat) == (MODEL.sha256, 32, 300)
        assert grant["model"] == f"sha256:{MODEL.sha256}"
        assert grant["ice_servers"] == []  # the configured TURN server fails its health check


async def test_a_swarms_hedge_tickets_go_only_to_workers_that_take_hedges(
    mesh: RunningRouter, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    await start_node("node-a")
    await start_node("node-b", accepts_hedges=False)
    await start_node("node-c")
    body = {"model": "tiny-model", "n": 3}

    alternatives = (await http.post("/v1/tickets", json=body)).json()["tickets"]
    hedged = (await http.post("/v1/tickets", json=body | {"hedges": True})).json()["tickets"]

    assert sorted(grant["node_id"] for grant in alternatives) == ["node-a", "node-b", "node-c"]
    assert len(hedged) == 2 and "node-b" not in [grant["node_id"] for grant in hedged[1:]]
    mesh.app.state.router.hedging.budget.failed(100)  # the budget is spent: no hedges at all
    assert len((await http.post("/v1/tickets", json=body | {"hedges": True})).json()["tickets"]) == 1
    assert len((await http.post("/v1/tickets", json=body)).json()["tickets"]) == 3


async def test_a_key_rotation_publishes_the_new_key_without_a_restart(
    mesh: RunningRouter, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    await start_node("node-a")
    old = {jwk["kid"] for jwk in (await http.get("/mesh/v1/jwks")).json()["keys"]}

    new = mesh.app.state.direct.rotate_keys()
    grant = (await http.post("/v1/tickets", json={"model": "tiny-model"})).json()["tickets"][0]
    published = {jwk["kid"] for jwk in (await http.get("/mesh/v1/jwks")).json()["keys"]}

    assert published == old | {new.kid}
    assert jwt.get_unverified_header(grant["ticket"])["kid"] == new.kid


async def test_tickets_for_an_unknown_model_are_refused(mesh: RunningRouter, http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/tickets", json={"model": "nope"})

    assert (response.status_code, response.json()["error"]["code"]) == (404, ErrorCode.MODEL_NOT_FOUND.value)


def _offer(node_id: str = "node-a") -> dict[str, object]:
    generate = {"type": "generate", "request_id": "x", "model": f"sha256:{MODEL.sha256}", "prompt": "Hi"}
    return {
        "node_id": node_id,
        "offer": {
            "type": "signal",
            "kind": "offer",
            "request_id": "x",
            "ticket": "t.t.t",
            "sdp": "v=0\r\n",
            "generate": generate,
        },
    }


async def test_an_offer_is_relayed_over_the_worker_s_link_and_answered(
    mesh: RunningRouter, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = await start_node("node-a")

    answer = (await http.post("/mesh/v1/signal", json=_offer())).json()
    (relayed,) = [frame for frame in node.received if frame.type == "signal"]

    assert answer["kind"] == "answer" and answer["request_id"] == relayed.request_id
    assert relayed.request_id != "x" and relayed.generate.request_id == relayed.request_id
    assert relayed.ice_servers == []


async def test_a_worker_s_refusal_comes_back_as_its_error(
    mesh: RunningRouter, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = await start_node("node-a")
    node.refuse_offers_with = ErrorCode.TICKET_EXPIRED

    response = await http.post("/mesh/v1/signal", json=_offer())

    assert (response.status_code, response.json()["error"]["code"]) == (403, "ticket_expired")


async def test_an_offer_for_an_absent_worker_is_refused(mesh: RunningRouter, http: httpx.AsyncClient) -> None:
    response = await http.post("/mesh/v1/signal", json=_offer("node-z"))

    assert (response.status_code, response.json()["error"]["code"]) == (502, ErrorCode.WORKER_LOST.value)


async def test_the_router_reports_each_watched_worker_that_leaves_the_mesh(
    mesh: RunningRouter, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    leaving = await start_node("node-a")
    await start_node("node-b")
    params = [("node_id", "node-a"), ("node_id", "node-x")]
    async with http.stream("GET", "/mesh/v1/nodes/watch", params=params, timeout=None) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = httpx_sse.EventSource(response).aiter_sse()
        first = await anext(events)  # a node that is not in the mesh has left already
        await leaving.stop()
        second = await anext(events)
        assert [json.loads(event.data) for event in (first, second)] == [
            {"node_id": "node-x", "event": "left"},
            {"node_id": "node-a", "event": "left"},
        ]
        assert await anext(events, None) is None  # every watched node has left: the stream ends


async def test_a_watch_names_at_least_one_node(http: httpx.AsyncClient) -> None:
    assert (await http.get("/mesh/v1/nodes/watch")).status_code == 400
