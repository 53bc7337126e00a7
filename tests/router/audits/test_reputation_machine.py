"""Hypothesis state machines over a node's standing, with the ledger folding every action it asks for.

Invariants:
* a node is slashed only after confirming evidence: two auditors' Tier-A flags on one job,
  or enough flags for the sequential test (the trigger plus ``flags_to_confirm``);
* an honest node (every verdict PASS) is never slashed, and after probation its routing weight is 1;
* a run of clean audits brings any live node back to weight 1;
* SLASHED is terminal and absorbs every event with no action, so no credit;
* amounts are never negative, the ledger accepts every entry, and its balances match the core's escrow.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshcore_router.audits.ledger import Ledger, entries_for
from meshcore_router.audits.reputation import (
    Action,
    AppendTranscript,
    AuditJudged,
    CreditEscrow,
    Event,
    FreezeBalance,
    JobServed,
    NodeJoined,
    NodeReputation,
    ReleaseEscrow,
    ReputationConfig,
    RequestSecondAudit,
    SetAuditRate,
    SetRoutingWeight,
    Standing,
    flags_to_confirm,
)
from meshcore_router.audits.verdict import Outcome, Verdict
from meshcore_sdk.proof.report import AuditTier

pytestmark = pytest.mark.timeout(300)

N = "node-a"
CONFIG = ReputationConfig(
    probation_jobs=4, burst_audits=5, escrow_hold_s=50.0, escalation_timeout_s=200.0, credit_per_token_micro=3
)
AUDITORS = ("aud-1", "aud-2", "aud-3")


class Standings(RuleBasedStateMachine):
    """Any verdicts, any tiers, second opinions answered or not, time passing."""

    outcomes: st.SearchStrategy[Outcome] = st.sampled_from(list(Outcome))

    def __init__(self) -> None:
        super().__init__()
        self.node = NodeReputation(N, CONFIG)
        self.ledger = Ledger.open(":memory:")
        self.now = 0.0
        self.jobs: list[str] = []
        self.requested: list[str] = []
        self.tier_a_flaggers: dict[str, set[str]] = defaultdict(set)
        self.first_flags = 0
        self.non_pass_seen = False
        self.credited = 0
        self.released = 0
        self.slashed_by: Event | str | None = None

    def teardown(self) -> None:
        self.ledger.close()

    def step(self, event: Event | None) -> list[Action]:
        was_slashed = self.node.standing is Standing.SLASHED
        actions = self.node.handle(event, now=self.now) if event is not None else self.node.handle_timer(now=self.now)
        if was_slashed:
            assert actions == [], "SLASHED absorbs everything"
        self.ledger.append_many(entries_for(actions, at=self.now))
        for action in actions:
            self.account(action)
        if not was_slashed and self.node.standing is Standing.SLASHED:
            self.slashed_by = event if event is not None else "timer"
            assert any(isinstance(action, FreezeBalance) for action in actions)
            assert isinstance(actions[-1], AppendTranscript) and actions[-1].standing is Standing.SLASHED
        return actions

    def account(self, action: Action) -> None:
        if isinstance(action, CreditEscrow):
            assert action.amount_micro > 0
            self.credited += action.amount_micro
        elif isinstance(action, ReleaseEscrow):
            assert action.amount_micro > 0 and action.job_ids
            self.released += action.amount_micro
        elif isinstance(action, RequestSecondAudit):
            assert action.job_id in self.jobs
            self.requested.append(action.job_id)
        elif isinstance(action, SetRoutingWeight | SetAuditRate):
            value = action.weight if isinstance(action, SetRoutingWeight) else action.rate
            assert 0.0 <= value <= 1.0

    @initialize()
    def join(self) -> None:
        self.step(NodeJoined(N))

    @rule(tokens=st.integers(0, 50))
    def serve(self, tokens: int) -> None:
        job = f"j{len(self.jobs)}"
        self.jobs.append(job)
        self.step(JobServed(N, job, tokens))

    def judge(self, job: str, outcome: Outcome, tier: AuditTier, auditor: str, *, second: bool) -> None:
        if outcome is not Outcome.PASS:
            self.non_pass_seen = True
        if outcome is Outcome.FLAG and tier is AuditTier.REPLAY:
            self.tier_a_flaggers[job].add(auditor)
        if outcome is Outcome.FLAG and not second:
            self.first_flags += 1
        self.step(AuditJudged(N, job, Verdict(outcome=outcome), tier, auditor, second_opinion=second))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), tier=st.sampled_from(list(AuditTier)), auditor=st.sampled_from(AUDITORS))
    def first_opinion(self, data: st.DataObject, tier: AuditTier, auditor: str) -> None:
        job = data.draw(st.sampled_from(self.jobs[-6:]))
        self.judge(job, data.draw(self.outcomes), tier, auditor, second=False)

    @precondition(lambda self: self.requested)
    @rule(data=st.data(), tier=st.sampled_from(list(AuditTier)), auditor=st.sampled_from(AUDITORS))
    def second_opinion(self, data: st.DataObject, tier: AuditTier, auditor: str) -> None:
        self.judge(self.requested.pop(0), data.draw(self.outcomes), tier, auditor, second=True)

    @rule(seconds=st.floats(0.0, 300.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        deadline = self.node.get_timer()
        if deadline is not None and deadline <= self.now:
            self.step(None)

    @rule(data=st.data())
    def burst_of_new_jobs(self, data: st.DataObject) -> None:
        """Fresh jobs, each served and audited at once (what an escalation's audit rate of 1 does)."""
        for outcome in data.draw(st.lists(self.outcomes, min_size=1, max_size=6)):
            self.serve(5)
            self.judge(self.jobs[-1], outcome, AuditTier.PREFILL, "aud-3", second=False)

    @rule()
    def clean_streak(self) -> None:
        """Every outstanding second opinion and then a run of audits come back PASS: a live node recovers."""
        while self.requested:
            self.judge(self.requested.pop(0), Outcome.PASS, AuditTier.PREFILL, "aud-1", second=True)
        for _ in range(CONFIG.burst_audits + CONFIG.probation_jobs + 6):
            self.serve(1)
            self.judge(self.jobs[-1], Outcome.PASS, AuditTier.PREFILL, "aud-2", second=False)
        if self.node.standing is not Standing.SLASHED:
            assert self.node.standing is Standing.ACTIVE
            assert self.node.routing_weight == 1.0
            assert self.node.audit_rate == CONFIG.base_audit_rate

    @invariant()
    def slashed_only_on_confirming_evidence(self) -> None:
        if self.node.standing is Standing.SLASHED:
            reproduced = any(len(flaggers) >= 2 for flaggers in self.tier_a_flaggers.values())
            sequential = self.first_flags >= 1 + flags_to_confirm(CONFIG)
            assert reproduced or sequential, f"slashed by {self.slashed_by} without confirming evidence"
            assert self.non_pass_seen

    @invariant()
    def money_adds_up(self) -> None:
        balance = self.ledger.balance(N)
        assert min(balance.escrow_micro, balance.available_micro, balance.frozen_micro) >= 0
        assert self.released <= self.credited
        if self.node.standing is Standing.SLASHED:
            assert (balance.escrow_micro, balance.available_micro) == (0, 0)
            assert balance.frozen_micro == self.credited
            assert balance.standing == "slashed"
        else:
            assert balance.escrow_micro == self.node.escrow_micro == self.credited - self.released
            assert balance.available_micro == self.released
            assert balance.standing == str(self.node.standing)

    @invariant()
    def values_stay_in_range(self) -> None:
        assert 0.0 <= self.node.rating <= 1.0
        assert 0.0 <= self.node.routing_weight <= 1.0
        assert 0.0 <= self.node.audit_rate <= 1.0
        if self.node.standing is Standing.SLASHED:
            assert (self.node.rating, self.node.routing_weight, self.node.escrow_micro) == (0.0, 0.0, 0)


class HonestStandings(Standings):
    """Every verdict, first opinion or second, is PASS."""

    outcomes = st.just(Outcome.PASS)

    @invariant()
    def honest_is_never_slashed_and_gets_full_weight(self) -> None:
        assert self.node.standing is not Standing.SLASHED
        assert self.node.standing is not Standing.ESCALATED
        if len(self.jobs) >= CONFIG.probation_jobs:
            assert self.node.standing is Standing.ACTIVE
            assert self.node.routing_weight == 1.0
        else:
            assert self.node.routing_weight == CONFIG.probation_routing_weight


MACHINE_SETTINGS = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStandings = Standings.TestCase
TestStandings.settings = MACHINE_SETTINGS
TestHonestStandings = HonestStandings.TestCase
TestHonestStandings.settings = MACHINE_SETTINGS
