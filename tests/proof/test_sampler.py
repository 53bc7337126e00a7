"""Keyed sampling: golden values an auditor can recompute, noise at a few ids, the masks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meshcore_sdk.proof.sampler import (
    SamplerSettings,
    gumbel_at,
    gumbel_noise,
    job_key,
    kept_ids,
    penalize,
    philox_raw_at,
    sample,
    top_indices,
)

Row = npt.NDArray[np.float32]
ROWS = arrays(np.float32, st.integers(1, 300), elements=st.floats(-30, 30, width=32))
GOLDEN = json.loads((Path(__file__).parent / "golden_sampler.json").read_text())
VOCAB = 262144
KEYS = st.binary(min_size=32, max_size=32)


def philox_key(key: bytes, position: int) -> int:
    """The documented Philox key of (job key, position), written out independently."""
    digest = hashlib.blake2b(b"meshcore/gumbel/v1" + key + position.to_bytes(8, "little"), digest_size=16).digest()
    return int.from_bytes(digest, "little")


def golden_row(case: dict[str, Any]) -> Row:
    """A case's logit row: listed, or ``((i * mult) % mod) / 64 - 8`` over a full vocabulary."""
    if "logits" in case:
        return np.asarray(case["logits"], dtype=np.float32)
    n, mult, mod = (int(case["affine_row"][name]) for name in ("n", "mult", "mod"))
    i = np.arange(n, dtype=np.int64)
    row: Row = (((i * mult) % mod) / 64.0 - 8.0).astype(np.float32)
    return row


def test_job_key_and_noise_are_pinned() -> None:
    """Golden values: a change here breaks every audit of earlier answers."""
    assert job_key("r1", None).hex() == "7140269736c3ba6450509ac2da6c9f52134e7e0014fc2f8584eb2fc23d49960f"
    key = job_key("x", 7)
    assert key.hex() == "5eaf560a52e5db05d444bb67f211a72f89a78d341bdfed875fb6d40a558d3fe8"
    assert gumbel_noise(key, 3, 4).tolist() == pytest.approx(
        [-0.7406409389569515, -1.7721549488886872, 0.32373512832538925, 0.5715194370050717], abs=1e-15
    )


@pytest.mark.parametrize("case", GOLDEN["noise"], ids=lambda case: f"pos{case['position']}")
def test_noise_matches_the_golden_vectors_bit_for_bit(case: dict[str, Any]) -> None:
    """numpy's Philox stream, our block arithmetic and the log-log transform are all pinned exactly."""
    key, position, ids = bytes.fromhex(case["key"]), case["position"], case["ids"]
    raw = [int(word, 16) for word in case["raw"]]
    noise = [float.fromhex(value) for value in case["noise"]]
    assert np.random.Philox(key=philox_key(key, position)).random_raw(max(ids) + 1)[ids].tolist() == raw
    assert philox_raw_at(key, position, ids).tolist() == raw
    assert gumbel_at(key, position, ids).tolist() == noise
    assert gumbel_noise(key, position, max(ids) + 1)[ids].tolist() == noise


@pytest.mark.parametrize("case", GOLDEN["sample"], ids=lambda case: f"{case['token']}")
def test_sample_matches_the_golden_vectors(case: dict[str, Any]) -> None:
    settings = SamplerSettings(**case["settings"])
    token = sample(
        golden_row(case), settings, key=bytes.fromhex(case["key"]), position=case["position"], history=case["history"]
    )
    assert token == case["token"]


def test_noise_is_the_documented_construction() -> None:
    key = job_key("doc", None)
    raw = np.random.Philox(key=philox_key(key, 5)).random_raw(10)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) / 2**53
    assert np.array_equal(gumbel_noise(key, 5, 10), -np.log(-np.log(u)))


@pytest.mark.parametrize("count", [1, 7, 128, 129, 5000])
def test_raw_words_at_the_end_of_a_large_vocabulary_are_random_raws(count: int) -> None:
    """Output ``i`` is word ``i % 4`` of Philox block ``i // 4`` (counter ``i // 4 + 1``), on both paths."""
    key = job_key("vocab-end", 3)
    full = np.random.Philox(key=philox_key(key, 9)).random_raw(VOCAB)
    ids = np.concatenate([np.arange(VOCAB - 6, VOCAB), np.arange(6), [VOCAB // 2, VOCAB - 1]])
    ids = np.resize(ids[::-1], count)
    assert np.array_equal(philox_raw_at(key, 9, ids), full[ids])
    assert np.array_equal(gumbel_at(key, 9, ids), gumbel_noise(key, 9, VOCAB)[ids])


@given(KEYS, st.integers(0, 2**63 - 1), st.lists(st.integers(0, 4095), max_size=200))
def test_noise_at_ids_is_the_full_draw_at_those_ids(key: bytes, position: int, ids: list[int]) -> None:
    expected = gumbel_noise(key, position, max(ids, default=-1) + 1)[ids]
    assert np.array_equal(gumbel_at(key, position, ids), expected)


def test_negative_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="not negative"):
        gumbel_at(b"k", 0, [3, -1])


def test_the_seed_wins_over_the_request_id() -> None:
    assert job_key("a", 1) == job_key("b", 1) != job_key("a", None)


@given(ROWS, st.integers(1, 40))
def test_top_indices_is_exact(row: Row, k: int) -> None:
    expected = np.lexsort((np.arange(row.size), -row.astype(np.float64)))[:k]
    assert top_indices(row, k).tolist() == expected.tolist()


@given(ROWS)
def test_temperature_zero_is_argmax(row: Row) -> None:
    assert sample(row, SamplerSettings(temperature=0.0), key=b"k", position=0) == int(np.argmax(row))


@given(ROWS, st.floats(0.1, 2.0), st.integers(0, 1000))
def test_top_k_one_is_greedy_and_sampling_is_repeatable(row: Row, temperature: float, position: int) -> None:
    greedy = SamplerSettings(temperature=temperature, top_k=1)
    assert sample(row, greedy, key=b"k", position=position) == int(np.argmax(row))
    free = SamplerSettings(temperature=temperature, top_p=0.9, min_p=0.05)
    first = sample(row, free, key=b"k", position=position)
    assert first == sample(row, free, key=b"k", position=position)
    probs = np.exp(row - row.max())
    assert probs[first] >= 0.05 * probs.max() - 1e-6


@given(ROWS, st.integers(0, 50), st.floats(0.05, 1.0), st.floats(0.0, 0.5))
def test_kept_ids_are_a_descending_prefix(row: Row, top_k: int, top_p: float, min_p: float) -> None:
    """The kept ids are the first ones of the descending order, and the most likely id always survives."""
    settings = SamplerSettings(temperature=1.0, top_k=top_k, top_p=top_p, min_p=min_p)
    kept = kept_ids(row, settings)
    assert kept.tolist() == top_indices(row, kept.size).tolist()
    assert kept.size >= 1 and (top_k == 0 or kept.size <= top_k)


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
