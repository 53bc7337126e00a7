"""Audit scores on synthetic logits: honest rows score zero, changed rows and tokens do not."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from meshcore_sdk.proof.digest import hidden_digest
from meshcore_sdk.proof.records import TokenRecord, committed, record_token
from meshcore_sdk.proof.report import AuditTier
from meshcore_sdk.proof.sampler import SamplerSettings, job_key, sample
from meshcore_sdk.proof.scores import position_scores, score_tier_a, score_tier_b

VOCAB = 500
KEY = job_key("req-1", None)
PROMPT = [1, 2, 3, 4]
HOT = SamplerSettings(temperature=0.7, top_k=40, top_p=0.95)
GREEDY = SamplerSettings()

Rows = npt.NDArray[np.float32]


def rows(seed: int, n: int) -> Rows:
    print(f"seed {seed}")
    return (np.random.default_rng(seed).normal(size=(n, VOCAB)) * 3).astype(np.float32)


def honest(logits: Rows, settings: SamplerSettings) -> tuple[list[int], list[TokenRecord]]:
    """What an honest worker sends: tokens sampled from the rows, and the committed records."""
    output: list[int] = []
    records = []
    for position, row in enumerate(logits):
        token = sample(row, settings, key=KEY, position=position, history=PROMPT + output)
        records.append(committed(record_token(row, token, top_k=20)))
        output.append(token)
    return output, records


def score(logits: Rows, output: list[int], records: list[TokenRecord], settings: SamplerSettings, **kw: object):  # type: ignore[no-untyped-def]
    return score_tier_b(
        prompt_ids=PROMPT,
        output_ids=output,
        first_record=0,
        records=records,
        auditor_logits=logits,
        settings=settings,
        key=KEY,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("settings", [HOT, GREEDY, SamplerSettings(temperature=1.0, repeat_penalty=1.3)])
def test_the_same_rows_score_as_honest(settings: SamplerSettings) -> None:
    logits = rows(1, 40)
    output, records = honest(logits, settings)
    scores = score(logits, output, records, settings)
    assert scores.tier is AuditTier.PREFILL
    assert scores.positions == 40
    assert scores.s_lp < 2e-3  # fp16 rounding of the committed top logits only
    assert scores.kl < 1e-5
    assert scores.tok_disagree == 0.0
    assert min(c.margin_min for c in scores.chunks) >= 0.0


def test_a_constant_shift_of_the_auditor_rows_changes_no_log_probability() -> None:
    logits = rows(2, 8)
    output, records = honest(logits, HOT)
    assert score(logits + 5.0, output, records, HOT).s_lp < 2e-3


def test_perturbed_rows_raise_s_lp_and_kl_with_the_noise() -> None:
    logits = rows(3, 64)
    output, records = honest(logits, HOT)
    noise = np.random.default_rng(4).normal(size=logits.shape).astype(np.float32)
    small = score(logits + 0.05 * noise, output, records, HOT)
    large = score(logits + 1.0 * noise, output, records, HOT)
    assert 0.02 < small.s_lp < large.s_lp
    assert small.kl < large.kl
    assert large.tok_disagree > 0.2


@pytest.mark.parametrize(
    ("values", "token", "margin", "disagree"),
    [
        ([0.0, 3.0, 1.0], 1, 2.0, False),  # the argmax leads by 2
        ([0.0, 3.0, 1.0], 2, -2.0, True),  # another id leads by 2
        ([0.0, 3.0, 3.0], 1, 0.0, False),  # a tie is agreement
    ],
)
def test_greedy_margin_is_the_plain_logit_margin(
    values: list[float], token: int, margin: float, disagree: bool
) -> None:
    row = np.asarray(values, dtype=np.float32)
    record = committed(record_token(row, token, top_k=3))
    scores = position_scores(record, row, token, settings=GREEDY, key=KEY, position=0, history=())
    assert scores.margin == pytest.approx(margin)
    assert scores.disagree is disagree


def test_keyed_margin_is_positive_for_the_keyed_choice_and_negative_for_any_other() -> None:
    row = rows(5, 1)[0]
    chosen = sample(row, HOT, key=KEY, position=7, history=())
    record = committed(record_token(row, chosen, top_k=20))
    good = position_scores(record, row, chosen, settings=HOT, key=KEY, position=7, history=())
    assert good.margin > 0 and not good.disagree
    other = int(np.argsort(row)[-2] if np.argsort(row)[-2] != chosen else np.argsort(row)[-1])
    bad = position_scores(record, row, other, settings=HOT, key=KEY, position=7, history=())
    assert bad.margin < 0 and bad.disagree
    wrong_key = position_scores(record, row, chosen, settings=HOT, key=job_key("req-2", None), position=7, history=())
    assert wrong_key.margin != good.margin


def test_a_token_the_masks_drop_disagrees() -> None:
    row = np.asarray([5.0, 0.0, 4.0, 1.0], dtype=np.float32)
    record = committed(record_token(row, 3, top_k=4))
    scores = position_scores(
        record, row, 3, settings=SamplerSettings(temperature=1.0, top_k=2), key=KEY, position=0, history=()
    )
    assert scores.disagree and scores.margin <= 0.0


def test_chunks_start_at_the_first_record_and_hold_the_digest_comparison() -> None:
    logits = rows(6, 70)
    output, records = honest(logits, HOT)
    hidden = np.random.default_rng(7).normal(size=(70, 64)).astype(np.float32)
    digest = hidden_digest(hidden[4:])
    scores = score_tier_b(
        prompt_ids=PROMPT,
        output_ids=output,
        first_record=4,
        records=records[4:],
        auditor_logits=logits[4:],
        settings=HOT,
        key=KEY,
        digest=digest,
        auditor_hidden=hidden[4:],
    )
    assert [(c.start, c.n) for c in scores.chunks] == [(4, 32), (36, 32), (68, 2)]
    assert all(c.hid_exp == 0 and c.hid_mantissa_mean == 0.0 for c in scores.chunks)
    moved = score_tier_b(
        prompt_ids=PROMPT,
        output_ids=output,
        first_record=4,
        records=records[4:],
        auditor_logits=logits[4:],
        settings=HOT,
        key=KEY,
        digest=digest,
        auditor_hidden=hidden[4:] * 1.05,
    )
    assert all((c.hid_mantissa_mean or 0.0) > 3 for c in moved.chunks)


def test_a_final_end_of_generation_record_is_scored_with_its_own_token() -> None:
    logits = rows(8, 5)
    output, records = honest(logits, GREEDY)
    scores = score(logits, output[:4], records, GREEDY)  # the fifth token ended the generation: no output id
    assert scores.positions == 5 and scores.tok_disagree == 0.0


def test_no_records_no_scores() -> None:
    scores = score(np.empty((0, VOCAB), np.float32), [], [], HOT)
    assert scores.positions == 0 and scores.chunks == ()


def test_rows_and_records_must_pair_up() -> None:
    logits = rows(9, 3)
    output, records = honest(logits, GREEDY)
    with pytest.raises(ValueError):
        score(logits[:2], output, records, GREEDY)


@pytest.mark.parametrize(
    ("committed_hashes", "mine", "first", "expected"),
    [
        ([b"a" * 16, b"b" * 16], [b"a" * 32, b"b" * 32], 0, None),
        ([b"a" * 16, b"b" * 16], [b"a" * 32, b"c" * 32], 0, 1),
        ([b"a" * 16, b"b" * 16], [b"a" * 32, b"c" * 32], 10, 11),
        ([b"a" * 16, b"b" * 16], [b"a" * 32], 0, 1),  # the replay stopped short
        ([b"", b"b" * 16], [b"a" * 32, b"b" * 32], 0, 0),  # nothing committed: nothing to match
    ],
)
def test_tier_a_reports_the_first_mismatching_position(
    committed_hashes: list[bytes], mine: list[bytes], first: int, expected: int | None
) -> None:
    scores = score_tier_a(committed_hashes, mine, first_record=first, seconds=1.5)
    assert scores.tier is AuditTier.REPLAY
    assert scores.row_mismatch_at == expected
    assert scores.positions == 2 and scores.seconds == 1.5
