"""Receipts: canonical bytes, signatures, keys on disk, schema rules and the size of a body."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_sdk.proof.digest import DIGEST_BYTES
from meshcore_sdk.proof.receipt import (
    NodeKey,
    ReceiptBody,
    SamplerSpec,
    SignedReceipt,
    canonical_bytes,
    penalty_tail,
    prompt_sha256,
    receipt_from_json,
    verify_receipt,
)
from meshcore_sdk.proof.sampler import SamplerSettings
from meshcore_sdk.protocol.errors import ConfigError, ReceiptInvalid

KEY = NodeKey.generate()


def body(n_output: int = 64, /, **changes: Any) -> ReceiptBody:
    """A realistic body: ids from a 262k vocabulary, one decode step per token, a digest per 32 tokens."""
    fields: dict[str, Any] = {
        "job_id": "r-4f2a9c81d2",
        "node_id": KEY.node_fingerprint,
        "model_sha256": "8d654c4e6d6d78a61fa7b5fafdee5248b4c4f1efedc0f50d2ed3f33b9f9bc77c",
        "build_id": "llama.cpp b6000 cpu AVX2 flash_attn=0 type_k=f16 n_gpu_layers=0",
        "sampler": SamplerSpec.of(SamplerSettings(temperature=0.7, top_p=0.9), seed=7),
        "max_tokens": 256,
        "prompt_sha256": prompt_sha256(range(40)),
        "n_prompt": 40,
        "output_ids": tuple(200_000 + 977 * i % 62_000 for i in range(n_output)),
        "record_top_k": 20,
        "merkle_root": "ab" * 32,
        "schedule": ((40, 40, 0), *([(1, 3, 2)] * (n_output - 1))),
        "hidden_digest": tuple(base64.b64encode(bytes([i]) * DIGEST_BYTES).decode() for i in range(-(-n_output // 32))),
        "finish_reason": "length",
        "ttft_ms": 183.25,
        "tokens_per_s": 41.7,
        "signed_at": 1_760_000_000.125,
    }
    return ReceiptBody(**(fields | changes))


def test_canonical_bytes_are_sorted_compact_json() -> None:
    data = canonical_bytes(body())
    document = json.loads(data)
    assert data == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert data.startswith(b'{"build_id":"llama.cpp b6000 ') and b'"sampler":{"min_p":0.0,' in data


def test_a_body_for_64_tokens_is_about_2kb() -> None:
    size = len(canonical_bytes(body(64)))
    print(f"receipt body for 64 tokens: {size} bytes of JSON")
    assert size <= 2500


def test_a_signed_receipt_verifies_after_a_trip_through_json() -> None:
    signed = KEY.sign(body())
    wire = json.dumps(json.loads(signed.model_dump_json()), indent=2)  # spacing and order do not matter
    received = receipt_from_json(wire)
    assert verify_receipt(received, expected_public_key=KEY.public_key_b64) == body()
    assert verify_receipt(received, expected_public_key=None) == body()


@given(st.sampled_from(["job_id", "node_id", "finish_reason"]), st.text(min_size=1, max_size=20))
def test_any_change_to_the_body_breaks_the_signature(field: str, value: str) -> None:
    signed = KEY.sign(body())
    changed = signed.model_copy(update={"body": body(**{field: value})})
    if changed.body == signed.body:
        return
    with pytest.raises(ReceiptInvalid, match="does not verify"):
        verify_receipt(changed, expected_public_key=None)


def test_a_changed_output_breaks_the_signature() -> None:
    signed = KEY.sign(body())
    forged = SignedReceipt(
        body=body(output_ids=(1, *body().output_ids[1:])), public_key=signed.public_key, signature=signed.signature
    )
    with pytest.raises(ReceiptInvalid, match="does not verify"):
        verify_receipt(forged, expected_public_key=KEY.public_key_b64)


def test_another_nodes_key_is_refused() -> None:
    signed = NodeKey.generate().sign(body())
    assert verify_receipt(signed, expected_public_key=None) == body()
    with pytest.raises(ReceiptInvalid, match="not the node's"):
        verify_receipt(signed, expected_public_key=KEY.public_key_b64)


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [("!" * 44, None), (base64.b64encode(bytes(31)).decode() + "AAAA", None), (None, "!" * 88)],
    ids=["key-not-base64", "key-wrong-size", "signature-not-base64"],
)
def test_malformed_keys_and_signatures_are_refused(public_key: str | None, signature: str | None) -> None:
    signed = KEY.sign(body())
    bent = signed.model_copy(
        update={"public_key": public_key or signed.public_key, "signature": signature or signed.signature}
    )
    with pytest.raises(ReceiptInvalid):
        verify_receipt(bent, expected_public_key=None)


@pytest.mark.parametrize(
    "changes",
    [
        {"model_sha256": "AB" * 32},
        {"first_record": 65},
        {"max_tokens": 63},
        {"hidden_digest": ()},
        {"output_ids": (2**24,)},
        {"schedule": ((2, 3, 2),)},
        {"ttft_ms": float("nan")},
        {"prompt_tail": tuple(range(41))},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_schema_rules(changes: dict[str, Any]) -> None:
    signed = json.loads(KEY.sign(body()).model_dump_json())
    signed["body"] |= json.loads(json.dumps(changes, default=list))
    if changes.get("hidden_digest") == ():
        signed["body"]["hidden_digest"] = ["AAAA"]
    with pytest.raises(ReceiptInvalid, match="schema"):
        receipt_from_json(json.dumps(signed))


def test_unknown_fields_and_oversized_receipts_are_refused() -> None:
    signed = json.loads(KEY.sign(body()).model_dump_json())
    signed["body"]["extra"] = 1
    with pytest.raises(ReceiptInvalid, match="schema"):
        receipt_from_json(json.dumps(signed))
    with pytest.raises(ReceiptInvalid, match="at most"):
        receipt_from_json(b" " * (8 * 1024 * 1024 + 1))


def test_a_receipt_without_digests_is_allowed() -> None:
    assert body(hidden_digest=()).digests() == []
    assert [len(d) for d in body(70).digests()] == [DIGEST_BYTES] * 3
    assert body(70, first_record=6, hidden_digest=body(64).hidden_digest).n_records == 64


def test_prompt_hash_and_penalty_tail() -> None:
    assert prompt_sha256([1, 256]) == hashlib.sha256(b"\x01\0\0\0\0\x01\0\0").hexdigest()
    assert penalty_tail(list(range(100)), SamplerSettings(repeat_penalty=1.1)) == tuple(range(36, 100))
    assert penalty_tail(list(range(100)), SamplerSettings()) == ()


def test_keys_are_created_once_with_mode_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.pem"
    first = NodeKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert NodeKey.load_or_create(path).public_key_b64 == first.public_key_b64
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    assert len(first.node_fingerprint) == 16


def test_a_file_that_is_not_an_ed25519_key_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    path.write_text("not a key")
    with pytest.raises(ConfigError):
        NodeKey.load_or_create(path)
