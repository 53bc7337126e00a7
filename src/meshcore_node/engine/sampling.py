"""Keyed sampling and per-token records: deterministic given (job key, position, logits).

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

Per token the engine also keeps a :class:`TokenRecord`: the top-K raw logits,
the log-sum-exp of the raw row, the chosen id's log-probability under the raw
row (``l_i - logsumexp(l)``), and SHA-256 of the raw float32 row, little-endian.

Pure numpy: no llama.cpp, no global randomness.
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
    "SamplerSettings",
    "TokenRecord",
    "gumbel_noise",
    "job_key",
    "penalize",
    "record_token",
    "sample",
    "top_indices",
]

PENALTY_WINDOW: Final = 64
"""How many of the latest ids the repetition penalty looks at."""

_NUCLEUS_PROBE: Final = 1024

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


def gumbel_noise(key: bytes, position: int, n: int) -> npt.NDArray[np.float64]:
    """Gumbel(0, 1) noise for ids ``0..n-1`` at generated position ``position``."""
    digest = hashlib.blake2b(b"meshcore/gumbel/v1" + key + position.to_bytes(8, "little"), digest_size=16).digest()
    raw = np.random.Philox(key=int.from_bytes(digest, "little")).random_raw(n)
    uniform = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    noise: npt.NDArray[np.float64] = -np.log(-np.log(uniform))
    return noise


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
    order = np.lexsort((candidates, -row[candidates].astype(np.float64)))
    return candidates[order[:k]]


def _softmax(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = np.exp(values - values.max())
    out: npt.NDArray[np.float64] = shifted / shifted.sum()
    return out


def _kept_ids(logits: Logits, settings: SamplerSettings) -> npt.NDArray[np.int64]:
    """The ids that survive top-k, top-p and min-p, in descending order of logit."""
    finite = np.isfinite(logits)
    n_finite = int(finite.sum())
    k = settings.top_k if 0 < settings.top_k < n_finite else n_finite
    probe = k if settings.top_p >= 1.0 else min(k, _NUCLEUS_PROBE)
    ids = top_indices(logits, probe)  # -inf ids come last, and k counts only finite ones
    total = _logsumexp(logits[finite])
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
    ids = _kept_ids(row, settings)
    noise = gumbel_noise(key, position, row.size)[ids]
    scores = row[ids].astype(np.float64) / settings.temperature + noise
    return int(ids[int(np.argmax(scores))])


def _logsumexp(row: npt.NDArray[np.float32]) -> float:
    top = float(row.max())
    return top + float(np.log(np.exp(row - np.float32(top)).sum(dtype=np.float64)))


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What proofs and ``logprobs`` need of one generated position.

    Attributes:
        token_id: the chosen id.
        logprob: its log-probability under the raw row.
        logsumexp: log-sum-exp of the raw row.
        top_ids: the ids of the K largest raw logits, largest first.
        top_logits: their raw logits.
        row_sha256: SHA-256 of the raw float32 row (little-endian).
    """

    token_id: int
    logprob: float
    logsumexp: float
    top_ids: tuple[int, ...]
    top_logits: tuple[float, ...]
    row_sha256: bytes

    def top_logprobs(self, n: int) -> list[tuple[int, float]]:
        """The ``n`` most likely ids and their log-probabilities."""
        return [(i, v - self.logsumexp) for i, v in zip(self.top_ids[:n], self.top_logits[:n], strict=True)]


def record_token(logits: Logits, token_id: int, *, top_k: int, hash_row: bool = True) -> TokenRecord:
    """The :class:`TokenRecord` of ``token_id`` chosen from the raw row ``logits``."""
    row = np.ascontiguousarray(logits, dtype="<f4")
    lse = _logsumexp(row)
    ids = top_indices(row, top_k)
    return TokenRecord(
        token_id=token_id,
        logprob=float(row[token_id]) - lse,
        logsumexp=lse,
        top_ids=tuple(int(i) for i in ids),
        top_logits=tuple(float(v) for v in row[ids]),
        row_sha256=hashlib.sha256(row.tobytes()).digest() if hash_row else b"",
    )
