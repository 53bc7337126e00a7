"""Protocol versions and the hello handshake (``docs/protocol.md`` §2).

Each side opens with ``hello`` listing the versions it speaks; the acceptor
answers ``welcome`` with the highest version both share, or an ``error`` with
code ``version_mismatch`` and closes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from meshcore_sdk.protocol.errors import VersionMismatch
from meshcore_sdk.protocol.frames import HelloFrame

__all__ = ["PROTOCOL_VERSION", "SUPPORTED_VERSIONS", "negotiate"]

PROTOCOL_VERSION: Final = 1
"""The newest protocol version this code speaks."""

SUPPORTED_VERSIONS: Final[frozenset[int]] = frozenset({1})
"""Every protocol version this code speaks."""


def negotiate(hello: HelloFrame, supported: Collection[int] = SUPPORTED_VERSIONS) -> int:
    """Pick the highest version that both ``hello`` and ``supported`` list.

    Raises:
        VersionMismatch: the two sides share no version.
    """
    shared = set(hello.versions) & set(supported)
    if not shared:
        raise VersionMismatch(f"peer speaks protocol versions {sorted(hello.versions)}, this side {sorted(supported)}")
    return max(shared)
