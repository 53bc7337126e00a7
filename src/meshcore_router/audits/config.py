"""The audit settings of a router: one frozen object, units in every name."""

from __future__ import annotations

from dataclasses import dataclass

from meshcore_sdk.protocol.errors import ConfigError

__all__ = ["AuditConfig"]


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """How a router checks receipts, draws and runs audits, and keeps its books (``docs/concepts/audits.md``).

    Attributes:
        enabled: check receipts and run audits at all.
        ledger_path: the SQLite ledger; ``:memory:`` keeps it in RAM (nothing survives a restart).
        epoch_s: length of a lottery epoch; its secret is committed at its start.
        reveal_grace_s: how long after an epoch ends its secret stays hidden (receipts due by then).
        audit_rate: every node's audit rate, overriding the one its standing gives (None: standing decides).
        consistency_positions: positions of every receipt revealed for the free sampler check (the
            rest of a long answer is sampled at random).
        reveal_timeout_s: how long a worker may take to reveal records.
        audit_timeout_s: how long an auditor may take to answer an audit.
        trusted_auditors: node ids the operator trusts to audit; no audits run without one.
        tier_a_share: the fraction of audits asked as exact replays when a same-class auditor exists (0 by
            default: an engine audits on its shared context, where only Tier B is exact enough to judge).
        allowed_build_classes: build classes whose receipts are accepted (empty: any).
        max_pending_jobs: dispatched jobs remembered while their receipt is due (oldest dropped).
        max_concurrent_checks: receipts checked at once.
        calibration_path: a calibration table to use instead of the packaged one.
        shadow_interval_s: how often a node on probation gets a shadow prompt (0: never).
    """

    enabled: bool = True
    ledger_path: str = ":memory:"
    epoch_s: float = 3600.0
    reveal_grace_s: float = 60.0
    audit_rate: float | None = None
    consistency_positions: int = 64
    reveal_timeout_s: float = 10.0
    audit_timeout_s: float = 120.0
    trusted_auditors: tuple[str, ...] = ()
    tier_a_share: float = 0.0
    allowed_build_classes: tuple[str, ...] = ()
    max_pending_jobs: int = 65_536
    max_concurrent_checks: int = 8
    calibration_path: str | None = None
    shadow_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.audit_rate is not None and not 0.0 <= self.audit_rate <= 1.0:
            raise ConfigError(f"audit_rate must be in [0, 1], got {self.audit_rate}")
        if not 0.0 <= self.tier_a_share <= 1.0:
            raise ConfigError(f"tier_a_share must be in [0, 1], got {self.tier_a_share}")
        for name in ("epoch_s", "reveal_timeout_s", "audit_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.reveal_grace_s < 0 or self.shadow_interval_s < 0:
            raise ConfigError("reveal_grace_s and shadow_interval_s must be >= 0")
        if self.consistency_positions < 1 or self.max_pending_jobs < 1 or self.max_concurrent_checks < 1:
            raise ConfigError("consistency_positions, max_pending_jobs and max_concurrent_checks must be >= 1")
