"""What an audit measured: the contract between the auditor that scores and the router that judges.

The auditor (``meshcore_node.engine.auditor``) fills an :class:`AuditScores`;
the router (``meshcore_router.audits.verdict``) compares it with the calibration
table and decides.  The scores travel on the control link and are written, as
they are, into the ledger's audit transcript, so a replay judges the same numbers.

Definitions (``docs/concepts/audits.md``):

* ``s_lp``: mean over positions of the mean absolute difference between the
  worker's committed top-K log-probabilities and the auditor's at the same ids.
* ``kl``: mean over positions of KL(committed || auditor) over the committed
  top-K ids, each side renormalized over those ids.
* ``tok_disagree``: fraction of positions where the auditor's keyed choice
  differs from the worker's token by more than the tie margin.
* ``margin_min``: the smallest keyed-Gumbel margin of the worker's token under
  the auditor's scores (negative: the auditor prefers another id).
* ``hid_exp`` / ``hid_mantissa_mean``: the hidden-state digest comparison
  (exponent mismatches, mean mantissa difference), None when no digest was given.
* Tier A: ``row_mismatch_at`` is the first position whose full logit row hash
  differs (None: every row matched bit for bit).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AuditScores", "AuditTier", "ChunkScores"]


class AuditTier(StrEnum):
    """How the auditor checked: one prefill (B) or an exact replay of the worker's schedule (A)."""

    PREFILL = "B"
    REPLAY = "A"


class ChunkScores(BaseModel):
    """The scores of one chunk of consecutive generated positions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int = Field(ge=0, description="first generated position of the chunk")
    n: int = Field(ge=1, description="positions in the chunk")
    s_lp: float = Field(ge=0.0)
    kl: float = Field(ge=0.0)
    tok_disagree: float = Field(ge=0.0, le=1.0)
    margin_min: float
    hid_exp: int | None = Field(default=None, ge=0)
    hid_mantissa_mean: float | None = Field(default=None, ge=0.0)


class AuditScores(BaseModel):
    """One audit's measurements over a job's generated positions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["audit_scores"] = "audit_scores"
    tier: AuditTier
    positions: int = Field(ge=0, description="generated positions checked")
    chunks: tuple[ChunkScores, ...] = ()
    s_lp: float = Field(default=0.0, ge=0.0, description="response mean")
    kl: float = Field(default=0.0, ge=0.0, description="response mean")
    tok_disagree: float = Field(default=0.0, ge=0.0, le=1.0)
    row_mismatch_at: int | None = Field(default=None, ge=0, description="Tier A only")
    seconds: float = Field(default=0.0, ge=0.0, description="auditor wall time")
