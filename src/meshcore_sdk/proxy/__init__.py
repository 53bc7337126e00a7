"""Proxy mode: the client reaches workers through the router's HTTP API (``docs/protocol.md`` §6)."""

from meshcore_sdk.proxy.transport import ProxyTransport

__all__ = ["ProxyTransport"]
