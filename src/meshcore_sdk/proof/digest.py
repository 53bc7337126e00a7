"""A TOPLOC-style digest of the final hidden states: 258 bytes per 32 generated tokens.

Theory of operation (``docs/concepts/audits.md``; TOPLOC, arXiv 2501.16007)
-------------------------------------------------------------------------------
The worker commits to its last hidden states (the output of the final norm,
llama.cpp's ``result_norm``) without sending them: for each chunk of up to
:data:`DIGEST_CHUNK` consecutive tokens it flattens the chunk's float32 rows
and keeps the :data:`DIGEST_K` entries of largest magnitude (ties: lowest flat
index first).  Each kept entry is a point ``(x, y)``: ``x`` its flat index
modulo ``m``, ``y`` the bfloat16 bits of its value (round to nearest even),
reduced modulo the prime ``P = 65497``.  The digest is the unique polynomial of
degree below :data:`DIGEST_K` over GF(P) through those points::

    u16 LE  m              the index modulus
    128 x   u16 LE         the coefficients, constant term first (zero-padded)

``m`` is the largest value in ``P, P-1, ..., 32769`` under which the kept
indices stay distinct (TOPLOC's injective modulus; the first one works about 9
times in 10).  If none does, ``m = P`` and, of the entries that collide, only
the first in descending order of magnitude is interpolated: the auditor then
sees the others' values as mismatches.  bfloat16 bit patterns 65497 and above
are negative NaNs, so no finite value is lost to the reduction.

The auditor recomputes the hidden states with one prefill, takes *its own*
top entries of each chunk, evaluates the committed polynomial at their
indices and compares, entry by entry, the bfloat16 sign and exponent (a
difference is an exponent mismatch) and, where those agree, the 7-bit
mantissas (:class:`DigestScore`).  Unlike TOPLOC, the sign counts with the
exponent.  An index the worker did not keep evaluates to an arbitrary value
and almost surely counts as a mismatch, which is what a changed top set means.

Interpolation is Newton's divided differences followed by the expansion into
monomial coefficients, both ``O(K^2)`` vectorized over the points: about a
millisecond per chunk.
"""

from __future__ import annotations

import functools
import statistics
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from meshcore_sdk.protocol.errors import ConfigError, ReceiptInvalid

__all__ = [
    "DIGEST_BYTES",
    "DIGEST_CHUNK",
    "DIGEST_K",
    "DIGEST_PRIME",
    "DigestScore",
    "compare_digest",
    "digest_chunk",
    "hidden_digest",
]

DIGEST_CHUNK: Final = 32
"""Consecutive tokens per digest."""

DIGEST_K: Final = 128
"""Entries of largest magnitude committed per chunk (the polynomial has this many coefficients)."""

DIGEST_PRIME: Final = 65497
"""The field of the polynomial: GF(65497), the largest prime below 2**16 - 38."""

DIGEST_BYTES: Final = 2 + 2 * DIGEST_K
"""Serialized size of one chunk's digest: 258 bytes."""

_SMALLEST_MODULUS: Final = 2**15 + 1

Ints = npt.NDArray[np.int64]
Hidden = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DigestScore:
    """How far the auditor's hidden states are from a committed chunk (0, 0, 0: identical).

    Attributes:
        exp_mismatches: entries whose bfloat16 sign or exponent differ.
        mantissa_mean: mean absolute difference of the 7-bit mantissas where the exponents agree
            (inf when they agree nowhere).
        mantissa_median: their median (inf when they agree nowhere).
    """

    exp_mismatches: int
    mantissa_mean: float
    mantissa_median: float


@functools.cache
def _inverses() -> Ints:
    """``a**-1 mod P`` for every ``a`` in ``0..P-1`` (0 maps to 0), by Fermat: ``a**(P-2)``."""
    base = np.arange(DIGEST_PRIME, dtype=np.int64)
    result = np.ones_like(base)
    exponent = DIGEST_PRIME - 2
    while exponent:
        if exponent & 1:
            result = result * base % DIGEST_PRIME
        base = base * base % DIGEST_PRIME
        exponent >>= 1
    return result


def _bf16_bits(values: npt.NDArray[np.float32]) -> Ints:
    """The bfloat16 bit patterns of float32 values, rounded to nearest even (as torch converts)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)
    return (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 & 0xFFFF


def _top_entries(chunk: Hidden) -> tuple[Ints, npt.NDArray[np.float32]]:
    """The flat indices of the :data:`DIGEST_K` largest magnitudes (ties: lowest index), and their values."""
    flat = np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1)
    magnitude = np.abs(flat)
    k = min(DIGEST_K, flat.size)
    if k == 0:
        return np.empty(0, dtype=np.int64), flat[:0]
    bound = np.partition(magnitude, flat.size - k)[flat.size - k]
    candidates = np.flatnonzero(magnitude >= bound)
    order = np.lexsort((candidates, -magnitude[candidates]))
    indices = candidates[order[:k]].astype(np.int64)
    return indices, flat[indices]


def _modulus(indices: Ints) -> int:
    """The largest modulus under which ``indices`` stay distinct, else :data:`DIGEST_PRIME`."""
    for modulus in range(DIGEST_PRIME, _SMALLEST_MODULUS - 1, -1):
        if np.unique(indices % modulus).size == indices.size:
            return modulus
    return DIGEST_PRIME


def _first_distinct(xs: Ints) -> Ints:
    """Positions of the first occurrence of each value of ``xs``, in order."""
    _, first = np.unique(xs, return_index=True)
    return np.sort(first)


def _interpolate(xs: Ints, ys: Ints) -> Ints:
    """Monomial coefficients (constant first) of the polynomial through distinct points, over GF(P)."""
    p, inverse = DIGEST_PRIME, _inverses()
    newton = ys % p
    for j in range(1, xs.size):
        step = inverse[(xs[j:] - xs[: xs.size - j]) % p]
        newton[j:] = (newton[j:] - newton[j - 1 : -1]) % p * step % p
    coefficients = np.zeros(DIGEST_K, dtype=np.int64)
    for j in range(xs.size - 1, -1, -1):  # c = c * (X - x_j) + newton_j
        coefficients = (np.roll(coefficients, 1) - xs[j] * coefficients) % p
        coefficients[0] = (coefficients[0] + newton[j]) % p
    return coefficients


def _evaluate(coefficients: Ints, xs: Ints) -> Ints:
    """The polynomial at each of ``xs``, by Horner's rule over GF(P)."""
    values = np.zeros(xs.size, dtype=np.int64)
    for c in coefficients[::-1].tolist():
        values = (values * xs + c) % DIGEST_PRIME
    return values


def digest_chunk(chunk: Hidden) -> bytes:
    """The 258-byte digest of one chunk of hidden states, float32 ``[n_tokens, n_embd]``."""
    indices, values = _top_entries(_checked(chunk))
    modulus = _modulus(indices)
    xs = indices % modulus
    keep = _first_distinct(xs)
    coefficients = _interpolate(xs[keep], _bf16_bits(values[keep]))
    return struct.pack("<H", modulus) + coefficients.astype("<u2").tobytes()


def hidden_digest(hidden: Hidden) -> list[bytes]:
    """The digests of consecutive chunks of :data:`DIGEST_CHUNK` rows of ``hidden`` (the last may be shorter)."""
    rows = _checked(hidden)
    return [digest_chunk(rows[start : start + DIGEST_CHUNK]) for start in range(0, rows.shape[0], DIGEST_CHUNK)]


def _checked(hidden: Hidden) -> Hidden:
    if hidden.ndim != 2:
        raise ConfigError(f"hidden states are [n_tokens, n_embd], got shape {hidden.shape}")
    return hidden


def _parse(digest: bytes) -> tuple[int, Ints]:
    if len(digest) != DIGEST_BYTES:
        raise ReceiptInvalid(f"a hidden-state digest is {DIGEST_BYTES} bytes, got {len(digest)}")
    (modulus,) = struct.unpack_from("<H", digest)
    coefficients = np.frombuffer(digest, dtype="<u2", offset=2).astype(np.int64)
    if not _SMALLEST_MODULUS <= modulus <= DIGEST_PRIME or (coefficients >= DIGEST_PRIME).any():
        raise ReceiptInvalid("a hidden-state digest is out of its field")
    return modulus, coefficients


def compare_digest(digest: bytes, hidden_chunk: Hidden) -> DigestScore:
    """Score the auditor's own hidden states of a chunk against the worker's committed digest."""
    modulus, coefficients = _parse(digest)
    indices, values = _top_entries(_checked(hidden_chunk))
    committed = _evaluate(coefficients, indices % modulus)
    mine = _bf16_bits(values)
    exponent_differs = (committed >> 7) != (mine >> 7)
    errors = np.abs((committed & 0x7F) - (mine & 0x7F))[~exponent_differs].tolist()
    if not errors:
        return DigestScore(int(exponent_differs.sum()), float("inf"), float("inf"))
    return DigestScore(int(exponent_differs.sum()), statistics.fmean(errors), float(statistics.median(errors)))
