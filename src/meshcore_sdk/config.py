"""The client's settings: one frozen object, with units in the field names.

:class:`ClientConfig` is what a client runs with.  :func:`resolve_config` builds
it from the constructor's arguments and a mapping of environment variables that
the constructor hands in; it reads no environment itself, so the client's
constructor stays the one place that does (``STYLE.md`` rule 6).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

from meshcore_sdk.protocol.errors import ConfigError
from meshcore_sdk.swarm.budget import HedgeBudgetConfig
from meshcore_sdk.swarm.machine import SwarmConfig

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DirectOptions",
    "SwarmLegs",
    "SwarmOptions",
    "DEFAULT_ROUTER_URL",
    "DEFAULT_TIMEOUT_S",
    "MAX_SWARM_SIZE",
    "AVAILABLE_MODES",
    "ClientConfig",
    "Mode",
    "require_available",
    "resolve_config",
]

DEFAULT_ROUTER_URL: Final = "http://127.0.0.1:8080"
"""Where the client looks for a router when neither an argument nor the environment names one."""

DEFAULT_TIMEOUT_S: Final = 600.0
"""The default connect and read timeout, in seconds; a read is one piece of a stream."""

DEFAULT_MAX_RETRIES: Final = 2
"""How many times a request is repeated after a retryable failure, by default."""

MAX_SWARM_SIZE: Final = 5
"""The largest number of workers a swarm request may fan out to."""

ROUTER_URL_VARIABLE: Final = "MESHCORE_ROUTER_URL"
API_KEY_VARIABLE: Final = "MESHCORE_API_KEY"


class Mode(enum.StrEnum):
    """How the client reaches workers."""

    PROXY = "proxy"
    """Through the router's OpenAI-compatible HTTP API (``docs/protocol.md`` §6)."""
    DIRECT = "direct"
    """Straight to one worker over WebRTC, with a ticket from the router."""
    SWARM = "swarm"
    """Speculatively to several workers at once, keeping the fastest."""


AVAILABLE_MODES: Final[frozenset[Mode]] = frozenset({Mode.PROXY, Mode.DIRECT, Mode.SWARM})
"""The modes this version of the SDK implements."""


SwarmLegs = Literal["auto", "direct", "proxy"]
"""How the copies of a swarm request travel (:attr:`SwarmOptions.legs`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SwarmOptions:
    """How swarm mode fans out and fails over.

    Attributes:
        machine: thresholds of leader election and failover.
        budget: the hedging budget shared by the client's swarm requests.
        open_timeout_s: how long opening the router's frame stream may take, in seconds (proxy legs).
        legs: how the copies travel.  ``"direct"``: each on a WebRTC data channel of its own, with a
            ticket from the router (``ClientConfig.direct`` says how they connect; needs the
            ``direct`` extra).  ``"proxy"``: all through the router's frame stream.  ``"auto"``, the
            default: direct when aiortc is installed, else proxy, so that a plain ``pip install
            meshcore`` keeps a working swarm mode.  Direct legs need a path to each worker (host
            candidates on one machine or network, or the router's TURN server); ask for proxy legs
            where there is none.
        min_leg_connect_s: the least time a direct leg gets to open its channel, in seconds.  Longer
            than direct mode's deadline (``DirectOptions.min_connect_deadline_s``): there a slow worker
            holds up the request and the next one is tried, here it only loses the race, and every
            leg connects at once while the workers' prefills load the machines.
    """

    machine: SwarmConfig = field(default_factory=SwarmConfig)
    budget: HedgeBudgetConfig = field(default_factory=HedgeBudgetConfig)
    open_timeout_s: float = 10.0
    legs: SwarmLegs = "auto"
    min_leg_connect_s: float = 3.0

    def __post_init__(self) -> None:
        if self.legs not in ("auto", "direct", "proxy"):
            raise ConfigError(f"swarm legs must be 'auto', 'direct' or 'proxy', got {self.legs!r}")
        if not self.min_leg_connect_s > 0:
            raise ConfigError(f"min_leg_connect_s must be positive, got {self.min_leg_connect_s}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectOptions:
    """How direct mode connects (``docs/protocol.md`` §8).

    Attributes:
        workers: how many tickets (workers) to ask for; they are tried in turn, each within its deadline.
        min_connect_deadline_s: the least time a worker gets to open its data channel.
        connect_deadline_rtts: the deadline in round trips to the router: ``max(min, rtts x RTT)``.
        force_relay: use only TURN relay candidates (``iceTransportPolicy: relay``).
        host_addresses: local addresses to gather host candidates on (``None``: every interface).
        stun_retry_rto_s: aioice's first STUN retransmission timeout (its own default is 0.5 s).
    """

    workers: int = 2
    min_connect_deadline_s: float = 0.3
    connect_deadline_rtts: float = 8.0
    force_relay: bool = False
    host_addresses: tuple[str, ...] | None = None
    stun_retry_rto_s: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_SWARM_SIZE:
            raise ConfigError(f"direct workers must be between 1 and {MAX_SWARM_SIZE}, got {self.workers}")
        if not (self.min_connect_deadline_s > 0 and self.connect_deadline_rtts > 0 and self.stun_retry_rto_s > 0):
            raise ConfigError("direct-mode deadlines and timeouts must be positive")

    def connect_deadline_s(self, rtt_s: float) -> float:
        """The per-worker connection deadline for a measured round trip to the router."""
        return max(self.min_connect_deadline_s, self.connect_deadline_rtts * rtt_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Everything a client runs with.  Build one with :func:`resolve_config`, or directly.

    Attributes:
        router_url: the router's base address, without the ``/v1`` suffix.
        api_key: sent as ``Authorization: Bearer <key>`` when set.
        mode: how the client reaches workers.
        swarm_size: how many workers a swarm request fans out to (1 to 5).
        timeout_s: connect and read timeout in seconds; ``None`` waits for ever.
        max_retries: retries after a retryable failure, before a stream delivers anything.
        retry_initial_s: the cap of the first backoff delay, in seconds.
        retry_max_s: the largest backoff delay, in seconds.
        max_retry_after_s: the longest server-requested wait the client obeys, in seconds;
            a longer ``Retry-After`` ends the retries and raises with ``retry_after_s`` set.
        direct: how direct mode connects.
        swarm: how swarm mode fans out and fails over.
    """

    router_url: str = DEFAULT_ROUTER_URL
    api_key: str | None = field(default=None, repr=False)
    mode: Mode = Mode.PROXY
    swarm_size: int = 3
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_initial_s: float = 0.5
    retry_max_s: float = 8.0
    max_retry_after_s: float = 60.0
    direct: DirectOptions = field(default_factory=DirectOptions)
    swarm: SwarmOptions = field(default_factory=SwarmOptions)

    def __post_init__(self) -> None:
        _check_router_url(self.router_url)
        if not 1 <= self.swarm_size <= MAX_SWARM_SIZE:
            raise ConfigError(f"swarm_size must be between 1 and {MAX_SWARM_SIZE}, got {self.swarm_size}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConfigError(f"timeout must be a positive number of seconds or None, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be zero or more, got {self.max_retries}")
        if not 0 <= self.retry_initial_s <= self.retry_max_s:
            raise ConfigError("retry delays must satisfy 0 <= retry_initial_s <= retry_max_s")
        if self.max_retry_after_s < 0:
            raise ConfigError(f"max_retry_after_s must be zero or more, got {self.max_retry_after_s}")


def resolve_config(
    *,
    router_url: str | None,
    api_key: str | None,
    mode: Mode | str,
    swarm_size: int,
    timeout_s: float | None,
    max_retries: int,
    environ: Mapping[str, str],
) -> ClientConfig:
    """Build a :class:`ClientConfig` from a client constructor's arguments.

    Arguments win over ``environ`` (``MESHCORE_ROUTER_URL``, ``MESHCORE_API_KEY``),
    which wins over the defaults.

    Raises:
        ConfigError: an argument is out of range, or ``mode`` names a mode this
            version does not implement.
    """
    url = router_url or environ.get(ROUTER_URL_VARIABLE) or DEFAULT_ROUTER_URL
    config = ClientConfig(
        router_url=normalize_router_url(url),
        api_key=api_key if api_key is not None else (environ.get(API_KEY_VARIABLE) or None),
        mode=parse_mode(mode),
        swarm_size=swarm_size,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )
    require_available(config.mode)
    return config


def require_available(mode: Mode) -> None:
    """Refuse a mode this version does not implement.

    Raises:
        ConfigError: ``mode`` is not in :data:`AVAILABLE_MODES`.
    """
    if mode not in AVAILABLE_MODES:
        available = " or ".join(repr(m.value) for m in Mode if m in AVAILABLE_MODES)
        raise ConfigError(f"mode {mode.value!r} is not available in this version of meshcore; use mode={available}")


def parse_mode(mode: Mode | str) -> Mode:
    """Read a mode name, refusing anything but ``proxy``, ``direct`` and ``swarm``."""
    try:
        return Mode(mode)
    except ValueError:
        names = ", ".join(repr(m.value) for m in Mode)
        raise ConfigError(f"unknown mode {mode!r}; expected one of {names}") from None


def normalize_router_url(url: str) -> str:
    """Strip trailing slashes and a ``/v1`` suffix, so both spellings reach the same router.

    Raises:
        ConfigError: ``url`` is not an ``http`` or ``https`` address.
    """
    _check_router_url(url)
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url.rstrip("/")


def _check_router_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"router_url must be an http:// or https:// address, got {url!r}")
