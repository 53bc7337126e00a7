"""The audit driver with fake node links: free checks, the lottery, audits, consequences and restore.

Receipts are real (signed with a real node key over real records of synthetic logit rows); the
links are in-memory fakes that reveal from a real :class:`CommitmentStore` and answer audits with
the scores a test chooses.  No sleeps: the service's queue is drained with ``idle``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

import numpy as np
import pytest

from meshcore_node.commitments import CommitmentStore
from meshcore_router.audits.calibration import CalibrationTable
from meshcore_router.audits.config import AuditConfig
from meshcore_router.audits.ledger import EntryKind, Ledger
from meshcore_router.audits.reputation import ReputationBook, ReputationConfig, Standing
from meshcore_router.audits.service import AuditService
from meshcore_sdk.proof.merkle import merkle_root
from meshcore_sdk.proof.receipt import NodeKey, ReceiptBody, SamplerSpec, penalty_tail, prompt_sha256
from meshcore_sdk.proof.records import committed, encode_record, record_token
from meshcore_sdk.proof.report import AuditScores, AuditTier, ChunkScores
from meshcore_sdk.proof.sampler import SamplerSettings, job_key, sample
from meshcore_sdk.protocol import (
    AuditedFrame,
    AuditFrame,
    GenerateFrame,
    ReceiptFrame,
    RevealedFrame,
    RevealFrame,
    SamplingParams,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio]

MODEL = "ab" * 32
WORKER, AUDITOR = "worker", "auditor"
VOCAB = 512
PROMPT = [1, 5, 9, 14]


@dataclass
class FakeLink:
    """A node's link as the service uses it: reveals from a commitment store, audits from a script."""

    store: CommitmentStore = field(default_factory=lambda: CommitmentStore(audit_window_s=60, max_bytes=10**8))
    scores: AuditScores | None = None
    prompt_sha256: str = prompt_sha256(PROMPT)
    audits: list[AuditFrame] = field(default_factory=list)

    async def reveal(self, frame: RevealFrame, *, timeout_s: float) -> RevealedFrame:
        return self.store.reveal(frame.request_id, frame.positions, now=0.0)

    async def audit(self, frame: AuditFrame, *, timeout_s: float) -> AuditedFrame:
        self.audits.append(frame)
        assert self.scores is not None
        return AuditedFrame(
            audit_id=frame.audit_id, prompt_sha256=self.prompt_sha256, scores=self.scores.model_dump(mode="json")
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def honest_scores(n: int = 16) -> AuditScores:
    chunk = ChunkScores(
        start=0, n=n, s_lp=0.01, kl=1e-4, tok_disagree=0.0, margin_min=0.5, hid_exp=0, hid_mantissa_mean=0.1
    )
    return AuditScores(tier=AuditTier.PREFILL, positions=n, chunks=(chunk,), s_lp=0.01, kl=1e-4)


def cheat_scores(n: int = 16) -> AuditScores:
    chunk = ChunkScores(
        start=0, n=n, s_lp=3.0, kl=0.9, tok_disagree=0.4, margin_min=-8.0, hid_exp=90, hid_mantissa_mean=40
    )
    return AuditScores(tier=AuditTier.PREFILL, positions=n, chunks=(chunk,), s_lp=3.0, kl=0.9, tok_disagree=0.4)


class Mesh:
    """The service with one worker and one trusted auditor, both fakes."""

    def __init__(self, ledger_path: Path | str = ":memory:", *, audit_rate: float = 1.0) -> None:
        self.clock = Clock()
        self.links = {WORKER: FakeLink(), AUDITOR: FakeLink(scores=honest_scores())}
        self.key = NodeKey.generate()
        self.rng = np.random.default_rng(7)
        self.jobs = 0
        config = AuditConfig(ledger_path=str(ledger_path), audit_rate=audit_rate, trusted_auditors=(AUDITOR,))
        self.service = AuditService(
            config,
            ledger=Ledger.open(ledger_path),
            book=ReputationBook(ReputationConfig(probation_jobs=3)),
            calibration=CalibrationTable.load(),
            link_of=self.links.get,  # type: ignore[arg-type]
            ready_nodes=self.ready,
            weight_format_of=lambda sha: "Q4_K_M",
            wall_clock=self.clock,
            rng=Random(1),
        )
        self.service.node_registered(WORKER, self.key.public_key_b64, "class=cpu-x86-avx2")
        self.service.node_registered(AUDITOR, NodeKey.generate().public_key_b64, "class=cpu-x86-avx2")

    def ready(self) -> Iterable[tuple[str, frozenset[str]]]:
        return [(node, frozenset({MODEL})) for node in self.links]

    def job(self, *, forge: bool = False, signer: NodeKey | None = None, model: str = MODEL) -> ReceiptFrame:
        """Dispatch a job to the worker and make its receipt (``forge``: sampled from other logits)."""
        self.jobs += 1
        job_id = f"r-{self.jobs:04d}"
        settings = SamplerSettings(temperature=0.8)
        frame = GenerateFrame(
            request_id=job_id,
            model="sha256:" + MODEL,
            prompt="x",
            params=SamplingParams(temperature=0.8, max_tokens=16),
        )
        self.service.dispatched(WORKER, frame)
        key = job_key(job_id, None)
        output, records = [], []
        for t in range(16):
            row = self.rng.normal(0, 3, VOCAB).astype(np.float32)
            chooser = self.rng.normal(0, 3, VOCAB).astype(np.float32) if forge else row
            token = sample(chooser, settings, key=key, position=t)
            records.append(encode_record(committed(record_token(row, token, top_k=20))))
            output.append(token)
        body = ReceiptBody(
            job_id=job_id,
            node_id=WORKER,
            model_sha256=model,
            build_id="class=cpu-x86-avx2",
            sampler=SamplerSpec.of(settings, None),
            max_tokens=16,
            prompt_sha256=prompt_sha256(PROMPT),
            n_prompt=len(PROMPT),
            prompt_tail=penalty_tail(PROMPT, settings),
            output_ids=tuple(output),
            record_top_k=20,
            merkle_root=merkle_root(records).hex(),
            finish_reason="length",
            ttft_ms=1.0,
            tokens_per_s=10.0,
            signed_at=self.clock.now,
        )
        self.links[WORKER].store.keep(job_id, 0, records, now=0.0)
        signed = (signer or self.key).sign(body)
        return ReceiptFrame(request_id=job_id, receipt=signed.model_dump(mode="json"))

    async def settle(self, *frames: ReceiptFrame) -> None:
        for frame in frames:
            self.service.receipt_arrived(WORKER, frame)
        await self.service.idle.wait()

    def kinds(self, node: str = WORKER) -> list[str]:
        return [entry.kind.value for entry in self.service.ledger.entries() if entry.node_id == node]


@pytest.fixture
async def mesh() -> Mesh:
    return Mesh()


async def run(mesh: Mesh, *frames: ReceiptFrame) -> None:
    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(mesh.service.run())
        await mesh.settle(*frames)
        runner.cancel()


async def test_an_honest_receipt_is_credited_and_audited_clean(mesh: Mesh) -> None:
    await run(mesh, mesh.job())

    assert mesh.kinds() == ["receipt", "standing", "credit_escrow", "audit"]
    (audit,) = mesh.links[AUDITOR].audits
    assert "node_id" not in audit.job, "the audit is blind"
    assert audit.tier == "B"
    assert mesh.service.ledger.balance(WORKER).escrow_micro == 16
    assert mesh.service.book.standing(WORKER) is Standing.PROBATION


async def test_forged_commitments_fail_the_free_check_without_an_auditor(mesh: Mesh) -> None:
    await run(mesh, mesh.job(forge=True))

    entries = [entry for entry in mesh.service.ledger.entries() if entry.kind is EntryKind.AUDIT]
    assert [entry.payload["verdict"]["outcome"] for entry in entries] == ["flag"]
    assert "sampler check" in entries[0].payload["verdict"]["reasons"][0]
    assert mesh.links[AUDITOR].audits == []
    assert mesh.service.book.standing(WORKER) is Standing.ESCALATED
    assert mesh.service.routing_weight(WORKER) < 0.25


@pytest.mark.parametrize(
    ("tamper", "why"),
    [("signer", "signature"), ("model", "model"), ("unknown job", "no job")],
)
async def test_bad_receipts_earn_nothing(mesh: Mesh, tamper: str, why: str) -> None:
    if tamper == "signer":
        frame = mesh.job(signer=NodeKey.generate())
    elif tamper == "model":
        frame = mesh.job(model="cd" * 32)
    else:
        frame = mesh.job().model_copy(update={"request_id": "r-unknown"})

    await run(mesh, frame)

    assert "credit_escrow" not in mesh.kinds()
    assert mesh.service.ledger.balance(WORKER).escrow_micro == 0


async def test_a_receipt_after_its_epoch_is_revealed_is_late(mesh: Mesh) -> None:
    frame = mesh.job()
    mesh.clock.now += 2 * 3600 + 120

    await run(mesh, frame)

    (receipt,) = [entry for entry in mesh.service.ledger.entries() if entry.kind is EntryKind.RECEIPT]
    assert receipt.payload["accepted"] is False and receipt.payload["code"] == "receipt_late"


async def test_a_cheater_flagged_again_and_again_is_slashed_and_routed_around(mesh: Mesh) -> None:
    mesh.links[AUDITOR].scores = cheat_scores()

    await run(mesh, *(mesh.job() for _ in range(6)))

    assert mesh.service.book.standing(WORKER) is Standing.SLASHED
    assert mesh.service.routing_weight(WORKER) == 0.0
    assert {"slash", "freeze"} <= set(mesh.kinds())
    assert mesh.service.ledger.balance(WORKER).frozen_micro > 0
    assert mesh.service.ledger.verify() > 0


async def test_a_wrong_prompt_hash_is_a_flag(mesh: Mesh) -> None:
    mesh.links[AUDITOR].prompt_sha256 = prompt_sha256([1, 2, 3])

    await run(mesh, mesh.job())

    (audit,) = [entry for entry in mesh.service.ledger.entries() if entry.kind is EntryKind.AUDIT]
    assert audit.payload["verdict"]["outcome"] == "flag"


async def test_a_restarted_service_folds_the_ledger_back(tmp_path: Path) -> None:
    """Standings come back from the ledger; re-applied actions are not written twice."""
    first = Mesh(tmp_path / "ledger.sqlite")
    first.links[AUDITOR].scores = cheat_scores()
    await run(first, *(first.job() for _ in range(6)))
    written = first.service.ledger.verify()
    first.service.ledger.close()

    second = Mesh(tmp_path / "ledger.sqlite")
    replayed = await second.service.restore()

    assert replayed > 0
    assert second.service.book.standing(WORKER) is Standing.SLASHED
    assert second.service.ledger.verify() == written
    assert [e.hash for e in second.service.ledger.entries()][-1] == [e.hash for e in first_entries(tmp_path)][-1]


def first_entries(tmp_path: Path) -> list[object]:
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        return list(ledger.entries())
