"""Keyed sampling: golden values an auditor can recompute, the masks, the records."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meshcore_node.engine.sampling import (
    SamplerSettings,
    gumbel_noise,
    job_key,
    penalize,
    record_token,
    sample,
    top_indices,
)

ROWS = arrays(np.float32, st.integers(1, 300), elements=st.floats(-30, 30, width=32))


def test_job_key_and_noise_are_pinned() -> None:
    """Golden values: a change here breaks every audit of earlier answers."""
    assert job_key("r1", None).hex() == "7140269736c3ba6450509ac2da6c9f52134e7e0014fc2f8584eb2fc23d49960f"
    key = job_key("x", 7)
    assert key.hex() == "5eaf560a52e5db05d444bb67f211a72f89a78d341bdfed875fb6d40a558d3fe8"
    assert gumbel_noise(key, 3, 4).tolist() == pytest.approx(
        [-0.7406409389569515, -1.7721549488886872, 0.32373512832538925, 0.5715194370050717], abs=1e-15
    )


def test_noise_is_the_documented_construction() -> None:
    key = job_key("doc", None)
    digest = hashlib.blake2b(b"meshcore/gumbel/v1" + key + (5).to_bytes(8, "little"), digest_size=16).digest()
    raw = np.random.Philox(key=int.from_bytes(digest, "little")).random_raw(10)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) / 2**53
    assert np.array_equal(gumbel_noise(key, 5, 10), -np.log(-np.log(u)))


def test_the_seed_wins_over_the_request_id() -> None:
    assert job_key("a", 1) == job_key("b", 1) != job_key("a", None)


@given(ROWS, st.integers(1, 40))
def test_top_indices_is_exact(row: np.ndarray, k: int) -> None:  # type: ignore[type-arg]
    expected = np.lexsort((np.arange(row.size), -row.astype(np.float64)))[:k]
    assert top_indices(row, k).tolist() == expected.tolist()


@given(ROWS)
def test_temperature_zero_is_argmax(row: np.ndarray) -> None:  # type: ignore[type-arg]
    assert sample(row, SamplerSettings(temperature=0.0), key=b"k", position=0) == int(np.argmax(row))


@given(ROWS, st.floats(0.1, 2.0), st.integers(0, 1000))
def test_top_k_one_is_greedy_and_sampling_is_repeatable(row: np.ndarray, temperature: float, position: int) -> None:  # type: ignore[type-arg]
    greedy = SamplerSettings(temperature=temperature, top_k=1)
    assert sample(row, greedy, key=b"k", position=position) == int(np.argmax(row))
    free = SamplerSettings(temperature=temperature, top_p=0.9, min_p=0.05)
    first = sample(row, free, key=b"k", position=position)
    assert first == sample(row, free, key=b"k", position=position)
    probs = np.exp(row - row.max())
    assert probs[first] >= 0.05 * probs.max() - 1e-6


def test_keyed_gumbel_follows_the_softmax() -> None:
    row = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    settings = SamplerSettings(temperature=1.0)
    picks = np.bincount([sample(row, settings, key=b"k", position=t) for t in range(6000)], minlength=3)
    assert picks / picks.sum() == pytest.approx([0.5, 0.3, 0.2], abs=0.03)


def test_top_p_keeps_the_nucleus_only() -> None:
    row = np.log(np.array([0.6, 0.3, 0.1], dtype=np.float32))
    settings = SamplerSettings(temperature=1.0, top_p=0.8)
    assert {sample(row, settings, key=b"k", position=t) for t in range(300)} == {0, 1}


def test_grammar_masked_ids_are_never_chosen() -> None:
    row = np.array([5.0, -np.inf, 4.0, -np.inf], dtype=np.float32)
    picks = {sample(row, SamplerSettings(temperature=2.0), key=b"k", position=t) for t in range(200)}
    assert picks == {0, 2}


def test_repetition_penalty_follows_llama_cpp() -> None:
    row = np.array([2.0, -2.0, 1.0], dtype=np.float32)
    assert penalize(row, [0, 1, 1], 2.0).tolist() == [1.0, -4.0, 1.0]
    assert penalize(row, [0], 1.0) is row


def test_record_holds_logprob_top_k_and_row_hash() -> None:
    row = np.array([1.0, 3.0, 2.0, 0.0], dtype=np.float32)
    rec = record_token(row, 2, top_k=2)
    lse = float(np.log(np.exp(row.astype(np.float64)).sum()))
    assert rec.logsumexp == pytest.approx(lse)
    assert rec.logprob == pytest.approx(2.0 - lse)
    assert rec.top_ids == (1, 2)
    assert rec.top_logprobs(1) == [(1, pytest.approx(3.0 - lse))]
    assert rec.row_sha256 == hashlib.sha256(row.astype("<f4").tobytes()).digest()
