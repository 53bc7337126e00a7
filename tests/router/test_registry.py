"""NodeRegistry: registration, heartbeats, expiry and model lookup, with a fake clock (no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshcore_router.registry import NodeRegistry
from meshcore_sdk.protocol import HeartbeatFrame, ModelInfo, NodeStatus, RegisterFrame, Telemetry

pytestmark = pytest.mark.timeout(60)

A = ModelInfo(sha256="aa" * 32, served_name="model-a", n_ctx=4096, size_bytes=10)
A2 = ModelInfo(sha256="a2" * 32, served_name="model-a", n_ctx=4096, size_bytes=10)  # same name, other file
B = ModelInfo(sha256="bb" * 32, served_name="model-b", n_ctx=2048, size_bytes=20)


def register(node_id: str, *models: ModelInfo, max_sequences: int = 1) -> RegisterFrame:
    return RegisterFrame(
        node_id=node_id, models=list(models), ram_free_bytes=1, cpu_count=1, max_sequences=max_sequences
    )


def beat(status: NodeStatus = NodeStatus.READY, *, active: int = 0) -> HeartbeatFrame:
    return HeartbeatFrame(status=status, telemetry=Telemetry(ram_free_bytes=1, active_sequences=active))


def test_a_registered_node_starts_STARTING_and_expires_after_the_window() -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    record = registry.register(register("n1", A), now=10.0)
    assert record.status is NodeStatus.STARTING
    assert registry.get_timer() == 13.0
    assert registry.handle_timer(now=12.999) == []
    assert registry.handle_timer(now=13.0) == ["n1"]
    assert registry.get("n1") is None
    assert registry.get_timer() is None


def test_heartbeats_move_the_deadline_and_set_status_and_telemetry() -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    registry.register(register("n1", A), now=0.0)
    record = registry.heartbeat("n1", beat(NodeStatus.BUSY, active=1), now=2.0)
    assert record is not None
    assert (record.status, record.telemetry.active_sequences, record.last_seen) == (NodeStatus.BUSY, 1, 2.0)
    assert registry.get_timer() == 5.0
    assert registry.handle_timer(now=4.0) == []


def test_a_late_heartbeat_does_not_revive_an_expired_node() -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    registry.register(register("n1", A), now=0.0)
    assert registry.heartbeat("n1", beat(), now=3.0) is None
    assert registry.candidates(A.sha256, now=3.0) == []
    assert registry.handle_timer(now=3.0) == ["n1"]


def test_a_new_registration_replaces_the_old_incarnation() -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    old = registry.register(register("n1", A), now=0.0)
    new = registry.register(register("n1", B), now=1.0)
    assert new.incarnation > old.incarnation
    assert registry.heartbeat("n1", beat(), now=1.5, incarnation=old.incarnation) is None
    assert not registry.remove("n1", incarnation=old.incarnation)
    assert registry.candidates(A.sha256, now=1.5) == []
    assert [r.node_id for r in registry.candidates(B.sha256, now=1.5)] == ["n1"]
    assert registry.get_timer() == 4.0  # the old deadline (3.0) is gone with the old incarnation


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model-b", B.sha256),
        ("sha256:" + B.sha256, B.sha256),
        ("model-c", None),
        ("sha256:" + "cc" * 32, None),
        (B.sha256, None),  # a bare hash is not a model name
    ],
)
def test_resolve_model_takes_a_served_id_or_a_sha256_name(name: str, expected: str | None) -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    registry.register(register("n1", B), now=0.0)
    assert registry.resolve_model(name) == expected


def test_a_model_stays_known_after_its_last_node_leaves() -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    registry.register(register("n1", A), now=0.0)
    registry.remove("n1")
    assert registry.resolve_model("model-a") == A.sha256
    assert registry.candidates(A.sha256, now=0.0) == []
    assert registry.served_models(now=0.0) == []


def test_a_served_name_resolves_to_a_file_that_is_served_now_then_to_the_smallest_hash() -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    registry.register(register("n1", A), now=0.0)
    registry.register(register("n2", A2), now=0.0)
    assert registry.resolve_model("model-a") == min(A.sha256, A2.sha256)
    registry.remove("n1")
    assert registry.resolve_model("model-a") == A2.sha256


def test_served_models_count_nodes_and_ready_nodes() -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    registry.register(register("n1", A, B), now=0.0)
    registry.register(register("n2", B), now=0.0)
    registry.heartbeat("n2", beat(), now=1.0)
    entries = {entry.info.sha256: (entry.nodes, entry.ready_nodes) for entry in registry.served_models(now=2.0)}
    assert entries == {A.sha256: (1, 0), B.sha256: (2, 1)}
    assert registry.ready_count(now=2.0) == 1
    assert registry.ready_count(now=4.0) == 0  # n2 expired at 4.0, even before handle_timer


def test_snapshot_lists_nodes_by_id() -> None:
    registry = NodeRegistry(expire_after_s=3.0)
    for node_id in ("n2", "n1", "n3"):
        registry.register(register(node_id, A), now=0.0)
    assert [record.node_id for record in registry.snapshot(now=0.0).nodes] == ["n1", "n2", "n3"]


def test_expire_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expire_after_s"):
        NodeRegistry(expire_after_s=0)


NODE_IDS = ("n1", "n2", "n3")
MODELS = (A, B)


class RegistryMachine(RuleBasedStateMachine):
    """The registry against a plain model: node -> (deadline, status, models), and a fake clock."""

    @initialize()
    def setup(self) -> None:
        self.window = 3.0
        self.now = 0.0
        self.registry = NodeRegistry(expire_after_s=self.window)
        self.model: dict[str, tuple[float, NodeStatus, tuple[ModelInfo, ...]]] = {}

    @rule(node_id=st.sampled_from(NODE_IDS), models=st.sets(st.sampled_from(MODELS)))
    def register_node(self, node_id: str, models: set[ModelInfo]) -> None:
        ordered = tuple(sorted(models, key=lambda m: m.sha256))
        self.registry.register(register(node_id, *ordered), now=self.now)
        self.model[node_id] = (self.now + self.window, NodeStatus.STARTING, ordered)

    @rule(node_id=st.sampled_from(NODE_IDS), status=st.sampled_from(NodeStatus))
    def heartbeat(self, node_id: str, status: NodeStatus) -> None:
        result = self.registry.heartbeat(node_id, beat(status), now=self.now)
        known = self.model.get(node_id)
        if known is None or known[0] <= self.now:
            assert result is None
        else:
            assert result is not None
            self.model[node_id] = (self.now + self.window, status, known[2])

    @rule(node_id=st.sampled_from(NODE_IDS))
    def remove(self, node_id: str) -> None:
        assert self.registry.remove(node_id) == (node_id in self.model)
        self.model.pop(node_id, None)

    @rule(step=st.floats(min_value=0.0, max_value=4.0, allow_nan=False))
    def advance(self, step: float) -> None:
        self.now += step

    @precondition(lambda self: self.registry.get_timer() is not None)
    @rule()
    def jump_to_the_timer(self) -> None:
        timer = self.registry.get_timer()
        assert timer is not None
        self.now = max(self.now, timer)

    @rule()
    def handle_timer(self) -> None:
        expired = self.registry.handle_timer(now=self.now)
        expected = {node_id for node_id, (deadline, _, _) in self.model.items() if deadline <= self.now}
        assert sorted(expired) == sorted(expected)
        for node_id in expired:
            del self.model[node_id]

    @invariant()
    def the_timer_is_the_earliest_deadline(self) -> None:
        deadlines = [deadline for deadline, _, _ in self.model.values()]
        assert self.registry.get_timer() == (min(deadlines) if deadlines else None)

    @invariant()
    def an_expired_node_is_never_a_candidate(self) -> None:
        for info in MODELS:
            got = [record.node_id for record in self.registry.candidates(info.sha256, now=self.now)]
            live = sorted(
                node_id
                for node_id, (deadline, _, models) in self.model.items()
                if deadline > self.now and info in models
            )
            assert got == live

    @invariant()
    def records_match_the_model(self) -> None:
        assert {record.node_id: record.status for record in self.registry} == {
            node_id: status for node_id, (_, status, _) in self.model.items()
        }

    @invariant()
    def ready_count_counts_live_ready_nodes(self) -> None:
        expected = sum(
            status is NodeStatus.READY and deadline > self.now for deadline, status, _ in self.model.values()
        )
        assert self.registry.ready_count(now=self.now) == expected


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
