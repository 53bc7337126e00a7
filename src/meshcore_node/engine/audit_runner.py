"""Audits inside the engine child: an ``audit`` frame in, an ``audited`` frame out (``docs/protocol.md`` §9.3).

A trusted node audits on the context that serves its own requests: the
:class:`~meshcore_node.engine.auditor.Auditor` borrows two slots that the
scheduler never hands out (the job and its filler) and runs between two engine
steps, so its requests wait for the length of one prefill (Tier B) or one replay
(Tier A).  The auditor tokenizes the request itself, with the worker's template
rules, and reports the hash of the prompt it used: a worker that changed the
prompt (dropped the system message, say) is caught by that hash or, if it lied
about the hash, by the scores.

Tier A (an exact replay) needs the worker's cache layout, not just its batch
sizes: on this build a row's bits depend on where the job's cells sit and in
which order (``meshcore_node.engine.auditor``).  An engine's shared context can
promise neither, so an engine audits with Tier B even when Tier A is asked for,
and says so in the scores; only an auditor with a context of its own
(``exclusive``) replays.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import ValidationError

from meshcore_node.engine.auditor import AuditJob, Auditor, replayable
from meshcore_node.engine.batch import LlamaBatchContext
from meshcore_node.engine.templates import ChatTemplate
from meshcore_sdk.proof.receipt import ReceiptBody, prompt_sha256
from meshcore_sdk.proof.records import decode_record
from meshcore_sdk.proof.report import AuditScores
from meshcore_sdk.proof.sampler import job_key
from meshcore_sdk.protocol import AuditedFrame, AuditFrame, GenerateFrame
from meshcore_sdk.protocol.errors import BadRequest

__all__ = ["AuditRunner", "prompt_tokens"]

_BLIND_NODE_ID = "audited-job"
"""Stands in for the worker's id, which an audit never carries."""


def _without_token_choice(scores: AuditScores) -> AuditScores:
    """The scores of a grammar-constrained job without the token-choice ones.

    A grammar masked the worker's choices and the auditor does not rebuild it, so
    its unmasked keyed choice says nothing; log-probabilities, KL and the hidden
    states still do.
    """
    chunks = tuple(chunk.model_copy(update={"tok_disagree": 0.0, "margin_min": 0.0}) for chunk in scores.chunks)
    return scores.model_copy(update={"chunks": chunks, "tok_disagree": 0.0})


def prompt_tokens(llama: LlamaBatchContext, template: ChatTemplate, frame: GenerateFrame) -> list[int]:
    """The prompt ids of a request: its messages through the chat template, or its raw prompt."""
    text = template.render(frame.messages) if frame.messages is not None else frame.prompt or ""
    bos = template.bos_token
    starts_with_bos = bool(bos) and text.startswith(bos)
    return llama.tokenize(text.encode("utf-8"), add_bos=not starts_with_bos, special=True)


class AuditRunner:
    """Turns ``audit`` frames into ``audited`` frames on the engine's context.

    Args:
        llama: the engine's context (hidden states on, room for several outputs per decode).
        template: the engine's chat template.
        job_slot: the slot the audited job is decoded in.
        filler_slot: the slot of the filler that pads a Tier A replay to the worker's batch sizes.
        exclusive: the context is the auditor's alone, so Tier A can replay exactly.
    """

    def __init__(
        self,
        llama: LlamaBatchContext,
        template: ChatTemplate,
        *,
        job_slot: int,
        filler_slot: int,
        exclusive: bool = False,
    ) -> None:
        self._llama = llama
        self._template = template
        self._exclusive = exclusive
        self._auditor = Auditor(llama, job_slot=job_slot, filler_slot=filler_slot, exclusive=exclusive)

    def run(self, frame: AuditFrame) -> AuditedFrame:
        """Audit one job.

        Raises:
            BadRequest: the job is malformed, or Tier A was asked of a schedule that cannot be replayed.
            DecodeFailed: the context has no room for the job now (retry later, or elsewhere).
        """
        prompt = prompt_tokens(self._llama, self._template, frame.generate)
        job = self._job(frame, prompt)
        if frame.tier == "A" and self._exclusive and replayable(job.schedule):
            scores = self._auditor.tier_a(job)
        else:  # the scores say which tier ran: the router judges what was done
            scores = self._auditor.tier_b(job)
            if frame.job.get("constrained"):
                scores = _without_token_choice(scores)
        return AuditedFrame(
            audit_id=frame.audit_id, prompt_sha256=prompt_sha256(prompt), scores=scores.model_dump(mode="json")
        )

    @staticmethod
    def _job(frame: AuditFrame, prompt: list[int]) -> AuditJob:
        try:
            body = ReceiptBody.model_validate({**frame.job, "node_id": _BLIND_NODE_ID})
            records = tuple(decode_record(base64.b64decode(item, validate=True)) for item in frame.records)
        except (ValidationError, binascii.Error, ValueError) as exc:
            raise BadRequest(f"audit {frame.audit_id}: the job does not parse: {exc}") from exc
        if len(records) != body.n_records:
            raise BadRequest(f"audit {frame.audit_id}: {len(records)} records for {body.n_records} positions")
        return AuditJob(
            prompt_ids=tuple(prompt),
            output_ids=body.output_ids,
            first_record=body.first_record,
            records=records,
            digest=tuple(body.digests()),
            settings=body.sampler.settings(),
            key=job_key(frame.generate.request_id, body.sampler.seed),
            schedule=tuple(tuple(step) for step in body.schedule),
        )
