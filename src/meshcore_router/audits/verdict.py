"""The judge: one audit's scores against the calibrated thresholds, to a verdict.

Theory of operation (research §6.5, §6.6)
------------------------------------------
:func:`judge` is pure and total: the same :class:`~meshcore_sdk.proof.report.AuditScores`
and :class:`~meshcore_router.audits.calibration.Thresholds` always give the same
:class:`Verdict`, which is what lets anyone replay an audit transcript to the
verdict the router recorded.

Tier A (exact replay by a same-class auditor) is all or nothing: a row hash that
differs at any position is a FLAG naming that position.  It is not a slash on its
own: a misreported build or faulty hardware does the same, so a flag escalates
(:mod:`meshcore_router.audits.reputation`).

Tier B (one prefill) compares each score, per chunk and for the whole response,
with two numbers of the calibration row: the honest maximum ``h`` (the worst
score measured over honest runs) and the threshold ``t`` (three times ``h``, or a
floor).  For the scores where larger is worse (every one but ``margin_min``):

==============  ==========  ==========================================
score ``s``     outcome     meaning
==============  ==========  ==========================================
``s <= h``      PASS        inside the measured honest band
``h < s <= t``  AMBIGUOUS   worse than any honest run seen, not proof
``s > t``       FLAG        beyond three times the honest band
not a number    FLAG        the auditor's numbers cannot be trusted
==============  ==========  ==========================================

``margin_min`` (the keyed margin of the worker's token; negative when the
auditor prefers another token) mirrors it: PASS at ``s >= h``, AMBIGUOUS for
``t <= s < h``, FLAG at ``s < t``.  Hidden-state scores the auditor could not
compute (``None``: no digest committed) are skipped.

The verdict is the worst outcome over every comparison (FLAG over AMBIGUOUS over
PASS), and its reasons list every comparison that was not PASS, in order: the
chunks first, by position, then the response.  An honest run is PASS by
construction, since the calibration's honest maximum bounds it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict

from meshcore_router.audits.calibration import Thresholds
from meshcore_sdk.proof.report import AuditScores, AuditTier, ChunkScores

__all__ = ["Outcome", "Verdict", "judge"]


class Outcome(enum.StrEnum):
    """What an audit concluded about one job."""

    PASS = "pass"
    AMBIGUOUS = "ambiguous"
    FLAG = "flag"


_SEVERITY = {Outcome.PASS: 0, Outcome.AMBIGUOUS: 1, Outcome.FLAG: 2}


class Verdict(BaseModel):
    """An outcome and why: one line per comparison that was not a PASS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: Outcome
    reasons: tuple[str, ...] = ()


def judge(scores: AuditScores, thresholds: Thresholds) -> Verdict:
    """The verdict on one audit (see the module docstring for the rules)."""
    if scores.tier is AuditTier.REPLAY:
        return _judge_replay(scores)
    findings = [*_chunk_findings(scores.chunks, thresholds), *_response_findings(scores, thresholds)]
    if not findings:
        return Verdict(outcome=Outcome.PASS)
    worst = max((outcome for outcome, _ in findings), key=_SEVERITY.__getitem__)
    return Verdict(outcome=worst, reasons=tuple(reason for _, reason in findings))


def _judge_replay(scores: AuditScores) -> Verdict:
    if scores.row_mismatch_at is None:
        return Verdict(outcome=Outcome.PASS)
    reason = f"tier A: the logit row hash differs at generated position {scores.row_mismatch_at}"
    return Verdict(outcome=Outcome.FLAG, reasons=(reason,))


_CHUNK_SCORES = (
    ("s_lp", "s_lp_chunk"),
    ("kl", "kl_chunk"),
    ("tok_disagree", "tok_disagree_chunk"),
    ("hid_exp", "hid_exp_chunk"),
    ("hid_mantissa_mean", "hid_mantissa_mean_chunk"),
)


def _chunk_findings(chunks: tuple[ChunkScores, ...], thresholds: Thresholds) -> Iterator[tuple[Outcome, str]]:
    for chunk in chunks:
        where = f"chunk at {chunk.start} (+{chunk.n})"
        for score, limit in _CHUNK_SCORES:
            value = getattr(chunk, score)
            if value is not None:
                yield from _compare(where, score, float(value), thresholds, limit)
        yield from _compare(where, "margin_min", chunk.margin_min, thresholds, "margin_min", lower_is_worse=True)


def _response_findings(scores: AuditScores, thresholds: Thresholds) -> Iterator[tuple[Outcome, str]]:
    yield from _compare("response", "s_lp", scores.s_lp, thresholds, "s_lp_response")
    yield from _compare("response", "kl", scores.kl, thresholds, "kl_response")


def _compare(
    where: str, score: str, value: float, thresholds: Thresholds, limit: str, *, lower_is_worse: bool = False
) -> Iterator[tuple[Outcome, str]]:
    flag_at: float = getattr(thresholds, limit)
    honest: float = getattr(thresholds.honest_max, limit)
    sign = -1.0 if lower_is_worse else 1.0
    if math.isnan(value):
        yield Outcome.FLAG, f"{where}: {score} is not a number"
    elif sign * value > sign * flag_at:
        yield Outcome.FLAG, f"{where}: {score} {value:.6g} beyond the threshold {flag_at:.6g}"
    elif sign * value > sign * honest:
        yield Outcome.AMBIGUOUS, f"{where}: {score} {value:.6g} beyond the honest max {honest:.6g}"
