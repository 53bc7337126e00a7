"""Receipts: what a worker signs about a job when its stream ends, and how anyone checks the signature.

Theory of operation (research §6.3; ``docs/concepts/audits.md``)
-------------------------------------------------------------------
A :class:`ReceiptBody` binds one generation to one node: the job, the model
file and build, the sampler, the prompt (by hash, plus the tail the
repetition penalty reads), every generated id, the Merkle root over the
per-token records (``records.py``, ``merkle.py``), the eval schedule that
Tier-A replays, the hidden-state digests (``digest.py``) and the timings.

The node signs it with its Ed25519 key (:class:`NodeKey`) and sends a
:class:`SignedReceipt`.  The signature covers the **canonical bytes** of the
body (:func:`canonical_bytes`): the body as JSON (``model_dump(mode="json")``)
with keys sorted at every level, no whitespace (``","`` and ``":"``
separators), ASCII only (``\\uXXXX`` escapes), floats as Python writes them
(shortest round-trip repr), no NaN or infinity.  A verifier re-derives those
bytes from the parsed body, so how the JSON travelled (spacing, key order,
``1`` for ``1.0``) does not matter.

A receipt must be signed before the audit lottery of its epoch is revealed
(``lottery.py``); :func:`verify_receipt` checks the signature and the key,
the router checks the timing.

Sizes: a body for 64 generated tokens is about 2 KB of JSON
(``tests/proof/test_receipt.py`` pins a bound).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meshcore_sdk.proof.digest import DIGEST_BYTES, DIGEST_CHUNK
from meshcore_sdk.proof.sampler import PENALTY_WINDOW, SamplerSettings
from meshcore_sdk.protocol.errors import ConfigError, ReceiptInvalid

__all__ = [
    "MAX_OUTPUT_IDS",
    "MAX_RECEIPT_BYTES",
    "RECEIPT_SCHEME",
    "NodeKey",
    "ReceiptBody",
    "SamplerSpec",
    "SignedReceipt",
    "canonical_bytes",
    "penalty_tail",
    "prompt_sha256",
    "receipt_from_json",
    "verify_receipt",
]

RECEIPT_SCHEME: Final = "meshcore/receipt/v1"

MAX_OUTPUT_IDS: Final = 131_072
"""The most generated ids a receipt may list (the protocol's ``max_tokens`` cap)."""

MAX_RECEIPT_BYTES: Final = 8 * 1024 * 1024
"""Receipts larger than this are refused before parsing."""

_HEX64 = r"^[0-9a-f]{64}$"
_DIGEST_B64_CHARS: Final = 4 * ((DIGEST_BYTES + 2) // 3)

TokenId = Annotated[int, Field(ge=0, lt=2**24)]
Step = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)], Annotated[int, Field(ge=0)]]


class SamplerSpec(BaseModel):
    """The sampler a job asked for: :class:`SamplerSettings` plus the seed (None: keyed by the job id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(ge=0.0, allow_inf_nan=False)
    top_k: int = Field(ge=0)
    top_p: float = Field(gt=0.0, le=1.0)
    min_p: float = Field(ge=0.0, le=1.0)
    repeat_penalty: float = Field(gt=0.0, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, lt=2**63)

    @classmethod
    def of(cls, settings: SamplerSettings, seed: int | None) -> SamplerSpec:
        """The spec of a request's settings and seed."""
        return cls(
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            min_p=settings.min_p,
            repeat_penalty=settings.repeat_penalty,
            seed=seed,
        )

    def settings(self) -> SamplerSettings:
        """The settings the sampler runs with."""
        return SamplerSettings(self.temperature, self.top_k, self.top_p, self.min_p, self.repeat_penalty)


class ReceiptBody(BaseModel):
    """What a worker signs about one job (see the module docstring for the signed bytes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: Literal["meshcore/receipt/v1"] = RECEIPT_SCHEME
    job_id: str = Field(min_length=1, max_length=256)
    node_id: str = Field(min_length=1, max_length=256)
    model_sha256: str = Field(pattern=_HEX64, description="SHA-256 of the GGUF file, lowercase hex")
    build_id: str = Field(max_length=4096, description="llama.cpp commit, backend, system info, context flags")
    sampler: SamplerSpec
    max_tokens: int = Field(ge=1, le=MAX_OUTPUT_IDS)
    prompt_sha256: str = Field(pattern=_HEX64, description="SHA-256 of the prompt ids as u32 LE")
    n_prompt: int = Field(ge=0)
    prompt_tail: tuple[TokenId, ...] = Field(
        default=(), max_length=PENALTY_WINDOW, description="the last prompt ids, when the repetition penalty is on"
    )
    output_ids: tuple[TokenId, ...] = Field(max_length=MAX_OUTPUT_IDS, description="generated positions 0..n-1")
    first_record: int = Field(default=0, ge=0, description="records cover positions first_record..n-1")
    record_top_k: int = Field(ge=0, le=65535)
    merkle_root: str = Field(pattern=_HEX64, description="RFC 6962 root over the encoded records, hex")
    schedule: tuple[Step, ...] = Field(
        default=(), max_length=4 * MAX_OUTPUT_IDS, description="per decode: (own tokens, all tokens, offset)"
    )
    hidden_digest: tuple[Annotated[str, Field(min_length=_DIGEST_B64_CHARS, max_length=_DIGEST_B64_CHARS)], ...] = ()
    constrained: bool = Field(default=False, description="a grammar (response_format) masked the choices")
    finish_reason: str = Field(min_length=1, max_length=32)
    ttft_ms: float = Field(ge=0.0, allow_inf_nan=False)
    tokens_per_s: float = Field(ge=0.0, allow_inf_nan=False)
    signed_at: float = Field(ge=0.0, allow_inf_nan=False, description="unix seconds")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        n = len(self.output_ids)
        if self.first_record > n:
            raise ValueError(f"first_record {self.first_record} is past the {n} generated ids")
        if n > self.max_tokens:
            raise ValueError(f"{n} generated ids exceed max_tokens {self.max_tokens}")
        if self.n_prompt < len(self.prompt_tail):
            raise ValueError("the prompt tail is longer than the prompt")
        chunks = -(-(n - self.first_record) // DIGEST_CHUNK)
        if self.hidden_digest and len(self.hidden_digest) != chunks:
            raise ValueError(f"{len(self.hidden_digest)} digests for {chunks} chunks of recorded positions")
        if any(mine + offset > total for mine, total, offset in self.schedule):
            raise ValueError("a schedule step holds more of this sequence's tokens than tokens")
        return self

    @property
    def n_records(self) -> int:
        """How many records the Merkle tree holds: one per position ``first_record..n-1``."""
        return len(self.output_ids) - self.first_record

    def digests(self) -> list[bytes]:
        """The hidden-state digests, decoded (``digest.compare_digest`` takes them)."""
        return [base64.b64decode(item) for item in self.hidden_digest]


class SignedReceipt(BaseModel):
    """A receipt body, the node's raw Ed25519 public key and its signature over the canonical bytes (base64)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    body: ReceiptBody
    public_key: str = Field(min_length=44, max_length=44)
    signature: str = Field(min_length=88, max_length=88)


def canonical_bytes(body: ReceiptBody) -> bytes:
    """The signed bytes: sorted keys, no whitespace, ASCII, no NaN (see the module docstring)."""
    document = body.model_dump(mode="json")
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def prompt_sha256(prompt_ids: Sequence[int]) -> str:
    """SHA-256 (hex) of the prompt ids as unsigned 32-bit little-endian integers."""
    return hashlib.sha256(b"".join(i.to_bytes(4, "little") for i in prompt_ids)).hexdigest()


def penalty_tail(prompt_ids: Sequence[int], settings: SamplerSettings) -> tuple[int, ...]:
    """The ``prompt_tail`` of a receipt: the last :data:`PENALTY_WINDOW` ids if the penalty is on, else none."""
    if settings.repeat_penalty == 1.0:
        return ()
    return tuple(prompt_ids[-PENALTY_WINDOW:])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, size: int, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptInvalid(f"the {what} is not base64") from exc
    if len(data) != size:
        raise ReceiptInvalid(f"the {what} is {len(data)} bytes, not {size}")
    return data


class NodeKey:
    """A node's Ed25519 signing key: its identity in receipts."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._public_raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh key (from the operating system's randomness)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> NodeKey:
        """The key in the PEM file ``path``; a new one, written there with mode 0600, if there is none.

        Creation is atomic and never overwrites: the key goes to a private
        temporary file that is then hard-linked to ``path``; if another process
        won the race, its key is the one loaded.
        """
        if not path.exists():
            cls._create(path)
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} does not hold an unencrypted PEM private key") from exc
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds a key that is not Ed25519")
        return cls(loaded)

    @staticmethod
    def _create(path: Path) -> None:
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    @property
    def public_key_b64(self) -> str:
        """The raw 32-byte public key, base64."""
        return _b64(self._public_raw)

    @property
    def node_fingerprint(self) -> str:
        """The first 16 hex characters of SHA-256 of the raw public key."""
        return hashlib.sha256(self._public_raw).hexdigest()[:16]

    def sign(self, body: ReceiptBody) -> SignedReceipt:
        """The receipt of ``body``, signed over its canonical bytes."""
        signature = self._private.sign(canonical_bytes(body))
        return SignedReceipt(body=body, public_key=self.public_key_b64, signature=_b64(signature))


def receipt_from_json(data: str | bytes) -> SignedReceipt:
    """Parse a signed receipt, refusing oversized or malformed ones with :class:`ReceiptInvalid`."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise ReceiptInvalid(f"a receipt is at most {MAX_RECEIPT_BYTES} bytes, got {len(data)}")
    try:
        return SignedReceipt.model_validate_json(data)
    except ValidationError as exc:
        raise ReceiptInvalid(f"the receipt does not match its schema: {exc.error_count()} errors") from exc


def verify_receipt(signed: SignedReceipt, *, expected_public_key: str | None) -> ReceiptBody:
    """The body of ``signed`` if its signature verifies under its key, and that key is the expected one.

    Args:
        signed: the receipt as received.
        expected_public_key: the base64 raw key the node registered (None: accept the
            receipt's own key, for checks that only need integrity).

    Raises:
        ReceiptInvalid: the key or signature is malformed, the key is not the
            expected one, or the signature does not verify.
    """
    raw_key = _unb64(signed.public_key, 32, "public key")
    if expected_public_key is not None and raw_key != _unb64(expected_public_key, 32, "expected public key"):
        raise ReceiptInvalid("the receipt is signed by a key that is not the node's")
    signature = _unb64(signed.signature, 64, "signature")
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, canonical_bytes(signed.body))
    except InvalidSignature as exc:
        raise ReceiptInvalid("the receipt's signature does not verify") from exc
    return signed.body
