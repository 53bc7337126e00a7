"""A node's standing: escrow, audit rate, routing weight, and slashing only on confirmed evidence.

Theory of operation (research §6.5, §6.6, §6.8)
------------------------------------------------
:class:`NodeReputation` is a pure core, one per node.  It takes events (what
happened, in the past tense) with the time ``now`` they happened, and returns
actions (what to do, in the imperative) for a driver to carry out: write the
ledger, tell the dispatcher a routing weight, tell the lottery an audit rate,
ask for a second audit.  It reads no clock; :meth:`NodeReputation.get_timer`
says when it next wants :meth:`NodeReputation.handle_timer` called.

Money.  Every job's earnings (``tokens * credit_per_token_micro``) go to escrow
and mature ``escrow_hold_s`` later.  Matured escrow is released only while the
node is ACTIVE: held through probation and through an escalation, so there is
always something to lose (the inspection game: cheating pays iff ``g > p*d*F``).

Evidence.  An audit FLAG is *not* proof: the honest false-flag rate is about
``false_flag_rate`` per audit, and a Tier-A mismatch can come from a misreported
build or faulty hardware.  A node is slashed only on one of two confirmations:

(a) **replay reproduced**: two different auditors each report a Tier-A (exact
    replay) FLAG on the *same* job;
(b) **sequential test**: Wald's SPRT (:func:`meshcore_sdk.proof.stats.wald_sprt`)
    over the first-opinion audits of *other* jobs judged during the escalation
    (FLAG: True; PASS and AMBIGUOUS: False) crosses CONFIRM_CHEAT, with
    per-audit detection ``detection_power``, false-flag rate ``false_flag_rate``
    and ``slash_alpha`` (at most 1e-7) as the false-slash probability.

Each FLAG on a not-yet-reproduced Tier-A mismatch, and the job that triggers an
escalation, gets a second audit (:class:`RequestSecondAudit`, Tier A preferred)
by an auditor that has not flagged it, up to ``max_second_audits_per_job``.

Ambiguity.  An AMBIGUOUS verdict multiplies the routing weight by
``ambiguous_weight_factor`` (floored at ``min_routing_weight``) and raises the
audit rate to ``marginal_audit_rate``; each PASS undoes one step.  It never
touches money.

Transition table (first opinion: ``AuditJudged`` with ``second_opinion=False``)::

    state       event                                   next         actions
    ----------  --------------------------------------  -----------  -----------------------------------------
    PROBATION   NodeJoined (first)                      PROBATION    SetAuditRate(probation), SetRoutingWeight
                                                                     (probation), AppendTranscript
    any live    JobServed                               same         CreditEscrow (held until it matures)
    PROBATION   JobServed, probation_jobs reached       ACTIVE       SetAuditRate, SetRoutingWeight, Transcript
    PROB/ACTIVE first opinion FLAG                      ESCALATED    RequestSecondAudit(job), SetAuditRate(1.0),
                                                                     SetRoutingWeight(escalated), Transcript
    PROB/ACTIVE first opinion AMBIGUOUS / PASS          same         SetRoutingWeight / SetAuditRate if changed
    ESCALATED   first opinion on another job            ESCALATED    outcome joins the SPRT
    ESCALATED   SPRT says CONFIRM_CHEAT                 SLASHED      FreezeBalance, Ban, SetRoutingWeight(0),
                                                                     SetAuditRate(0), AppendTranscript
    ESCALATED   SPRT says ACCEPT_HONEST, or             PROBATION    SetAuditRate, SetRoutingWeight, Transcript
                ``burst_audits`` without a decision     or ACTIVE    (inconclusive counts as one AMBIGUOUS);
                (once no second audit is outstanding)                ACTIVE if probation_jobs were reached
    ESCALATED   timer: ``escalation_timeout_s`` passed  as above     as above, inconclusive
    any live    Tier-A FLAG, another auditor's Tier-A   SLASHED      as above
                FLAG already on the same job
    any live    Tier-A FLAG, not reproduced yet         same         RequestSecondAudit(job, exclude=flaggers)
    ACTIVE      timer: escrow matured                   ACTIVE       ReleaseEscrow
    SLASHED     anything                                SLASHED      none (terminal; no credit)

Rating: ``(clean + 1) / (judged + 2)`` over first opinions, PASS counting 1 and
AMBIGUOUS 1/2; 0 once slashed.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from meshcore_router.audits.verdict import Outcome, Verdict
from meshcore_sdk.proof.report import AuditTier
from meshcore_sdk.proof.stats import SprtDecision, sprt_thresholds, wald_sprt
from meshcore_sdk.protocol.errors import ConfigError

__all__ = [
    "MAX_SLASH_ALPHA",
    "MEASURED_FALSE_FLAG_RATE",
    "Action",
    "AppendTranscript",
    "AuditJudged",
    "Ban",
    "CreditEscrow",
    "Event",
    "FreezeBalance",
    "JobServed",
    "NodeJoined",
    "NodeReputation",
    "ReleaseEscrow",
    "ReputationBook",
    "ReputationConfig",
    "RequestSecondAudit",
    "SetAuditRate",
    "SetRoutingWeight",
    "Standing",
    "flags_to_confirm",
]

MEASURED_FALSE_FLAG_RATE: Final = 0.15
"""The per-job false-flag rate to assume for Gemma 3 270M Q4_K_M: the 95% upper bound of held-out honest
jobs flagged in ``benchmarks/audit.py`` (24 of 224; docs/benchmarks.md).  The router's default: with it
the SPRT needs 9 flags in a row, not 3, before it slashes."""

MAX_SLASH_ALPHA: Final = 1e-7
"""The largest false-slash probability a configuration may ask for (research §6.6, stage 2)."""

_DAY_S: Final = 86_400.0


class Standing(enum.StrEnum):
    """Where a node stands."""

    PROBATION = "probation"
    ACTIVE = "active"
    ESCALATED = "escalated"
    SLASHED = "slashed"


@dataclass(frozen=True, slots=True)
class ReputationConfig:
    """How standing is earned and lost.

    Attributes:
        probation_jobs: jobs a new node serves before it leaves probation.
        probation_audit_rate: share of a probation node's jobs audited.
        probation_routing_weight: a probation node's routing weight (its traffic cap).
        base_audit_rate: share of an ACTIVE node's jobs audited.
        marginal_audit_rate: audit rate while AMBIGUOUS verdicts are outstanding (if higher).
        escrow_hold_s: how long each job's earnings stay in escrow.
        burst_audits: first-opinion audits an escalation waits for before it gives up undecided.
        escalation_timeout_s: longest an escalation lasts; then it ends undecided.
        escalated_routing_weight: routing weight while escalated.
        ambiguous_weight_factor: routing weight multiplier per outstanding AMBIGUOUS verdict.
        min_routing_weight: the floor of a live node's routing weight.
        credit_per_token_micro: micro-credits earned per generated token.
        detection_power: probability that an audit of a cheated job flags it (the SPRT's ``d``).
        false_flag_rate: probability that an audit of an honest job flags it (the SPRT's ``f``).
        slash_alpha: the SPRT's false-slash probability, at most 1e-7.
        sprt_beta: the SPRT's probability of clearing a cheater.
        max_second_audits_per_job: second audits one job may get.
    """

    probation_jobs: int = 200
    probation_audit_rate: float = 0.3
    probation_routing_weight: float = 0.25
    base_audit_rate: float = 0.02
    marginal_audit_rate: float = 0.1
    escrow_hold_s: float = 7 * _DAY_S
    burst_audits: int = 10
    escalation_timeout_s: float = 2 * _DAY_S
    escalated_routing_weight: float = 0.1
    ambiguous_weight_factor: float = 0.5
    min_routing_weight: float = 0.05
    credit_per_token_micro: int = 1
    detection_power: float = 0.99
    false_flag_rate: float = 1e-3
    slash_alpha: float = 1e-7
    sprt_beta: float = 1e-3
    max_second_audits_per_job: int = 2

    def __post_init__(self) -> None:
        rates = ("probation_audit_rate", "base_audit_rate", "marginal_audit_rate")
        weights = ("probation_routing_weight", "escalated_routing_weight", "min_routing_weight")
        for name in (*rates, *weights):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 < self.ambiguous_weight_factor < 1.0:
            raise ConfigError(f"ambiguous_weight_factor must be in (0, 1), got {self.ambiguous_weight_factor}")
        for name in ("probation_jobs", "credit_per_token_micro", "escrow_hold_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.escalation_timeout_s <= 0 or self.max_second_audits_per_job < 1:
            raise ConfigError("escalation_timeout_s must be > 0 and max_second_audits_per_job >= 1")
        if not 0.0 < self.false_flag_rate < self.detection_power < 1.0:
            raise ConfigError("need 0 < false_flag_rate < detection_power < 1")
        if not (0.0 < self.slash_alpha <= MAX_SLASH_ALPHA and 0.0 < self.sprt_beta < 0.5):
            raise ConfigError(f"need 0 < slash_alpha <= {MAX_SLASH_ALPHA} and 0 < sprt_beta < 0.5")
        if self.burst_audits < flags_to_confirm(self):
            raise ConfigError(f"burst_audits must be >= {flags_to_confirm(self)} or no burst can confirm a cheat")


def flags_to_confirm(config: ReputationConfig) -> int:
    """The fewest flags (with no clean audit between) that make the SPRT confirm a cheat."""
    _, confirm = sprt_thresholds(config.slash_alpha, config.sprt_beta)
    return math.ceil(confirm / math.log(config.detection_power / config.false_flag_rate))


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeJoined:
    """The node registered for the first time (a re-registration changes nothing)."""

    node_id: str


@dataclass(frozen=True, slots=True)
class JobServed:
    """The node finished a job with a valid receipt; ``tokens`` is what it is paid for."""

    node_id: str
    job_id: str
    tokens: int

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ConfigError(f"tokens must be >= 0, got {self.tokens}")


@dataclass(frozen=True, slots=True)
class AuditJudged:
    """An audit of one of the node's jobs was judged.

    ``second_opinion``: this audit was asked for by :class:`RequestSecondAudit`
    (or is otherwise a re-check of a job already audited).
    """

    node_id: str
    job_id: str
    verdict: Verdict
    tier: AuditTier
    auditor_id: str
    second_opinion: bool = False


Event = NodeJoined | JobServed | AuditJudged


# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditEscrow:
    """Put a job's earnings in the node's escrow."""

    node_id: str
    job_id: str
    amount_micro: int
    matures_at: float


@dataclass(frozen=True, slots=True)
class ReleaseEscrow:
    """Move matured escrow to the node's available balance: ``releases`` are ``(job_id, amount)``.

    The ledger writes one entry per job, keyed by the job, so a replay that matures the
    same jobs in other batches releases each exactly once.
    """

    node_id: str
    releases: tuple[tuple[str, int], ...]

    @property
    def amount_micro(self) -> int:
        """The total released."""
        return sum(amount for _, amount in self.releases)

    @property
    def job_ids(self) -> tuple[str, ...]:
        """The jobs whose escrow matured."""
        return tuple(job_id for job_id, _ in self.releases)


@dataclass(frozen=True, slots=True)
class FreezeBalance:
    """Freeze everything the node holds, escrow and available."""

    node_id: str


@dataclass(frozen=True, slots=True)
class Ban:
    """Route nothing more to the node, ever."""

    node_id: str


@dataclass(frozen=True, slots=True)
class SetRoutingWeight:
    """Scale the share of traffic the node gets (1: full, 0: none)."""

    node_id: str
    weight: float


@dataclass(frozen=True, slots=True)
class SetAuditRate:
    """Audit this share of the node's jobs from now on."""

    node_id: str
    rate: float


@dataclass(frozen=True, slots=True)
class RequestSecondAudit:
    """Audit the job again, by an auditor not in ``exclude``, preferably with ``tier``."""

    node_id: str
    job_id: str
    exclude: tuple[str, ...]
    tier: AuditTier = AuditTier.REPLAY


@dataclass(frozen=True, slots=True)
class AppendTranscript:
    """Record in the ledger where the node stands now, and why."""

    node_id: str
    standing: Standing
    reason: str
    job_id: str | None = None


Action = (
    CreditEscrow
    | ReleaseEscrow
    | FreezeBalance
    | Ban
    | SetRoutingWeight
    | SetAuditRate
    | RequestSecondAudit
    | AppendTranscript
)


@dataclass(slots=True)
class _Escalation:
    trigger_job: str
    returns_to: Standing
    deadline: float
    outcomes: list[bool] = field(default_factory=list)


class NodeReputation:
    """One node's standing (see the module docstring for the rules and the transition table)."""

    def __init__(self, node_id: str, config: ReputationConfig) -> None:
        self.node_id = node_id
        self.config = config
        self._standing = Standing.PROBATION
        self._joined = False
        self._jobs_served = 0
        self._escrow: list[tuple[float, str, int]] = []  # (matures_at, job_id, amount_micro), a heap
        self._ambiguity = 0
        self._clean = 0.0
        self._judged = 0
        self._escalation: _Escalation | None = None
        self._tier_a_flaggers: dict[str, set[str]] = {}
        self._second_requested: Counter[str] = Counter()
        self._second_outstanding: Counter[str] = Counter()
        self._weight: float | None = None
        self._rate: float | None = None
        self._max_ambiguity = max(1, math.ceil(math.log(config.min_routing_weight, config.ambiguous_weight_factor)))

    # --- reading --------------------------------------------------------------------------

    @property
    def standing(self) -> Standing:
        """Where the node stands now."""
        return self._standing

    @property
    def routing_weight(self) -> float:
        """The share of traffic the node should get, in [0, 1]."""
        if self._standing is Standing.SLASHED:
            return 0.0
        base = {
            Standing.PROBATION: self.config.probation_routing_weight,
            Standing.ACTIVE: 1.0,
            Standing.ESCALATED: self.config.escalated_routing_weight,
        }[self._standing]
        return max(self.config.min_routing_weight, base * self.config.ambiguous_weight_factor**self._ambiguity)

    @property
    def audit_rate(self) -> float:
        """The share of the node's jobs to audit, in [0, 1]."""
        if self._standing is Standing.SLASHED:
            return 0.0
        if self._standing is Standing.ESCALATED:
            return 1.0
        rate = self.config.probation_audit_rate if self._standing is Standing.PROBATION else self.config.base_audit_rate
        return max(rate, self.config.marginal_audit_rate) if self._ambiguity else rate

    @property
    def rating(self) -> float:
        """A score in [0, 1]: the smoothed share of clean first-opinion audits; 0 once slashed."""
        if self._standing is Standing.SLASHED:
            return 0.0
        return (self._clean + 1.0) / (self._judged + 2.0)

    @property
    def escrow_micro(self) -> int:
        """Earnings credited and not yet released (0 once slashed: frozen)."""
        return sum(amount for _, _, amount in self._escrow)

    # --- events ---------------------------------------------------------------------------

    def handle(self, event: Event, *, now: float) -> list[Action]:
        """Take one event about this node; return what to do."""
        if event.node_id != self.node_id:
            raise ConfigError(f"an event about {event.node_id} was given to the standing of {self.node_id}")
        if self._standing is Standing.SLASHED:
            return []
        if isinstance(event, NodeJoined):
            return self._joined_now()
        if isinstance(event, JobServed):
            return self._served(event, now)
        return self._judged_now(event, now)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run (None: no deadline)."""
        deadlines = []
        if self._escalation is not None:
            deadlines.append(self._escalation.deadline)
        if self._standing is Standing.ACTIVE and self._escrow:
            deadlines.append(self._escrow[0][0])
        return min(deadlines, default=None)

    def handle_timer(self, *, now: float) -> list[Action]:
        """End an escalation that ran out of time; release matured escrow."""
        actions: list[Action] = []
        if self._escalation is not None and now >= self._escalation.deadline:
            actions += self._settle(inconclusive="the escalation timed out")
        if self._standing is Standing.ACTIVE:
            actions += self._release(now)
        return actions

    # --- what each event does -------------------------------------------------------------

    def _joined_now(self) -> list[Action]:
        if self._joined:
            return []
        self._joined = True
        if self._jobs_served >= self.config.probation_jobs:
            self._standing = Standing.ACTIVE
        return [*self._refresh(), AppendTranscript(self.node_id, self._standing, "joined")]

    def _served(self, event: JobServed, now: float) -> list[Action]:
        actions: list[Action] = []
        amount = event.tokens * self.config.credit_per_token_micro
        if amount > 0:
            matures_at = now + self.config.escrow_hold_s
            heapq.heappush(self._escrow, (matures_at, event.job_id, amount))
            actions.append(CreditEscrow(self.node_id, event.job_id, amount, matures_at))
        self._jobs_served += 1
        if self._standing is Standing.PROBATION and self._jobs_served >= self.config.probation_jobs:
            actions += self._enter(Standing.ACTIVE, "probation complete")
        return actions

    def _judged_now(self, event: AuditJudged, now: float) -> list[Action]:
        if event.second_opinion and self._second_outstanding[event.job_id] > 0:
            self._second_outstanding[event.job_id] -= 1
        if event.tier is AuditTier.REPLAY and event.verdict.outcome is Outcome.FLAG:
            actions = self._tier_a_flagged(event)
            if self._standing is Standing.SLASHED:
                return actions
        else:
            actions = []
        if not event.second_opinion:
            actions += self._first_opinion(event, now)
        if self._escalation is not None:
            actions += self._decide()
        return actions

    def _tier_a_flagged(self, event: AuditJudged) -> list[Action]:
        flaggers = self._tier_a_flaggers.setdefault(event.job_id, set())
        flaggers.add(event.auditor_id)
        if len(flaggers) >= 2:
            who = ", ".join(sorted(flaggers))
            return self._slash(f"tier A mismatch reproduced by auditors {who}", event.job_id)
        if self._second_requested[event.job_id] < self.config.max_second_audits_per_job:
            return [self._second_audit(event.job_id, tuple(sorted(flaggers)))]
        return []

    def _first_opinion(self, event: AuditJudged, now: float) -> list[Action]:
        outcome = event.verdict.outcome
        self._judged += 1
        self._clean += {Outcome.PASS: 1.0, Outcome.AMBIGUOUS: 0.5, Outcome.FLAG: 0.0}[outcome]
        if outcome is Outcome.AMBIGUOUS:
            self._ambiguity = min(self._max_ambiguity, self._ambiguity + 1)
        elif outcome is Outcome.PASS:
            self._ambiguity = max(0, self._ambiguity - 1)
        escalation = self._escalation
        if escalation is not None:
            if event.job_id != escalation.trigger_job:
                escalation.outcomes.append(outcome is Outcome.FLAG)
            return self._refresh()
        if outcome is Outcome.FLAG:
            return self._escalate(event, now)
        return self._refresh()

    def _escalate(self, event: AuditJudged, now: float) -> list[Action]:
        self._escalation = _Escalation(event.job_id, self._standing, now + self.config.escalation_timeout_s)
        actions: list[Action] = []
        if self._second_requested[event.job_id] == 0:
            actions.append(self._second_audit(event.job_id, (event.auditor_id,)))
        reasons = "; ".join(event.verdict.reasons) or "flagged"
        return [*actions, *self._enter(Standing.ESCALATED, f"audit by {event.auditor_id}: {reasons}", event.job_id)]

    def _decide(self) -> list[Action]:
        escalation = self._escalation
        assert escalation is not None
        config = self.config
        decision = wald_sprt(
            escalation.outcomes, config.detection_power, config.false_flag_rate, config.slash_alpha, config.sprt_beta
        )
        if decision is SprtDecision.CONFIRM_CHEAT:
            flags = sum(escalation.outcomes)
            reason = f"sequential test confirmed: {flags} flags in {len(escalation.outcomes)} audits"
            return self._slash(reason, escalation.trigger_job)
        if sum(self._second_outstanding.values()) > 0:
            return []
        if decision is SprtDecision.ACCEPT_HONEST:
            return self._settle(inconclusive=None)
        if len(escalation.outcomes) >= config.burst_audits:
            return self._settle(inconclusive=f"no decision after {len(escalation.outcomes)} audits")
        return []

    def _settle(self, *, inconclusive: str | None) -> list[Action]:
        escalation = self._escalation
        assert escalation is not None
        self._escalation = None
        self._second_outstanding.clear()  # late answers still count as evidence, but hold nothing up
        if inconclusive is not None:
            self._ambiguity = min(self._max_ambiguity, self._ambiguity + 1)
        back = escalation.returns_to
        if back is Standing.PROBATION and self._jobs_served >= self.config.probation_jobs:
            back = Standing.ACTIVE
        reason = f"cleared: {inconclusive}" if inconclusive else "cleared: the burst of audits came back clean"
        return self._enter(back, reason, escalation.trigger_job)

    def _slash(self, reason: str, job_id: str | None) -> list[Action]:
        self._standing = Standing.SLASHED
        self._escalation = None
        self._escrow.clear()
        self._weight = self._rate = 0.0
        return [
            FreezeBalance(self.node_id),
            Ban(self.node_id),
            SetRoutingWeight(self.node_id, 0.0),
            SetAuditRate(self.node_id, 0.0),
            AppendTranscript(self.node_id, Standing.SLASHED, reason, job_id),
        ]

    def _release(self, now: float) -> list[Action]:
        releases = []
        while self._escrow and self._escrow[0][0] <= now:
            _, job_id, credited = heapq.heappop(self._escrow)
            releases.append((job_id, credited))
        return [ReleaseEscrow(self.node_id, tuple(releases))] if releases else []

    # --- helpers --------------------------------------------------------------------------

    def _second_audit(self, job_id: str, exclude: tuple[str, ...]) -> RequestSecondAudit:
        self._second_requested[job_id] += 1
        self._second_outstanding[job_id] += 1
        return RequestSecondAudit(self.node_id, job_id, exclude)

    def _enter(self, standing: Standing, reason: str, job_id: str | None = None) -> list[Action]:
        self._standing = standing
        return [*self._refresh(), AppendTranscript(self.node_id, standing, reason, job_id)]

    def _refresh(self) -> list[Action]:
        """The routing weight and audit rate actions whose value changed."""
        actions: list[Action] = []
        if self.audit_rate != self._rate:
            self._rate = self.audit_rate
            actions.append(SetAuditRate(self.node_id, self._rate))
        if self.routing_weight != self._weight:
            self._weight = self.routing_weight
            actions.append(SetRoutingWeight(self.node_id, self._weight))
        return actions


class ReputationBook:
    """Every node's :class:`NodeReputation`, created by a node's first event.

    A thin pure container: it routes each event to its node's core and merges
    their timers.  ``get_timer`` scans every node, which suits meshes of
    thousands of nodes, not millions.
    """

    def __init__(self, config: ReputationConfig) -> None:
        self.config = config
        self._nodes: dict[str, NodeReputation] = {}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def node_ids(self) -> tuple[str, ...]:
        """Every node the book has seen, in the order it first saw them."""
        return tuple(self._nodes)

    def node(self, node_id: str) -> NodeReputation:
        """The node's core, created (in PROBATION) if the book has not seen it."""
        core = self._nodes.get(node_id)
        if core is None:
            core = self._nodes[node_id] = NodeReputation(node_id, self.config)
        return core

    def handle(self, event: Event, *, now: float) -> list[Action]:
        """Route one event to its node's core; return what to do."""
        return self.node(event.node_id).handle(event, now=now)

    def get_timer(self) -> float | None:
        """The earliest deadline of any node (None: no deadline)."""
        return min((t for core in self._nodes.values() if (t := core.get_timer()) is not None), default=None)

    def handle_timer(self, *, now: float) -> list[Action]:
        """Run every node's timer that is due."""
        actions: list[Action] = []
        for core in self._nodes.values():
            deadline = core.get_timer()
            if deadline is not None and deadline <= now:
                actions += core.handle_timer(now=now)
        return actions

    def standing(self, node_id: str) -> Standing:
        """Where the node stands (PROBATION for a node never seen)."""
        core = self._nodes.get(node_id)
        return Standing.PROBATION if core is None else core.standing

    def routing_weight(self, node_id: str) -> float:
        """The node's routing weight (a probation node's for a node never seen)."""
        core = self._nodes.get(node_id)
        return self.config.probation_routing_weight if core is None else core.routing_weight

    def audit_rate(self, node_id: str) -> float:
        """The node's audit rate (a probation node's for a node never seen)."""
        core = self._nodes.get(node_id)
        return self.config.probation_audit_rate if core is None else core.audit_rate
