"""What a node has committed to, kept for the audit window: records revealed on demand (``docs/protocol.md`` §9.2).

Each receipt's records stay here, encoded as they were hashed into its Merkle
root, until ``audit_window_s`` has passed or the store is over its byte budget
(oldest first).  :meth:`CommitmentStore.reveal` answers a ``reveal`` frame with
the records of the asked positions and an inclusion proof for each.

Pure: ``now`` comes in.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from meshcore_sdk.proof.merkle import inclusion_proofs
from meshcore_sdk.protocol import RevealedFrame
from meshcore_sdk.protocol.errors import BadRequest

__all__ = ["CommitmentStore"]


@dataclass(frozen=True, slots=True)
class _Commitment:
    first_record: int
    records: tuple[bytes, ...]
    stored_at: float

    @property
    def size_bytes(self) -> int:
        return sum(len(record) for record in self.records)


class CommitmentStore:
    """The records behind this node's recent receipts.

    Args:
        audit_window_s: how long records are kept after their receipt.
        max_bytes: the most record bytes kept; the oldest receipts go first past it.
    """

    def __init__(self, *, audit_window_s: float, max_bytes: int) -> None:
        self._window_s = audit_window_s
        self._max_bytes = max_bytes
        self._by_job: OrderedDict[str, _Commitment] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._by_job)

    def keep(self, job_id: str, first_record: int, records: Sequence[bytes], *, now: float) -> None:
        """Keep the encoded records of one receipt (positions ``first_record`` on)."""
        self._drop(job_id)
        commitment = _Commitment(first_record, tuple(records), now)
        self._by_job[job_id] = commitment
        self._bytes += commitment.size_bytes
        self.expire(now=now)

    def expire(self, *, now: float) -> None:
        """Forget receipts older than the audit window, and the oldest past the byte budget."""
        while self._by_job:
            job_id, oldest = next(iter(self._by_job.items()))
            if oldest.stored_at + self._window_s > now and self._bytes <= self._max_bytes:
                return
            self._drop(job_id)

    def reveal(self, job_id: str, positions: Sequence[int], *, now: float) -> RevealedFrame:
        """The records of ``positions`` (generated positions) with their Merkle inclusion proofs.

        Raises:
            BadRequest: the job is unknown or past its window, or a position has no record.
        """
        self.expire(now=now)
        commitment = self._by_job.get(job_id)
        if commitment is None:
            raise BadRequest(f"no records of {job_id} are kept here (unknown job, or past the audit window)")
        leaves = commitment.records
        indices = [position - commitment.first_record for position in positions]
        if any(not 0 <= index < len(leaves) for index in indices):
            raise BadRequest(
                f"{job_id} has records of positions {commitment.first_record}.."
                f"{commitment.first_record + len(leaves) - 1} only"
            )
        return RevealedFrame(
            request_id=job_id,
            positions=list(positions),
            records=[base64.b64encode(leaves[index]).decode() for index in indices],
            proofs=[[node.hex() for node in proof] for proof in inclusion_proofs(leaves, indices)],
        )

    def _drop(self, job_id: str) -> None:
        gone = self._by_job.pop(job_id, None)
        if gone is not None:
            self._bytes -= gone.size_bytes
