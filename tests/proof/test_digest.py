"""The hidden-state digest: 258 bytes per chunk, zero on the same states, small on noise, large elsewhere."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meshcore_sdk.proof.digest import (
    DIGEST_BYTES,
    DIGEST_CHUNK,
    DIGEST_PRIME,
    DigestScore,
    compare_digest,
    digest_chunk,
    hidden_digest,
)
from meshcore_sdk.protocol.errors import ConfigError, ReceiptInvalid

Hidden = npt.NDArray[np.float32]
SEED = 20250611


def states(n_tokens: int = 32, n_embd: int = 2048, seed: int = SEED) -> Hidden:
    """Hidden states with a few large outlier features, as real models have."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n_tokens, n_embd)).astype(np.float32)
    hidden[:, rng.choice(n_embd, 6, replace=False)] *= 20.0
    return hidden


def test_a_digest_is_258_bytes_with_its_modulus_first() -> None:
    digest = digest_chunk(states())
    assert len(digest) == DIGEST_BYTES == 258
    assert 2**15 < int.from_bytes(digest[:2], "little") <= DIGEST_PRIME


def test_the_same_states_score_zero() -> None:
    hidden = states()
    assert compare_digest(digest_chunk(hidden), hidden) == DigestScore(0, 0.0, 0.0)


def test_tiny_noise_scores_small() -> None:
    hidden = states()
    noisy = hidden * (1 + 1e-3 * np.random.default_rng(SEED + 1).standard_normal(hidden.shape)).astype(np.float32)
    score = compare_digest(digest_chunk(hidden), noisy)
    assert score.exp_mismatches <= 4
    assert score.mantissa_mean <= 1.0 and score.mantissa_median <= 1.0


def test_other_states_score_large() -> None:
    score = compare_digest(digest_chunk(states()), states(seed=SEED + 2))
    assert score.exp_mismatches >= 100


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 300)), elements=st.floats(-1e4, 1e4, width=32)))
def test_any_states_score_zero_against_their_own_digest(hidden: Hidden) -> None:
    """Ties, repeats, zeros and chunks of fewer than 128 entries included."""
    assert compare_digest(digest_chunk(hidden), hidden) == DigestScore(0, 0.0, 0.0)


def test_states_are_cut_in_chunks_of_32_tokens() -> None:
    hidden = states(n_tokens=70, n_embd=256)
    digests = hidden_digest(hidden)
    assert len(digests) == 3 and DIGEST_CHUNK == 32
    assert digests[2] == digest_chunk(hidden[64:])
    assert compare_digest(digests[1], hidden[32:64]).exp_mismatches == 0


def test_bfloat16_bits_round_to_nearest_even() -> None:
    """1 + 2**-8 is halfway between two bfloat16 values and rounds to the even one, 1.0."""
    hidden = np.array([[1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.0]], dtype=np.float32)
    digest = digest_chunk(hidden)
    rounded = np.array([[1.0, 1.0, 1 + 2**-6, -2.0]], dtype=np.float32)
    assert compare_digest(digest, rounded) == DigestScore(0, 0.0, 0.0)
    assert compare_digest(digest, -rounded).exp_mismatches == 4


@pytest.mark.parametrize(
    "digest",
    [b"", bytes(DIGEST_BYTES - 1), bytes(DIGEST_BYTES), b"\xd9\xff" + b"\xff\xff" * 128],
    ids=["empty", "short", "modulus-zero", "coefficient-beyond-field"],
)
def test_malformed_digests_are_refused(digest: bytes) -> None:
    with pytest.raises(ReceiptInvalid):
        compare_digest(digest, states(n_tokens=1, n_embd=8))


def test_hidden_states_must_be_a_matrix() -> None:
    with pytest.raises(ConfigError):
        digest_chunk(np.zeros(8, dtype=np.float32))
