"""Keyed sampling: the token is a pure function of (job key, position, logits, settings, history).

Theory of operation (``docs/engine.md`` is the auditor's version)
-------------------------------------------------------------------
Meshcore picks tokens itself instead of llama.cpp's ``dist`` sampler, so that
anyone holding the logits can recompute the choice.  For generated position
``t`` (the ``seq`` of the token frame) and the raw logit row ``l``:

1. repetition penalty over the distinct ids among the last
   :data:`PENALTY_WINDOW` ids of the sequence (prompt included): ``l/r`` where
   ``l > 0``, ``l*r`` otherwise (llama.cpp's rule);
2. a grammar, when the request has one, sets the logits of forbidden ids to -inf;
3. temperature 0: the answer is ``argmax`` (lowest id on ties).  Otherwise the
   masks, computed on ``softmax(l)``: keep the ``top_k`` largest (0: all), then
   the smallest prefix of the descending order whose mass reaches ``top_p``,
   then the ids with ``p >= min_p * p_max``;
4. the answer is ``argmax over kept ids of l/T + g``, with Gumbel noise
   ``g_i = -log(-log(u_i))`` and ``u_i = ((x_i >> 11) + 0.5) / 2**53``, where
   ``x_i`` is the ``i``-th 64-bit output of Philox4x64-10 keyed by the first
   16 bytes of ``BLAKE2b(b"meshcore/gumbel/v1" || job_key || t as u64 LE)``
   (numpy's ``Philox(key=int.from_bytes(that, "little")).random_raw(n_vocab)``).
   No library distribution is involved, so the stream does not change across
   numpy versions or platforms.

The job key is ``BLAKE2b-256(b"meshcore/job-key/v1\\0" || b"seed\\0" || str(seed))``
when the request gives a seed, else the same over ``b"request\\0" || request_id``.

Noise at a few ids (:func:`gumbel_at`)
--------------------------------------
Philox is a counter-mode generator: numpy's ``random_raw`` emits, for block
``b = 0, 1, 2, ...``, the four 64-bit words of ``Philox4x64-10(counter=(b+1, 0, 0, 0), key)``,
so output ``i`` is word ``i % 4`` of block ``i // 4``.  :func:`gumbel_at`
computes only the blocks that hold the wanted ids (Python integers, about
10 us a block), and falls back to numpy's own ``random_raw`` up to the largest
wanted id when many ids are wanted.  Both paths give the same bits as
:func:`gumbel_noise` (a test checks them against ``random_raw`` over a
262,144-id vocabulary), so sampling no longer draws the whole vocabulary per
token: the log-log transform, the expensive part, runs on the kept ids only.

Pure numpy and hashlib: no llama.cpp, no global randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from meshcore_sdk.protocol import SamplingParams

__all__ = [
    "PENALTY_WINDOW",
    "Logits",
    "SamplerSettings",
    "gumbel_at",
    "gumbel_noise",
    "job_key",
    "kept_ids",
    "logsumexp",
    "penalize",
    "philox_raw_at",
    "sample",
    "top_indices",
]

PENALTY_WINDOW: Final = 64
"""How many of the latest ids the repetition penalty looks at."""

_NUCLEUS_PROBE: Final = 1024

_SPARSE_LIMIT: Final = 128
"""Up to this many wanted ids, :func:`gumbel_at` computes their Philox blocks one by one."""

_MASK64: Final = (1 << 64) - 1
_PHILOX_MULTIPLIERS: Final = (0xD2E7470EE14C6C93, 0xCA5A826395121157)
_PHILOX_WEYL: Final = (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)
_PHILOX_ROUNDS: Final = 10

Logits = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """The sampling knobs of one request (a subset of :class:`SamplingParams`)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0

    @classmethod
    def from_params(cls, params: SamplingParams) -> SamplerSettings:
        """The settings a wire request asks for."""
        return cls(params.temperature, params.top_k, params.top_p, params.min_p, params.repeat_penalty)


def job_key(request_id: str, seed: int | None) -> bytes:
    """The 32-byte key of a request's randomness: from its seed if given, else from its id."""
    source = b"seed\0" + str(seed).encode() if seed is not None else b"request\0" + request_id.encode()
    return hashlib.blake2b(b"meshcore/job-key/v1\0" + source, digest_size=32).digest()


def _philox_key(key: bytes, position: int) -> int:
    digest = hashlib.blake2b(b"meshcore/gumbel/v1" + key + position.to_bytes(8, "little"), digest_size=16).digest()
    return int.from_bytes(digest, "little")


def _to_gumbel(raw: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    uniform = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    noise: npt.NDArray[np.float64] = -np.log(-np.log(uniform))
    return noise


def gumbel_noise(key: bytes, position: int, n: int) -> npt.NDArray[np.float64]:
    """Gumbel(0, 1) noise for ids ``0..n-1`` at generated position ``position``."""
    return _to_gumbel(np.random.Philox(key=_philox_key(key, position)).random_raw(n))


def _philox_block(block: int, round_keys: Sequence[tuple[int, int]]) -> tuple[int, int, int, int]:
    """The four words numpy's ``random_raw`` emits for block ``block`` (counter ``block + 1``)."""
    c0, c1, c2, c3 = block + 1, 0, 0, 0
    m0, m1 = _PHILOX_MULTIPLIERS
    for k0, k1 in round_keys:
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> 64) ^ c1 ^ k0, p1 & _MASK64, (p0 >> 64) ^ c3 ^ k1, p0 & _MASK64
    return c0, c1, c2, c3


def _raw_sparse(philox_key: int, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """Philox4x64-10 outputs at ``ids``, block by block, in Python integers."""
    k0, k1 = philox_key & _MASK64, philox_key >> 64
    w0, w1 = _PHILOX_WEYL
    round_keys = [((k0 + r * w0) & _MASK64, (k1 + r * w1) & _MASK64) for r in range(_PHILOX_ROUNDS)]
    blocks: dict[int, tuple[int, int, int, int]] = {}
    words = []
    for i in ids.tolist():
        block = blocks.get(i >> 2)
        if block is None:
            block = blocks[i >> 2] = _philox_block(i >> 2, round_keys)
        words.append(block[i & 3])
    return np.array(words, dtype=np.uint64)


def philox_raw_at(key: bytes, position: int, ids: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """The raw 64-bit words behind the noise at ``ids``: ``random_raw(n)[ids]`` without drawing ``n`` words."""
    wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
    if wanted.size and int(wanted.min()) < 0:
        raise ValueError("token ids are not negative")
    philox_key = _philox_key(key, position)
    if wanted.size <= _SPARSE_LIMIT:
        return _raw_sparse(philox_key, wanted)
    return np.random.Philox(key=philox_key).random_raw(int(wanted.max()) + 1)[wanted]


def gumbel_at(key: bytes, position: int, ids: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The noise :func:`gumbel_noise` gives at ``ids`` (any order, repeats allowed), computed there only."""
    return _to_gumbel(philox_raw_at(key, position, ids))


def penalize(logits: Logits, history: Sequence[int], penalty: float) -> Logits:
    """Apply the repetition penalty over the last :data:`PENALTY_WINDOW` ids (a copy when it changes anything)."""
    if penalty == 1.0 or not history:
        return logits
    ids = np.unique(np.asarray(history[-PENALTY_WINDOW:], dtype=np.int64))
    out = logits.copy()
    values = out[ids]
    out[ids] = np.where(values > 0, values / penalty, values * penalty)
    return out


def top_indices(row: Logits, k: int) -> npt.NDArray[np.int64]:
    """The ids of the ``k`` largest values, largest first (ties: lowest id first).

    Exact, and cheaper than a partition of the whole row: the ``k``-th largest
    value of a strided sample is a lower bound of the ``k``-th largest overall,
    so every id at or above it is a candidate and the top ``k`` are among them.
    """
    k = min(k, row.size)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    stride = max(1, row.size // (64 * k))
    sample_ = row[::stride]
    bound = np.partition(sample_, sample_.size - k)[sample_.size - k] if sample_.size >= k else -np.inf
    candidates = np.flatnonzero(row >= bound)
    if candidates.size > 4 * k:
        # Thousands of candidates on a large vocabulary: keep those at or above the k-th largest
        # (ties included) before sorting.
        values = row[candidates]
        candidates = candidates[values >= np.partition(values, values.size - k)[values.size - k]]
    order = np.lexsort((candidates, -row[candidates].astype(np.float64)))
    return candidates[order[:k]]


def logsumexp(row: npt.NDArray[np.float32]) -> float:
    """``log(sum(exp(row)))`` in float64, shifted by the maximum (the row must hold a finite value)."""
    top = float(row.max())
    return top + float(np.log(np.exp(row - np.float32(top)).sum(dtype=np.float64)))


def kept_ids(logits: Logits, settings: SamplerSettings) -> npt.NDArray[np.int64]:
    """The ids that survive top-k, top-p and min-p, in descending order of logit (ties: lowest id first)."""
    finite = np.isfinite(logits)
    n_finite = int(finite.sum())
    k = settings.top_k if 0 < settings.top_k < n_finite else n_finite
    probe = k if settings.top_p >= 1.0 else min(k, _NUCLEUS_PROBE)
    ids = top_indices(logits, probe)  # -inf ids come last, and k counts only finite ones
    total = logsumexp(logits[finite])
    probs = np.exp(logits[ids].astype(np.float64) - total)
    if settings.top_p < 1.0:
        if probs.sum() < settings.top_p and probe < k:  # the nucleus is wider than the probe
            ids = top_indices(logits, k)
            probs = np.exp(logits[ids].astype(np.float64) - total)
        reach = int(np.searchsorted(np.cumsum(probs), settings.top_p)) + 1
        ids, probs = ids[:reach], probs[:reach]
    if settings.min_p > 0.0:
        keep = probs >= settings.min_p * probs[0]
        ids = ids[keep]
    return ids


def sample(
    logits: Logits,
    settings: SamplerSettings,
    *,
    key: bytes,
    position: int,
    history: Sequence[int] = (),
) -> int:
    """The token at ``position`` (see the module docstring for the exact rule).

    Args:
        logits: the raw row (not modified), with -inf where a grammar forbids an id.
        settings: the request's knobs.
        key: the request's :func:`job_key`.
        position: the generated position (0 for the first generated token).
        history: the ids of the sequence so far (prompt and generated), for the penalty.
    """
    row = penalize(logits, history, settings.repeat_penalty)
    if settings.temperature == 0.0:
        return int(np.argmax(row))
    ids = kept_ids(row, settings)
    scores = row[ids].astype(np.float64) / settings.temperature + gumbel_at(key, position, ids)
    return int(ids[int(np.argmax(scores))])
