"""Receipts and audits in the engine, on the real model: what a worker commits to, and an auditor's check of it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.node.test_batching import Outbox, generate, make_engine, step_until_tokens

from meshcore_node.engine.child import Engine
from meshcore_node.engine.ipc import EngineReceipt
from meshcore_sdk.proof.consistency import check_consistency
from meshcore_sdk.proof.merkle import merkle_root
from meshcore_sdk.proof.receipt import ReceiptBody
from meshcore_sdk.proof.records import decode_record
from meshcore_sdk.proof.report import AuditScores
from meshcore_sdk.proof.sampler import job_key
from meshcore_sdk.protocol import AuditedFrame, AuditFrame, ErrorFrame, PauseFrame, ResumeFrame

pytestmark = [pytest.mark.model, pytest.mark.timeout(180)]

PROMPT = "Write one sentence about the sea."


@pytest.fixture(scope="module")
def engines(model_path: Path) -> Iterator[tuple[tuple[Engine, Outbox], tuple[Engine, Outbox]]]:
    yield (
        make_engine(model_path, n_ctx=1024, max_sequences=4, n_batch=256),
        make_engine(model_path, n_ctx=1024, max_sequences=4, n_batch=256),
    )


def receipt_of(outbox: Outbox, request_id: str) -> tuple[ReceiptBody, list[str]]:
    (receipt,) = [m for m in outbox.of(request_id) if isinstance(m, EngineReceipt)]
    body = ReceiptBody.model_validate({**receipt.body, "node_id": "worker", "signed_at": 0.0})
    return body, receipt.records


def test_the_receipt_commits_to_what_was_sent(engines: tuple[tuple[Engine, Outbox], ...]) -> None:
    """Output ids are the tokens sent; the records hash to the root; each token is its keyed choice."""
    (engine, outbox), _ = engines
    engine.submit(generate("sea", PROMPT, temperature=0.8, max_tokens=40, logprobs=True, top_logprobs=2))
    engine.pump()

    body, encoded = receipt_of(outbox, "sea")
    leaves = [base64.b64decode(item) for item in encoded]
    records = {position: decode_record(leaf) for position, leaf in enumerate(leaves)}
    sent = [token.token_id for token in outbox.tokens("sea")]
    assert list(body.output_ids[: len(sent)]) == sent
    assert body.merkle_root == merkle_root(leaves).hex()
    assert outbox.done("sea").proof == {"scheme": "meshcore/receipt/v1", "merkle_root": body.merkle_root}
    assert len(body.hidden_digest) == -(-len(leaves) // 32)
    assert body.schedule and body.schedule[0][0] == body.n_prompt
    assert check_consistency(body, records, job_key("sea", None)).ok
    assert [token.logprob for token in outbox.tokens("sea")] == pytest.approx(
        [records[t].logprob for t in range(len(sent))], abs=1e-6
    )


def test_a_caught_up_follower_commits_only_to_what_it_computed(engines: tuple[tuple[Engine, Outbox], ...]) -> None:
    (leader, led), (follower, fol) = engines
    leader.submit(generate("lead", PROMPT, max_tokens=12))
    leader.pump()
    ids = [token.token_id for token in led.tokens("lead")]
    follower.submit(generate("follow", PROMPT, max_tokens=12))
    step_until_tokens(follower, fol, "follow", 1)
    follower.submit(PauseFrame(request_id="follow"))
    follower.pump()

    follower.submit(ResumeFrame(request_id="follow", from_seq=6, token_ids=ids[:6]))
    follower.pump()

    body, records = receipt_of(fol, "follow")
    assert body.first_record == 6
    assert len(records) == len(body.output_ids) - 6
    assert list(body.output_ids[:6]) == ids[:6]


def test_an_auditor_engine_passes_an_honest_job_and_flags_a_changed_one(
    engines: tuple[tuple[Engine, Outbox], ...],
) -> None:
    """Tier B on the second engine: honest scores sit in the quantized honest band; a swapped output does not."""
    (worker, out), (auditor, audits) = engines
    frame = generate("job", PROMPT, temperature=0.7, max_tokens=48)
    worker.submit(frame)
    worker.pump()
    body, records = receipt_of(out, "job")
    job = body.model_dump(mode="json", exclude={"node_id"})

    auditor.submit(AuditFrame(audit_id="a-1", tier="A", generate=frame, job=job, records=records))
    forged = {**job, "output_ids": list(reversed(job["output_ids"]))}
    auditor.submit(AuditFrame(audit_id="a-2", tier="B", generate=frame, job=forged, records=records))
    auditor.pump()

    answers = {m.audit_id: m for m in audits.messages if isinstance(m, AuditedFrame)}
    honest = AuditScores.model_validate(answers["a-1"].scores)
    changed = AuditScores.model_validate(answers["a-2"].scores)
    assert answers["a-1"].prompt_sha256 == body.prompt_sha256
    assert honest.tier == "B", "an engine audits with Tier B on its shared context"
    assert honest.s_lp < 0.3 and honest.kl < 0.015
    assert changed.s_lp > 3 * honest.s_lp and changed.tok_disagree > honest.tok_disagree


def test_a_malformed_audit_is_refused_with_an_error(engines: tuple[tuple[Engine, Outbox], ...]) -> None:
    _, (auditor, audits) = engines
    frame = generate("bad", PROMPT)
    auditor.submit(AuditFrame(audit_id="a-bad", tier="B", generate=frame, job={"scheme": "nope"}, records=[]))
    auditor.pump()

    (error,) = [m for m in audits.messages if isinstance(m, ErrorFrame) and m.request_id == "a-bad"]
    assert error.code == "invalid_request"
