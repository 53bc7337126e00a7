"""The node's configuration: one frozen object, built by the CLI from flags, environment and file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from meshcore_sdk.protocol import Backoff, FrameLimits

__all__ = ["NodeConfig"]


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node daemon needs to know.

    Attributes:
        router_url: the router's base URL (``http://host:port``); the control link uses its websocket twin.
        node_id: this node's id in the mesh.
        model_path: the GGUF to serve; None serves the bundled Gemma 3 270M.
        n_ctx: context size in tokens.
        n_threads: threads for llama.cpp (None: its default).
        max_in_flight: requests the node accepts at once (running, paused and queued) before it reports BUSY;
            also the number of sequences its engine context holds.
        reconnect: delays between attempts to reach the router.
        engine_restart: delays between restarts of a crashed engine.
        limits: caps on frames received from the router.
        open_timeout_s: how long to wait for the router to accept a connection, in seconds.
        ice_host_addresses: addresses direct mode gathers host candidates on (None: every interface).
        stun_retry_rto_s: aioice's first STUN retransmission timeout for direct mode, in seconds.
        ticket_issuer: the ``iss`` direct-mode tickets must name.
        ticket_leeway_s: clock skew allowed on a ticket's ``exp`` and ``nbf``, in seconds.
        jwks_refetch_interval_s: least time between two JWKS refetches caused by an unknown key id.
        direct_open_timeout_s: how long a direct request's data channel may take to open.
        passive_threads: llama.cpp's idle threads sleep at once instead of spinning (for machines that
            run several nodes; a lone stream decodes slower with it).
        fault_token_delay_s: a fault injected for tests and benchmarks: each token frame waits this
            long before it leaves for the router, so the node streams like a slow machine.
        audit_window_s: how long the records behind each receipt are kept for audits, in seconds.
        commitment_max_bytes: the most record bytes kept for audits; the oldest go first past it.
        hedge_reserve_slots: sequence slots kept for primaries: the node pushes back hedges ("busy, don't
            hedge to me") unless more than this many are free (None: a quarter of its capacity, rounded down).
    """

    router_url: str = "http://127.0.0.1:8080"
    node_id: str = "node"
    model_path: Path | None = None
    n_ctx: int = 4096
    n_threads: int | None = None
    max_in_flight: int = 8
    reconnect: Backoff = field(default_factory=lambda: Backoff(initial_s=0.1, max_s=5.0))
    engine_restart: Backoff = field(default_factory=lambda: Backoff(initial_s=0.1, max_s=5.0))
    limits: FrameLimits = field(default_factory=FrameLimits)
    open_timeout_s: float = 10.0
    passive_threads: bool = False
    fault_token_delay_s: float = 0.0
    ice_host_addresses: tuple[str, ...] | None = None
    stun_retry_rto_s: float = 0.1
    ticket_issuer: str = "meshcore-router"
    ticket_leeway_s: float = 5.0
    jwks_refetch_interval_s: float = 30.0
    direct_open_timeout_s: float = 10.0
    audit_window_s: float = 3600.0
    commitment_max_bytes: int = 256 * 1024 * 1024
    hedge_reserve_slots: int | None = None

    @property
    def jwks_url(self) -> str:
        """Where the router publishes its ticket keys (``docs/protocol.md`` §8)."""
        return self.router_url.rstrip("/") + "/mesh/v1/jwks"

    @property
    def control_url(self) -> str:
        """The websocket URL of the router's node endpoint (``docs/protocol.md`` §4)."""
        base = self.router_url.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base.removeprefix("https://")
        elif base.startswith("http://"):
            base = "ws://" + base.removeprefix("http://")
        return base + "/mesh/v1/node"
