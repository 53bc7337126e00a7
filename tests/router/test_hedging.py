"""The router's hedging budget and hedge placement (pure: a fake ``now``, no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meshcore_router.hedging import HedgeGate, HedgeRefusal, HedgeRefused, is_worker_failure
from meshcore_router.matchmaking import Route, choose_node, route, takes_hedge
from meshcore_router.registry import NodeRegistry
from meshcore_sdk.protocol import FinishReason, HeartbeatFrame, ModelInfo, NodeStatus, RegisterFrame, Telemetry
from meshcore_sdk.protocol.errors import (
    BadRequest,
    ContextLengthExceeded,
    EngineCrashed,
    MeshError,
    MeshTimeout,
    NoCapacity,
    RateLimited,
    WorkerLost,
)
from meshcore_sdk.swarm.budget import HedgeBudgetConfig

pytestmark = pytest.mark.timeout(60)

M = ModelInfo(sha256="ee" * 32, served_name="m", n_ctx=1024, size_bytes=1)
READY, BUSY = NodeStatus.READY, NodeStatus.BUSY
ROUTE = Route(sha256=M.sha256, served_name="m", node_id="a")


def registry_with(*nodes: tuple[str, NodeStatus, int, int, bool]) -> NodeRegistry:
    """Nodes as (id, status, max_sequences, active, accepts_hedges), all holding M, heard at t=0."""
    registry = NodeRegistry(expire_after_s=3.0)
    for node_id, status, max_sequences, active, accepts in nodes:
        frame = RegisterFrame(node_id=node_id, models=[M], ram_free_bytes=1, cpu_count=1, max_sequences=max_sequences)
        registry.register(frame, now=0.0)
        beat(registry, node_id, status, active, accepts)
    return registry


def beat(registry: NodeRegistry, node_id: str, status: NodeStatus, active: int, accepts: bool) -> None:
    telemetry = Telemetry(ram_free_bytes=1, active_sequences=active, accepts_hedges=accepts)
    registry.heartbeat(node_id, HeartbeatFrame(status=status, telemetry=telemetry), now=0.0)


def no_flight(_: str) -> int:
    return 0


def gate(max_tokens: float = 10.0, token_ratio: float = 0.1) -> HedgeGate:
    return HedgeGate(HedgeBudgetConfig(max_tokens=max_tokens, token_ratio=token_ratio))


def pick_ok(hedge: bool) -> Route:
    return ROUTE


def pick_none(hedge: bool) -> Route:
    raise NoCapacity("none")


# --- matchmaking for hedges -------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "in_flight", "hedge", "expected"),
    [
        pytest.param([("a", READY, 2, 1, True)], {}, True, "a", id="a free slot takes a hedge"),
        pytest.param([("a", READY, 2, 2, True)], {}, False, "a", id="a primary may queue"),
        pytest.param([("a", READY, 2, 2, True)], {}, True, None, id="a hedge never queues"),
        pytest.param([("a", READY, 2, 0, True)], {"a": 2}, True, None, id="the router's in-flight counts"),
        pytest.param([("a", READY, 4, 0, False)], {}, True, None, id="push-back refuses hedges"),
        pytest.param([("a", READY, 4, 0, False)], {}, False, "a", id="push-back still takes primaries"),
        pytest.param([("a", READY, 4, 0, False), ("b", READY, 4, 3, True)], {}, True, "b", id="hedge skips push-back"),
        pytest.param([("a", BUSY, 4, 0, True)], {}, True, None, id="BUSY takes nothing"),
    ],
)
def test_hedges_go_only_to_a_free_slot_without_push_back(
    nodes: list[tuple[str, NodeStatus, int, int, bool]], in_flight: dict[str, int], hedge: bool, expected: str | None
) -> None:
    records = registry_with(*nodes).candidates(M.sha256, now=0.0)
    chosen = choose_node(records, in_flight=lambda n: in_flight.get(n, 0), max_load=4.0, hedge=hedge)
    assert chosen == expected


def test_avoided_nodes_come_last_but_are_not_excluded() -> None:
    records = registry_with(("a", READY, 4, 0, True), ("b", READY, 4, 3, True)).candidates(M.sha256, now=0.0)
    assert choose_node(records, in_flight=no_flight, avoid={"a"}) == "b"
    assert choose_node(records, in_flight=no_flight, avoid={"a", "b"}) == "a"
    assert choose_node(records, in_flight=no_flight, exclude={"b"}, avoid={"a"}) == "a"


def test_a_hedge_never_goes_to_a_node_it_should_avoid() -> None:
    records = registry_with(("a", READY, 4, 0, True), ("b", READY, 4, 3, True)).candidates(M.sha256, now=0.0)
    assert choose_node(records, in_flight=no_flight, avoid={"a"}, hedge=True) == "b"
    assert choose_node(records, in_flight=no_flight, avoid={"a", "b"}, hedge=True) is None


def test_no_node_for_a_hedge_is_no_capacity() -> None:
    registry = registry_with(("a", READY, 1, 1, True))
    with pytest.raises(NoCapacity, match="free slot for a hedge"):
        route(registry, "m", now=0.0, in_flight=no_flight, hedge=True)


# --- the gate ---------------------------------------------------------------------------


def test_a_primary_is_routed_whatever_the_budget() -> None:
    spent = gate(max_tokens=0)
    assert spent.place(hedge=False, pick=pick_ok) == ROUTE
    with pytest.raises(NoCapacity):
        spent.place(hedge=False, pick=pick_none)  # its own no_capacity, as for any request
    assert spent.stats().refused_budget == spent.stats().refused_capacity == 0


def test_hedges_are_refused_while_the_bucket_is_at_half_or_below() -> None:
    hedging = gate(max_tokens=4)
    hedging.budget.failed(2)  # 2 of 4: at half
    refused = hedging.place(hedge=True, pick=pick_ok)
    assert isinstance(refused, HedgeRefused) and refused.reason is HedgeRefusal.BUDGET
    error = refused.error(request_id="c-1")
    assert (error.code, error.retryable, error.request_id) == ("no_capacity", False, "c-1")
    assert hedging.budget.tokens == 2  # a budget refusal takes nothing more
    for _ in range(10):
        hedging.finished(FinishReason.STOP)  # 10 x 0.1 back: 3 of 4
    assert hedging.place(hedge=True, pick=pick_ok) == ROUTE
    assert (hedging.stats().placed, hedging.stats().refused_budget) == (1, 1)


def test_a_hedge_without_capacity_is_refused_and_drains_the_bucket() -> None:
    hedging = gate(max_tokens=4)
    for expected_tokens in (3, 2):
        refused = hedging.place(hedge=True, pick=pick_none)
        assert isinstance(refused, HedgeRefused) and refused.reason is HedgeRefusal.CAPACITY
        assert hedging.budget.tokens == expected_tokens
    refused = hedging.place(hedge=True, pick=pick_none)
    assert isinstance(refused, HedgeRefused) and refused.reason is HedgeRefusal.BUDGET  # now at half
    assert hedging.stats().refused_capacity == 2


def test_a_zero_bucket_never_hedges() -> None:
    assert isinstance(gate(max_tokens=0).place(hedge=True, pick=pick_ok), HedgeRefused)


@pytest.mark.parametrize(
    ("reason", "tokens"),
    [(FinishReason.STOP, 3.5), (FinishReason.LENGTH, 3.5), (FinishReason.CANCELLED, 3.0)],
)
def test_completed_requests_refill_by_the_ratio_and_cancelled_ones_do_not(reason: FinishReason, tokens: float) -> None:
    hedging = gate(max_tokens=4, token_ratio=0.5)
    hedging.budget.failed()
    hedging.finished(reason)
    assert hedging.budget.tokens == tokens


@pytest.mark.parametrize(
    ("error", "drains"),
    [
        (WorkerLost("gone"), True),
        (EngineCrashed("crashed"), True),
        (MeshTimeout("slow"), True),
        (NoCapacity("busy"), True),
        (RateLimited("slow down"), True),
        (BadRequest("bad"), False),
        (ContextLengthExceeded("long"), False),
    ],
)
def test_worker_failures_and_push_backs_drain_the_bucket(error: MeshError, drains: bool) -> None:
    hedging = gate(max_tokens=4)
    hedging.failed(error)
    assert is_worker_failure(error) is drains
    assert hedging.budget.tokens == (3 if drains else 4)


# --- the invariant, over random traces ----------------------------------------------------

NODE_IDS = ("a", "b", "c")


class HedgingTraces(RuleBasedStateMachine):
    """Heartbeats, copies placed and requests ending, in any order.

    Invariants: a hedge is never placed while the bucket is at half or below, nor when every
    node is busy (no free slot, or pushing back); a primary is never refused for the budget.
    """

    @initialize(
        max_tokens=st.sampled_from([0.0, 1.0, 3.0, 10.0]),
        token_ratio=st.sampled_from([0.1, 0.5, 1.0]),
        slots=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    )
    def start(self, max_tokens: float, token_ratio: float, slots: list[int]) -> None:
        self.gate = gate(max_tokens, token_ratio)
        self.registry = NodeRegistry(expire_after_s=1e9)
        for node_id, max_sequences in zip(NODE_IDS, slots, strict=True):
            frame = RegisterFrame(
                node_id=node_id, models=[M], ram_free_bytes=1, cpu_count=1, max_sequences=max_sequences
            )
            self.registry.register(frame, now=0.0)
            beat(self.registry, node_id, READY, 0, True)
        self.in_flight: dict[str, int] = dict.fromkeys(NODE_IDS, 0)

    def _pick(self, hedge: bool) -> Route:
        return route(self.registry, "m", now=0.0, in_flight=self.in_flight.__getitem__, max_load=2.0, hedge=hedge)

    @rule(
        node_id=st.sampled_from(NODE_IDS),
        status=st.sampled_from([READY, READY, BUSY]),
        active=st.integers(0, 4),
        accepts=st.booleans(),
    )
    def heartbeat(self, node_id: str, status: NodeStatus, active: int, accepts: bool) -> None:
        beat(self.registry, node_id, status, active, accepts)

    @rule(hedge=st.booleans())
    def place(self, hedge: bool) -> None:
        allowed = self.gate.budget.allows_hedges
        tokens = self.gate.budget.tokens
        room = [
            r.node_id
            for r in self.registry.candidates(M.sha256, now=0.0)
            if r.status is READY and takes_hedge(r, self.in_flight[r.node_id])
        ]
        try:
            outcome = self.gate.place(hedge=hedge, pick=self._pick)
        except NoCapacity:
            assert not hedge, "a hedge is refused with a HedgeRefused, never an exception"
            return
        if not hedge:
            assert isinstance(outcome, Route), "a primary is never refused for the hedge budget"
            assert self.gate.budget.tokens == tokens
        elif not allowed or not room:
            assert isinstance(outcome, HedgeRefused), "no hedge with the bucket at half or every node busy"
        if isinstance(outcome, Route):
            if hedge:
                assert outcome.node_id in room
            self.in_flight[outcome.node_id] += 1

    @rule(node_id=st.sampled_from(NODE_IDS), reason=st.sampled_from(list(FinishReason)))
    def finished(self, node_id: str, reason: FinishReason) -> None:
        if self.in_flight[node_id]:
            self.in_flight[node_id] -= 1
            self.gate.finished(reason)

    @rule(node_id=st.sampled_from(NODE_IDS), error=st.sampled_from([WorkerLost("x"), BadRequest("y")]))
    def failed(self, node_id: str, error: MeshError) -> None:
        if self.in_flight[node_id]:
            self.in_flight[node_id] -= 1
            self.gate.failed(error)

    @invariant()
    def the_bucket_stays_in_bounds(self) -> None:
        assert 0.0 <= self.gate.budget.tokens <= self.gate.budget.config.max_tokens


HedgingTraces.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_hedging_traces = HedgingTraces.TestCase
