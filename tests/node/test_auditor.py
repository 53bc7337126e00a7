"""The auditor on the real model: honest jobs pass, cheaters are flagged, exact replay matches bit for bit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from meshcore_node.engine.auditor import AuditJob, Auditor, replayable, step_layouts
from meshcore_node.engine.batch import ContextConfig, LlamaBatchContext
from meshcore_node.engine.variants import VariantKind, cached_variant
from meshcore_sdk.proof.digest import hidden_digest
from meshcore_sdk.proof.records import committed, record_token
from meshcore_sdk.proof.report import AuditScores
from meshcore_sdk.proof.sampler import SamplerSettings, job_key, sample
from meshcore_sdk.protocol.errors import ProofError

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

HOT = SamplerSettings(temperature=0.7, top_k=40, top_p=0.95)
PROVISIONAL = {"s_lp": 0.3, "kl": 0.015, "hid_mantissa_mean": 6.0, "hid_exp": 21}
"""Research §6.5, quantized pins: a 32-token chunk above any of these is flagged."""
TOKENS = 40
QUESTIONS = ["Explain how a bicycle stays upright.", "Tell me about the history of bread.", "Why is the sky blue?"]


def chat(question: str, system: str | None = "You are a patient teacher. Answer in full sentences.") -> bytes:
    user = f"{system}\n\n{question}" if system else question
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n".encode()


def context(path: Path, **config: object) -> LlamaBatchContext:
    return LlamaBatchContext(ContextConfig(model_path=path, n_ctx=1024, n_threads=2, **config))  # type: ignore[arg-type]


def variant_cache() -> Path:
    return Path(os.environ.get("MESHCORE_VARIANT_CACHE", Path.home() / ".cache" / "meshcore" / "variants"))


@pytest.fixture(scope="session")
def worker(model_path: Path) -> Iterator[LlamaBatchContext]:
    llama = context(model_path, n_slots=8, embeddings=True)  # as the engine builds it, hidden states on
    yield llama
    llama.close()


@pytest.fixture(scope="session")
def auditor(model_path: Path) -> Iterator[Auditor]:
    llama = context(model_path, n_slots=2, n_outputs_max=512, embeddings=True)
    yield Auditor(llama, exclusive=True)
    llama.close()


@pytest.fixture(scope="session")
def cheap(model_path: Path) -> Iterator[LlamaBatchContext]:
    llama = context(cached_variant(model_path, VariantKind.Q3_LEVELS, variant_cache()), n_slots=8, embeddings=True)
    yield llama
    llama.close()


def generate(
    llama: LlamaBatchContext, prompts: list[list[int]], *, claimed: list[list[int]] | None = None
) -> list[AuditJob]:
    """An honest worker step by step: every prompt in one first decode, then one token per sequence per decode."""
    n = len(prompts)
    llama.reset()
    keys = [job_key(f"job-{i}", None) for i in range(n)]
    outputs: list[list[int]] = [[] for _ in range(n)]
    records: list[list] = [[] for _ in range(n)]  # type: ignore[type-arg]
    hidden: list[list] = [[] for _ in range(n)]  # type: ignore[type-arg]
    schedules: list[list[tuple[int, ...]]] = [[] for _ in range(n)]
    feeds = [(slot, ids, 0, True) for slot, ids in enumerate(prompts)]
    for _ in range(TOKENS):
        layouts = step_layouts(feeds)
        rows = llama.decode(feeds)
        for i, row in enumerate(rows):
            assert row is not None
            schedules[i].append(layouts[i] if n > 1 else layouts[i][:2])  # alone: the receipt's short form
            token = sample(row, HOT, key=keys[i], position=len(outputs[i]))
            records[i].append(committed(record_token(row, token, top_k=20)))
            hidden[i].append(llama.hidden(i).copy())
            outputs[i].append(token)
        feeds = [(i, [outputs[i][-1]], len(prompts[i]) + len(outputs[i]) - 1, True) for i in range(n)]
    return [
        AuditJob(
            prompt_ids=tuple((claimed or prompts)[i]),
            output_ids=tuple(outputs[i][:-1]),  # the last token is sampled but not fed: as if it ended the job
            first_record=0,
            records=tuple(records[i]),
            digest=tuple(hidden_digest(np.stack(hidden[i]))),
            settings=HOT,
            key=keys[i],
            schedule=tuple(schedules[i]),
        )
        for i in range(n)
    ]


def over_provisional(scores: AuditScores) -> list[str]:
    return [
        f"chunk {c.start}: {name} {getattr(c, name)}"
        for c in scores.chunks
        for name, limit in PROVISIONAL.items()
        if (getattr(c, name) or 0) > limit
    ]


@pytest.fixture(scope="session")
def prompts(worker: LlamaBatchContext) -> list[list[int]]:
    return [worker.tokenize(chat(q), add_bos=True) for q in QUESTIONS]


@pytest.fixture(scope="session")
def honest(worker: LlamaBatchContext, prompts: list[list[int]]) -> AuditJob:
    return generate(worker, prompts[:1])[0]


# --- batch.py: hidden states and many outputs ----------------------------------------------


def test_hidden_states_leave_the_logits_bitwise_unchanged(model_path: Path, worker: LlamaBatchContext) -> None:
    plain = context(model_path, n_slots=8)
    try:
        ids = worker.tokenize(chat(QUESTIONS[0]), add_bos=True)
        feeds = [(0, ids, 0, True), (1, ids[:7], 0, True)]
        for llama in (plain, worker):
            llama.clear(0)
            llama.clear(1)
        expected = [row.copy() for row in plain.decode(feeds) if row is not None]
        rows = [row.copy() for row in worker.decode(feeds) if row is not None]
        assert all(np.array_equal(a, b) for a, b in zip(expected, rows, strict=True))
        assert worker.hidden(1).shape == (worker.n_embd,)
        assert not np.array_equal(worker.hidden(0), worker.hidden(1))
        with pytest.raises(ValueError):
            plain.hidden(0)
    finally:
        plain.close()


def test_decode_positions_gives_the_rows_of_a_decode_at_every_asked_position(
    auditor: Auditor, prompts: list[list[int]]
) -> None:
    ids = prompts[0]
    logits, hidden = auditor.prefill(ids, [len(ids) - 3, len(ids) - 1])
    assert logits.shape == (2, 262144) and hidden is not None and hidden.shape == (2, 640)
    again, again_hidden = auditor.prefill(ids, [len(ids) - 1])
    assert np.array_equal(again[0], logits[1])  # the number of outputs changes no bit
    assert again_hidden is not None and np.array_equal(again_hidden[0], hidden[1])


# --- Tier B ---------------------------------------------------------------------------------


def test_an_honest_job_passes_tier_b_under_the_provisional_thresholds(auditor: Auditor, honest: AuditJob) -> None:
    scores = auditor.tier_b(honest)
    assert scores.positions == TOKENS
    assert [c.start for c in scores.chunks] == [0, 32]
    assert over_provisional(scores) == []
    assert scores.tok_disagree <= 0.1
    assert scores.seconds > 0


def test_a_lower_quant_worker_is_flagged(auditor: Auditor, cheap: LlamaBatchContext, prompts: list[list[int]]) -> None:
    job = generate(cheap, prompts[:1])[0]
    assert over_provisional(auditor.tier_b(job))


def test_a_truncated_model_is_flagged(auditor: Auditor, model_path: Path, prompts: list[list[int]]) -> None:
    truncated = context(cached_variant(model_path, VariantKind.TRUNCATED, variant_cache()), n_slots=1, embeddings=True)
    try:
        job = generate(truncated, prompts[:1])[0]
    finally:
        truncated.close()
    assert over_provisional(auditor.tier_b(job))


def test_a_dropped_system_prompt_is_flagged(
    auditor: Auditor, worker: LlamaBatchContext, prompts: list[list[int]]
) -> None:
    bare = [worker.tokenize(chat(QUESTIONS[0], system=None), add_bos=True)]
    job = generate(worker, bare, claimed=prompts[:1])[0]
    scores = auditor.tier_b(job)
    assert over_provisional(scores) or scores.tok_disagree > 0.15


def test_forged_commitments_are_caught_by_the_token_margins(
    auditor: Auditor, cheap: LlamaBatchContext, prompts: list[list[int]]
) -> None:
    """Cheap tokens, but records and digest from the real model's prefill: the numbers pass, the tokens do not."""
    job = generate(cheap, prompts[:1])[0]
    ids = list(job.prompt_ids) + list(job.output_ids)
    rows = [len(job.prompt_ids) - 1 + k for k in range(len(job.records))]
    logits, hidden = auditor.prefill(ids, rows)
    assert hidden is not None
    forged = replace(
        job,
        records=tuple(committed(record_token(logits[k], r.token_id, top_k=20)) for k, r in enumerate(job.records)),
        digest=tuple(hidden_digest(hidden)),
    )
    scores = auditor.tier_b(forged)
    assert over_provisional(scores) == []  # the committed numbers are the real model's
    assert scores.tok_disagree > 0.2  # but the tokens are not its keyed choices
    assert min(c.margin_min for c in scores.chunks) < -1.0


# --- Tier A ---------------------------------------------------------------------------------


def test_tier_a_replays_a_job_that_shared_its_batches_bit_for_bit(
    auditor: Auditor, worker: LlamaBatchContext, prompts: list[list[int]]
) -> None:
    jobs = generate(worker, prompts)  # three sequences per decode; the job of interest sits last
    job = jobs[2]
    assert job.schedule[0][2] > 0 and job.schedule[1][:3] == (1, 3, 2)
    assert replayable(job.schedule)
    assert auditor.tier_a(job).row_mismatch_at is None


def test_tier_a_needs_the_offset_of_a_shared_batch(
    auditor: Auditor, worker: LlamaBatchContext, prompts: list[list[int]]
) -> None:
    job = generate(worker, prompts)[2]
    counts_only = replace(job, schedule=tuple(step[:2] for step in job.schedule))
    assert not replayable(counts_only.schedule)
    with pytest.raises(ProofError):
        auditor.tier_a(counts_only)
    own, total, offset, start, before, after, wanted = job.schedule[0]
    assert offset % 4 != 0
    moved = replace(job, schedule=((own, total, 0, start, 0, after + before, wanted), *job.schedule[1:]))
    assert auditor.tier_a(moved).row_mismatch_at == 0  # the prompt replayed at offset 0 of its batch


def test_tier_a_matches_an_honest_job_alone_and_catches_a_lower_quant(
    auditor: Auditor, honest: AuditJob, cheap: LlamaBatchContext, prompts: list[list[int]]
) -> None:
    assert auditor.tier_a(honest).row_mismatch_at is None
    assert auditor.tier_a(generate(cheap, prompts[:1])[0]).row_mismatch_at == 0
