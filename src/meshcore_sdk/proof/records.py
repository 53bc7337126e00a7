"""Per-token records: what a worker commits to for each generated position, and their wire form.

Theory of operation
-------------------
For every generated position the worker keeps a :class:`TokenRecord` of the
raw logit row it sampled from: the chosen id and its raw logit, the row's
log-sum-exp, the K largest raw logits with their ids, and a hash of the raw
row (:func:`row_hash`).  The records are encoded (:func:`encode_record`), hashed into
the Merkle tree whose root the receipt signs (:func:`leaf_hash`), kept on
the worker, and revealed on demand.  The router's free check
(``consistency.py``) and the auditor work from the *decoded* values, so an
honest worker must commit to exactly what it hands out: :func:`committed`
is ``decode(encode(record))``, and it is idempotent.

Wire form (all little-endian), ``18 + 5 K`` bytes, plus 16 with a row hash::

    u8   flags          bit 0: a row hash follows; the other bits are zero
    u24  token_id       the chosen id
    u16  K              how many top ids follow
    f32  logit          the chosen id's raw logit
    f32  logsumexp      of the raw row
    f32  top            the largest raw logit (0.0 when K = 0)
    K x  u24            the top ids, largest logit first (ties: lowest id first)
    K x  f16            each top logit minus ``top``: exact where near-ties matter
    16 B row hash       the first 16 bytes of :func:`row_hash` of the raw row

At K = 20 a record is 118 bytes (134 with the row hash).  Token ids must be
below ``2**24`` (the largest vocabularies today are about ``2**18``).  A top
logit more than 65504 below ``top`` decodes as -inf.  Decoding refuses
unknown flags, a length that does not match K, repeated ids, and top logits
that are not in descending order.

The row hash is SHA-256 of every :data:`ROW_HASH_STRIDE`-th raw logit
(float32, little-endian), not of the whole row: it is what Tier A compares
bitwise, and a replay that matches 16,384 logits of Gemma's 262,144 bit for
bit has the same final hidden state (each logit is a dot product of it), so
it matches the rest too.  Hashing the whole megabyte cost 0.7 ms a token,
more than a tenth of a batched decode step per sequence.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np

from meshcore_sdk.proof.merkle import hash_leaf
from meshcore_sdk.proof.sampler import Logits, logsumexp, top_indices
from meshcore_sdk.protocol.errors import RecordInvalid

__all__ = [
    "ID_LIMIT",
    "ROW_HASH_BYTES",
    "ROW_HASH_STRIDE",
    "TokenRecord",
    "committed",
    "decode_record",
    "encode_record",
    "leaf_hash",
    "record_size",
    "record_token",
    "row_hash",
]

ID_LIMIT: Final = 1 << 24
"""Token ids must be below this to be encoded (3 bytes each)."""

ROW_HASH_BYTES: Final = 16
"""How many bytes of the row hash a record commits to."""

ROW_HASH_STRIDE: Final = 16
"""The row hash covers logits ``0, 16, 32, ...`` of the row."""

_HEAD: Final = struct.Struct("<B3sHfff")
_HAS_ROW_HASH: Final = 0x01


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What proofs and ``logprobs`` need of one generated position.

    Attributes:
        token_id: the chosen id.
        logit: its raw logit.
        logsumexp: log-sum-exp of the raw row.
        top_ids: the ids of the K largest raw logits, largest first.
        top_logits: their raw logits.
        row_sha256: :func:`row_hash` of the raw row; its first 16 bytes once
            committed, empty when the row was not hashed.
    """

    token_id: int
    logit: float
    logsumexp: float
    top_ids: tuple[int, ...]
    top_logits: tuple[float, ...]
    row_sha256: bytes

    @property
    def logprob(self) -> float:
        """The chosen id's log-probability under the raw row."""
        return self.logit - self.logsumexp

    def top_logprobs(self, n: int) -> list[tuple[int, float]]:
        """The ``n`` most likely ids and their log-probabilities."""
        return [(i, v - self.logsumexp) for i, v in zip(self.top_ids[:n], self.top_logits[:n], strict=True)]


def record_token(logits: Logits, token_id: int, *, top_k: int, hash_row: bool = True) -> TokenRecord:
    """The :class:`TokenRecord` of ``token_id`` chosen from the raw row ``logits``."""
    row = np.ascontiguousarray(logits, dtype="<f4")
    ids = top_indices(row, top_k)
    return TokenRecord(
        token_id=token_id,
        logit=float(row[token_id]),
        logsumexp=logsumexp(row),
        top_ids=tuple(int(i) for i in ids),
        top_logits=tuple(float(v) for v in row[ids]),
        row_sha256=row_hash(row) if hash_row else b"",
    )


def row_hash(row: Logits) -> bytes:
    """SHA-256 of every :data:`ROW_HASH_STRIDE`-th logit of ``row`` as float32, little-endian."""
    return hashlib.sha256(np.ascontiguousarray(row[::ROW_HASH_STRIDE], dtype="<f4").tobytes()).digest()


def record_size(top_k: int, *, row_hash: bool = True) -> int:
    """The encoded size of a record with ``top_k`` top ids."""
    return _HEAD.size + 5 * top_k + (ROW_HASH_BYTES if row_hash else 0)


def _u24(token_id: int) -> bytes:
    if not 0 <= token_id < ID_LIMIT:
        raise RecordInvalid(f"token id {token_id} does not fit in 3 bytes")
    return token_id.to_bytes(3, "little")


def _offsets(top_logits: tuple[float, ...], top: float) -> bytes:
    with np.errstate(invalid="ignore", over="ignore"):
        offsets = (np.asarray(top_logits, dtype=np.float64) - top).astype("<f2")
        offsets[:1] = 0.0  # also when the top logit is -inf
        offsets[offsets == 0] = 0.0  # no -0.0, from an offset too small for fp16: decoding gives back the top
        return offsets.tobytes()


def _head(record: TokenRecord, flags: int, k: int, top: float) -> bytes:
    try:
        return _HEAD.pack(flags, _u24(record.token_id), k, record.logit, record.logsumexp, top)
    except (OverflowError, struct.error) as exc:
        raise RecordInvalid(f"a record value does not fit in float32: {exc}") from exc


def encode_record(record: TokenRecord) -> bytes:
    """The wire form of ``record`` (see the module docstring)."""
    k = len(record.top_ids)
    if len(record.top_logits) != k:
        raise RecordInvalid(f"{k} top ids but {len(record.top_logits)} top logits")
    top = float(np.float32(record.top_logits[0])) + 0.0 if k else 0.0  # + 0.0: no -0.0
    flags = _HAS_ROW_HASH if record.row_sha256 else 0
    head = _head(record, flags, k, top)
    ids = b"".join(_u24(i) for i in record.top_ids)
    return head + ids + _offsets(record.top_logits, top) + record.row_sha256[:ROW_HASH_BYTES]


def _decode_ids(data: bytes) -> tuple[int, ...]:
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int64)
    ids = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
    return tuple(int(i) for i in ids)


def _decode_top_logits(data: bytes, top: float) -> tuple[float, ...]:
    offsets = np.frombuffer(data, dtype="<f2").astype(np.float64)
    if offsets.size and (offsets[0] != 0.0 or np.isnan(offsets).any() or (offsets[1:] > offsets[:-1]).any()):
        raise RecordInvalid("the top logits are not in descending order from the top one")
    return tuple(float(v) for v in top + offsets)


def decode_record(data: bytes) -> TokenRecord:
    """The record that ``data`` encodes, with its values as committed (fp16-rounded top logits)."""
    if len(data) < _HEAD.size:
        raise RecordInvalid(f"a record is at least {_HEAD.size} bytes, got {len(data)}")
    flags, token_id, k, logit, lse, top = _HEAD.unpack_from(data)
    if flags & ~_HAS_ROW_HASH:
        raise RecordInvalid(f"unknown record flags {flags:#04x}")
    if len(data) != record_size(k, row_hash=bool(flags & _HAS_ROW_HASH)):
        raise RecordInvalid(f"a record with {k} top ids is not {len(data)} bytes")
    ids_end = _HEAD.size + 3 * k
    top_ids = _decode_ids(data[_HEAD.size : ids_end])
    if len(set(top_ids)) != k:
        raise RecordInvalid("a top id is repeated")
    return TokenRecord(
        token_id=int.from_bytes(token_id, "little"),
        logit=logit,
        logsumexp=lse,
        top_ids=top_ids,
        top_logits=_decode_top_logits(data[ids_end : ids_end + 2 * k], top),
        row_sha256=data[ids_end + 2 * k :],
    )


def committed(record: TokenRecord) -> TokenRecord:
    """``decode_record(encode_record(record))``: the values a worker commits to, and should sample from."""
    return decode_record(encode_record(record))


def leaf_hash(encoded: bytes) -> bytes:
    """The Merkle leaf hash of an encoded record, ``SHA-256(0x00 || encoded)`` (RFC 6962)."""
    return hash_leaf(encoded)
