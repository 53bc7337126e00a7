"""The router's settings: one frozen object, units in every name.

The environment and config files are read only by the command-line entry point,
which builds a :class:`RouterConfig` and hands it to :func:`meshcore_router.create_app`
or :func:`meshcore_router.serve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshcore_router.audits.config import AuditConfig
from meshcore_router.audits.reputation import MEASURED_FALSE_FLAG_RATE, ReputationConfig
from meshcore_router.turn import parse_turn_url
from meshcore_sdk.protocol import FrameLimits
from meshcore_sdk.protocol.errors import ConfigError
from meshcore_sdk.swarm.budget import HedgeBudgetConfig

__all__ = ["RouterConfig"]

_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Everything the router can be told, with defaults that suit one machine.

    Attributes:
        host: interface to listen on (loopback by default; ``0.0.0.0`` exposes the router).
        port: TCP port to listen on; 0 picks a free one.
        heartbeat_interval_s: how often nodes are told to send a heartbeat.
        missed_heartbeats: heartbeat intervals without a heartbeat after which a node expires.
        no_capacity_retry_after_s: the ``Retry-After`` hint sent when no READY node can take a request.
        max_frame_bytes: largest frame accepted on a websocket, checked before parsing.
        max_frame_depth: deepest JSON nesting accepted in a frame, checked before parsing.
        ws_max_message_bytes: websocket-layer cap (close 1009 before buffering); above the frame cap
            so that a frame slightly over it still gets an ``error`` frame first.
        max_request_bytes: largest HTTP request body accepted.
        handshake_timeout_s: how long a new websocket may take to send ``hello`` and ``register``.
        first_token_timeout_s: how long a request may wait for its first token.
        stall_timeout_s: longest gap allowed between two frames of a request after its first token.
        request_queue_frames: frames buffered per request between a node and a slow reader.
        link_send_queue_frames: frames buffered per node link before the link counts as stuck.
        max_node_load: (in-flight + queued) / max_sequences at which a node gets no new requests.
        hedge_budget_max_tokens: size of the router's hedging budget, shared by all clients: hedges
            (extra copies of a swarm's request) are refused while it holds half of this or less;
            each failed or pushed-back request, and each hedge refused for lack of capacity, takes
            a token (0: never place a hedge).
        hedge_budget_token_ratio: tokens each request that completes gives back to the budget.
        shutdown_timeout_s: how long a stopping server waits for open connections to finish.
        ticket_issuer: the ``iss`` of direct-mode tickets.
        ticket_lifetime_s: how long a ticket is valid (at most 300 s).
        ticket_leeway_s: clock skew allowed when a retired signing key is dropped from the JWKS.
        ticket_default_max_tokens: the token budget of a ticket whose request named none.
        signal_timeout_s: how long the router waits for a worker's answer to a relayed offer.
        turn_urls: TURN servers (``turn:host:port?transport=udp``) to hand to direct-mode peers;
            none by default.  aiortc uses one per connection: the first healthy one is handed out.
        turn_secret: coturn's ``static-auth-secret``, for REST credentials; required with ``turn_urls``.
        turn_credential_ttl_s: how long minted TURN credentials stay valid.
        turn_health_interval_s: how often each TURN server is checked.
        turn_health_timeout_s: how long one check may take before the server counts as down.
        stun_urls: STUN servers to hand out as well (unchecked; only list ones you run).
        audits: receipts, the audit lottery, auditors and the ledger (``docs/concepts/audits.md``).
        reputation: how nodes earn and lose standing, escrow and routing weight.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    heartbeat_interval_s: float = 1.0
    missed_heartbeats: int = 3
    no_capacity_retry_after_s: float = 1.0
    max_frame_bytes: int = _MIB
    max_frame_depth: int = 16
    ws_max_message_bytes: int = 2 * _MIB
    max_request_bytes: int = 4 * _MIB
    handshake_timeout_s: float = 10.0
    first_token_timeout_s: float = 120.0
    stall_timeout_s: float = 60.0
    request_queue_frames: int = 4096
    link_send_queue_frames: int = 1024
    max_node_load: float = 4.0
    hedge_budget_max_tokens: float = 100.0
    hedge_budget_token_ratio: float = 0.1
    shutdown_timeout_s: float = 5.0
    ticket_issuer: str = "meshcore-router"
    ticket_lifetime_s: float = 300.0
    ticket_leeway_s: float = 5.0
    ticket_default_max_tokens: int = 4096
    signal_timeout_s: float = 10.0
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = field(default=None, repr=False)
    turn_credential_ttl_s: float = 300.0
    turn_health_interval_s: float = 5.0
    turn_health_timeout_s: float = 1.0
    stun_urls: tuple[str, ...] = ()
    audits: AuditConfig = field(default_factory=AuditConfig)
    reputation: ReputationConfig = field(
        default_factory=lambda: ReputationConfig(false_flag_rate=MEASURED_FALSE_FLAG_RATE)
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if self.heartbeat_interval_s <= 0 or self.missed_heartbeats < 1:
            raise ConfigError("heartbeat_interval_s must be > 0 and missed_heartbeats >= 1")
        if self.ws_max_message_bytes < self.max_frame_bytes:
            raise ConfigError("ws_max_message_bytes must be at least max_frame_bytes")
        if self.turn_urls and not self.turn_secret:
            raise ConfigError("turn_urls need turn_secret (coturn's static-auth-secret)")
        if self.hedge_budget_max_tokens < 0 or self.hedge_budget_token_ratio <= 0:
            raise ConfigError("hedge_budget_max_tokens must be >= 0 and hedge_budget_token_ratio > 0")
        for url in self.turn_urls:
            parse_turn_url(url)
        if not 0 < self.ticket_lifetime_s <= 300:
            raise ConfigError(f"ticket_lifetime_s must be in (0, 300], got {self.ticket_lifetime_s}")
        positive = (
            "first_token_timeout_s",
            "stall_timeout_s",
            "handshake_timeout_s",
            "max_node_load",
            "signal_timeout_s",
            "turn_credential_ttl_s",
            "turn_health_interval_s",
            "turn_health_timeout_s",
            "ticket_default_max_tokens",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")

    @property
    def expire_after_s(self) -> float:
        """How long a node may stay silent before it expires."""
        return self.heartbeat_interval_s * self.missed_heartbeats

    @property
    def hedge_budget(self) -> HedgeBudgetConfig:
        """The router's hedging budget (``meshcore_router.hedging``)."""
        return HedgeBudgetConfig(max_tokens=self.hedge_budget_max_tokens, token_ratio=self.hedge_budget_token_ratio)

    @property
    def frame_limits(self) -> FrameLimits:
        """The caps applied to every frame received on a websocket."""
        return FrameLimits(max_frame_bytes=self.max_frame_bytes, max_depth=self.max_frame_depth)
