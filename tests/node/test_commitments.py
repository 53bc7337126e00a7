"""The node's commitment store: records kept for the audit window and revealed with Merkle proofs (pure)."""

from __future__ import annotations

import base64

import pytest

from meshcore_node.commitments import CommitmentStore
from meshcore_sdk.proof.merkle import merkle_root, verify_inclusion
from meshcore_sdk.protocol.errors import BadRequest

pytestmark = pytest.mark.timeout(30)

RECORDS = [bytes([i]) * (20 + i) for i in range(7)]


def store(**overrides: float) -> CommitmentStore:
    settings = {"audit_window_s": 60.0, "max_bytes": 10_000} | overrides
    return CommitmentStore(audit_window_s=settings["audit_window_s"], max_bytes=int(settings["max_bytes"]))


def test_revealed_records_verify_under_the_committed_root() -> None:
    """Each revealed record comes with a proof that it sits at its position under the receipt's root."""
    commitments = store()
    commitments.keep("job", 3, RECORDS, now=0.0)
    root = merkle_root(RECORDS)

    revealed = commitments.reveal("job", [3, 5, 9], now=1.0)

    assert revealed.positions == [3, 5, 9]
    for position, text, proof in zip(revealed.positions, revealed.records, revealed.proofs, strict=True):
        leaf = base64.b64decode(text)
        assert leaf == RECORDS[position - 3]
        assert verify_inclusion(leaf, position - 3, len(RECORDS), [bytes.fromhex(p) for p in proof], root)


@pytest.mark.parametrize("positions", [[2], [10], [3, 99]], ids=["before the first record", "past the end", "one bad"])
def test_positions_without_records_are_refused(positions: list[int]) -> None:
    commitments = store()
    commitments.keep("job", 3, RECORDS, now=0.0)

    with pytest.raises(BadRequest, match=r"positions 3\.\.9"):
        commitments.reveal("job", positions, now=0.0)


def test_records_expire_after_the_audit_window() -> None:
    commitments = store(audit_window_s=10.0)
    commitments.keep("old", 0, RECORDS, now=0.0)
    commitments.keep("new", 0, RECORDS, now=5.0)

    commitments.expire(now=10.0)

    assert len(commitments) == 1
    with pytest.raises(BadRequest, match="past the audit window"):
        commitments.reveal("old", [0], now=10.0)
    assert commitments.reveal("new", [0], now=10.0).records


def test_the_byte_budget_drops_the_oldest_first() -> None:
    size = sum(map(len, RECORDS))
    commitments = store(max_bytes=2 * size)
    for index in range(3):
        commitments.keep(f"job-{index}", 0, RECORDS, now=float(index))

    assert len(commitments) == 2
    with pytest.raises(BadRequest):
        commitments.reveal("job-0", [0], now=3.0)


def test_keeping_a_job_again_replaces_it() -> None:
    commitments = store()
    commitments.keep("job", 0, RECORDS, now=0.0)
    commitments.keep("job", 2, RECORDS[:2], now=1.0)

    assert len(commitments) == 1
    assert commitments.reveal("job", [3], now=1.0).records == [base64.b64encode(RECORDS[1]).decode()]
