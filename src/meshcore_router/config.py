"""The router's settings: one frozen object, units in every name.

The environment and config files are read only by the command-line entry point,
which builds a :class:`RouterConfig` and hands it to :func:`meshcore_router.create_app`
or :func:`meshcore_router.serve`.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshcore_sdk.protocol import FrameLimits
from meshcore_sdk.protocol.errors import ConfigError

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
        shutdown_timeout_s: how long a stopping server waits for open connections to finish.
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
    shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if self.heartbeat_interval_s <= 0 or self.missed_heartbeats < 1:
            raise ConfigError("heartbeat_interval_s must be > 0 and missed_heartbeats >= 1")
        if self.ws_max_message_bytes < self.max_frame_bytes:
            raise ConfigError("ws_max_message_bytes must be at least max_frame_bytes")
        positive = ("first_token_timeout_s", "stall_timeout_s", "handshake_timeout_s", "max_node_load")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")

    @property
    def expire_after_s(self) -> float:
        """How long a node may stay silent before it expires."""
        return self.heartbeat_interval_s * self.missed_heartbeats

    @property
    def frame_limits(self) -> FrameLimits:
        """The caps applied to every frame received on a websocket."""
        return FrameLimits(max_frame_bytes=self.max_frame_bytes, max_depth=self.max_frame_depth)
