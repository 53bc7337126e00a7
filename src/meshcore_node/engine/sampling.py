"""Keyed sampling and per-token records, now in :mod:`meshcore_sdk.proof` (re-exported here).

The router and the auditor recompute the same choices, so the code lives in
the SDK's pure proof package: :mod:`meshcore_sdk.proof.sampler` and
:mod:`meshcore_sdk.proof.records`.
"""

from __future__ import annotations

from meshcore_sdk.proof.records import TokenRecord, record_token
from meshcore_sdk.proof.sampler import (
    PENALTY_WINDOW,
    SamplerSettings,
    gumbel_noise,
    job_key,
    penalize,
    sample,
    top_indices,
)

__all__ = [
    "PENALTY_WINDOW",
    "SamplerSettings",
    "TokenRecord",
    "gumbel_noise",
    "job_key",
    "penalize",
    "record_token",
    "sample",
    "top_indices",
]
