"""The proof core is pure and its public names are pinned (STYLE.md rules 1 and 11).

It takes ``now``, secrets and ids as arguments; it imports no I/O library, no
clock and no randomness of its own.  numpy, cryptography and pydantic are allowed.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import meshcore_sdk.proof

PROOF_DIR = Path(meshcore_sdk.proof.__file__).parent
CORE = ("sampler", "records", "merkle", "receipt", "digest", "consistency", "lottery", "stats")
ALLOWED_ROOTS = {"numpy", "cryptography", "pydantic", "meshcore_sdk"}
IMPURE_STDLIB = {"time", "random", "uuid", "socket", "asyncio", "secrets", "threading", "subprocess"}
IO_LIBRARIES = ("asyncio", "httpx", "websockets", "llama_cpp", "aiortc", "fastapi", "uvicorn", "anyio")

API = {
    "sampler": [
        "PENALTY_WINDOW", "Logits", "SamplerSettings", "gumbel_at", "gumbel_noise", "job_key", "kept_ids",
        "logsumexp", "penalize", "philox_raw_at", "sample", "top_indices",
    ],
    "records": [
        "ID_LIMIT", "ROW_HASH_BYTES", "ROW_HASH_STRIDE", "TokenRecord", "committed", "decode_record", "encode_record",
        "leaf_hash", "record_size", "record_token", "row_hash",
    ],
    "merkle": ["hash_leaf", "inclusion_proof", "inclusion_proofs", "merkle_root", "verify_inclusion"],
    "receipt": [
        "MAX_OUTPUT_IDS", "MAX_RECEIPT_BYTES", "RECEIPT_SCHEME", "NodeKey", "ReceiptBody", "SamplerSpec",
        "SignedReceipt", "canonical_bytes", "penalty_tail", "prompt_sha256", "receipt_from_json", "verify_receipt",
    ],
    "digest": [
        "DIGEST_BYTES", "DIGEST_CHUNK", "DIGEST_K", "DIGEST_PRIME", "DigestScore", "compare_digest", "digest_chunk",
        "hidden_digest",
    ],
    "consistency": ["ConsistencyReport", "TerminationReport", "check_consistency", "check_termination"],
    "lottery": ["EpochClock", "audit_draw", "commitment", "epoch_secret", "selected"],
    "stats": [
        "SprtDecision", "binomial_tail", "clopper_pearson", "sprt_llr", "sprt_thresholds", "upper_bound", "wald_sprt",
    ],
}  # fmt: skip


def imported_roots(module: str) -> set[str]:
    tree = ast.parse((PROOF_DIR / f"{module}.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_clock_randomness_or_io(module: str) -> None:
    roots = imported_roots(module)
    assert not roots & IMPURE_STDLIB
    third_party = {root for root in roots if root not in sys.stdlib_module_names and root != "__future__"}
    assert third_party <= ALLOWED_ROOTS


def test_importing_the_core_loads_no_io_library() -> None:
    probe = (
        "import json, sys\n"
        + "".join(f"import meshcore_sdk.proof.{module}\n" for module in CORE)
        + f"print(json.dumps(sorted(name for name in {IO_LIBRARIES!r} if name in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=False, timeout=120
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == []


def test_the_sdk_root_does_not_import_the_proof_package() -> None:
    """numpy is not a base dependency of the SDK."""
    probe = "import sys, meshcore_sdk; print('numpy' in sys.modules, 'meshcore_sdk.proof' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("module", CORE)
def test_public_names_are_pinned(module: str) -> None:
    assert importlib.import_module(f"meshcore_sdk.proof.{module}").__all__ == API[module]
