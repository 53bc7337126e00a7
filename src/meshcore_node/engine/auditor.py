"""The auditor: re-run a worker's job on the pinned model and score its commitments.

Theory of operation (``docs/concepts/audits.md``; research §6.5)
------------------------------------------------------------------
An :class:`AuditJob` is what the audit needs of a receipt and its revealed
records: the prompt and output ids, the committed records of positions
``first_record`` on, the hidden-state digest, the sampler settings, the job key
and the worker's eval schedule.

Tier B (:meth:`Auditor.tier_b`): ONE teacher-forced prefill of prompt + output
on a context with hidden states on and room for many outputs per decode, with
an output row at every generated position a record covers (the row after id
``n_prompt + t - 1`` predicts position ``t``).  The rows and hidden states go to
:func:`meshcore_sdk.proof.scores.score_tier_b`.

Tier A (:meth:`Auditor.tier_a`): an exact replay of the worker's decodes,
compared row hash by row hash (:func:`meshcore_sdk.proof.scores.score_tier_a`).
What changes the bits of a token's logit row on this llama.cpp CPU build
(``python benchmarks/audit.py --factors [GGUF]`` prints the evidence; "may":
the kernel paths differ, and whether the rounding differs depends on the data):

===================================================  =======================================
factor                                               bits
===================================================  =======================================
tokens in the ``llama_decode``, the row's offset     may change (Gemma 3 270M: 1-3 vs 4+
                                                     tokens, and the tail of a tile of 4)
output rows in the decode                            may change (a 303-token batch: 8 vs 1)
order of the sequence's own KV cells                 change (a token put in a freed hole
                                                     before the sequence's earlier cells)
cell offset, in batches of a few hundred tokens      change (offsets 0, 16, 64, 256 agree;
that mix sequences                                   1, 32, 500 do not)
other sequences' ids and positions                   no
thread count (1 or 2), slots, ``n_outputs_max``      no
===================================================  =======================================

So each worker step is replayed with the same layout: the job's ids at the same
offset of a batch of the same size, with as many output rows before and after
its own, the rest filler ids of a second sequence.  The filler is never
cleared during a replay (llama.cpp puts new tokens into the lowest free cells
once enough are free: a cleared filler would move the job's next tokens in
front of its earlier ones), and on an auditor that owns its context the replay
starts from an empty cache at its first cell (:meth:`LlamaBatchContext.reset`).
The replay is therefore exact for a job that came into a worker cache just
reset, with the sequences admitted with it, and during whose life no sequence
left the cache (holes that finished or evicted sequences leave get filled, and
move the job's cells).  A job that ran alone replays as well, unless its
cells wrapped around the end of the worker's cache; a worker that calls
:meth:`LlamaBatchContext.reset` whenever its cache empties avoids that.

A schedule step is ``(own, total, offset, start, outputs_before, outputs_after,
wanted)`` (:class:`ReplayStep`, :func:`step_layouts` builds them): the job's ids
in the step, all ids in the step, the offset of the job's first id, that id's
position (below the ids fed so far after the worker cut its cache back, as a
resume does: the replay cuts back too), the other sequences' output rows before
and after the job's ids, and whether the job's last id was an output (0: a
prompt chunk that is not the last).  The receipt's short form ``(own, total)``
is replayable only when the job ran alone (``own == total``); :func:`replayable`
says whether a schedule can be replayed.

Not thread-safe; one thread drives the context, as the engine does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from meshcore_node.engine.batch import LlamaBatchContext
from meshcore_sdk.proof.records import TokenRecord, row_hash
from meshcore_sdk.proof.report import AuditScores
from meshcore_sdk.proof.sampler import SamplerSettings
from meshcore_sdk.proof.scores import score_tier_a, score_tier_b
from meshcore_sdk.protocol.errors import ProofError

__all__ = ["AuditJob", "Auditor", "ReplayStep", "ScheduleStep", "replayable", "step_layouts"]

ScheduleStep = tuple[int, ...]
"""One worker ``llama_decode`` that touched the job: ``(own, total)`` or the full :class:`ReplayStep` tuple."""

REPLAY_FIELDS: Final = 7


@dataclass(frozen=True, slots=True)
class AuditJob:
    """What an audit needs of one job.

    Attributes:
        prompt_ids: the claimed prompt.
        output_ids: the generated ids the worker sent.
        first_record: the generated position of ``records[0]``.
        records: the committed records of positions ``first_record`` on.
        digest: the hidden-state digests, one per 32 positions from ``first_record`` (empty: none).
        settings: the sampler settings of the request.
        key: the job key.
        schedule: the worker's decodes that touched the job, in order (empty: unknown).
    """

    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    first_record: int
    records: tuple[TokenRecord, ...]
    digest: tuple[bytes, ...]
    settings: SamplerSettings
    key: bytes
    schedule: tuple[ScheduleStep, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """The layout of one worker decode, as the replay rebuilds it.

    Attributes:
        own: the job's ids in the step.
        total: all ids in the step.
        offset: where the job's first id sat in the batch.
        start: the position of the job's first id.
        outputs_before: output rows of other sequences before the job's ids.
        outputs_after: output rows of other sequences after them.
        wanted: 1 when the job's last id was an output row, else 0.
    """

    own: int
    total: int
    offset: int
    start: int
    outputs_before: int
    outputs_after: int
    wanted: int

    @classmethod
    def parse(cls, step: ScheduleStep, fed: int) -> ReplayStep:
        """The layout of ``step`` when ``fed`` ids of the job are in the cache."""
        if len(step) == 2 and step[0] == step[1]:
            parsed = cls(step[0], step[1], 0, fed, 0, 0, 1)
        elif len(step) == REPLAY_FIELDS:
            parsed = cls(*step)
        else:
            raise ProofError(f"schedule step {step} does not say where the job sat in its batch")
        parsed.check(fed)
        return parsed

    @property
    def after(self) -> int:
        """Ids after the job's in the batch."""
        return self.total - self.own - self.offset

    def check(self, fed: int) -> None:
        """Raise ProofError unless the layout is possible."""
        fits = self.own >= 1 and self.offset >= 0 and self.after >= 0 and self.wanted in (0, 1)
        fillers = 0 <= self.outputs_before <= self.offset and 0 <= self.outputs_after <= self.after
        if not (fits and fillers):
            raise ProofError(f"schedule step {self} does not fit its batch")
        if not 0 <= self.start <= fed:
            raise ProofError(f"schedule step {self} starts past the {fed} ids in the cache")


def replayable(schedule: Sequence[ScheduleStep]) -> bool:
    """Whether Tier A can replay ``schedule`` bit for bit from the schedule alone.

    Every step must be alone or have its full layout, and no step may cut the
    job's cache back while other sequences share the batch (where the re-fed
    ids land then depends on the other sequences' cells, which the schedule
    does not hold).  The module docstring says what the worker must also have
    kept true.
    """
    fed = 0
    for step in schedule:
        if len(step) == 2 and step[0] == step[1]:
            fed += step[0]
            continue
        if len(step) != REPLAY_FIELDS or (step[3] < fed and step[0] < step[1]):
            return False
        fed = step[3] + step[0]
    return bool(schedule)


def step_layouts(feeds: Sequence[tuple[int, Sequence[int], int, bool]]) -> list[ScheduleStep]:
    """What a worker records of one decode for each of its feeds ``(slot, ids, start, want)``: the full layout."""
    total = sum(len(ids) for _, ids, _, _ in feeds)
    outputs = sum(bool(want) for *_, want in feeds)
    layouts: list[ScheduleStep] = []
    offset = seen = 0
    for _, ids, start, want in feeds:
        wanted = int(bool(want))
        layouts.append((len(ids), total, offset, start, seen, outputs - seen - wanted, wanted))
        offset += len(ids)
        seen += wanted
    return layouts


class Auditor:
    """Runs Tier B and Tier A audits on one context; see the module docstring.

    The context should be built with ``embeddings=True`` (for the digest) and a
    large ``n_outputs_max`` (a prefill asks for at most that many rows per
    decode), and hold the two slots the auditor uses.

    Args:
        llama: the context.
        job_slot: the slot the audited job is decoded in.
        filler_slot: the slot of the filler that pads a Tier A replay to the worker's batches.
        exclusive: the context is the auditor's alone, so a Tier A replay may empty
            the whole cache first and start from its first cell, as the worker's
            cache did (:meth:`LlamaBatchContext.reset`).  On an engine's context
            (False) only the two slots are cleared, and a replay of a job that
            shared its batches is exact only if the cache happens to place its
            tokens as the worker's did.
        clock: seconds, for the audit's wall time.
    """

    def __init__(
        self,
        llama: LlamaBatchContext,
        *,
        job_slot: int = 0,
        filler_slot: int = 1,
        exclusive: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._llama = llama
        self._job_slot = job_slot
        self._filler_slot = filler_slot
        self._exclusive = exclusive
        self._clock = clock
        self.last_prefill_s = 0.0
        """Of the last Tier B audit's seconds, those of the prefill (the rest is scoring)."""

    def prefill(
        self, ids: Sequence[int], outputs: Sequence[int]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """Teacher-force ``ids`` in one sequence; the logit (and hidden) rows after the ids at ``outputs``."""
        llama = self._llama
        llama.clear(self._job_slot)
        logits: list[npt.NDArray[np.float32]] = []
        hidden: list[npt.NDArray[np.float32]] = []
        wanted = list(outputs)
        start = 0
        try:
            while start < len(ids):
                stop = min(len(ids), start + llama.config.n_batch)
                inside = [i for i in wanted if start <= i < stop][: llama.n_outputs_max]
                if len(inside) == llama.n_outputs_max:
                    stop = inside[-1] + 1
                rows, states = llama.decode_positions(
                    self._job_slot, ids[start:stop], start, [i - start for i in inside]
                )
                logits.append(rows)
                if states is not None:
                    hidden.append(states)
                start = stop
        finally:
            llama.clear(self._job_slot)
        return np.concatenate(logits), (np.concatenate(hidden) if hidden else None)

    def tier_b(self, job: AuditJob) -> AuditScores:
        """One prefill of prompt + output, scored against the records and the digest."""
        began = self._clock()
        n_prompt = len(job.prompt_ids)
        if n_prompt < 1:
            raise ProofError("a job without a prompt cannot be audited")
        ids = list(job.prompt_ids) + list(job.output_ids)
        rows = [n_prompt - 1 + job.first_record + k for k in range(len(job.records))]
        if rows and rows[-1] >= len(ids):
            raise ProofError(f"{len(job.records)} records from position {job.first_record} outrun the output")
        logits, hidden = self.prefill(ids, rows)
        self.last_prefill_s = self._clock() - began
        scores = score_tier_b(
            prompt_ids=job.prompt_ids,
            output_ids=job.output_ids,
            first_record=job.first_record,
            records=job.records,
            auditor_logits=logits,
            settings=job.settings,
            key=job.key,
            digest=job.digest,
            auditor_hidden=hidden if job.digest else None,
        )
        return scores.model_copy(update={"seconds": self._clock() - began})

    def replay_hashes(self, job: AuditJob) -> dict[int, bytes]:
        """Replay the job's schedule; SHA-256 of the row that predicted each generated position."""
        llama = self._llama
        ids = list(job.prompt_ids) + list(job.output_ids)
        n_prompt = len(job.prompt_ids)
        hashes: dict[int, bytes] = {}
        fed = filled = 0
        cells = sum(step[1] for step in job.schedule)
        if cells > llama.n_ctx:
            raise ProofError(f"replaying this schedule takes {cells} cache cells; the context has {llama.n_ctx}")
        self._empty()
        try:
            for schedule_step in job.schedule:
                step = ReplayStep.parse(schedule_step, fed)
                if step.start < fed:
                    llama.trim(self._job_slot, step.start)
                    fed = step.start
                if fed + step.own > len(ids):
                    raise ProofError(f"the schedule feeds more than the {len(ids)} ids of the job")
                before = self._filler(step.offset, step.outputs_before, filled)
                after = self._filler(step.after, step.outputs_after, filled + step.offset)
                feeds = [*before, (self._job_slot, ids[fed : fed + step.own], fed, bool(step.wanted)), *after]
                row = llama.decode(feeds)[len(before)]
                filled += step.offset + step.after
                fed += step.own
                if row is not None and fed >= n_prompt:
                    hashes[fed - n_prompt] = row_hash(row)
        finally:
            self._empty()
        return hashes

    def _empty(self) -> None:
        if self._exclusive:
            self._llama.reset()  # from the first cell, as the worker's cache was when the job came in
        else:
            self._llama.clear(self._job_slot)
            self._llama.clear(self._filler_slot)

    def _filler(self, size: int, outputs: int, start: int) -> list[tuple[int, Sequence[int], int, bool]]:
        """``size`` filler ids from position ``start``, split so that ``outputs`` rows come out."""
        if size == 0:
            return []
        token = self._llama.bos
        if outputs == 0:
            return [(self._filler_slot, [token] * size, start, False)]
        sizes = [1] * (outputs - 1) + [size - outputs + 1]
        starts = np.cumsum([start, *sizes[:-1]])
        return [(self._filler_slot, [token] * n, int(at), True) for n, at in zip(sizes, starts, strict=True)]

    def tier_a(self, job: AuditJob) -> AuditScores:
        """Replay the worker's schedule and compare each committed row hash (raises ProofError when not replayable)."""
        if not replayable(job.schedule):
            raise ProofError("this schedule cannot be replayed bit for bit (see replayable)")
        began = self._clock()
        hashes = self.replay_hashes(job)
        mine = [hashes.get(job.first_record + k, b"") for k in range(len(job.records))]
        scores = score_tier_a([record.row_sha256 for record in job.records], mine, first_record=job.first_record)
        return scores.model_copy(update={"seconds": self._clock() - began})
