"""The engine child process: one llama.cpp context serving many sequences at once.

Run as ``python -m meshcore_node.engine.child '<EngineConfig JSON>'`` by the
node's supervisor.  Frames (``generate``, ``pause``, ``resume``, ``cancel``)
arrive as JSON lines on stdin, read by a thread into a queue; answers go out as
JSON lines on a private copy of stdout (fd 1 itself is pointed at stderr, so
nothing that llama.cpp prints can corrupt the pipe).

The main thread loops: take in every frame that arrived, ask the
:class:`~meshcore_node.engine.scheduler.Scheduler` for the next step, run its
slot actions and its one batched ``llama_decode`` through
:class:`~meshcore_node.engine.batch.LlamaBatchContext`, then sample one token
for each sequence whose logits came out (:mod:`meshcore_sdk.proof.sampler`)
and send it.  Frames are taken in between two steps, so a ``cancel`` or a
``pause`` takes effect within one step.

Resume (``docs/protocol.md`` §3.2): ``token_ids`` are the ids of positions
``from_seq - len(token_ids)`` to ``from_seq - 1``.  The engine keeps its own
generated ids before those, replaces the rest, cuts its KV back to what is
still valid and prefills only what is missing; the next token it sends is
``from_seq``.  Stop strings restart their matching at ``from_seq`` unless the
resume brought nothing new.

A native crash kills only this process: the supervisor notices the closed
pipe, fails the requests in flight and starts a new child.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from pydantic import BaseModel, ValidationError

from meshcore_node.engine.audit_runner import AuditRunner, prompt_tokens
from meshcore_node.engine.batch import ContextConfig, DecodeFailed, Grammar, Hidden, LlamaBatchContext, Logits
from meshcore_node.engine.guard import needs_amx_guard
from meshcore_node.engine.ipc import EngineAccepted, EngineConfig, EngineReady, EngineReceipt
from meshcore_node.engine.scheduler import (
    Assign,
    Discard,
    Evict,
    Release,
    Restore,
    Scheduler,
    SchedulerConfig,
    SlotAction,
    Trim,
)
from meshcore_node.engine.stops import Piece, StopMatcher
from meshcore_node.engine.templates import ChatTemplate, template_for
from meshcore_node.models import served_id
from meshcore_sdk.proof.build import format_build_id
from meshcore_sdk.proof.digest import hidden_digest
from meshcore_sdk.proof.merkle import merkle_root
from meshcore_sdk.proof.receipt import RECEIPT_SCHEME, SamplerSpec, penalty_tail, prompt_sha256
from meshcore_sdk.proof.records import TokenRecord, committed, encode_record, record_token
from meshcore_sdk.proof.sampler import SamplerSettings, job_key, sample
from meshcore_sdk.protocol import (
    AuditFrame,
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    FinishReason,
    GenerateFrame,
    MeshError,
    PausedFrame,
    PauseFrame,
    ResponseFormat,
    ResumeFrame,
    TokenFrame,
    TopLogprob,
    Usage,
    decode_frame,
)
from meshcore_sdk.protocol.errors import BadRequest, ContextLengthExceeded, ErrorCode

__all__ = ["Engine", "main"]

_STOP_READING = None
_Inbound = GenerateFrame | PauseFrame | ResumeFrame | CancelFrame | AuditFrame
AUDIT_SLOTS = 2
"""Slots past ``max_sequences`` that an audit borrows (the job and its filler), never the scheduler's."""


@dataclass(eq=False)
class _Request:
    frame: GenerateFrame
    tokens: list[int]  # prompt, then generated ids
    n_prompt: int
    limit: int  # generated positions at most
    settings: SamplerSettings
    key: bytes
    stops: StopMatcher
    grammar: Grammar | None
    sent: int = 0  # the seq of the next token frame
    attempt: int = 0  # carried by its token frames; a resume may raise it
    hold: bool = False  # a resume asked to take ids into the cache and pause again, without a token
    paused: bool = False
    records: list[TokenRecord] = field(default_factory=list)  # positions first_record.. (committed values)
    hidden: list[Hidden] = field(default_factory=list)  # the same positions' final hidden states
    first_record: int = 0
    schedule: list[tuple[int, int, int]] = field(default_factory=list)  # (own, total, offset) per decode
    final_token: int | None = None  # an end-of-generation id: sampled and recorded, never sent as text
    admitted_at: float = 0.0
    first_token_at: float | None = None
    pending_logprobs: deque[TokenRecord] = field(default_factory=deque)

    @property
    def request_id(self) -> str:
        return self.frame.request_id

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.n_prompt

    @property
    def top_logprobs(self) -> int | None:
        """How many alternatives each token frame carries (None: no logprobs at all)."""
        params = self.frame.params
        if not params.logprobs and not params.top_logprobs:
            return None
        return params.top_logprobs or 0


class Engine:
    """Runs every request on one context; see the module docstring."""

    def __init__(self, llama: LlamaBatchContext, template: ChatTemplate, out: IO[str], config: EngineConfig) -> None:
        self._llama = llama
        self._template = template
        self._out = out
        self._config = config
        self._out_lock = threading.Lock()
        self._inbox: queue.Queue[_Inbound | None] = queue.Queue()
        self._scheduler = Scheduler(
            SchedulerConfig(n_cells=llama.n_ctx, n_slots=config.max_sequences, max_step_tokens=config.n_batch)
        )
        self._requests: dict[str, _Request] = {}
        self._saved: dict[str, bytes] = {}
        self._running = True
        self._audits: deque[AuditFrame] = deque()
        self._build_id = build_id_of(config)
        audit_slot = config.max_sequences
        self._auditor = AuditRunner(llama, template, job_slot=audit_slot, filler_slot=audit_slot + 1)

    # --- the loop -----------------------------------------------------------------------

    def serve(self, stdin: IO[str]) -> None:
        """Serve requests from ``stdin`` until it closes."""
        threading.Thread(target=self._read, args=(stdin,), name="engine-stdin", daemon=True).start()
        while self._running:
            if not self._scheduler.has_work and not self._audits:
                self._take(self._inbox.get())
            self._drain_inbox()
            if self._running and self._scheduler.has_work:
                self.step()
            if self._running and self._audits:
                self._audit(self._audits.popleft())
        for request in list(self._requests.values()):
            self._finish(request, FinishReason.CANCELLED)

    def submit(self, frame: _Inbound | None) -> None:
        """Queue a frame as if it came from stdin (None: stdin closed)."""
        self._inbox.put(frame)

    def pump(self, max_steps: int | None = None) -> int:
        """Take every queued frame, then run steps until there is no work (or ``max_steps``); return the steps run.

        For tests and benchmarks that drive the engine in-process, without the stdin thread.
        """
        steps = 0
        self._drain_inbox()
        while self._scheduler.has_work and (max_steps is None or steps < max_steps):
            self.step()
            steps += 1
            if self._audits:
                self._audit(self._audits.popleft())
            self._drain_inbox()
        while self._audits and max_steps is None:
            self._audit(self._audits.popleft())
        return steps

    @property
    def build_id(self) -> str:
        """The build id this engine's receipts carry."""
        return self._build_id

    @property
    def saved_bytes(self) -> int:
        """Bytes of KV held outside the context for evicted sequences."""
        return sum(len(data) for data in self._saved.values())

    def _read(self, stdin: IO[str]) -> None:
        for line in stdin:
            try:
                frame = decode_frame(line)
            except MeshError as exc:
                self.send(ErrorFrame(code=exc.code, message=str(exc)))
                continue
            if isinstance(frame, GenerateFrame | PauseFrame | ResumeFrame | CancelFrame | AuditFrame):
                self._inbox.put(frame)
        self._inbox.put(_STOP_READING)

    def _drain_inbox(self) -> None:
        while True:
            try:
                self._take(self._inbox.get_nowait())
            except queue.Empty:
                return

    def _take(self, frame: _Inbound | None) -> None:
        try:
            match frame:
                case None:
                    self._running = False
                case GenerateFrame():
                    self._admit(frame)
                case PauseFrame():
                    self._pause(frame.request_id)
                case ResumeFrame():
                    self._resume(frame)
                case CancelFrame():
                    if (request := self._requests.get(frame.request_id)) is not None:
                        self._finish(request, FinishReason.CANCELLED)
                case AuditFrame():
                    self._audits.append(frame)
        except MeshError as exc:
            request_id = getattr(frame, "request_id", None) or getattr(frame, "audit_id", None)
            self.send(ErrorFrame(request_id=request_id, code=exc.code, message=str(exc), retryable=exc.retryable))

    def _audit(self, frame: AuditFrame) -> None:
        """Run one audit; one per step at most, so that the engine's own requests never stall behind audits."""
        try:
            self.send(self._auditor.run(frame))
        except MeshError as exc:
            self.send(ErrorFrame(request_id=frame.audit_id, code=exc.code, message=str(exc), retryable=exc.retryable))

    # --- events -------------------------------------------------------------------------

    def _admit(self, frame: GenerateFrame) -> None:
        if frame.request_id in self._requests:
            raise BadRequest(f"request {frame.request_id} is already running", request_id=frame.request_id)
        prompt = self._prompt_tokens(frame)
        room = self._llama.n_ctx - len(prompt)
        if room < 1:
            raise ContextLengthExceeded(
                f"the prompt has {len(prompt)} tokens; the context holds {self._llama.n_ctx}",
                request_id=frame.request_id,
            )
        params = frame.params
        request = _Request(
            frame=frame,
            tokens=prompt,
            n_prompt=len(prompt),
            limit=min(params.max_tokens, room),
            settings=SamplerSettings.from_params(params),
            key=job_key(frame.request_id, params.seed),
            stops=StopMatcher(params.stop),
            grammar=self._grammar(params.response_format),
            attempt=frame.attempt,
            admitted_at=time.monotonic(),
        )
        self._requests[frame.request_id] = request
        self._scheduler.admitted(frame.request_id, prompt_tokens=len(prompt), reserve=len(prompt) + request.limit)
        self.send(EngineAccepted(request_id=frame.request_id, prompt_tokens=len(prompt)))

    def _pause(self, request_id: str) -> None:
        request = self._requests.get(request_id)
        if request is None:
            return  # already ended: its done frame is on its way
        request.paused = True
        self._scheduler.paused(request_id)
        self.send(PausedFrame(request_id=request_id, next_seq=request.generated, attempt=request.attempt))

    def _resume(self, frame: ResumeFrame) -> None:
        request = self._requests.get(frame.request_id)
        if request is None:
            raise BadRequest(f"request {frame.request_id} is not on this engine", request_id=frame.request_id)
        keep = frame.from_seq - len(frame.token_ids)
        if keep < 0 or keep > request.generated:
            raise BadRequest(
                f"resume at {frame.from_seq} with {len(frame.token_ids)} ids leaves a gap: "
                f"this engine has generated {request.generated}",
                request_id=frame.request_id,
            )
        if frame.from_seq >= request.limit:
            self._finish(request, FinishReason.LENGTH)
            return
        if frame.attempt is not None:
            request.attempt = frame.attempt
        plain = not frame.token_ids and frame.from_seq == request.generated
        request.tokens[request.n_prompt + keep :] = frame.token_ids
        if not plain:
            request.stops = StopMatcher(request.frame.params.stop)
            request.sent = frame.from_seq
            request.pending_logprobs.clear()
            self._keep_records(request, keep, frame.from_seq)
            if request.grammar is not None:
                request.grammar = self._regrammar(request)
        request.paused = False
        request.hold = frame.hold
        self._scheduler.resumed(frame.request_id, known=len(request.tokens), keep=request.n_prompt + keep)

    def _regrammar(self, request: _Request) -> Grammar:
        """A fresh grammar advanced over the generated ids (a resume replaced some of them)."""
        assert request.grammar is not None
        request.grammar.close()
        grammar = self._grammar(request.frame.params.response_format)
        assert grammar is not None
        for token in request.tokens[request.n_prompt :]:
            grammar.accept(token)
        return grammar

    # --- one step -----------------------------------------------------------------------

    def step(self) -> None:
        """Run the scheduler's next step: slot actions, one batched decode, sampling."""
        step = self._scheduler.next_step()
        for action in step.actions:
            self._apply(action)
        if not step.feeds:
            return
        requests = [self._requests[feed.seq_id] for feed in step.feeds]
        batch = [
            (feed.slot, request.tokens[feed.start : feed.stop], feed.start, feed.logits)
            for feed, request in zip(step.feeds, requests, strict=True)
        ]
        self._note_schedule(requests, [len(ids) for _, ids, _, _ in batch])
        try:
            rows = self._llama.decode(batch)
        except DecodeFailed as exc:
            for request in requests:
                self._fail(request, exc)
            return
        for index, (request, row) in enumerate(zip(requests, rows, strict=True)):
            if row is None:
                continue
            if request.hold:
                request.hold = False  # caught up: the ids are in the cache; wait for the real resume
                self._pause(request.request_id)
            else:
                hidden = self._llama.hidden(index) if self._config.record_hidden else None
                self._advance(request, row, hidden)

    @staticmethod
    def _note_schedule(requests: list[_Request], sizes: list[int]) -> None:
        """Each request's place in this decode, ``(own, total, offset)``: what an exact replay needs."""
        total = sum(sizes)
        offset = 0
        for request, size in zip(requests, sizes, strict=True):
            request.schedule.append((size, total, offset))
            offset += size

    def _apply(self, action: SlotAction) -> None:
        match action:
            case Assign(_, slot) | Release(_, slot):
                self._llama.clear(slot)
            case Restore(seq_id, slot, keep):
                self._llama.restore(slot, self._saved.pop(seq_id))
                self._llama.trim(slot, keep)
            case Evict(seq_id, slot):
                self._saved[seq_id] = self._llama.save(slot)
                self._llama.clear(slot)
            case Trim(_, slot, keep):
                self._llama.trim(slot, keep)
            case Discard(seq_id):
                self._saved.pop(seq_id, None)

    def _advance(self, request: _Request, row: Logits, hidden: Hidden | None) -> None:
        """Sample, record and send the next token of ``request`` from its logit ``row``."""
        position = request.generated
        token = self._choose(request, row, position)
        self._record(request, row, token, hidden)
        if request.first_token_at is None:
            request.first_token_at = time.monotonic()
        if self._llama.is_eog(token):
            request.final_token = token
            self._finish(request, FinishReason.STOP)
            return
        request.tokens.append(token)
        if request.grammar is not None:
            request.grammar.accept(token)
        self._emit(request, request.stops.feed(token, self._llama.piece(token)))
        if request.stops.stopped:
            self._finish(request, FinishReason.STOP)
        elif request.generated >= request.limit:
            self._finish(request, FinishReason.LENGTH)
        else:
            self._scheduler.sampled(request.request_id)

    def _choose(self, request: _Request, row: Logits, position: int) -> int:
        history = request.tokens[-64:] if request.settings.repeat_penalty != 1.0 else ()
        grammar = request.grammar
        settings = request.settings
        if grammar is not None:
            # Without masks the grammar's choice is the unconstrained one whenever that is allowed.
            unmasked = settings.temperature == 0.0 or (
                settings.top_k == 0 and settings.top_p >= 1.0 and settings.min_p == 0.0
            )
            if unmasked:
                token = sample(row, settings, key=request.key, position=position, history=history)
                if grammar.allows(token):
                    return token
            row = grammar.mask(row)
        return sample(row, settings, key=request.key, position=position, history=history)

    def _record(self, request: _Request, row: Logits, token: int, hidden: Hidden | None) -> None:
        # In this thread, between two decodes: a helper thread would fight llama.cpp's threads for the cores.
        config = self._config
        wanted = request.top_logprobs
        if wanted is None and not config.record_top_k and not config.record_row_hash:
            return
        top_k = max(config.record_top_k, wanted or 0)
        record = committed(record_token(row, token, top_k=top_k, hash_row=config.record_row_hash))
        request.records.append(record)
        if hidden is not None:
            request.hidden.append(np.array(hidden, dtype=np.float32))
        if wanted is not None:
            request.pending_logprobs.append(record)

    @staticmethod
    def _keep_records(request: _Request, keep: int, from_seq: int) -> None:
        """After a resume: the records of positions before ``keep`` stand; none before ``from_seq`` if ids came in.

        The ids of positions ``keep..from_seq-1`` came from another engine, so this one
        commits to nothing before ``from_seq`` (a receipt's records are contiguous).
        """
        if from_seq > keep or keep < request.first_record:
            request.records.clear()
            request.hidden.clear()
            request.first_record = from_seq
            return
        del request.records[keep - request.first_record :]
        del request.hidden[keep - request.first_record :]

    # --- answers ------------------------------------------------------------------------

    def _emit(self, request: _Request, pieces: list[Piece]) -> None:
        for piece in pieces:
            extra: dict[str, object] = {}
            if request.top_logprobs is not None and request.pending_logprobs:
                record = request.pending_logprobs.popleft()
                extra["logprob"] = min(record.logprob, 0.0)
                extra["top_logprobs"] = [
                    TopLogprob(token_id=i, text_bytes=self._llama.piece(i)[:1024], logprob=min(lp, 0.0))
                    for i, lp in record.top_logprobs(request.top_logprobs)
                ]
            self.send(
                TokenFrame(
                    request_id=request.request_id,
                    attempt=request.attempt,
                    seq=request.sent,
                    token_id=piece.token_id,
                    text_bytes=piece.data,
                    t_worker=time.monotonic(),
                    **extra,
                )
            )
            request.sent += 1

    def _finish(self, request: _Request, finish: FinishReason) -> None:
        if finish is not FinishReason.CANCELLED:
            self._emit(request, request.stops.flush())
        self._forget(request)
        usage = Usage(
            prompt_tokens=request.n_prompt,
            completion_tokens=request.sent,
            total_tokens=request.n_prompt + request.sent,
        )
        receipt = self._receipt(request, finish)
        proof = None
        if receipt is not None:
            self.send(receipt)
            proof = {"scheme": receipt.body["scheme"], "merkle_root": receipt.body["merkle_root"]}
        self.send(DoneFrame(request_id=request.request_id, finish_reason=finish, usage=usage, proof=proof))

    def _fail(self, request: _Request, exc: MeshError) -> None:
        self._forget(request)
        self.send(ErrorFrame(request_id=request.request_id, code=ErrorCode.INTERNAL, message=str(exc)))

    def _forget(self, request: _Request) -> None:
        del self._requests[request.request_id]
        self._scheduler.finished(request.request_id)
        if request.grammar is not None:
            request.grammar.close()

    def _receipt(self, request: _Request, finish: FinishReason) -> EngineReceipt | None:
        """What this engine commits to for ``request`` (§9.1): the receipt body less node id and time."""
        output = request.tokens[request.n_prompt :]
        if request.final_token is not None:
            output = [*output, request.final_token]
        if not request.records or len(output) - request.first_record != len(request.records):
            return None  # nothing generated here, or records off (record_top_k=0 and no row hashes)
        encoded = [encode_record(record) for record in request.records]
        prompt = request.tokens[: request.n_prompt]
        digest = hidden_digest(np.stack(request.hidden)) if len(request.hidden) == len(request.records) else []
        elapsed = time.monotonic() - (request.first_token_at or request.admitted_at)
        params = request.frame.params
        body = {
            "scheme": RECEIPT_SCHEME,
            "job_id": request.request_id,
            "model_sha256": self._model_sha256(request),
            "build_id": self._build_id,
            "sampler": SamplerSpec.of(request.settings, params.seed).model_dump(),
            "max_tokens": max(request.limit, len(output)),
            "prompt_sha256": prompt_sha256(prompt),
            "n_prompt": len(prompt),
            "prompt_tail": list(penalty_tail(prompt, request.settings)),
            "output_ids": output,
            "first_record": request.first_record,
            "record_top_k": max(self._config.record_top_k, request.top_logprobs or 0),
            "merkle_root": merkle_root(encoded).hex(),
            "schedule": request.schedule,
            "hidden_digest": [base64.b64encode(item).decode() for item in digest],
            "constrained": request.frame.params.response_format is not None
            and request.frame.params.response_format.type != "text",
            "finish_reason": finish.value,
            "ttft_ms": 1000 * ((request.first_token_at or request.admitted_at) - request.admitted_at),
            "tokens_per_s": (len(output) - 1) / elapsed if len(output) > 1 and elapsed > 0 else 0.0,
        }
        records = [base64.b64encode(item).decode() for item in encoded]
        return EngineReceipt(request_id=request.request_id, body=body, records=records)

    @staticmethod
    def _model_sha256(request: _Request) -> str:
        return request.frame.model.removeprefix("sha256:")

    # --- helpers ------------------------------------------------------------------------

    def _prompt_tokens(self, frame: GenerateFrame) -> list[int]:
        return prompt_tokens(self._llama, self._template, frame)

    def _grammar(self, response_format: ResponseFormat | None) -> Grammar | None:
        if response_format is None or response_format.type == "text":
            return None
        from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

        if response_format.json_schema is None:
            return self._llama.grammar(JSON_GBNF)
        try:
            gbnf = json_schema_to_gbnf(json.dumps(response_format.json_schema))
        except Exception as exc:  # the converter raises bare exceptions on schemas it cannot express
            raise BadRequest(f"response_format.json_schema cannot be turned into a grammar: {exc}") from exc
        return self._llama.grammar(gbnf)

    def send(self, message: BaseModel) -> None:
        """Write one message to the supervisor (from either thread)."""
        line = message.model_dump_json(exclude_none=True) + "\n"
        with self._out_lock:
            self._out.write(line)
            self._out.flush()


def _self_test(llama: LlamaBatchContext) -> None:
    """Run one token of inference, so a broken build fails here, not on a user's request."""
    prompt = llama.tokenize(b"Hello", add_bos=True, special=False)
    llama.decode([(0, prompt, 0, True)])
    llama.clear(0)


def load_context(config: EngineConfig) -> LlamaBatchContext:
    """The llama.cpp context an engine with ``config`` runs on (AMX guard included)."""
    return LlamaBatchContext(
        ContextConfig(
            model_path=config.model_path,
            n_ctx=config.n_ctx,
            n_slots=config.max_sequences + AUDIT_SLOTS,
            n_batch=max(config.n_batch, config.max_sequences),
            n_threads=config.n_threads,
            amx_guard=config.amx_guard,
            embeddings=config.record_hidden,
            n_outputs_max=max(config.max_sequences, config.audit_outputs),
        )
    )


def weight_format(metadata: dict[str, str]) -> str | None:
    """The GGUF's weight format (``Q4_K_M``, ``F16``, ...) from ``general.file_type``, if it says."""
    import gguf

    try:
        return gguf.LlamaFileType(int(metadata["general.file_type"])).name.removeprefix("MOSTLY_")
    except (KeyError, ValueError):
        return None


def build_id_of(config: EngineConfig) -> str:
    """The build id receipts carry (``meshcore_sdk.proof.build``)."""
    import llama_cpp

    system = llama_cpp.llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    extra_bufts = not needs_amx_guard(config.amx_guard)
    return format_build_id(version=llama_cpp.__version__, system_info=system, extra_bufts=extra_bufts)


def main(argv: list[str]) -> int:
    """Load the model, report ready, then serve requests from stdin until it closes."""
    try:
        config = EngineConfig.model_validate_json(argv[1])
    except (IndexError, ValidationError) as exc:
        sys.stderr.write(f"usage: python -m meshcore_node.engine.child '<EngineConfig JSON>': {exc}\n")
        return 2
    if config.passive_threads:
        # Idle llama.cpp threads sleep at once instead of spinning, which spares the cores when several
        # engines share a machine (docs/engine.md).  Set before llama.cpp (and its OpenMP runtime) loads.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    llama = load_context(config)
    template = template_for(
        llama.metadata,
        bos_token=llama.piece(llama.bos, special=True).decode("utf-8", "replace"),
        eos_token=llama.piece(llama.eos, special=True).decode("utf-8", "replace"),
    )
    _self_test(llama)
    engine = Engine(llama, template, out, config)
    ready = EngineReady(
        served_name=served_id(llama.metadata.get("general.name") or Path(config.model_path).stem),
        architecture=llama.metadata.get("general.architecture", "unknown"),
        n_ctx=llama.n_ctx,
        chat_format=template.name,
        pid=os.getpid(),
        max_sequences=config.max_sequences,
        build_id=engine.build_id,
        weight_format=weight_format(llama.metadata),
    )
    engine.send(ready)
    engine.serve(sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
