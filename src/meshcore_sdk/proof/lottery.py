"""The audit lottery: which jobs get audited, decided by a secret committed before and revealed after.

Theory of operation (research §6.5, §6.8)
------------------------------------------
Time is cut into epochs of ``epoch_s`` seconds; epoch ``i`` covers
``[i * epoch_s, (i + 1) * epoch_s)``.  Each epoch has a secret derived from
the router's master secret, ``epoch_secret = HMAC-SHA256(master, b"meshcore/epoch/v1" || i as u64 LE)``.
At the start of the epoch the router publishes ``commitment = SHA-256(secret)``;
a job whose id was assigned in epoch ``i`` is audited when
``audit_draw(secret_i, job_id) < rate``, the draw being the first 8 bytes of
``HMAC-SHA256(secret_i, job_id)`` read as a big-endian integer over ``2**64``.

The secret is published only once the epoch has ended plus ``reveal_grace_s``
(:meth:`EpochClock.revealed`), so anyone can then recompute every selection
and check it against the commitment; nobody could predict one before.  A
receipt must arrive before its epoch's reveal: after it, the worker could know
whether it is audited (:meth:`EpochClock.receipt_in_time`).

Pure: the clock takes ``now`` as an argument, the master secret comes in.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

from meshcore_sdk.protocol.errors import ConfigError, ReceiptLate

__all__ = [
    "EpochClock",
    "audit_draw",
    "commitment",
    "epoch_secret",
    "selected",
]

_EPOCH_LABEL = b"meshcore/epoch/v1"


def epoch_secret(master: bytes, index: int) -> bytes:
    """The 32-byte secret of epoch ``index``: ``HMAC-SHA256(master, label || index as u64 LE)``."""
    return hmac.new(master, _EPOCH_LABEL + index.to_bytes(8, "little"), hashlib.sha256).digest()


def commitment(secret: bytes) -> str:
    """What the router publishes at the epoch's start: SHA-256 of the secret, hex."""
    return hashlib.sha256(secret).hexdigest()


def audit_draw(secret: bytes, job_id: str) -> float:
    """A uniform draw in ``[0, 1)``: the first 8 bytes of ``HMAC-SHA256(secret, job_id)`` over ``2**64``."""
    mac = hmac.new(secret, job_id.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big") / 2**64


def selected(secret: bytes, job_id: str, rate: float) -> bool:
    """Whether the job is audited at audit probability ``rate``."""
    return audit_draw(secret, job_id) < rate


@dataclass(frozen=True, slots=True)
class EpochClock:
    """Epoch arithmetic: which epoch a time falls in, and when each epoch's secret may be revealed.

    Attributes:
        epoch_s: the length of an epoch.
        reveal_grace_s: how long after an epoch's end its secret stays private
            (receipts of that epoch may still arrive until then).
    """

    epoch_s: float
    reveal_grace_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epoch_s) and self.epoch_s > 0):
            raise ConfigError(f"epoch_s must be positive, got {self.epoch_s}")
        if not (math.isfinite(self.reveal_grace_s) and self.reveal_grace_s >= 0):
            raise ConfigError(f"reveal_grace_s must not be negative, got {self.reveal_grace_s}")

    def index_at(self, now: float) -> int:
        """The epoch that contains ``now`` (unix seconds)."""
        return math.floor(now / self.epoch_s)

    def end_of(self, index: int) -> float:
        """When epoch ``index`` ends."""
        return (index + 1) * self.epoch_s

    def reveal_at(self, index: int) -> float:
        """The earliest time the secret of epoch ``index`` may be published."""
        return self.end_of(index) + self.reveal_grace_s

    def revealed(self, index: int, now: float) -> bool:
        """Whether the secret of epoch ``index`` may be published at ``now``."""
        return now >= self.reveal_at(index)

    def receipt_in_time(self, job_epoch_index: int, received_at: float) -> bool:
        """Whether a receipt of a job from epoch ``job_epoch_index`` arrived before that epoch's reveal."""
        return not self.revealed(job_epoch_index, received_at)

    def require_in_time(self, job_epoch_index: int, received_at: float) -> None:
        """Raise :class:`ReceiptLate` unless :meth:`receipt_in_time`."""
        if not self.receipt_in_time(job_epoch_index, received_at):
            raise ReceiptLate(
                f"a receipt of epoch {job_epoch_index} arrived at {received_at}, "
                f"after its reveal at {self.reveal_at(job_epoch_index)}"
            )
