"""The router's audit bookkeeping: calibration, verdicts, standings and the ledger.

* :mod:`~meshcore_router.audits.calibration`: the honest band and flag thresholds
  per (model or weight format, worker build class, auditor build class, path).
* :mod:`~meshcore_router.audits.verdict`: :func:`judge`, a pure function from an
  audit's scores and thresholds to PASS, AMBIGUOUS or FLAG.
* :mod:`~meshcore_router.audits.reputation`: a pure core per node (probation,
  escrow, escalation, slashing only on confirmed evidence).
* :mod:`~meshcore_router.audits.ledger`: the durable, hash-chained SQLite ledger
  that records every consequence and every audit transcript.

Research: ``research/proof-of-compute.md`` §6.5-6.8; concepts: ``docs/concepts/audits.md``.
"""

from meshcore_router.audits.calibration import CalibrationNotFound, CalibrationTable, Thresholds
from meshcore_router.audits.ledger import Ledger, LedgerCorrupted, LedgerError
from meshcore_router.audits.reputation import NodeReputation, ReputationBook, ReputationConfig, Standing
from meshcore_router.audits.verdict import Outcome, Verdict, judge

__all__ = [
    "CalibrationNotFound",
    "CalibrationTable",
    "Ledger",
    "LedgerCorrupted",
    "LedgerError",
    "NodeReputation",
    "Outcome",
    "ReputationBook",
    "ReputationConfig",
    "Standing",
    "Thresholds",
    "Verdict",
    "judge",
]
