"""The free checks: honest records are always consistent, forged ones are caught, EOS rules hold."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcore_sdk.proof.consistency import check_consistency, check_termination
from meshcore_sdk.proof.receipt import ReceiptBody, SamplerSpec, penalty_tail, prompt_sha256
from meshcore_sdk.proof.records import TokenRecord, committed, record_token
from meshcore_sdk.proof.sampler import SamplerSettings, job_key, sample

Row = npt.NDArray[np.float32]
KEY = job_key("job-1", None)

SETTINGS = st.builds(
    SamplerSettings,
    temperature=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0, 1.5, 2.0]),
    top_k=st.sampled_from([0, 1, 2, 5, 20, 40]),
    top_p=st.sampled_from([1.0, 0.99, 0.9, 0.5, 0.1]),
    min_p=st.sampled_from([0.0, 0.01, 0.1, 0.5]),
    repeat_penalty=st.sampled_from([1.0, 1.1, 1.5, 0.8]),
)


def make_body(settings_: SamplerSettings, prompt: list[int], output: list[int], **changes: Any) -> ReceiptBody:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "node_id": "n",
        "model_sha256": "0" * 64,
        "build_id": "test",
        "sampler": SamplerSpec.of(settings_, seed=None),
        "max_tokens": max(1, len(output)),
        "prompt_sha256": prompt_sha256(prompt),
        "n_prompt": len(prompt),
        "prompt_tail": penalty_tail(prompt, settings_),
        "output_ids": tuple(output),
        "record_top_k": 20,
        "merkle_root": "0" * 64,
        "finish_reason": "length",
        "ttft_ms": 1.0,
        "tokens_per_s": 1.0,
        "signed_at": 0.0,
    }
    return ReceiptBody(**(fields | changes))


def generate(
    rows: list[Row], settings_: SamplerSettings, prompt: list[int], top_k: int, *, chooser: list[Row] | None = None
) -> tuple[ReceiptBody, dict[int, TokenRecord]]:
    """Sample one token per row (from ``chooser`` rows if given: a cheap model), commit records of ``rows``."""
    output: list[int] = []
    records = {}
    for t, row in enumerate(rows):
        source = chooser[t] if chooser is not None else row
        token = sample(source, settings_, key=KEY, position=t, history=[*prompt, *output][-64:])
        records[t] = committed(record_token(row, token, top_k=top_k))
        output.append(token)
    return make_body(settings_, prompt, output), records


def rows_from(seed: int, n: int, vocab: int, *, scale: float = 3.0, ties: bool = False) -> list[Row]:
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, vocab)) * scale
    if ties:
        rows = np.round(rows * 2) / 2
    return list(rows.astype(np.float32))


@settings(max_examples=150, deadline=None)
@given(SETTINGS, st.integers(1, 40), st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 80))
def test_honest_records_are_always_consistent(
    settings_: SamplerSettings, top_k: int, seed: int, ties: bool, n_prompt: int
) -> None:
    vocab = 64 if ties else 300
    prompt = [int(i) for i in np.random.default_rng(seed).integers(0, vocab, n_prompt)]
    body, records = generate(rows_from(seed, 6, vocab, ties=ties), settings_, prompt, top_k)
    report = check_consistency(body, records, KEY)
    assert report.ok and report.checked == 6, report


@settings(max_examples=40, deadline=None)
@given(SETTINGS, st.integers(0, 2**32 - 1))
def test_honest_records_with_masked_ids_and_wide_ranges_are_consistent(settings_: SamplerSettings, seed: int) -> None:
    rows = rows_from(seed, 4, 50, scale=40.0)
    for row in rows:
        row[np.random.default_rng(seed).choice(50, 30, replace=False)] = -np.inf
    body, records = generate(rows, settings_, [1, 2, 3], 40)
    assert check_consistency(body, records, KEY).ok


@pytest.mark.parametrize(
    ("settings_", "minimum"),
    [
        (SamplerSettings(temperature=0.0), 0.3),
        (SamplerSettings(temperature=0.7, top_p=0.9), 0.2),
        (SamplerSettings(temperature=1.0, top_k=40, repeat_penalty=1.1), 0.2),
    ],
)
def test_tokens_from_a_cheap_model_with_the_real_models_records_are_caught(
    settings_: SamplerSettings, minimum: float
) -> None:
    """Forged commitments: the cheap model's row is the real one plus noise (sd 1 logit)."""
    real = rows_from(7, 64, 2000)
    rng = np.random.default_rng(8)
    cheap = [(row + rng.standard_normal(row.size)).astype(np.float32) for row in real]
    body, records = generate(real, settings_, [5, 6, 7], 20, chooser=cheap)
    report = check_consistency(body, records, KEY)
    print(f"{settings_}: {len(report.inconsistent)} of 64 positions inconsistent")
    assert len(report.inconsistent) >= minimum * 64


def test_a_token_that_is_not_the_records_is_inconsistent() -> None:
    body, records = generate(rows_from(3, 3, 100), SamplerSettings(temperature=0.5), [], 20)
    other = next(r for r in records.values() if r.token_id != body.output_ids[0])
    swapped = {0: other, 1: records[1], 5: records[2]}
    assert check_consistency(body, swapped, KEY).inconsistent == (0, 5)


def test_a_record_before_first_record_is_inconsistent() -> None:
    body, records = generate(rows_from(4, 3, 100), SamplerSettings(temperature=0.5), [], 20)
    late = body.model_copy(update={"first_record": 1})
    assert check_consistency(late, records, KEY).inconsistent == (0,)


def test_a_chosen_logit_that_disagrees_with_its_top_k_entry_is_inconsistent() -> None:
    body, records = generate(rows_from(5, 1, 100), SamplerSettings(temperature=0.0), [], 20)
    record = records[0]
    bent = TokenRecord(record.token_id, record.logit + 0.5, record.logsumexp, record.top_ids, record.top_logits, b"")
    assert not check_consistency(body, {0: bent}, KEY).ok
    low_lse = TokenRecord(
        record.token_id, record.logit, record.top_logits[0] - 1, record.top_ids, record.top_logits, b""
    )
    assert not check_consistency(body, {0: low_lse}, KEY).ok


def test_a_chosen_token_outside_the_top_k_must_still_win() -> None:
    """Temperature 0: a token below the committed top-K can never be the argmax."""
    row: Row = (np.arange(100) / 10).astype(np.float32)
    body = make_body(SamplerSettings(), [], [3])
    assert not check_consistency(body, {0: committed(record_token(row, 3, top_k=5))}, KEY).ok


@pytest.mark.parametrize(
    ("output", "finish", "max_tokens", "ok"),
    [
        ([5, 6, 2], "stop", 8, True),
        ([5, 2, 6], "stop", 8, False),
        ([5, 6, 7], "length", 3, True),
        ([5, 6, 7], "length", 8, False),
        ([5, 6, 2], "length", 3, False),
        ([5, 6, 2], "cancelled", 8, False),
        ([5, 6], "stop", 8, True),
    ],
)
def test_termination_rules(output: list[int], finish: str, max_tokens: int, ok: bool) -> None:
    body = make_body(SamplerSettings(), [], output, finish_reason=finish, max_tokens=max_tokens)
    assert check_termination(body, {2}).ok is ok
