"""Matchmaking: which node gets a request, and which error when none can (pure, fake ``now``)."""

from __future__ import annotations

import pytest

from meshcore_router.matchmaking import Route, choose_node, node_load, route
from meshcore_router.registry import NodeRegistry
from meshcore_sdk.protocol import HeartbeatFrame, ModelInfo, NodeStatus, RegisterFrame, Telemetry
from meshcore_sdk.protocol.errors import ModelNotFound, NoCapacity

pytestmark = pytest.mark.timeout(30)

M = ModelInfo(sha256="ee" * 32, served_name="m", n_ctx=1024, size_bytes=1)
READY, BUSY, STARTING, DRAINING = NodeStatus.READY, NodeStatus.BUSY, NodeStatus.STARTING, NodeStatus.DRAINING


def registry_with(*nodes: tuple[str, NodeStatus, int, int, int]) -> NodeRegistry:
    """Nodes as (id, status, max_sequences, active, queued), all holding M, registered and heard at t=0."""
    registry = NodeRegistry(expire_after_s=3.0)
    for node_id, status, max_sequences, active, queued in nodes:
        frame = RegisterFrame(node_id=node_id, models=[M], ram_free_bytes=1, cpu_count=1, max_sequences=max_sequences)
        registry.register(frame, now=0.0)
        telemetry = Telemetry(ram_free_bytes=1, active_sequences=active, queued_requests=queued)
        registry.heartbeat(node_id, HeartbeatFrame(status=status, telemetry=telemetry), now=0.0)
    return registry


def no_flight(_: str) -> int:
    return 0


@pytest.mark.parametrize(
    ("nodes", "in_flight", "exclude", "expected"),
    [
        pytest.param([("a", READY, 1, 0, 0)], {}, (), "a", id="one ready node"),
        pytest.param([("b", READY, 1, 0, 0), ("a", READY, 1, 0, 0)], {}, (), "a", id="tie broken by id"),
        pytest.param([("a", READY, 1, 1, 0), ("b", READY, 1, 0, 0)], {}, (), "b", id="least reported load"),
        pytest.param([("a", READY, 4, 2, 0), ("b", READY, 1, 1, 0)], {}, (), "a", id="load is relative"),
        pytest.param([("a", READY, 1, 0, 2), ("b", READY, 1, 1, 0)], {}, (), "b", id="queued counts"),
        pytest.param([("a", READY, 1, 0, 0), ("b", READY, 1, 0, 0)], {"a": 1}, (), "b", id="router in-flight counts"),
        pytest.param([("a", BUSY, 1, 0, 0), ("b", READY, 1, 3, 0)], {}, (), "b", id="only READY nodes"),
        pytest.param([("a", READY, 1, 0, 0), ("b", READY, 1, 2, 0)], {}, ("a",), "b", id="excluded"),
        pytest.param([("a", STARTING, 1, 0, 0), ("b", DRAINING, 1, 0, 0)], {}, (), None, id="none ready"),
        pytest.param([("a", READY, 1, 4, 0)], {}, (), None, id="at max load"),
        pytest.param([("a", READY, 2, 7, 0)], {}, (), "a", id="below max load"),
    ],
)
def test_choose_node(
    nodes: list[tuple[str, NodeStatus, int, int, int]],
    in_flight: dict[str, int],
    exclude: tuple[str, ...],
    expected: str | None,
) -> None:
    registry = registry_with(*nodes)
    records = registry.candidates(M.sha256, now=1.0)
    chosen = choose_node(records, in_flight=lambda node: in_flight.get(node, 0), exclude=exclude, max_load=4.0)
    assert chosen == expected


@pytest.mark.parametrize(
    ("loads", "weights", "expected"),
    [
        pytest.param({"a": 0, "b": 0}, {"a": 0.0}, "b", id="a slashed node is never chosen"),
        pytest.param({"a": 0}, {"a": 0.0}, None, id="a slashed node alone: no capacity"),
        pytest.param({"a": 1, "b": 2}, {"a": 0.25}, "b", id="a low weight counts as more load"),
        pytest.param({"a": 1, "b": 2}, {"a": 0.75}, "a", id="a mild weight still wins on load"),
        pytest.param({"a": 0, "b": 0}, {"a": 0.5}, "b", id="an idle node at full weight ties below"),
    ],
)
def test_routing_weight_scales_load(loads: dict[str, int], weights: dict[str, float], expected: str | None) -> None:
    """Audit standing scales a node's effective load; weight 0 takes it out of routing."""
    registry = registry_with(*((node, READY, 4, active, 0) for node, active in loads.items()))
    records = registry.candidates(M.sha256, now=1.0)

    chosen = choose_node(records, in_flight=no_flight, weight=lambda node: weights.get(node, 1.0))

    assert chosen == expected


def test_node_load_takes_the_larger_of_reported_and_in_flight() -> None:
    (record,) = registry_with(("a", READY, 2, 1, 1)).candidates(M.sha256, now=0.0)
    assert node_load(record, 0) == 1.0
    assert node_load(record, 3) == 1.5


def test_route_resolves_served_and_sha256_names() -> None:
    registry = registry_with(("a", READY, 1, 0, 0))
    expected = Route(sha256=M.sha256, served_name="m", node_id="a")
    assert route(registry, "m", now=1.0, in_flight=no_flight) == expected
    assert route(registry, f"sha256:{M.sha256}", now=1.0, in_flight=no_flight) == expected


def test_a_model_nobody_ever_served_is_not_found() -> None:
    with pytest.raises(ModelNotFound, match="nope"):
        route(registry_with(("a", READY, 1, 0, 0)), "nope", now=1.0, in_flight=no_flight)


@pytest.mark.parametrize("now", [1.0, 3.0], ids=["busy", "expired"])
def test_a_known_model_without_a_ready_node_is_no_capacity_with_a_retry_hint(now: float) -> None:
    registry = registry_with(("a", READY, 1, 0, 0), ("b", BUSY, 1, 0, 0))
    with pytest.raises(NoCapacity) as caught:
        route(registry, "m", now=now, in_flight=no_flight, exclude=("a",), retry_after_s=2.5)
    assert caught.value.retry_after_s == 2.5
    assert caught.value.http_status == 503
