"""The judge: table tests over every score, both tiers, and the three outcomes."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_router.audits import verdict
from meshcore_router.audits.calibration import CalibrationTable, Thresholds
from meshcore_router.audits.verdict import Outcome, Verdict, judge
from meshcore_sdk.proof.report import AuditScores, AuditTier, ChunkScores

pytestmark = pytest.mark.timeout(60)

# The packaged quantized row: flag at s_lp 0.3, kl 0.015, tok 0.28125, margin -6, exp 21, mantissa 6,
# response s_lp 0.27, kl 0.0096; honest max a third of each (margin -2).
Q = CalibrationTable.load().lookup(None, "Q4_K_M", "cpu-x86-avx2", "cpu-x86-avx2")
F16 = CalibrationTable.load().lookup(None, "F16", "cpu-x86-avx2", "cpu-x86-avx2")


def chunk(start: int = 0, **fields: Any) -> ChunkScores:
    base: dict[str, Any] = {"n": 32, "s_lp": 0.05, "kl": 0.002, "tok_disagree": 0.03, "margin_min": -0.5}
    return ChunkScores(start=start, **(base | fields))


def tier_b(*chunks: ChunkScores, **fields: Any) -> AuditScores:
    base: dict[str, Any] = {"positions": 32 * max(1, len(chunks)), "s_lp": 0.05, "kl": 0.002}
    return AuditScores(tier=AuditTier.PREFILL, chunks=chunks or (chunk(),), **(base | fields))


def test_module_exports_are_pinned() -> None:
    assert verdict.__all__ == ["Outcome", "Verdict", "judge"]


@pytest.mark.parametrize(
    ("field", "value", "outcome"),
    [
        ("s_lp", 0.1, Outcome.PASS),  # exactly the honest max
        ("s_lp", 0.1001, Outcome.AMBIGUOUS),
        ("s_lp", 0.3, Outcome.AMBIGUOUS),  # exactly the threshold: not beyond it
        ("s_lp", 0.3001, Outcome.FLAG),
        ("kl", 0.005, Outcome.PASS),
        ("kl", 0.01, Outcome.AMBIGUOUS),
        ("kl", 0.44, Outcome.FLAG),  # Q8_0 -> Q4_0 (research §5.2)
        ("tok_disagree", 0.09375, Outcome.PASS),
        ("tok_disagree", 0.125, Outcome.AMBIGUOUS),
        ("tok_disagree", 0.3, Outcome.FLAG),
        ("margin_min", -2.0, Outcome.PASS),
        ("margin_min", 1.5, Outcome.PASS),
        ("margin_min", -3.0, Outcome.AMBIGUOUS),
        ("margin_min", -6.0, Outcome.AMBIGUOUS),
        ("margin_min", -6.5, Outcome.FLAG),
        ("margin_min", math.nan, Outcome.FLAG),
        ("hid_exp", 7, Outcome.PASS),
        ("hid_exp", 8, Outcome.AMBIGUOUS),
        ("hid_exp", 22, Outcome.FLAG),
        ("hid_mantissa_mean", 2.0, Outcome.PASS),
        ("hid_mantissa_mean", 5.0, Outcome.AMBIGUOUS),
        ("hid_mantissa_mean", 13.0, Outcome.FLAG),  # Q8_0 -> Q4_0 digest (research §5.3)
    ],
)
def test_each_chunk_score_against_the_quantized_row(field: str, value: float, outcome: Outcome) -> None:
    fields: dict[str, Any] = {field: value}
    result = judge(tier_b(chunk(**fields)), Q)

    assert result.outcome is outcome
    if outcome is Outcome.PASS:
        assert result.reasons == ()
    else:
        assert len(result.reasons) == 1
        assert field in result.reasons[0]
        assert "chunk at 0 (+32)" in result.reasons[0]


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        ({"s_lp": 0.09}, Outcome.PASS),  # an honest quantized response (research §6.5)
        ({"s_lp": 0.2}, Outcome.AMBIGUOUS),
        ({"s_lp": 0.32}, Outcome.FLAG),  # a dropped system prompt: response-mean MAE 0.32
        ({"kl": 0.0032}, Outcome.PASS),
        ({"kl": 0.009}, Outcome.AMBIGUOUS),
        ({"kl": 0.031}, Outcome.FLAG),
    ],
)
def test_the_whole_response_is_scored_too(fields: dict[str, float], outcome: Outcome) -> None:
    result = judge(tier_b(**fields), Q)

    assert result.outcome is outcome
    assert all(reason.startswith("response:") for reason in result.reasons)


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        ({"s_lp": 0.0035, "kl": 3.1e-6, "hid_mantissa_mean": 0.09, "hid_exp": 0}, Outcome.PASS),  # decode vs prefill
        ({"s_lp": 0.0039, "kl": 2.8e-6, "hid_mantissa_mean": 0.10, "hid_exp": 1}, Outcome.PASS),  # AMX on -> off
        ({"s_lp": 0.022, "kl": 2.1e-4}, Outcome.FLAG),  # F16 + 0.2% noise, the mildest cheat
        ({"s_lp": 0.024, "kl": 2.6e-4}, Outcome.FLAG),  # K-cache q8_0
        ({"s_lp": 0.095, "kl": 2.9e-3, "hid_mantissa_mean": 1.9}, Outcome.FLAG),  # F16 -> Q8_0
    ],
)
def test_the_research_runs_on_an_f16_pin(fields: dict[str, Any], outcome: Outcome) -> None:
    """Research §5.1 honest runs pass, §5.2 substitutions (worst chunks) flag."""
    scores = tier_b(chunk(margin_min=0.0, tok_disagree=0.0, **fields), s_lp=0.003, kl=3e-6)

    assert judge(scores, F16).outcome is outcome


def test_the_worst_outcome_wins_and_every_finding_is_listed_in_order() -> None:
    scores = tier_b(
        chunk(0, kl=0.01),
        chunk(32),
        chunk(64, s_lp=0.5, hid_exp=30),
        s_lp=0.2,
        positions=96,
    )

    result = judge(scores, Q)

    assert result.outcome is Outcome.FLAG
    assert [reason.split(":")[0] for reason in result.reasons] == [
        "chunk at 0 (+32)",
        "chunk at 64 (+32)",
        "chunk at 64 (+32)",
        "response",
    ]
    assert "beyond the honest max" in result.reasons[0]
    assert "beyond the threshold" in result.reasons[1]


def test_missing_hidden_scores_are_skipped() -> None:
    assert judge(tier_b(chunk(hid_exp=None, hid_mantissa_mean=None)), Q) == Verdict(outcome=Outcome.PASS)


def test_an_audit_of_no_positions_passes() -> None:
    assert judge(AuditScores(tier=AuditTier.PREFILL, positions=0), Q).outcome is Outcome.PASS


@pytest.mark.parametrize(
    ("mismatch", "outcome"),
    [(None, Outcome.PASS), (0, Outcome.FLAG), (17, Outcome.FLAG)],
)
def test_tier_a_is_all_or_nothing(mismatch: int | None, outcome: Outcome) -> None:
    """Any row hash that differs escalates, naming the position; Tier-B numbers are not consulted."""
    scores = AuditScores(tier=AuditTier.REPLAY, positions=64, row_mismatch_at=mismatch, s_lp=9.0)

    result = judge(scores, Q)

    assert result.outcome is outcome
    if mismatch is not None:
        assert result.reasons == (f"tier A: the logit row hash differs at generated position {mismatch}",)


honest_chunks = st.builds(
    ChunkScores,
    start=st.integers(0, 4096),
    n=st.integers(1, 32),
    s_lp=st.floats(0.0, Q.honest_max.s_lp_chunk),
    kl=st.floats(0.0, Q.honest_max.kl_chunk),
    tok_disagree=st.floats(0.0, Q.honest_max.tok_disagree_chunk),
    margin_min=st.floats(Q.honest_max.margin_min, 20.0),
    hid_exp=st.none() | st.integers(0, int(Q.honest_max.hid_exp_chunk)),
    hid_mantissa_mean=st.none() | st.floats(0.0, Q.honest_max.hid_mantissa_mean_chunk),
)


@given(
    chunks=st.lists(honest_chunks, max_size=8),
    s_lp=st.floats(0.0, Q.honest_max.s_lp_response),
    kl=st.floats(0.0, Q.honest_max.kl_response),
)
def test_scores_inside_the_honest_band_always_pass(chunks: list[ChunkScores], s_lp: float, kl: float) -> None:
    scores = AuditScores(tier=AuditTier.PREFILL, positions=32 * len(chunks), chunks=tuple(chunks), s_lp=s_lp, kl=kl)

    assert judge(scores, Q) == Verdict(outcome=Outcome.PASS)


@given(chunks=st.lists(honest_chunks, min_size=1, max_size=4), factor=st.floats(1.0, 1e6, exclude_min=True))
def test_judging_is_deterministic_and_survives_a_json_round_trip(chunks: list[ChunkScores], factor: float) -> None:
    """What the ledger's replay relies on: the transcript's JSON judges to the same verdict."""
    scores = AuditScores(
        tier=AuditTier.PREFILL,
        positions=32,
        chunks=tuple(c.model_copy(update={"s_lp": c.s_lp * factor}) for c in chunks),
    )
    thresholds = Thresholds.model_validate_json(Q.model_dump_json())

    first = judge(scores, Q)

    assert judge(AuditScores.model_validate_json(scores.model_dump_json()), thresholds) == first
    assert Verdict.model_validate_json(first.model_dump_json()) == first
