"""A node's standing: table tests that read like traces, with a fake clock (plain numbers)."""

from __future__ import annotations

from typing import Any

import pytest

from meshcore_router.audits import reputation
from meshcore_router.audits.reputation import (
    AppendTranscript,
    AuditJudged,
    Ban,
    CreditEscrow,
    Event,
    FreezeBalance,
    JobServed,
    NodeJoined,
    NodeReputation,
    ReleaseEscrow,
    ReputationBook,
    ReputationConfig,
    RequestSecondAudit,
    SetAuditRate,
    SetRoutingWeight,
    Standing,
    flags_to_confirm,
)
from meshcore_router.audits.verdict import Outcome, Verdict
from meshcore_sdk.proof.report import AuditTier
from meshcore_sdk.protocol.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

N = "node-a"
CONFIG = ReputationConfig(probation_jobs=3, escrow_hold_s=100.0, escalation_timeout_s=1000.0, credit_per_token_micro=2)
PASS = Verdict(outcome=Outcome.PASS)
AMBIGUOUS = Verdict(outcome=Outcome.AMBIGUOUS, reasons=("chunk at 0 (+32): kl 0.01 beyond the honest max 0.005",))
FLAG = Verdict(outcome=Outcome.FLAG, reasons=("chunk at 0 (+32): kl 0.4 beyond the threshold 0.015",))


def audit(
    job: str, verdict: Verdict, *, tier: AuditTier = AuditTier.PREFILL, by: str = "aud-1", second: bool = False
) -> AuditJudged:
    return AuditJudged(N, job, verdict, tier, by, second_opinion=second)


def joined(config: ReputationConfig = CONFIG) -> NodeReputation:
    node = NodeReputation(N, config)
    node.handle(NodeJoined(N), now=0.0)
    return node


def active(config: ReputationConfig = CONFIG) -> NodeReputation:
    node = joined(config)
    for i in range(config.probation_jobs):
        node.handle(JobServed(N, f"p{i}", tokens=0), now=1.0)
    assert standing(node) is Standing.ACTIVE
    return node


def escalated(node: NodeReputation, job: str = "j-bad", **kwargs: Any) -> NodeReputation:
    node.handle(JobServed(N, job, tokens=10), now=5.0)
    node.handle(audit(job, FLAG, **kwargs), now=6.0)
    assert standing(node) is Standing.ESCALATED
    return node


def burst(node: NodeReputation, verdicts: list[Verdict], *, now: float = 10.0) -> list[Any]:
    actions: list[Any] = []
    for i, verdict in enumerate(verdicts):
        node.handle(JobServed(N, f"b{i}", tokens=10), now=now)
        actions += node.handle(audit(f"b{i}", verdict, by=f"aud-b{i}"), now=now)
    return actions


def standing(node: NodeReputation) -> Standing:
    """The node's standing, read through a call (so that mypy does not narrow it across events)."""
    return node.standing


SLASH_ACTIONS = [FreezeBalance(N), Ban(N), SetRoutingWeight(N, 0.0), SetAuditRate(N, 0.0)]


def test_module_exports_are_pinned() -> None:
    assert reputation.__all__ == [
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


def test_defaults() -> None:
    config = ReputationConfig()

    assert (config.probation_jobs, config.probation_audit_rate, config.base_audit_rate) == (200, 0.3, 0.02)
    assert (config.escrow_hold_s, config.burst_audits, config.slash_alpha) == (604_800.0, 10, 1e-7)
    assert (config.detection_power, config.false_flag_rate) == (0.99, 1e-3)
    assert flags_to_confirm(config) == 3
    with pytest.raises(AttributeError):
        config.base_audit_rate = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields",
    [
        {"base_audit_rate": 0.0},
        {"probation_audit_rate": 1.5},
        {"min_routing_weight": 0.0},
        {"ambiguous_weight_factor": 1.0},
        {"probation_jobs": -1},
        {"escrow_hold_s": -1.0},
        {"escalation_timeout_s": 0.0},
        {"max_second_audits_per_job": 0},
        {"detection_power": 1e-4},
        {"false_flag_rate": 0.0},
        {"slash_alpha": 1e-6},
        {"sprt_beta": 0.5},
        {"burst_audits": 2},
    ],
)
def test_bad_settings_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ReputationConfig(**fields)


def test_a_new_node_starts_on_probation_and_a_rejoin_changes_nothing() -> None:
    node = NodeReputation(N, CONFIG)

    assert node.handle(NodeJoined(N), now=0.0) == [
        SetAuditRate(N, 0.3),
        SetRoutingWeight(N, 0.25),
        AppendTranscript(N, Standing.PROBATION, "joined"),
    ]
    assert node.handle(NodeJoined(N), now=1.0) == []
    assert (node.standing, node.rating, node.get_timer()) == (Standing.PROBATION, 0.5, None)


def test_jobs_are_credited_to_escrow_and_probation_ends_after_probation_jobs() -> None:
    node = joined()

    assert node.handle(JobServed(N, "j1", tokens=10), now=1.0) == [CreditEscrow(N, "j1", 20, 101.0)]
    assert node.handle(JobServed(N, "j2", tokens=0), now=2.0) == []  # nothing to credit
    assert node.handle(JobServed(N, "j3", tokens=5), now=3.0) == [
        CreditEscrow(N, "j3", 10, 103.0),
        SetAuditRate(N, 0.02),
        SetRoutingWeight(N, 1.0),
        AppendTranscript(N, Standing.ACTIVE, "probation complete"),
    ]


def test_escrow_is_held_through_probation_and_released_once_active_and_mature() -> None:
    node = joined()
    node.handle(JobServed(N, "j1", tokens=10), now=1.0)
    assert node.get_timer() is None  # probation: nothing is released
    assert node.handle_timer(now=500.0) == []
    node.handle(JobServed(N, "j2", tokens=10), now=50.0)
    node.handle(JobServed(N, "j3", tokens=10), now=60.0)  # probation ends

    assert node.get_timer() == 101.0
    assert node.handle_timer(now=150.0) == [ReleaseEscrow(N, (("j1", 20), ("j2", 20)))]
    assert (node.get_timer(), node.escrow_micro) == (160.0, 20)
    assert node.handle_timer(now=159.0) == []
    assert node.handle_timer(now=160.0) == [ReleaseEscrow(N, (("j3", 20),))]
    assert node.get_timer() is None


def test_a_flag_escalates_a_second_auditor_and_a_burst() -> None:
    node = active()
    node.handle(JobServed(N, "j-bad", tokens=10), now=5.0)

    actions = node.handle(audit("j-bad", FLAG), now=6.0)

    assert actions == [
        RequestSecondAudit(N, "j-bad", ("aud-1",), AuditTier.REPLAY),
        SetAuditRate(N, 1.0),
        SetRoutingWeight(N, 0.1),
        AppendTranscript(N, Standing.ESCALATED, f"audit by aud-1: {FLAG.reasons[0]}", "j-bad"),
    ]
    assert node.get_timer() == 1006.0  # the escalation's deadline; escrow is held meanwhile
    assert node.handle_timer(now=200.0) == []


def test_a_clean_burst_returns_the_node_to_active() -> None:
    node = escalated(active())
    node.handle(audit("j-bad", PASS, tier=AuditTier.REPLAY, by="aud-2", second=True), now=7.0)

    actions = burst(node, [PASS, PASS])

    assert standing(node) is Standing.ACTIVE
    assert actions[-3:] == [
        SetAuditRate(N, 0.02),
        SetRoutingWeight(N, 1.0),
        AppendTranscript(N, Standing.ACTIVE, "cleared: the burst of audits came back clean", "j-bad"),
    ]


def test_a_clean_burst_returns_a_probation_node_to_probation() -> None:
    node = escalated(joined())
    node.handle(audit("j-bad", PASS, tier=AuditTier.REPLAY, by="aud-2", second=True), now=7.0)
    burst(node, [PASS, PASS])

    # the burst's two jobs and the flagged one make 3 = probation_jobs: probation is over
    assert standing(node) is Standing.ACTIVE

    node = escalated(joined(ReputationConfig(probation_jobs=50)))
    node.handle(audit("j-bad", PASS, tier=AuditTier.REPLAY, by="aud-2", second=True), now=7.0)
    burst(node, [PASS, PASS])
    assert (node.standing, node.audit_rate, node.routing_weight) == (Standing.PROBATION, 0.3, 0.25)


def test_clearing_waits_for_the_outstanding_second_opinion() -> None:
    node = escalated(active())

    burst(node, [PASS, PASS, PASS])
    assert standing(node) is Standing.ESCALATED
    actions = node.handle(audit("j-bad", PASS, tier=AuditTier.REPLAY, by="aud-2", second=True), now=20.0)

    assert standing(node) is Standing.ACTIVE
    assert actions[-1] == AppendTranscript(N, Standing.ACTIVE, "cleared: the burst of audits came back clean", "j-bad")


def test_the_sequential_test_confirms_a_cheat_over_the_burst() -> None:
    """Three flags on other jobs: LLR 3*log(990) = 20.7 > log((1-beta)/alpha) = 16.1."""
    node = escalated(active())

    actions = burst(node, [FLAG, FLAG])
    assert standing(node) is Standing.ESCALATED
    actions = burst(node, [FLAG])

    assert standing(node) is Standing.SLASHED
    assert actions == [
        *SLASH_ACTIONS,
        AppendTranscript(N, Standing.SLASHED, "sequential test confirmed: 3 flags in 3 audits", "j-bad"),
    ]
    assert (node.rating, node.routing_weight, node.audit_rate, node.escrow_micro, node.get_timer()) == (
        0.0,
        0.0,
        0.0,
        0,
        None,
    )


def test_the_trigger_job_does_not_count_in_the_sequential_test() -> None:
    node = escalated(active())

    node.handle(audit("j-bad", FLAG, by="aud-9"), now=7.0)  # a duplicate first opinion on the trigger
    burst(node, [FLAG, FLAG])

    assert standing(node) is Standing.ESCALATED


def test_a_cheat_that_misses_now_and_then_is_still_confirmed() -> None:
    node = escalated(active())

    burst(node, [FLAG, PASS, FLAG, FLAG, FLAG])

    assert standing(node) is Standing.SLASHED


def test_a_burst_without_a_decision_ends_undecided_and_counts_as_ambiguous() -> None:
    config = ReputationConfig(probation_jobs=0, burst_audits=4, sprt_beta=0.4)
    node = escalated(active(config))
    node.handle(audit("j-bad", PASS, tier=AuditTier.REPLAY, by="aud-2", second=True), now=7.0)

    burst(node, [FLAG, PASS, FLAG, PASS])

    assert standing(node) is Standing.ACTIVE
    assert node.routing_weight == 0.5
    assert node.audit_rate == config.marginal_audit_rate


def test_an_escalation_that_times_out_ends_undecided() -> None:
    node = escalated(active())

    assert node.handle_timer(now=1005.0) == []
    actions = node.handle_timer(now=1006.0)

    assert standing(node) is Standing.ACTIVE
    assert actions == [
        SetAuditRate(N, 0.1),
        SetRoutingWeight(N, 0.5),
        AppendTranscript(N, Standing.ACTIVE, "cleared: the escalation timed out", "j-bad"),
        ReleaseEscrow(N, (("j-bad", 20),)),  # held during the escalation, matured meanwhile
    ]


def test_a_tier_a_mismatch_reproduced_by_a_second_auditor_slashes() -> None:
    node = active()
    node.handle(JobServed(N, "j-bad", tokens=10), now=5.0)

    first = node.handle(audit("j-bad", FLAG, tier=AuditTier.REPLAY, by="aud-1"), now=6.0)
    assert first[0] == RequestSecondAudit(N, "j-bad", ("aud-1",), AuditTier.REPLAY)
    assert sum(isinstance(action, RequestSecondAudit) for action in first) == 1

    actions = node.handle(audit("j-bad", FLAG, tier=AuditTier.REPLAY, by="aud-2", second=True), now=7.0)

    assert standing(node) is Standing.SLASHED
    assert actions == [
        *SLASH_ACTIONS,
        AppendTranscript(N, Standing.SLASHED, "tier A mismatch reproduced by auditors aud-1, aud-2", "j-bad"),
    ]


def test_a_tier_b_flag_needs_two_tier_a_mismatches_to_slash() -> None:
    node = escalated(active())  # the trigger was a Tier-B flag by aud-1

    again = node.handle(audit("j-bad", FLAG, tier=AuditTier.REPLAY, by="aud-2", second=True), now=7.0)
    assert again == [RequestSecondAudit(N, "j-bad", ("aud-2",), AuditTier.REPLAY)]
    assert standing(node) is Standing.ESCALATED

    node.handle(audit("j-bad", FLAG, tier=AuditTier.REPLAY, by="aud-3", second=True), now=8.0)
    assert standing(node) is Standing.SLASHED


def test_the_same_auditor_twice_is_not_a_reproduction() -> None:
    node = escalated(active(), tier=AuditTier.REPLAY, by="aud-1")

    node.handle(audit("j-bad", FLAG, tier=AuditTier.REPLAY, by="aud-1", second=True), now=7.0)

    assert standing(node) is Standing.ESCALATED


def test_auditors_that_disagree_bit_for_bit_do_not_slash() -> None:
    """A Tier-A flag whose second opinion passes gets no third: the node returns once the burst is clean."""
    node = escalated(active(), tier=AuditTier.REPLAY, by="aud-1")

    assert node.handle(audit("j-bad", PASS, tier=AuditTier.REPLAY, by="aud-2", second=True), now=7.0) == []
    burst(node, [PASS, PASS])

    assert standing(node) is Standing.ACTIVE


def test_second_audits_per_job_are_capped() -> None:
    node = escalated(active(ReputationConfig(probation_jobs=0, max_second_audits_per_job=1)))

    assert node.handle(audit("j-bad", FLAG, tier=AuditTier.REPLAY, by="aud-2", second=True), now=7.0) == []


def test_a_late_reproduction_after_clearing_still_slashes() -> None:
    node = escalated(active(), tier=AuditTier.REPLAY, by="aud-1")
    node.handle_timer(now=10_000.0)  # timed out: back to ACTIVE without the second opinion
    assert standing(node) is Standing.ACTIVE

    node.handle(audit("j-bad", FLAG, tier=AuditTier.REPLAY, by="aud-7", second=True), now=10_001.0)

    assert standing(node) is Standing.SLASHED


def test_ambiguous_verdicts_reduce_the_weight_and_clean_audits_restore_it() -> None:
    node = active()

    assert node.handle(audit("j1", AMBIGUOUS), now=1.0) == [SetAuditRate(N, 0.1), SetRoutingWeight(N, 0.5)]
    assert node.handle(audit("j2", AMBIGUOUS), now=2.0) == [SetRoutingWeight(N, 0.25)]
    assert node.handle(audit("j3", PASS), now=3.0) == [SetRoutingWeight(N, 0.5)]
    assert node.handle(audit("j4", PASS), now=4.0) == [SetAuditRate(N, 0.02), SetRoutingWeight(N, 1.0)]
    assert node.handle(audit("j5", PASS), now=5.0) == []
    assert standing(node) is Standing.ACTIVE
    assert node.rating == pytest.approx((3 + 2 * 0.5 + 1) / (5 + 2))  # AMBIGUOUS counts half


def test_ambiguity_bottoms_out_at_the_minimum_weight_and_recovers_in_bounded_steps() -> None:
    node = active()
    for i in range(20):
        node.handle(audit(f"a{i}", AMBIGUOUS), now=float(i))
    assert node.routing_weight == CONFIG.min_routing_weight

    for i in range(5):  # 0.5**5 < 0.05: five steps of ambiguity at most
        node.handle(audit(f"c{i}", PASS), now=100.0 + i)
    assert node.routing_weight == 1.0


def test_slashed_is_terminal_and_absorbs_everything() -> None:
    node = escalated(active())
    burst(node, [FLAG, FLAG, FLAG])
    assert standing(node) is Standing.SLASHED

    events: list[Event] = [
        NodeJoined(N),
        JobServed(N, "later", tokens=100),
        audit("later", PASS),
        audit("j-bad", FLAG, tier=AuditTier.REPLAY, by="aud-8", second=True),
    ]
    for event in events:
        assert node.handle(event, now=50.0) == []
    assert node.handle_timer(now=1e9) == []
    assert (node.standing, node.escrow_micro, node.rating) == (Standing.SLASHED, 0, 0.0)


def test_an_event_about_another_node_is_refused() -> None:
    with pytest.raises(ConfigError, match="node-b"):
        NodeReputation(N, CONFIG).handle(NodeJoined("node-b"), now=0.0)


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ConfigError):
        JobServed(N, "j", tokens=-1)


def test_the_book_routes_events_and_merges_timers() -> None:
    book = ReputationBook(CONFIG)
    assert (book.routing_weight("x"), book.audit_rate("x"), book.standing("x"), book.get_timer()) == (
        0.25,
        0.3,
        Standing.PROBATION,
        None,
    )
    for node in ("a", "b"):
        book.handle(NodeJoined(node), now=0.0)
        for i in range(3):
            book.handle(JobServed(node, f"{node}{i}", tokens=1), now=10.0 if node == "a" else 20.0)

    assert "a" in book and "x" not in book
    assert book.node_ids() == ("a", "b")
    assert book.get_timer() == 110.0
    assert book.handle_timer(now=115.0) == [ReleaseEscrow("a", (("a0", 2), ("a1", 2), ("a2", 2)))]
    assert book.get_timer() == 120.0
    assert book.node("b").standing is Standing.ACTIVE
    assert book.routing_weight("a") == 1.0 and book.audit_rate("b") == 0.02
