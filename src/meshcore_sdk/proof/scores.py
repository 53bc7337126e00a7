"""Audit scores: how far a worker's committed records are from the auditor's own logits.

Theory of operation (``docs/concepts/audits.md``; research §6.5)
------------------------------------------------------------------
Tier B.  The auditor prefills the claimed prompt and output once and takes its
logit row (and hidden state) at every generated position ``t`` covered by a
record.  Per position, with the committed record ``r`` (fp16-rounded values, as
revealed) and the auditor's raw row ``a``:

* ``s_lp``: mean over ``r``'s top ids ``i`` of
  ``|(r.top_logit_i - r.logsumexp) - (a_i - logsumexp(a))|``;
* ``kl``: ``KL(p || q)`` over the same ids, ``p`` and ``q`` the committed and the
  auditor's probabilities renormalized over those ids;
* the keyed margin of the worker's token ``w``: penalize ``a`` with the job's
  repetition penalty over the history (prompt and earlier output); at
  temperature 0 the margin is ``a_w - max_{i != w} a_i``; otherwise the scores
  are ``a_i / T + g_i`` with the job's Gumbel noise at ``t`` and the margin is
  ``score_w - max`` over the other ids the auditor's masks keep (top-k, top-p,
  min-p).  When ``w`` is the only kept id the margin is its scaled-logit lead
  over the runner-up.  A token the auditor's masks drop has a margin of at most 0;
* ``tok_disagree``: the margin is below ``-tie_margin``, or the masks drop ``w``.

Positions are grouped in chunks of ``chunk`` (the digest's 32) from the first
record on; each chunk reports means (``s_lp``, ``kl``), the disagreement
fraction, the smallest margin and, when the worker committed a digest, the
comparison of the auditor's hidden rows with it.  The response scores are means
over every position.

Tier A.  The auditor replays the worker's schedule and hashes each full float32
row; :func:`score_tier_a` reports the first generated position whose committed
row hash differs.

Pure numpy: the auditor (``meshcore_node.engine.auditor``) calls it, and so
can anyone who re-runs an audit transcript.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from meshcore_sdk.proof.digest import DIGEST_CHUNK, compare_digest
from meshcore_sdk.proof.records import TokenRecord
from meshcore_sdk.proof.report import AuditScores, AuditTier, ChunkScores
from meshcore_sdk.proof.sampler import SamplerSettings, gumbel_at, kept_ids, logsumexp, penalize

__all__ = [
    "MANTISSA_CAP",
    "TIE_MARGIN",
    "PositionScores",
    "position_scores",
    "score_tier_a",
    "score_tier_b",
]

TIE_MARGIN: Final = 1e-3
"""Margins above ``-TIE_MARGIN`` count as agreement: fp16 rounding of committed values (research §6.4)."""

MANTISSA_CAP: Final = 127.0
"""The mantissa score of a chunk whose exponents agree nowhere (the largest 7-bit difference)."""

Rows = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class PositionScores:
    """The Tier B scores of one generated position."""

    s_lp: float
    kl: float
    margin: float
    disagree: bool


def _log_softmax(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = values - values.max()
    out: npt.NDArray[np.float64] = shifted - np.log(np.exp(shifted).sum())
    return out


def _logprob_scores(record: TokenRecord, row: Rows) -> tuple[float, float]:
    """``(s_lp, kl)`` of one position over the committed top ids (non-finite committed values left out)."""
    ids = np.asarray(record.top_ids, dtype=np.int64)
    committed = np.asarray(record.top_logits, dtype=np.float64)
    finite = np.isfinite(committed)
    ids, committed = ids[finite], committed[finite]
    if ids.size == 0:
        return 0.0, 0.0
    mine = row[ids].astype(np.float64)
    s_lp = float(np.abs((committed - record.logsumexp) - (mine - logsumexp(row))).mean())
    p, q = _log_softmax(committed), _log_softmax(mine)
    kl = float(np.sum(np.exp(p) * (p - q)))
    return s_lp, max(kl, 0.0)


def _keyed_margin(row: Rows, token: int, settings: SamplerSettings, key: bytes, position: int) -> tuple[float, bool]:
    """The worker's token's lead under the auditor's penalized row, and whether the auditor's masks keep it."""
    if settings.temperature == 0.0:
        others = np.delete(row, token)
        return float(row[token]) - float(others.max()), True
    kept = kept_ids(row, settings)
    is_kept = bool((kept == token).any())
    others = kept[kept != token]
    if others.size == 0:  # the token is the only kept id: its lead in scaled logits over the runner-up
        runner_up = float(np.delete(row, token).max())
        return (float(row[token]) - runner_up) / settings.temperature, is_kept
    ids = np.concatenate(([token], others))
    scores = row[ids].astype(np.float64) / settings.temperature + gumbel_at(key, position, ids)
    margin = float(scores[0] - scores[1:].max())
    return (margin if is_kept else min(margin, 0.0)), is_kept


def position_scores(
    record: TokenRecord,
    row: Rows,
    token: int,
    *,
    settings: SamplerSettings,
    key: bytes,
    position: int,
    history: Sequence[int],
    tie_margin: float = TIE_MARGIN,
) -> PositionScores:
    """The Tier B scores of generated position ``position`` (see the module docstring)."""
    s_lp, kl = _logprob_scores(record, row)
    penalized = penalize(row, history, settings.repeat_penalty)
    margin, is_kept = _keyed_margin(penalized, token, settings, key, position)
    return PositionScores(s_lp, kl, margin, disagree=margin < -tie_margin or not is_kept)


def _chunk(start: int, scores: Sequence[PositionScores], digest: bytes | None, hidden: Rows | None) -> ChunkScores:
    hid_exp: int | None = None
    hid_mantissa: float | None = None
    if digest is not None and hidden is not None:
        compared = compare_digest(digest, hidden)
        hid_exp = compared.exp_mismatches
        hid_mantissa = min(compared.mantissa_mean, MANTISSA_CAP)
    return ChunkScores(
        start=start,
        n=len(scores),
        s_lp=float(np.mean([s.s_lp for s in scores])),
        kl=float(np.mean([s.kl for s in scores])),
        tok_disagree=float(np.mean([s.disagree for s in scores])),
        margin_min=min(s.margin for s in scores),
        hid_exp=hid_exp,
        hid_mantissa_mean=hid_mantissa,
    )


def score_tier_b(
    *,
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    first_record: int,
    records: Sequence[TokenRecord],
    auditor_logits: Rows,
    settings: SamplerSettings,
    key: bytes,
    digest: Sequence[bytes] = (),
    auditor_hidden: Rows | None = None,
    chunk: int = DIGEST_CHUNK,
    tie_margin: float = TIE_MARGIN,
    seconds: float = 0.0,
) -> AuditScores:
    """Score committed records against the auditor's prefill rows.

    Args:
        prompt_ids: the claimed prompt.
        output_ids: the generated ids the worker sent (a final end-of-generation
            id has a record but no output id: its record's ``token_id`` is used).
        first_record: the generated position of ``records[0]``.
        records: the committed records of positions ``first_record`` on.
        auditor_logits: the auditor's raw rows ``[len(records), n_vocab]``, row ``k``
            predicting position ``first_record + k``.
        settings: the job's sampler settings.
        key: the job key.
        digest: the worker's hidden-state digests, one per chunk of ``chunk``
            positions from ``first_record`` on (empty: none committed).
        auditor_hidden: the auditor's hidden rows ``[len(records), n_embd]``, needed with a digest.
        chunk: positions per chunk.
        tie_margin: margins above ``-tie_margin`` count as agreement.
        seconds: the auditor's wall time, reported as is.
    """
    if auditor_logits.shape[0] != len(records):
        raise ValueError(f"{auditor_logits.shape[0]} auditor rows for {len(records)} records")
    history = list(prompt_ids) + list(output_ids)
    n_prompt = len(prompt_ids)
    scores = []
    for k, record in enumerate(records):
        position = first_record + k
        token = output_ids[position] if position < len(output_ids) else record.token_id
        scores.append(
            position_scores(
                record,
                auditor_logits[k],
                token,
                settings=settings,
                key=key,
                position=position,
                history=history[: n_prompt + position],
                tie_margin=tie_margin,
            )
        )
    chunks = tuple(
        _chunk(
            first_record + start,
            scores[start : start + chunk],
            digest[start // chunk] if start // chunk < len(digest) else None,
            None if auditor_hidden is None else auditor_hidden[start : start + chunk],
        )
        for start in range(0, len(scores), chunk)
    )
    return AuditScores(
        tier=AuditTier.PREFILL,
        positions=len(scores),
        chunks=chunks,
        s_lp=float(np.mean([s.s_lp for s in scores])) if scores else 0.0,
        kl=float(np.mean([s.kl for s in scores])) if scores else 0.0,
        tok_disagree=float(np.mean([s.disagree for s in scores])) if scores else 0.0,
        seconds=seconds,
    )


def score_tier_a(
    committed_row_hashes: Sequence[bytes],
    auditor_row_hashes: Sequence[bytes],
    *,
    first_record: int = 0,
    seconds: float = 0.0,
) -> AuditScores:
    """The first generated position whose committed row hash differs from the replay's (None: all match).

    A committed hash may be a prefix of SHA-256 (records commit 16 bytes); an
    empty one, or a position the replay did not reach, counts as a mismatch.
    """
    mismatch: int | None = None
    for k, committed in enumerate(committed_row_hashes):
        mine = auditor_row_hashes[k] if k < len(auditor_row_hashes) else b""
        if not committed or mine[: len(committed)] != committed:
            mismatch = first_record + k
            break
    return AuditScores(
        tier=AuditTier.REPLAY,
        positions=len(committed_row_hashes),
        row_mismatch_at=mismatch,
        seconds=seconds,
    )
