"""Version negotiation in the hello/welcome handshake (docs/protocol.md §2)."""

from __future__ import annotations

import pytest

from meshcore_sdk.protocol import PROTOCOL_VERSION, SUPPORTED_VERSIONS, HelloFrame, Role, negotiate
from meshcore_sdk.protocol.errors import VersionMismatch


def hello(*versions: int) -> HelloFrame:
    return HelloFrame(versions=list(versions), role=Role.NODE, agent="meshcore-node/0.1.0")


@pytest.mark.parametrize(
    ("offered", "supported", "expected"),
    [
        ([1], {1}, 1),
        ([1, 2, 3], {1, 2}, 2),
        ([3, 1, 2], {1, 2, 3}, 3),
        ([1, 3], {2, 3, 4}, 3),
        ([2, 2, 1], [1, 2], 2),
    ],
)
def test_negotiate_picks_the_highest_shared_version(offered: list[int], supported: set[int], expected: int) -> None:
    """The acceptor answers with the highest version both sides list, whatever the order."""
    assert negotiate(hello(*offered), supported) == expected


@pytest.mark.parametrize(
    ("offered", "supported", "message"),
    [
        ([2], {1}, "peer speaks protocol versions [2], this side [1]"),
        ([3, 2], {1}, "peer speaks protocol versions [2, 3], this side [1]"),
        ([1], set(), "peer speaks protocol versions [1], this side []"),
    ],
)
def test_negotiate_refuses_when_no_version_is_shared(offered: list[int], supported: set[int], message: str) -> None:
    """No shared version is a version_mismatch, naming both sides' lists."""
    with pytest.raises(VersionMismatch) as info:
        negotiate(hello(*offered), supported)

    assert (str(info.value), info.value.code) == (message, "version_mismatch")


def test_this_code_speaks_version_1() -> None:
    """Version 1 is the newest and only version, and negotiating with ourselves gives it."""
    assert PROTOCOL_VERSION == 1
    assert sorted(SUPPORTED_VERSIONS) == [1]
    assert negotiate(hello(*sorted(SUPPORTED_VERSIONS))) == PROTOCOL_VERSION
