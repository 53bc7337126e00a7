"""Which way a swarm client's legs travel: direct legs start with tickets, proxy legs with the frame stream.

The router is an httpx mock that refuses the ticket request, and nothing listens on the router's
port, so each case ends at its first step, without a mesh and without waiting.
"""

from __future__ import annotations

import json

import httpx
import pytest

from meshcore_sdk import AsyncClient, ClientConfig, ConfigError, Mode
from meshcore_sdk.config import SwarmLegs, SwarmOptions
from meshcore_sdk.errors import ConnectError, ModelNotFound

pytestmark = pytest.mark.timeout(10)


class Router:
    """Refuses every request as the router does an unknown model; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append((request.method, request.url.path, json.loads(request.content or b"null")))
        body = {"error": {"message": "no such model", "type": "t", "param": None, "code": "model_not_found"}}
        return httpx.Response(404, json=body)


def client(legs: SwarmLegs, router: Router) -> AsyncClient:
    swarm = SwarmOptions(legs=legs, open_timeout_s=5.0)
    config = ClientConfig(router_url="http://127.0.0.1:9", mode=Mode.SWARM, swarm_size=3, max_retries=0, swarm=swarm)
    return AsyncClient.from_config(config, transport=httpx.MockTransport(router))


@pytest.mark.parametrize("legs", ["auto", "direct"])
async def test_direct_legs_start_with_one_ticket_request_for_every_copy(legs: SwarmLegs) -> None:
    router = Router()
    async with client(legs, router) as swarm:
        with pytest.raises(ModelNotFound):
            await swarm.completions.create(model="gemma", prompt="Hi", max_tokens=8, stream=True)

    assert router.asked == [("POST", "/v1/tickets", {"model": "gemma", "n": 3, "max_tokens": 8, "hedges": True})]


async def test_proxy_legs_open_the_routers_frame_stream_and_ask_for_no_ticket() -> None:
    router = Router()
    async with client("proxy", router) as swarm:
        with pytest.raises(ConnectError, match="frame stream"):
            await swarm.completions.create(model="gemma", prompt="Hi", max_tokens=8, stream=True)

    assert router.asked == []


def test_legs_are_auto_by_default_and_nothing_else_is_accepted() -> None:
    assert SwarmOptions().legs == "auto"
    with pytest.raises(ConfigError, match="swarm legs"):
        SwarmOptions(legs="udp")  # type: ignore[arg-type]
