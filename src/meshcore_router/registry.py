"""The registry of nodes: who is connected, what they serve, and when they expire.

Theory of operation
-------------------
The registry is a pure core (``docs/protocol.md`` §4.1, §4.2): it takes events
with the time they happened (``now``, seconds on a monotonic clock) and keeps one
:class:`NodeRecord` per node.  It never reads a clock and never sleeps; its
driver asks :meth:`NodeRegistry.get_timer` for the next deadline, sleeps until
then, and calls :meth:`NodeRegistry.handle_timer`, which removes the nodes that
expired and returns their ids so the driver can close their links.

A node expires ``expire_after_s`` after its last sign of life (its registration
or its last heartbeat).  A node past its deadline is dead even before
``handle_timer`` runs: :meth:`NodeRegistry.candidates` never returns it.

Each registration gets a new *incarnation* number.  A second registration of the
same ``node_id`` replaces the first; events that carry the old incarnation (a
late heartbeat, the old link's goodbye) are then ignored.

The registry also remembers every model it has ever seen, so that the router can
tell a model no node has ever served (``model_not_found``) from a known model
that no node can serve right now (``no_capacity``).

================  ==============================================  ======================
event             effect                                          deadline
================  ==============================================  ======================
register          new record, status STARTING, new incarnation    now + expire_after_s
heartbeat         status and telemetry replaced                   now + expire_after_s
remove            record dropped (if the incarnation matches)     --
handle_timer      records whose deadline <= now dropped           --
================  ==============================================  ======================
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, replace

from meshcore_sdk.protocol import HeartbeatFrame, ModelInfo, NodeStatus, RegisterFrame, Telemetry

__all__ = ["SHA256_PREFIX", "ModelEntry", "NodeRecord", "NodeRegistry", "RegistrySnapshot"]

SHA256_PREFIX = "sha256:"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What the router knows about one connected node.

    Attributes:
        node_id: the node's name, unique in the mesh.
        incarnation: which registration of this node the record belongs to.
        models: the models the node holds.
        max_sequences: how many requests the node runs at once.
        status: the node's readiness, from its last heartbeat.
        telemetry: the node's last measurements.
        registered_at: when it registered (monotonic seconds).
        last_seen: when it last showed a sign of life (monotonic seconds).
        deadline: when it expires unless it heartbeats again (monotonic seconds).
    """

    node_id: str
    incarnation: int
    models: tuple[ModelInfo, ...]
    max_sequences: int
    status: NodeStatus
    telemetry: Telemetry
    registered_at: float
    last_seen: float
    deadline: float

    def alive_at(self, now: float) -> bool:
        """Whether the node has not yet expired at ``now``."""
        return now < self.deadline


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model served by the mesh, with how many live nodes hold it and how many are READY."""

    info: ModelInfo
    nodes: int
    ready_nodes: int


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """The registry at one instant, for status pages."""

    now: float
    nodes: tuple[NodeRecord, ...]


class NodeRegistry:
    """Nodes, their models and their liveness deadlines.

    Args:
        expire_after_s: how long a node may stay silent before it expires.
    """

    def __init__(self, *, expire_after_s: float) -> None:
        if expire_after_s <= 0:
            raise ValueError("expire_after_s must be > 0")
        self.expire_after_s = expire_after_s
        self._nodes: dict[str, NodeRecord] = {}
        self._serving: dict[str, set[str]] = {}  # sha256 -> ids of registered nodes holding it
        self._known: dict[str, ModelInfo] = {}  # sha256 -> the model, for every model ever seen
        self._names: dict[str, set[str]] = {}  # served name -> sha256s ever seen under it
        self._timers: list[tuple[float, str, int]] = []  # (deadline, node_id, incarnation), lazy
        self._incarnations = 0

    # --- events ---------------------------------------------------------------------------

    def register(self, frame: RegisterFrame, *, now: float) -> NodeRecord:
        """Add a node, replacing any earlier registration of the same ``node_id``."""
        self.remove(frame.node_id)
        self._incarnations += 1
        record = NodeRecord(
            node_id=frame.node_id,
            incarnation=self._incarnations,
            models=tuple(frame.models),
            max_sequences=frame.max_sequences,
            status=NodeStatus.STARTING,
            telemetry=Telemetry(ram_free_bytes=frame.ram_free_bytes),
            registered_at=now,
            last_seen=now,
            deadline=now + self.expire_after_s,
        )
        self._store(record)
        for model in record.models:
            self._serving.setdefault(model.sha256, set()).add(record.node_id)
            self._known[model.sha256] = model
            self._names.setdefault(model.served_name, set()).add(model.sha256)
        return record

    def heartbeat(
        self, node_id: str, frame: HeartbeatFrame, *, now: float, incarnation: int | None = None
    ) -> NodeRecord | None:
        """Record a heartbeat; returns the updated record, or None for an unknown or replaced node."""
        record = self._current(node_id, incarnation)
        if record is None or not record.alive_at(now):
            return None
        updated = replace(
            record,
            status=frame.status,
            telemetry=frame.telemetry,
            last_seen=now,
            deadline=now + self.expire_after_s,
        )
        self._store(updated)
        return updated

    def remove(self, node_id: str, *, incarnation: int | None = None) -> bool:
        """Drop a node (only that incarnation, when given); returns whether it was there."""
        record = self._current(node_id, incarnation)
        if record is None:
            return False
        del self._nodes[node_id]
        for model in record.models:
            holders = self._serving[model.sha256]
            holders.discard(node_id)
            if not holders:
                del self._serving[model.sha256]
        return True

    def get_timer(self) -> float | None:
        """The earliest deadline of a registered node, or None when there is none."""
        self._drop_stale_timers()
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, *, now: float) -> list[str]:
        """Remove every node whose deadline has passed; returns their ids, earliest first."""
        expired: list[str] = []
        self._drop_stale_timers()
        while self._timers and self._timers[0][0] <= now:
            _, node_id, _ = heapq.heappop(self._timers)
            self.remove(node_id)
            expired.append(node_id)
            self._drop_stale_timers()
        return expired

    # --- queries --------------------------------------------------------------------------

    def get(self, node_id: str) -> NodeRecord | None:
        """The record of a registered node."""
        return self._nodes.get(node_id)

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[NodeRecord]:
        return iter(self._nodes.values())

    def resolve_model(self, name: str) -> str | None:
        """The sha256 a model name stands for, or None if no node ever served it.

        ``name`` is a served id (``gemma-3-270m``) or ``sha256:<hex>``.  When several files
        were served under one id, one that a node serves now wins, then the smallest hash.
        """
        if name.startswith(SHA256_PREFIX):
            sha256 = name.removeprefix(SHA256_PREFIX)
            return sha256 if sha256 in self._known else None
        shas = self._names.get(name)
        if not shas:
            return None
        return min(shas, key=lambda sha: (sha not in self._serving, sha))

    def model_info(self, sha256: str) -> ModelInfo | None:
        """The model with this hash, if any node ever served it."""
        return self._known.get(sha256)

    def weight_format(self, sha256: str) -> str | None:
        """The weight format (``Q4_K_M``, ...) nodes report for a model, if they do."""
        info = self._known.get(sha256)
        return None if info is None else info.weight_format

    def candidates(self, sha256: str, *, now: float) -> list[NodeRecord]:
        """Live nodes holding the model, in node id order (whatever their status)."""
        holders = self._serving.get(sha256, ())
        records = (self._nodes[node_id] for node_id in sorted(holders))
        return [record for record in records if record.alive_at(now)]

    def served_models(self, *, now: float) -> list[ModelEntry]:
        """Each model that some live node holds, by served name then hash."""
        entries = []
        for sha256 in self._serving:
            live = self.candidates(sha256, now=now)
            if live:
                ready = sum(record.status is NodeStatus.READY for record in live)
                entries.append(ModelEntry(info=self._known[sha256], nodes=len(live), ready_nodes=ready))
        return sorted(entries, key=lambda entry: (entry.info.served_name, entry.info.sha256))

    def ready_count(self, *, now: float) -> int:
        """How many live nodes are READY."""
        return sum(record.status is NodeStatus.READY and record.alive_at(now) for record in self)

    def snapshot(self, *, now: float) -> RegistrySnapshot:
        """Every registered node, by id."""
        return RegistrySnapshot(now=now, nodes=tuple(sorted(self, key=lambda record: record.node_id)))

    # --- internals ------------------------------------------------------------------------

    def _current(self, node_id: str, incarnation: int | None) -> NodeRecord | None:
        record = self._nodes.get(node_id)
        if record is None or (incarnation is not None and record.incarnation != incarnation):
            return None
        return record

    def _store(self, record: NodeRecord) -> None:
        self._nodes[record.node_id] = record
        heapq.heappush(self._timers, (record.deadline, record.node_id, record.incarnation))

    def _drop_stale_timers(self) -> None:
        """Pop heap entries that no longer match a record's deadline (lazy deletion)."""
        while self._timers:
            deadline, node_id, incarnation = self._timers[0]
            record = self._nodes.get(node_id)
            if record is not None and record.incarnation == incarnation and record.deadline == deadline:
                return
            heapq.heappop(self._timers)
