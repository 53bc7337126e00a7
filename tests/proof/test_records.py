"""Per-token records: what they hold, their wire form, its size and what decoding refuses."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meshcore_sdk.proof.records import (
    ID_LIMIT,
    ROW_HASH_STRIDE,
    TokenRecord,
    committed,
    decode_record,
    encode_record,
    leaf_hash,
    record_size,
    record_token,
    row_hash,
)
from meshcore_sdk.protocol.errors import RecordInvalid

Row = npt.NDArray[np.float32]
ROWS = arrays(np.float32, st.integers(1, 400), elements=st.floats(-60, 60, width=32))


def test_record_holds_logprob_top_k_and_row_hash() -> None:
    row = np.array([1.0, 3.0, 2.0, 0.0], dtype=np.float32)
    rec = record_token(row, 2, top_k=2)
    lse = float(np.log(np.exp(row.astype(np.float64)).sum()))
    assert rec.logsumexp == pytest.approx(lse)
    assert rec.logit == 2.0
    assert rec.logprob == pytest.approx(2.0 - lse)
    assert rec.top_ids == (1, 2)
    [(top_id, top_logprob)] = rec.top_logprobs(1)
    assert top_id == 1
    assert top_logprob == pytest.approx(3.0 - lse)
    assert rec.row_sha256 == hashlib.sha256(row[:1].astype("<f4").tobytes()).digest()  # logits 0, 16, ...


def test_the_row_hash_covers_every_sixteenth_logit_bit_for_bit() -> None:
    row = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    assert row_hash(row) == hashlib.sha256(row[::ROW_HASH_STRIDE].astype("<f4").tobytes()).digest()
    for index in (0, ROW_HASH_STRIDE, 992):
        changed = row.copy()
        changed[index] = np.nextafter(changed[index], np.float32(np.inf))  # one ulp
        assert row_hash(changed) != row_hash(row)
    assert record_token(row, 0, top_k=1).row_sha256 == row_hash(row)


def test_a_record_at_k_20_fits_the_budget() -> None:
    """docs: revealed records are at most 150 bytes a token at K = 20."""
    row = np.random.default_rng(7).standard_normal(262144).astype(np.float32)
    encoded = encode_record(record_token(row, 262143, top_k=20))
    assert len(encoded) == record_size(20) == 134
    assert record_size(20, row_hash=False) == 118


@given(ROWS, st.integers(0, 40), st.booleans(), st.data())
def test_committed_values_round_trip_and_are_idempotent(
    row: Row,
    top_k: int,
    hash_row: bool,
    data: st.DataObject,
) -> None:
    token = data.draw(st.integers(0, row.size - 1))
    record = record_token(row, token, top_k=top_k, hash_row=hash_row)
    once = committed(record)
    assert committed(once) == once
    assert encode_record(once) == encode_record(record)
    assert (once.token_id, once.top_ids, once.row_sha256) == (record.token_id, record.top_ids, record.row_sha256[:16])
    assert once.logit == record.logit and once.logsumexp == pytest.approx(record.logsumexp, rel=1e-6)
    assert once.top_logits[:1] == record.top_logits[:1]
    assert np.allclose(once.top_logits, record.top_logits, rtol=0, atol=0.06)  # fp16 of offsets below 120
    assert once.logprob == pytest.approx(record.logprob, abs=1e-4)


def test_near_ties_keep_their_order_and_precision() -> None:
    """Offsets from the top logit: a 1e-4 gap near the top survives fp16."""
    row = np.array([12.5, 12.5001, 3.0, -40.0], dtype=np.float32)
    once = committed(record_token(row, 0, top_k=4))
    assert once.top_ids == (1, 0, 2, 3)
    assert once.top_logits[0] - once.top_logits[1] == pytest.approx(float(row[1] - row[0]), rel=1e-3)


def test_masked_ids_in_the_top_k_decode_as_minus_infinity() -> None:
    row = np.array([1.0, -np.inf, 0.5, -np.inf], dtype=np.float32)
    once = committed(record_token(row, 2, top_k=4))
    assert once.top_ids == (0, 2, 1, 3)
    assert once.top_logits[2:] == (-np.inf, -np.inf)


def test_ids_beyond_three_bytes_are_refused() -> None:
    record = TokenRecord(ID_LIMIT, 0.0, 1.0, (), (), b"")
    with pytest.raises(RecordInvalid, match="3 bytes"):
        encode_record(record)
    with pytest.raises(RecordInvalid, match="3 bytes"):
        encode_record(TokenRecord(0, 0.0, 1.0, (ID_LIMIT,), (0.0,), b""))


def test_values_beyond_float32_are_refused() -> None:
    with pytest.raises(RecordInvalid, match="float32"):
        encode_record(TokenRecord(0, 1e39, 1.0, (), (), b""))


def good_record() -> bytes:
    return encode_record(record_token(np.arange(8, dtype=np.float32), 5, top_k=3))


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda data: data[:10], "at least"),
        (lambda data: data[:-1], "is not"),
        (lambda data: data + b"\0", "is not"),
        (lambda data: b"\x02" + data[1:], "flags"),
        (lambda data: data[:21] + data[18:21] + data[24:], "repeated"),
        (lambda data: data[:27] + struct.pack("<e", -1.0) + data[29:], "descending"),
        (lambda data: data[:31] + struct.pack("<e", 0.0) + data[33:], "descending"),
    ],
)
def test_malformed_records_are_refused(mangle: object, reason: str) -> None:
    data = good_record()
    assert decode_record(data).top_ids == (7, 6, 5)
    with pytest.raises(RecordInvalid, match=reason):
        decode_record(mangle(data))  # type: ignore[operator]


def test_leaf_hash_is_the_rfc6962_leaf_hash() -> None:
    data = good_record()
    assert leaf_hash(data) == hashlib.sha256(b"\x00" + data).digest()
