"""aiortc and aioice, set up as direct mode needs them (``docs/protocol.md`` §8).

Shared by the SDK's offerer and the node's answerer:

- :func:`rtc_configuration`: ``iceServers`` is always a list, never ``None`` (aiortc
  would then use a public STUN server and wait for it), and the policy is ``relay``
  only when asked to force the relay;
- :func:`tune_aioice`: aioice's first STUN retransmission comes after 500 ms, which
  relay-to-relay setups nearly always wait for (the first check hits a TURN
  permission not yet installed); 100 ms cuts their p90 from about 520 ms to 115 ms;
- :func:`host_addresses`: which local addresses ICE gathers host candidates on, for
  the code running inside the ``with`` block (aioice skips loopback addresses and
  gathers every other interface; tests pin two loopback addresses to block the path
  between them).  It works through a context variable, so two peers in one process
  (a test) can each have their own;
- :func:`relay_in_use`: whether the selected candidate pair goes through a TURN relay.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any, Final

import aioice.ice
import aioice.stun
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from meshcore_sdk.protocol import IceServer

__all__ = ["host_addresses", "relay_in_use", "rtc_configuration", "selected_pair", "tune_aioice"]

_HOST_ADDRESSES: Final[contextvars.ContextVar[tuple[str, ...] | None]] = contextvars.ContextVar(
    "meshcore_ice_host_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    pinned = _HOST_ADDRESSES.get()
    if pinned is None:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    return list(pinned)


def tune_aioice(*, stun_retry_rto_s: float) -> None:
    """Set aioice's first STUN retransmission timeout and install the host-address hook (process-wide)."""
    aioice.stun.RETRY_RTO = stun_retry_rto_s
    aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def host_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Gather host candidates only on ``addresses`` inside this block (``None``: aioice's own choice)."""
    aioice.ice.get_host_addresses = _get_host_addresses
    token = _HOST_ADDRESSES.set(None if addresses is None else tuple(addresses))
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


def rtc_configuration(servers: Sequence[IceServer], *, force_relay: bool = False) -> RTCConfiguration:
    """An aiortc configuration with exactly ``servers`` (possibly none), relay-only when ``force_relay``."""
    ice_servers = [
        RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential)
        for server in servers
    ]
    policy = RTCIceTransportPolicy.RELAY if force_relay else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=ice_servers, iceTransportPolicy=policy)


def selected_pair(pc: RTCPeerConnection) -> tuple[str, str] | None:
    """The candidate types (local, remote) of the pair ICE selected, e.g. ``("host", "relay")``.

    aiortc has no public API for it, so this reads aioice's connection; ``None`` when unknown.
    """
    try:
        connection: Any = pc.sctp.transport.transport._connection  # type: ignore[union-attr]
        pair = connection._nominated.get(1)
        return (str(pair.local_candidate.type), str(pair.remote_candidate.type))
    except AttributeError:
        return None


def relay_in_use(pc: RTCPeerConnection) -> bool:
    """Whether either end of the selected pair is a TURN relay candidate."""
    pair = selected_pair(pc)
    return pair is not None and "relay" in pair
