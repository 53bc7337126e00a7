"""TURN for direct mode: REST credentials, and which servers are healthy enough to hand out.

Theory of operation.  coturn's ``use-auth-secret`` scheme (the TURN REST API,
draft-uberti-behave-turn-rest-00) needs no call to the TURN server: the username
is ``"<expiry unix seconds>:<user>"`` and the password is
``base64(HMAC-SHA1(shared secret, username))``.  coturn refuses the username once
its time has passed, so the router mints short-lived credentials per ticket.

aiortc waits up to 5 s per unreachable STUN/TURN server while gathering, on each
side, so the router hands out only servers that answered its last health check
(a STUN binding request, which coturn answers on its listening port)::

    state of a url      event                               healthy?
    unknown             -                                   no
    any                 checked(url, ok=True, now)          yes, until now + stale_after_s
    any                 checked(url, ok=False, now)         no

Pure: the binding request's transaction id and ``now`` come in as arguments.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from meshcore_sdk.protocol import IceServer
from meshcore_sdk.protocol.errors import ConfigError

__all__ = [
    "TurnEndpoint",
    "TurnHealth",
    "binding_request",
    "is_binding_success",
    "mint_turn_credentials",
    "parse_turn_url",
    "turn_ice_server",
]

_MAGIC_COOKIE: Final = 0x2112A442
_BINDING_REQUEST: Final = 0x0001
_BINDING_SUCCESS: Final = 0x0101


def mint_turn_credentials(secret: str, *, user: str, expires_at_unix: int) -> tuple[str, str]:
    """coturn REST credentials: ``("<expiry>:<user>", base64(HMAC-SHA1(secret, username)))``."""
    username = f"{expires_at_unix}:{user}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def turn_ice_server(url: str, secret: str, *, user: str, expires_at_unix: int) -> IceServer:
    """One TURN server with fresh REST credentials for ``user``."""
    username, credential = mint_turn_credentials(secret, user=user, expires_at_unix=expires_at_unix)
    return IceServer(urls=[url], username=username, credential=credential)


@dataclass(frozen=True, slots=True)
class TurnEndpoint:
    """Where a ``turn:``/``turns:`` URL points: host, port and transport (``udp`` or ``tcp``)."""

    host: str
    port: int
    transport: str


def parse_turn_url(url: str) -> TurnEndpoint:
    """Read ``turn:host:port?transport=udp`` (RFC 7065).

    Raises:
        ConfigError: not a ``turn:`` or ``turns:`` URL with a host.
    """
    scheme, _, rest = url.partition(":")
    if scheme not in ("turn", "turns") or not rest:
        raise ConfigError(f"not a turn: or turns: URL: {url!r}")
    parts = urlsplit("//" + rest)
    if not parts.hostname:
        raise ConfigError(f"TURN URL without a host: {url!r}")
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    transport = query.get("transport", "tcp" if scheme == "turns" else "udp")
    if transport not in ("udp", "tcp"):
        raise ConfigError(f"TURN transport must be udp or tcp: {url!r}")
    return TurnEndpoint(parts.hostname, parts.port or (5349 if scheme == "turns" else 3478), transport)


def binding_request(transaction_id: bytes) -> bytes:
    """A STUN binding request (RFC 8489 §5) with no attributes."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction id is 12 bytes")
    return struct.pack("!HHI", _BINDING_REQUEST, 0, _MAGIC_COOKIE) + transaction_id


def is_binding_success(data: bytes, transaction_id: bytes) -> bool:
    """Whether ``data`` is a binding success response to the request with ``transaction_id``."""
    if len(data) < 20:
        return False
    kind, _, cookie = struct.unpack("!HHI", data[:8])
    return kind == _BINDING_SUCCESS and cookie == _MAGIC_COOKIE and data[8:20] == transaction_id


class TurnHealth:
    """The last health-check result of each TURN URL.

    Args:
        urls: the configured TURN URLs, in order of preference.
        stale_after_s: how long a good result counts for.
    """

    def __init__(self, urls: Sequence[str], *, stale_after_s: float) -> None:
        self._urls = tuple(urls)
        self._stale_after_s = stale_after_s
        self._good_until: dict[str, float] = {}

    @property
    def urls(self) -> tuple[str, ...]:
        """Every configured URL."""
        return self._urls

    def checked(self, url: str, *, ok: bool, now: float) -> None:
        """Record one check of ``url``."""
        if ok:
            self._good_until[url] = now + self._stale_after_s
        else:
            self._good_until.pop(url, None)

    def healthy(self, *, now: float) -> list[str]:
        """The URLs whose last check passed and is fresh, in order of preference."""
        return [url for url in self._urls if self._good_until.get(url, float("-inf")) >= now]
