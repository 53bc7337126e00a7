"""The router's free checks: is each token the keyed choice its committed record implies?

Theory of operation (research §6.4; the rule itself is ``sampler.py``'s)
-------------------------------------------------------------------------
An honest worker samples from exactly the row it commits to, so its token
is the keyed-Gumbel argmax of that row (plain argmax at temperature 0) after
the repetition penalty and the top-k, top-p and min-p masks.  The router sees
only the committed record (``records.py``): the K largest raw logits, as fp16
offsets from the exact float32 top one, the chosen id's exact float32 logit
and the float32 log-sum-exp.  The check flags a position only when **no**
raw row that rounds to the committed record would have produced the token:

1. every committed logit becomes an interval, its value plus or minus half
   the fp16 spacing of its offset (the chosen id's own logit is exact);
   any uncommitted id's raw logit is at most the K-th committed one;
2. the penalty (history: ``prompt_tail`` plus the output ids before the
   position, last :data:`~meshcore_sdk.proof.sampler.PENALTY_WINDOW`) maps
   the intervals through ``l/r`` or ``l*r`` (monotonic), widened by one
   float32 step; the chosen id's penalized logit is recomputed exactly as
   the sampler computes it (float32);
3. the log-sum-exp of the penalized row is bounded from the committed one,
   the known changes of the committed ids in the history, and at most
   ``exp(K-th logit)`` for each uncommitted id in the history;
4. each mask is evaluated twice: an id is *certainly kept* when it survives
   for every row in the intervals, *possibly kept* when it survives for some.
   Uncommitted ids count as "possibly above" any id whose interval reaches
   the K-th logit, and their mass as at most one minus the committed mass;
5. temperature 0: the chosen id's penalized logit must reach the lower end
   of every other committed id's interval (no rival is certainly larger).
   Otherwise the chosen id must be possibly kept, and its score
   ``l_w/T + g_w`` must reach ``lo_i/T + g_i`` for every *certainly kept*
   committed id ``i``: the slack is exactly the fp16 half-spacing, divided by
   the temperature.  When the nucleus reaches past the committed top-K, only
   the committed candidates are compared, as the research note asks.  A chosen
   id below the committed top-K has an exact logit too, so it is held to the
   same rule (and its logit must not exceed the K-th).

Cross-checks on the record itself: the token id matches the receipt, the
chosen logit agrees with its committed top-K entry (or is at most the K-th
logit when it is not among them), and the log-sum-exp is at least the
largest logit.

The records must be those of the row the token was sampled from (after a
grammar mask, when there is one).  :func:`check_termination` adds the EOS
and ``max_tokens`` rules.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from meshcore_sdk.proof.receipt import ReceiptBody
from meshcore_sdk.proof.records import TokenRecord
from meshcore_sdk.proof.sampler import PENALTY_WINDOW, SamplerSettings, gumbel_at

__all__ = [
    "ConsistencyReport",
    "TerminationReport",
    "check_consistency",
    "check_termination",
]

_FP16_MAX: Final = 65504.0
_FLOAT32_STEP: Final = 2.0**-22
"""Relative widening for one float32 rounding (and the float32 rounding of the penalty itself)."""
_ROUNDING: Final = 1e-9
"""Tolerance for float64 sums and exponentials in the mask bounds."""

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ConsistencyReport:
    """How many positions were checked, and which generated positions no committed row explains."""

    checked: int
    inconsistent: tuple[int, ...]

    @property
    def ok(self) -> bool:
        """Whether every checked position is consistent."""
        return not self.inconsistent


@dataclass(frozen=True, slots=True)
class TerminationReport:
    """The EOS and length rules: where an EOS appears too early, and whether the length or finish lies."""

    early_eos: tuple[int, ...]
    too_long: bool
    finish_mismatch: bool

    @property
    def ok(self) -> bool:
        """Whether the output ends the way its finish reason says."""
        return not (self.early_eos or self.too_long or self.finish_mismatch)


@dataclass(frozen=True, slots=True)
class _Position:
    """One position's candidates: intervals of penalized logits, the chosen one exact."""

    ids: npt.NDArray[np.int64]
    lo: Floats
    hi: Floats
    chosen: int
    outside: float
    lse_lo: float
    lse_hi: float


def check_consistency(body: ReceiptBody, records: Mapping[int, TokenRecord], key: bytes) -> ConsistencyReport:
    """Check every given generated position against the keyed sampling rule (see the module docstring).

    Args:
        body: the verified receipt body.
        records: committed records (as decoded) by generated position.
        key: the job's sampling key (``sampler.job_key``).
    """
    if body.constrained:  # a grammar masked ids the records do not show: the audit covers these jobs
        return ConsistencyReport(checked=0, inconsistent=())
    settings = body.sampler.settings()
    bad = tuple(t for t in sorted(records) if not _consistent(body, t, records[t], settings, key))
    return ConsistencyReport(checked=len(records), inconsistent=bad)


def check_termination(body: ReceiptBody, eos_ids: Collection[int]) -> TerminationReport:
    """EOS only as the last token (finish ``stop``), at most ``max_tokens``, ``length`` only when reached."""
    ids = body.output_ids
    ends_with_eos = bool(ids) and ids[-1] in eos_ids
    length_lies = body.finish_reason == "length" and (len(ids) != body.max_tokens or ends_with_eos)
    return TerminationReport(
        early_eos=tuple(t for t, token in enumerate(ids[:-1]) if token in eos_ids),
        too_long=len(ids) > body.max_tokens,
        finish_mismatch=length_lies or (ends_with_eos and body.finish_reason != "stop"),
    )


def _consistent(body: ReceiptBody, t: int, record: TokenRecord, settings: SamplerSettings, key: bytes) -> bool:
    if not body.first_record <= t < len(body.output_ids) or record.token_id != body.output_ids[t]:
        return False
    if not record.top_ids:
        return True  # nothing committed to compare with
    history = (*body.prompt_tail, *body.output_ids[:t])[-PENALTY_WINDOW:]
    position = _position(record, history, settings.repeat_penalty)
    if position is None:
        return False
    if settings.temperature == 0.0:
        return _greedy_ok(position)
    return _keyed_ok(position, settings, key, t)


def _raw_bounds(record: TokenRecord) -> tuple[Floats, Floats]:
    """Intervals of the raw logits behind the committed (fp16-offset) top logits."""
    values = np.asarray(record.top_logits, dtype=np.float64)
    top = values[0]
    with np.errstate(invalid="ignore"):
        offsets = np.abs(values - top).astype(np.float16)
        half_step = np.spacing(offsets).astype(np.float64) / 2
    overflowed = np.isneginf(values) & np.isfinite(top)
    half_step[~np.isfinite(half_step)] = 0.0
    return values - half_step, np.where(overflowed, top - _FP16_MAX, values + half_step)


def _penalized(values: Floats, penalty: float) -> Floats:
    out: Floats = np.where(values > 0, values / penalty, values * penalty)
    return out


def _widen(lo: Floats, hi: Floats) -> tuple[Floats, Floats]:
    with np.errstate(invalid="ignore"):
        return lo - np.abs(lo) * _FLOAT32_STEP, hi + np.abs(hi) * _FLOAT32_STEP


def _exact_penalized(logit: float, penalized: bool, penalty: float) -> float:
    """The chosen id's penalized logit, computed in float32 as the sampler does."""
    row = np.asarray([logit], dtype=np.float32)
    if penalized:
        row = np.where(row > 0, row / penalty, row * penalty)
    return float(row[0])


def _position(record: TokenRecord, history: Sequence[int], penalty: float) -> _Position | None:
    """The candidates of a position, or None when the record contradicts itself."""
    raw_lo, raw_hi = _raw_bounds(record)
    ids = np.asarray(record.top_ids, dtype=np.int64)
    hits = np.flatnonzero(ids == record.token_id)
    if not _chosen_agrees(record, raw_lo, raw_hi, hits):
        return None
    kth = float(raw_hi[-1])
    chosen = int(hits[0]) if hits.size else ids.size
    if not hits.size:  # the chosen id is below the committed top-K
        ids, raw_lo, raw_hi = np.append(ids, record.token_id), np.append(raw_lo, 0.0), np.append(raw_hi, 0.0)
    raw_lo[chosen] = raw_hi[chosen] = record.logit
    penalized = set(history) if penalty != 1.0 else set()
    mask = np.isin(ids, list(penalized))
    lo, hi = _widen(
        np.where(mask, _penalized(raw_lo, penalty), raw_lo), np.where(mask, _penalized(raw_hi, penalty), raw_hi)
    )
    lo[chosen] = hi[chosen] = _exact_penalized(record.logit, record.token_id in penalized, penalty)
    unknown = len(penalized - set(ids.tolist()))
    outside = max(kth, _penalized_kth(kth, penalty)) if unknown and penalty < 1.0 else kth
    lse_lo, lse_hi = _lse_bounds(record.logsumexp, raw_lo[mask], raw_hi[mask], lo, hi, mask, unknown, outside, kth)
    return _Position(ids, lo, hi, chosen, outside, lse_lo, lse_hi)


def _penalized_kth(kth: float, penalty: float) -> float:
    """The largest penalized logit an uncommitted id can reach, widened by a float32 step."""
    value = kth / penalty if kth > 0 else kth * penalty
    return value + abs(value) * _FLOAT32_STEP


def _chosen_agrees(record: TokenRecord, raw_lo: Floats, raw_hi: Floats, hits: npt.NDArray[np.intp]) -> bool:
    """The chosen logit sits in its committed interval (or below the K-th), and lse >= the largest logit."""
    c = record.logit
    lse_floor = max(float(raw_lo[0]), c)
    if record.logsumexp < lse_floor - abs(lse_floor) * _FLOAT32_STEP - _ROUNDING:
        return False
    if hits.size:
        j = int(hits[0])
        return bool(raw_lo[j] - _ROUNDING <= c <= raw_hi[j] + _ROUNDING)
    return bool(c <= raw_hi[-1] + _ROUNDING)


def _lse_bounds(
    lse: float,
    raw_lo: Floats,
    raw_hi: Floats,
    lo: Floats,
    hi: Floats,
    mask: npt.NDArray[np.bool_],
    unknown: int,
    outside: float,
    kth: float,
) -> tuple[float, float]:
    """Bounds of the penalized row's log-sum-exp, from the committed raw one.

    ``sum_i exp(pen_i) = exp(lse) + sum over penalized ids of (exp(pen_i) - exp(raw_i))``:
    the committed penalized ids' changes are bounded by their intervals, each
    uncommitted one's by ``exp(K-th logit)`` (its raw logit at most the K-th).
    """
    slack = abs(lse) * _FLOAT32_STEP + _ROUNDING
    if not mask.any() and not unknown:
        return lse - slack, lse + slack
    shift = lse - slack  # the true lse is in [shift, shift + 2 slack]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        gain_lo = np.nansum(np.exp(lo[mask] - shift) - np.exp(raw_hi - shift))
        gain_hi = np.nansum(np.exp(hi[mask] - shift) - np.exp(raw_lo - shift))
        loss_unknown = unknown * math.exp(min(kth - shift, 700.0))
        gain_unknown = unknown * math.exp(min(outside - shift, 700.0)) if outside > kth else 0.0
        floor = float(np.log(np.exp(lo - shift).sum()))
    low = 1.0 + float(gain_lo) - loss_unknown
    high = math.exp(2 * slack) + float(gain_hi) + gain_unknown
    lse_lo = shift + max(math.log(low) if low > 0 else -math.inf, floor)
    return lse_lo, shift + math.log(max(high, math.exp(min(floor, 700.0))))


def _greedy_ok(position: _Position) -> bool:
    """Plain argmax: no other committed id may certainly exceed the chosen one."""
    others = np.delete(position.lo, position.chosen)
    return bool((position.lo[position.chosen] >= others).all())


def _keyed_ok(position: _Position, settings: SamplerSettings, key: bytes, t: int) -> bool:
    certain, possible = _masks(position, settings)
    if not possible[position.chosen]:
        return False
    noise = gumbel_at(key, t, position.ids)
    lowest_scores = position.lo / settings.temperature + noise
    chosen_score = lowest_scores[position.chosen]  # exact: lo = hi for the chosen id
    rivals = certain.copy()
    rivals[position.chosen] = False
    return bool((chosen_score >= lowest_scores[rivals]).all())


def _masks(position: _Position, settings: SamplerSettings) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which candidates every row in the intervals keeps, and which some row keeps."""
    lo, hi = position.lo, position.hi
    outside_above = position.outside >= lo
    maybe_above = (hi[None, :] >= lo[:, None]) & ~np.eye(lo.size, dtype=bool)
    surely_above = lo[None, :] > hi[:, None]
    certain = np.isfinite(lo) & np.isfinite(hi)
    possible = np.isfinite(hi)
    if settings.top_k > 0:
        certain &= ~outside_above & (maybe_above.sum(axis=1) < settings.top_k)
        if settings.top_k < int(np.isfinite(lo).sum()):
            possible &= surely_above.sum(axis=1) < settings.top_k
    if settings.top_p < 1.0:
        c, p = _nucleus(position, maybe_above, surely_above, outside_above, settings.top_p)
        certain, possible = certain & c, possible & p
    if settings.min_p > 0.0:
        c, p = _min_p(position, settings.min_p)
        certain, possible = certain & c, possible & p
    return certain, possible


def _nucleus(
    position: _Position,
    maybe_above: npt.NDArray[np.bool_],
    surely_above: npt.NDArray[np.bool_],
    outside_above: npt.NDArray[np.bool_],
    top_p: float,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Kept by top-p: the probability mass ranked above an id must stay below ``top_p``."""
    with np.errstate(over="ignore"):
        prob_hi = np.minimum(np.exp(position.hi - position.lse_lo), 1.0)
        prob_lo = np.exp(position.lo - position.lse_hi)
    outside_mass = max(0.0, 1.0 - float(prob_lo.sum()))
    mass_max = maybe_above.astype(np.float64) @ prob_hi + np.where(outside_above, outside_mass, 0.0)
    mass_min = surely_above.astype(np.float64) @ prob_lo
    return mass_max < top_p - _ROUNDING, mass_min < top_p + _ROUNDING


def _min_p(position: _Position, min_p: float) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Kept by min-p: ``l_i - l_max >= log(min_p)``, with the largest logit bounded both ways."""
    floor = math.log(min_p)
    finite_hi = position.hi[np.isfinite(position.hi)]
    best_hi = max(float(finite_hi.max()), position.outside)
    best_lo = float(position.lo.max())
    return position.lo - best_hi >= floor + _ROUNDING, position.hi - best_lo >= floor - _ROUNDING
