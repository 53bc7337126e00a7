"""Calibrate the audits: the honest band of Tier B, what each cheater scores, and what an audit costs.

Honest workers run the real model (Gemma 3 270M Q4_K_M) in a worker loop that
mirrors the engine child step for step: one ``llama_decode`` per step with
every running sequence's next id (decoders first, then prompts, as the
scheduler orders feeds), the token chosen by
:func:`meshcore_sdk.proof.sampler.sample` from the raw row, the record by
``record_token`` then ``committed``, and the hidden row of each token read
from the same decode (``ContextConfig(embeddings=True)``) for the digest.  The
loop is this script's own because the engine child did not hand out hidden
rows or full step layouts when it was written; its tokens are the engine's
(same context, same feeds, same sampler).  Each step's layout
(:func:`meshcore_node.engine.auditor.step_layouts`) is recorded, so Tier A can
replay it.

Honest configurations: thread counts 1 and 2 (``--full``); 1 or 8 sequences
per batch; fresh, or resumed (after ``--resume-at`` tokens the sequences' cache
is dropped and prompt plus output are prefilled again in one decode, as a
resume on another worker does); temperature 0 and 0.7 (top-k 40, top-p 0.95)
alternating.  Tier A replays ``--tier-a-per-batch`` jobs of each batch where
the schedule is replayable (a resume inside a shared batch is not).

Cheaters: the ``q3_levels`` and ``q4_0`` variants, the truncated model, 1%
noise (each committing its own numbers), a worker that drops the system
prompt, and a forger that samples with ``q3_levels`` but commits the real
model's prefill records and digest.

Output, a table then one JSON object:

* the honest maximum of every score in the calibration table's terms, the
  thresholds the router would derive from it (3 x, with floors) and the
  provisional Q4_K_M row, plus a ready ``calibration_entry`` for
  ``meshcore_router/audits/calibration.json``;
* honest chunks and jobs flagged under the provisional row, and held out (the
  thresholds derived from the even jobs, flags counted on the odd ones), with
  Clopper-Pearson 95% upper bounds; the router's free sampler-consistency check
  on every job; Tier A mismatches;
* per cheater, jobs with a FLAG verdict (``meshcore_router.audits.verdict.judge``)
  with the Clopper-Pearson 95% lower bound, the free check, chunk medians;
* the cost: auditor seconds over the worker's generation seconds (1 stream) or
  over the job's share of its batch (8 streams), all measured in the same run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/audit.py --quick   # about 3 minutes on 2 cores
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/audit.py --full --json audit-full.json
        # >= 3,000 honest chunks; about 2 hours on 2 cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before llama.cpp loads: idle threads sleep

import argparse
import collections
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from meshcore_node.engine.auditor import AuditJob, Auditor, replayable, step_layouts
from meshcore_node.engine.batch import ContextConfig, LlamaBatchContext
from meshcore_node.engine.variants import VariantKind, cached_variant, source_digest
from meshcore_node.models import bundled_model_path
from meshcore_router.audits.calibration import (
    CalibrationEntry,
    CalibrationTable,
    ScoreLimits,
    Thresholds,
    derive_thresholds,
)
from meshcore_router.audits.verdict import Outcome, judge
from meshcore_sdk.proof.consistency import check_consistency
from meshcore_sdk.proof.digest import hidden_digest
from meshcore_sdk.proof.receipt import ReceiptBody, SamplerSpec
from meshcore_sdk.proof.records import TokenRecord, committed, record_token, row_hash
from meshcore_sdk.proof.report import AuditScores
from meshcore_sdk.proof.sampler import PENALTY_WINDOW, SamplerSettings, job_key, sample

SYSTEM = "You are a patient teacher. Answer in full sentences, with examples, and never use lists."
QUESTIONS = [
    "Explain how a bicycle stays upright.",
    "Describe the water cycle to a ten-year-old.",
    "Write a short story about a lighthouse keeper and a storm.",
    "Why do leaves change colour in autumn?",
    "Tell me about the history of bread.",
    "How does a refrigerator keep food cold?",
    "Write a letter from a cat to its owner.",
    "What makes a good friend?",
    "Describe a walk through a busy market in the morning.",
    "How do bees make honey?",
    "Explain why the sky is blue.",
    "Write a poem about a train crossing the mountains at night.",
    "What did people eat in medieval villages?",
    "How does a compass work?",
    "Describe the life of a river from the mountains to the sea.",
    "Why do we dream?",
]
HOT = SamplerSettings(temperature=0.7, top_k=40, top_p=0.95)
GREEDY = SamplerSettings()
RECORD_TOP_K = 20


def chat(system: str | None, question: str) -> bytes:
    """Gemma's chat format: a system message goes at the top of the first user turn."""
    user = f"{system}\n\n{question}" if system else question
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n".encode()


# --- the worker loop ------------------------------------------------------------------------


@dataclass
class Sequence_:
    """One job on the worker: what it claims, what it feeds, what it commits."""

    job_id: str
    claimed: list[int]  # the prompt the receipt names
    fed: list[int]  # the prompt the worker really ran (differs for the system-prompt cheat)
    settings: SamplerSettings
    limit: int
    resume_at: int | None
    key: bytes = b""
    output: list[int] = field(default_factory=list)
    records: list[TokenRecord] = field(default_factory=list)
    hidden: list[npt.NDArray[np.float32]] = field(default_factory=list)
    schedule: list[tuple[int, ...]] = field(default_factory=list)
    cached: int = 0  # ids of fed + output in the cache
    done: bool = False

    @property
    def ids(self) -> list[int]:
        return self.fed + self.output


def run_worker(llama: LlamaBatchContext, sequences: list[Sequence_], n_batch: int) -> float:
    """Generate every sequence together, one decode per step, as the engine does; returns the wall seconds."""
    began = time.perf_counter()
    slots = {id(seq): slot for slot, seq in enumerate(sequences)}
    llama.reset()  # the jobs come into an empty cache, from its first cell (what Tier A can replay)
    while not all(seq.done for seq in sequences):
        feeds, owners, room = [], [], n_batch
        decoding = [s for s in sequences if not s.done and len(s.ids) - s.cached == 1]
        prefilling = [s for s in sequences if not s.done and len(s.ids) - s.cached > 1]
        for seq in decoding + prefilling:  # the scheduler's order: decoders first, then prefill chunks
            take = min(len(seq.ids) - seq.cached, room)
            if take <= 0:
                break
            want = seq.cached + take == len(seq.ids)
            feeds.append((slots[id(seq)], seq.ids[seq.cached : seq.cached + take], seq.cached, want))
            owners.append(seq)
            room -= take
        layouts = step_layouts(feeds)
        rows = llama.decode(feeds)
        for index, (seq, feed, layout, row) in enumerate(zip(owners, feeds, layouts, rows, strict=True)):
            seq.schedule.append(layout)
            seq.cached += len(feed[1])
            if row is not None:
                advance(llama, seq, row, index, slots[id(seq)])
    return time.perf_counter() - began


def advance(llama: LlamaBatchContext, seq: Sequence_, row: npt.NDArray[np.float32], feed: int, slot: int) -> None:
    position = len(seq.output)
    history = seq.ids[-PENALTY_WINDOW:] if seq.settings.repeat_penalty != 1.0 else ()
    token = sample(row, seq.settings, key=seq.key, position=position, history=history)
    seq.records.append(committed(record_token(row, token, top_k=RECORD_TOP_K)))
    seq.hidden.append(llama.hidden(feed).copy())
    if llama.is_eog(token):
        seq.done = True
        return
    seq.output.append(token)
    if len(seq.output) >= seq.limit:
        seq.done = True
    elif seq.resume_at is not None and len(seq.output) == seq.resume_at:
        llama.clear(slot)  # resumed elsewhere: the cache is gone, prompt and output are prefilled again
        seq.cached = 0


def audit_job(seq: Sequence_) -> AuditJob:
    return AuditJob(
        prompt_ids=tuple(seq.claimed),
        output_ids=tuple(seq.output),
        first_record=0,
        records=tuple(seq.records),
        digest=tuple(hidden_digest(np.stack(seq.hidden))) if seq.hidden else (),
        settings=seq.settings,
        key=seq.key,
        schedule=tuple(seq.schedule),
    )


# --- statistics -----------------------------------------------------------------------------


def _binom_cdf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
        for i in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The two-sided (1 - alpha) Clopper-Pearson interval of a binomial rate k/n."""
    if n == 0:
        return 0.0, 1.0

    def solve(target: float, count: int) -> float:
        low, high = 0.0, 1.0
        for _ in range(60):
            mid = (low + high) / 2
            if _binom_cdf(count, n, mid) > target:
                low = mid
            else:
                high = mid
        return (low + high) / 2

    lower = 0.0 if k == 0 else solve(1 - alpha / 2, k - 1)
    upper = 1.0 if k == n else solve(alpha / 2, k)
    return lower, upper


# --- the run --------------------------------------------------------------------------------


@dataclass
class Audited:
    config: str
    job: AuditJob
    tier_b: AuditScores
    tier_a: AuditScores | None
    worker_s: float  # wall seconds of the worker batch this job ran in
    width: int
    prefill_s: float = 0.0  # of tier_b.seconds, the prefill (the rest is scoring)


def worker_context(path: Path, threads: int, n_ctx: int, width: int) -> LlamaBatchContext:
    return LlamaBatchContext(
        ContextConfig(
            model_path=path, n_ctx=n_ctx, n_slots=max(width, 8), n_batch=512, n_threads=threads, embeddings=True
        )
    )


def make_sequences(
    llama: LlamaBatchContext, start: int, count: int, args: argparse.Namespace, **kw: object
) -> list[Sequence_]:
    settings_cycle = kw.pop("settings", None)
    drop_system = bool(kw.pop("drop_system", False))
    resume_at = kw.pop("resume_at", None)
    sequences = []
    for i in range(start, start + count):
        question = QUESTIONS[i % len(QUESTIONS)]
        claimed = llama.tokenize(chat(SYSTEM, question), add_bos=True)
        fed = llama.tokenize(chat(None, question), add_bos=True) if drop_system else claimed
        settings = settings_cycle[i % len(settings_cycle)] if isinstance(settings_cycle, list) else HOT
        seq = Sequence_(f"job-{i}", claimed, fed, settings, args.tokens, resume_at)  # type: ignore[arg-type]
        seq.key = job_key(seq.job_id, None)
        sequences.append(seq)
    return sequences


def forge(auditor: Auditor, seq: Sequence_) -> None:
    """Replace a cheap worker's commitments with the real model's, computed by one prefill over its tokens."""
    ids = seq.claimed + seq.output
    rows = [len(seq.claimed) - 1 + k for k in range(len(seq.records))]
    logits, hidden = auditor.prefill(ids, rows)
    tokens = [r.token_id for r in seq.records]
    seq.records = [committed(record_token(logits[k], t, top_k=RECORD_TOP_K)) for k, t in enumerate(tokens)]
    assert hidden is not None
    seq.hidden = list(hidden)
    seq.schedule = [(len(ids), len(ids), 0, 0, 0, 0, 1)]


def run(args: argparse.Namespace) -> dict[str, object]:
    model = bundled_model_path()
    cache = Path(args.variant_cache)
    built: dict[str, float] = {}
    variants: dict[VariantKind, Path] = {}
    for kind in (VariantKind.Q3_LEVELS, VariantKind.Q4_0, VariantKind.TRUNCATED, VariantKind.NOISE_1PCT):
        began = time.perf_counter()
        variants[kind] = cached_variant(model, kind, cache)
        built[kind.value] = round(time.perf_counter() - began, 2)
    n_ctx = 2048
    auditor_llama = LlamaBatchContext(
        ContextConfig(
            model_path=model, n_ctx=n_ctx, n_slots=2, n_batch=512, n_outputs_max=512, n_threads=2, embeddings=True
        )
    )
    auditor = Auditor(auditor_llama, exclusive=True)
    audited: list[Audited] = []
    counter = 0
    both = [GREEDY, HOT]

    def generate(
        name: str, path: Path, threads: int, width: int, jobs: int, tier_a: bool, **kw: object
    ) -> list[Sequence_]:
        nonlocal counter
        llama = worker_context(path, threads, n_ctx, width)
        out = []
        first, generated = len(audited), 0.0
        try:
            for _ in range(max(1, jobs // width)):
                sequences = make_sequences(llama, counter, width, args, **dict(kw))
                counter += width
                seconds = run_worker(llama, sequences, 512)
                generated += seconds
                out.extend(sequences)
                if kw.get("forged"):
                    continue
                for i, seq in enumerate(sequences):
                    job = audit_job(seq)
                    replay = tier_a and i < args.tier_a_per_batch and replayable(job.schedule)
                    a = auditor.tier_a(job) if replay else None
                    scores = auditor.tier_b(job)
                    audited.append(Audited(name, job, scores, a, seconds, width, auditor.last_prefill_s))
        finally:
            llama.close()
        mine = audited[first:]
        spent_b = sum(a.tier_b.seconds for a in mine)
        spent_a = sum(a.tier_a.seconds for a in mine if a.tier_a is not None)
        timing = f"generation {generated:6.1f} s  Tier B {spent_b:6.1f} s  Tier A {spent_a:6.1f} s"
        print(f"  {name:<30} {len(out):3} jobs  {timing}", flush=True)
        return out

    print("honest:", flush=True)
    for threads in args.threads:
        for width in (1, 8):
            for mode in ("fresh", "resumed"):
                if mode == "resumed" and width == 1 and args.quick:
                    continue
                jobs = args.jobs_wide if width > 1 else args.jobs_single
                generate(
                    f"honest t{threads} x{width} {mode}",
                    model,
                    threads,
                    width,
                    jobs,
                    tier_a=True,
                    settings=both,
                    resume_at=args.resume_at if mode == "resumed" else None,
                )
    honest = [a for a in audited if a.config.startswith("honest")]
    print("cheaters:", flush=True)
    cheaters: dict[str, list[Audited]] = {}
    width = 8
    for kind in (VariantKind.Q3_LEVELS, VariantKind.Q4_0, VariantKind.TRUNCATED, VariantKind.NOISE_1PCT):
        start = len(audited)
        generate(
            f"cheat {kind.value}", variants[kind], 2, width, args.jobs_cheat, tier_a=args.cheat_tier_a, settings=both
        )
        cheaters[kind.value] = audited[start:]
    start = len(audited)
    generate(
        "cheat drop-system", model, 2, width, args.jobs_cheat, tier_a=args.cheat_tier_a, settings=both, drop_system=True
    )
    cheaters["drop_system"] = audited[start:]
    forged = generate(
        "cheat forged (q3 tokens)",
        variants[VariantKind.Q3_LEVELS],
        2,
        width,
        args.jobs_cheat,
        tier_a=False,
        settings=both,
        forged=True,
    )
    cheaters["forged"] = []
    for seq in forged:
        forge(auditor, seq)
        job = audit_job(seq)
        cheaters["forged"].append(Audited("cheat forged", job, auditor.tier_b(job), None, 0.0, width))
    auditor_llama.close()
    return summarize(honest, cheaters, built, args)


def honest_max(audits: Sequence[Audited]) -> ScoreLimits:
    """The worst honest value of each score, in the calibration table's terms."""
    chunks = [c for a in audits for c in a.tier_b.chunks]
    return ScoreLimits(
        s_lp_chunk=max(c.s_lp for c in chunks),
        kl_chunk=max(c.kl for c in chunks),
        tok_disagree_chunk=max(c.tok_disagree for c in chunks),
        margin_min=min(0.0, *(c.margin_min for c in chunks)),
        hid_exp_chunk=max(float(c.hid_exp or 0) for c in chunks),
        hid_mantissa_mean_chunk=max(float(c.hid_mantissa_mean or 0.0) for c in chunks),
        s_lp_response=max(a.tier_b.s_lp for a in audits),
        kl_response=max(a.tier_b.kl for a in audits),
    )


def thresholds_of(band: ScoreLimits, key: str) -> Thresholds:
    return Thresholds(**derive_thresholds(band).model_dump(), honest_max=band, calibration_key=key)


def chunk_flags(audits: Sequence[Audited], limits: ScoreLimits) -> int:
    """Chunks with any score beyond its threshold (the verdict's chunk comparisons)."""
    return sum(
        c.s_lp > limits.s_lp_chunk
        or c.kl > limits.kl_chunk
        or c.tok_disagree > limits.tok_disagree_chunk
        or c.margin_min < limits.margin_min
        or (c.hid_exp or 0) > limits.hid_exp_chunk
        or (c.hid_mantissa_mean or 0.0) > limits.hid_mantissa_mean_chunk
        for a in audits
        for c in a.tier_b.chunks
    )


def chunk_flag_reasons(audits: Sequence[Audited], limits: ScoreLimits) -> dict[str, int]:
    """For the flagged chunks: how many each score flags, and (``only ...``) how many it alone flags."""
    counts: collections.Counter[str] = collections.Counter()
    for audit in audits:
        for c in audit.tier_b.chunks:
            beyond = [
                name
                for name, over in (
                    ("s_lp", c.s_lp > limits.s_lp_chunk),
                    ("kl", c.kl > limits.kl_chunk),
                    ("tok_disagree", c.tok_disagree > limits.tok_disagree_chunk),
                    ("margin_min", c.margin_min < limits.margin_min),
                    ("hid_exp", (c.hid_exp or 0) > limits.hid_exp_chunk),
                    ("hid_mantissa_mean", (c.hid_mantissa_mean or 0.0) > limits.hid_mantissa_mean_chunk),
                )
                if over
            ]
            counts.update(beyond)
            if len(beyond) == 1:
                counts["only " + beyond[0]] += 1
    return dict(sorted(counts.items()))


def job_flag_reasons(audits: Sequence[Audited], thresholds: Thresholds) -> dict[str, int]:
    """For the jobs the verdict flags: how often each reason it gives comes up (numbers stripped)."""
    counts: collections.Counter[str] = collections.Counter()
    for audit in audits:
        verdict = judge(audit.tier_b, thresholds)
        if verdict.outcome is Outcome.FLAG:
            flagging = [r.split(": ", 1) for r in verdict.reasons if "threshold" in r or "not a number" in r]
            counts.update({f"{where.split(' ')[0]} {rest.split(' ')[0]}" for where, rest in flagging})
    return dict(sorted(counts.items()))


def flagged_jobs(audits: Sequence[Audited], thresholds: Thresholds) -> int:
    return sum(judge(a.tier_b, thresholds).outcome is Outcome.FLAG for a in audits)


def free_check(audit: Audited) -> bool:
    """Whether the router's free sampler-consistency check (no model run) finds an inconsistent position."""
    job = audit.job
    body = ReceiptBody(
        job_id="benchmark",
        node_id="benchmark",
        model_sha256="0" * 64,
        build_id="benchmark",
        sampler=SamplerSpec.of(job.settings, None),
        max_tokens=max(1, len(job.records)),
        prompt_sha256="0" * 64,
        n_prompt=len(job.prompt_ids),
        output_ids=tuple(r.token_id for r in job.records),
        record_top_k=RECORD_TOP_K,
        merkle_root="0" * 64,
        finish_reason="length",
        ttft_ms=0.0,
        tokens_per_s=0.0,
        signed_at=0.0,
    )
    return not check_consistency(body, dict(enumerate(job.records)), job.key).ok


def summarize(
    honest: list[Audited], cheaters: dict[str, list[Audited]], built: dict[str, float], args: argparse.Namespace
) -> dict[str, object]:
    band = honest_max(honest)
    proposed = thresholds_of(band, "benchmarks/audit.py")
    provisional = CalibrationTable.load().lookup(None, "Q4_K_M", "*", "*")
    even, odd = honest[0::2], honest[1::2]
    held_out = thresholds_of(honest_max(even), "even jobs") if even and odd else proposed
    n_chunks = sum(len(a.tier_b.chunks) for a in honest)
    n_odd_chunks = sum(len(a.tier_b.chunks) for a in odd)
    tier_a = [a.tier_a for a in honest if a.tier_a is not None]
    reasons = {
        "odd_chunk_flag_reasons": chunk_flag_reasons(odd, held_out),
        "odd_job_flag_reasons": job_flag_reasons(odd, held_out),
    }
    flags = {
        "chunks_flagged_provisional": chunk_flags(honest, provisional),
        "jobs_flagged_provisional": flagged_jobs(honest, provisional),
        "odd_chunks_flagged_by_even_thresholds": chunk_flags(odd, held_out),
        "odd_jobs_flagged_by_even_thresholds": flagged_jobs(odd, held_out),
        "jobs_failing_free_check": sum(free_check(a) for a in honest),
    }
    result: dict[str, object] = {
        "variant_build_s": built,
        "honest": {
            "jobs": len(honest),
            "chunks": n_chunks,
            "held_out_chunks": n_odd_chunks,
            **flags,
            **reasons,
            "chunks_flagged_provisional_cp95_upper": clopper_pearson(flags["chunks_flagged_provisional"], n_chunks)[1],
            "held_out_chunk_flags_cp95_upper": clopper_pearson(
                flags["odd_chunks_flagged_by_even_thresholds"], n_odd_chunks
            )[1],
            "tier_a_jobs": len(tier_a),
            "tier_a_mismatches": sum(t.row_mismatch_at is not None for t in tier_a),
            "per_config": {c: honest_max([a for a in honest if a.config == c]).model_dump() for c in configs(honest)},
        },
        "calibration_entry": CalibrationEntry(
            weight_format="Q4_K_M",
            model_sha256=args.model_sha256,
            thresholds=derive_thresholds(band),
            honest_max=band,
            n_chunks=n_chunks,
            measured_by=args.command,
        ).model_dump(mode="json"),
        "cheaters": {},
        "cost": cost(honest),
    }
    print(f"\nhonest: {len(honest)} jobs, {n_chunks} chunks of 32 positions")
    print(f"  {'score':<24} {'honest max':>11} {'proposed (3x)':>14} {'provisional':>12}")
    for name in ScoreLimits.model_fields:
        values = (getattr(band, name), getattr(proposed, name), getattr(provisional, name))
        print(f"  {name:<24} {values[0]:11.4g} {values[1]:14.4g} {values[2]:12.4g}")
    for config, worst in result["honest"]["per_config"].items():  # type: ignore[index]
        print(f"  {config:<28} " + ", ".join(f"{n} {v:.3g}" for n, v in worst.items()))
    upper = result["honest"]["chunks_flagged_provisional_cp95_upper"]  # type: ignore[index]
    print(
        f"  chunks flagged under the provisional Q4_K_M row: {flags['chunks_flagged_provisional']}/{n_chunks}"
        f" (CP95 upper {upper:.2e}); jobs {flags['jobs_flagged_provisional']}/{len(honest)}"
    )
    held = result["honest"]["held_out_chunk_flags_cp95_upper"]  # type: ignore[index]
    print(
        f"  held out (thresholds from even jobs, flags on odd): chunks {flags['odd_chunks_flagged_by_even_thresholds']}"
        f"/{n_odd_chunks} (CP95 upper {held:.2e}); jobs {flags['odd_jobs_flagged_by_even_thresholds']}/{len(odd)}"
    )
    print(f"  held-out chunk flags by score: {reasons['odd_chunk_flag_reasons']}")
    print(f"  held-out job flags by reason: {reasons['odd_job_flag_reasons']}")
    print(f"  free check (sampler consistency) fails on {flags['jobs_failing_free_check']}/{len(honest)} honest jobs")
    print(f"  Tier A: {result['honest']['tier_a_mismatches']} mismatching of {len(tier_a)} replayed jobs")  # type: ignore[index]
    print("\ncheaters: jobs flagged (FLAG verdict) / audited, CP95 lower bound")
    for name, jobs in cheaters.items():
        caught = flagged_jobs(jobs, proposed)
        replays = [a.tier_a for a in jobs if a.tier_a is not None]
        entry = {
            "jobs": len(jobs),
            "flagged_proposed": caught,
            "flagged_proposed_cp95_lower": clopper_pearson(caught, len(jobs))[0],
            "flagged_provisional": flagged_jobs(jobs, provisional),
            "free_check_failed": sum(free_check(a) for a in jobs),
            "tier_a_mismatched": sum(t.row_mismatch_at is not None for t in replays),
            "tier_a_jobs": len(replays),
            "chunk_flag_reasons_provisional": chunk_flag_reasons(jobs, provisional),
            "job_flag_reasons_provisional": job_flag_reasons(jobs, provisional),
            "chunk_median": {
                n: statistics.median(float(getattr(c, n) or 0.0) for a in jobs for c in a.tier_b.chunks)
                for n in ("s_lp", "kl", "tok_disagree", "margin_min", "hid_exp", "hid_mantissa_mean")
            },
        }
        result["cheaters"][name] = entry  # type: ignore[index]
        print(
            f"  {name:<12} proposed {caught}/{len(jobs)} (CP95 lower {entry['flagged_proposed_cp95_lower']:.2f}),"
            f" provisional {entry['flagged_provisional']}/{len(jobs)},"
            f" free check {entry['free_check_failed']}/{len(jobs)},"
            f" Tier A {entry['tier_a_mismatched']}/{entry['tier_a_jobs']}"
        )
        print("    chunk medians: " + ", ".join(f"{n} {v:.4g}" for n, v in entry["chunk_median"].items()))  # type: ignore[attr-defined]
        print(f"    flags by score, calibrated row: chunks {entry['chunk_flag_reasons_provisional']}")
        print(f"    jobs {entry['job_flag_reasons_provisional']}")
    print("\ncost (auditor seconds / worker seconds, medians):")
    for key, value in result["cost"].items():  # type: ignore[attr-defined]
        print(f"  {key:<44} {value:.3f}")
    return result


def configs(audits: Sequence[Audited]) -> list[str]:
    return sorted({a.config for a in audits})


def cost(honest: list[Audited]) -> dict[str, float]:
    """Auditor time over the worker's: a 1-stream job's generation time, or an 8-stream job's share of its batch."""
    out: dict[str, float] = {}
    for width, label in ((1, "1 stream, / generation"), (8, "8 streams, / compute share")):
        rows = [a for a in honest if a.width == width]
        if rows:
            out[f"tier_b {label}"] = statistics.median(a.tier_b.seconds * a.width / a.worker_s for a in rows)
            out[f"tier_b prefill only {label}"] = statistics.median(a.prefill_s * a.width / a.worker_s for a in rows)
        replays = [a for a in rows if a.tier_a is not None]
        if replays:
            out[f"tier_a {label}"] = statistics.median(a.tier_a.seconds * a.width / a.worker_s for a in replays)  # type: ignore[union-attr]
    return out


# --- what changes the bits (Tier A's ground truth) -----------------------------------------


def replay_factors(path: Path) -> None:
    """Print which batch and cache factors change a target row's bits on this build, for one GGUF."""
    llama = LlamaBatchContext(ContextConfig(model_path=path, n_ctx=2048, n_slots=8, n_outputs_max=64, n_threads=2))
    one_thread = LlamaBatchContext(ContextConfig(model_path=path, n_ctx=2048, n_slots=8, n_outputs_max=64, n_threads=1))
    text = b"Write a short poem about the sea and the wind, and then explain every line of it to me in detail. "
    prompt = llama.tokenize(text * 2, add_bos=True)
    filler = llama.tokenize(b"Recipe: take two cups of flour, then add water and salt, mix well and bake", add_bos=True)
    classes: dict[bytes, str] = {}

    def name(row: npt.NDArray[np.float32] | None) -> str:
        assert row is not None
        return classes.setdefault(row_hash(row), chr(65 + len(classes)))

    def decode_at(ctx: LlamaBatchContext, n: int, offset: int, outputs_after: int = 0, cached: int = 0) -> str:
        ids = prompt[: cached or len(prompt)]
        ctx.reset()
        ctx.decode([(0, ids, 0, False)])
        feeds: list[tuple[int, Sequence[int], int, bool]] = [(1, filler[:offset], 0, False)] if offset else []
        feeds.append((0, [1000], len(ids), True))
        rest = n - offset - 1
        if rest and outputs_after:
            feeds += [(2 + j, [filler[j]], 0, True) for j in range(outputs_after - 1)]
            feeds.append((7, filler[: rest - outputs_after + 1], 0, True))
        elif rest:
            feeds.append((2, filler[:rest], 0, False))
        return name(ctx.decode(feeds)[1 if offset else 0])

    def placed(taken: int, extra: int) -> str:
        llama.reset()
        if taken:
            llama.decode([(1, [llama.bos] * taken, 0, False)])
        feeds = [(0, prompt, 0, True)] + ([(2, [llama.bos] * extra, 0, False)] if extra else [])
        return name(llama.decode(feeds)[0])

    def hole_first() -> bool:
        llama.reset()
        llama.decode([(1, [llama.bos] * 10, 0, False)])
        llama.decode([(0, prompt, 0, False)])
        llama.clear(1)
        in_hole = name(llama.decode([(0, [1000], len(prompt), True)])[0])
        llama.reset()
        llama.decode([(0, prompt, 0, False)])
        return in_hole == name(llama.decode([(0, [1000], len(prompt), True)])[0])

    print(f"{path.name}: the class of the target's row (same letter: same bits; letters restart per line)")
    print("  one decode step, by the sequence's cached tokens, tokens in the step (n) and the target's offset (o):")
    layouts = ((1, 0), (2, 1), (4, 0), (4, 3), (5, 4), (8, 0), (9, 8), (17, 16))
    print("    " + " ".join(f"{f'({n},{o})':>7}" for n, o in layouts))
    for cached in (16, 24, 48, 100):
        classes.clear()
        print(f"    {cached:>3} cached " + " ".join(f"{decode_at(llama, n, o, cached=cached):>7}" for n, o in layouts))
    classes.clear()
    outs = " ".join(f"{k}:{decode_at(llama, 8, 0, k, cached=20)}" for k in (0, 2, 3, 4, 7))
    print(f"  n=8, offset 0, 20 cached, by output rows of other sequences: {outs}")
    classes.clear()
    pairs = ((1, 0), (5, 4), (9, 8))
    two = " ".join(decode_at(llama, n, o) for n, o in pairs)
    one = " ".join(decode_at(one_thread, n, o) for n, o in pairs)
    print(f"  (n, o) = (1, 0), (5, 4), (9, 8) with 2 threads: {two}; with 1 thread: {one}")
    print("  prefill, by cells another sequence took first (kept), and tokens of others in the batch:")
    classes.clear()
    for extra in (0, 8, 400):
        print(
            f"    n={len(prompt) + extra:<4}", " ".join(f"{t}:{placed(t, extra)}" for t in (0, 1, 16, 32, 64, 256, 500))
        )
    print(f"  a decode into a freed hole before the sequence's own cells matches an appended one: {hole_first()}")
    llama.close()
    one_thread.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="about 3 minutes: 2 threads only, few jobs")
    parser.add_argument("--full", action="store_true", help=">= 3,000 honest chunks (about an hour on 2 cores)")
    parser.add_argument("--tokens", type=int, default=None, help="generated tokens per job at most")
    parser.add_argument("--jobs-single", type=int, default=None, help="jobs per 1-stream configuration")
    parser.add_argument("--jobs-wide", type=int, default=None, help="jobs per 8-stream configuration (multiple of 8)")
    parser.add_argument("--jobs-cheat", type=int, default=None, help="jobs per cheater (multiple of 8)")
    parser.add_argument("--threads", type=int, nargs="+", default=None)
    parser.add_argument("--resume-at", type=int, default=24)
    parser.add_argument("--tier-a-per-batch", type=int, default=1, help="jobs of each worker batch replayed by Tier A")
    parser.add_argument("--cheat-tier-a", action="store_true", help="also replay the cheaters (Tier A catches all)")
    parser.add_argument("--variant-cache", default=str(Path.home() / ".cache" / "meshcore" / "variants"))
    parser.add_argument("--json", default=None, help="also write the JSON here")
    parser.add_argument(
        "--factors",
        nargs="?",
        const="",
        default=None,
        metavar="GGUF",
        help="only print what changes a row's bits (default model: the bundled one)",
    )
    args = parser.parse_args(argv)
    if args.factors is not None:
        replay_factors(Path(args.factors) if args.factors else bundled_model_path())
        return
    preset = {"tokens": 64, "jobs_single": 2, "jobs_wide": 8, "jobs_cheat": 8, "threads": [2]}
    if args.full:
        preset = {"tokens": 128, "jobs_single": 24, "jobs_wide": 208, "jobs_cheat": 48, "threads": [1, 2]}
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.command = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/audit.py " + " ".join(argv or sys.argv[1:])
    args.model_sha256 = source_digest(bundled_model_path())
    began = time.perf_counter()
    result = run(args)
    result["wall_s"] = round(time.perf_counter() - began, 1)
    result["args"] = {k: v for k, v in vars(args).items()}
    text = json.dumps(result, indent=1, default=str)
    print(f"\nwall {result['wall_s']} s\n" + text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
