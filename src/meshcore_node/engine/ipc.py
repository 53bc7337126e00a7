"""Messages between the node daemon and its engine child process.

The daemon writes one JSON frame per line to the child's stdin: the wire
``generate``, ``pause``, ``resume`` and ``cancel`` frames (``docs/protocol.md``
§3).  The child writes one frame per line to its IPC pipe: wire ``token``,
``paused``, ``done`` and ``error`` frames, the wire ``audited`` frame for an
``audit`` it ran (§9.3), plus the engine-only messages below.  The child never
learns where a request came from, and it holds no key: the daemon signs receipts.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from meshcore_sdk.protocol import AuditedFrame, DoneFrame, ErrorFrame, PausedFrame, TokenFrame

__all__ = ["ENGINE_MESSAGE", "EngineAccepted", "EngineConfig", "EngineMessage", "EngineReady", "EngineReceipt"]


class EngineConfig(BaseModel):
    """What the engine child needs, passed to it serialised on its command line.

    Attributes:
        model_path: the GGUF file to load.
        n_ctx: context size in tokens.
        n_threads: threads for generation (None: llama.cpp's default).
        n_batch: tokens evaluated per ``llama_decode`` at most (decodes and prompt chunks together).
        chat_format: the llama-cpp-python chat format to use when the GGUF has no template.
        max_sequences: sequences the engine holds at once (running, paused and queued count alike).
        record_top_k: logits kept per generated token for proofs and ``top_logprobs`` (0: none).
        record_row_hash: keep each token's row hash (``meshcore_sdk.proof.records.row_hash``).
        record_hidden: keep each generated token's final hidden state for the receipt's digest.
        audit_outputs: logit rows one audit prefill step may ask for (the auditor's chunk of positions).
        amx_guard: force the AMX guard on or off; None decides from the CPU.
        passive_threads: let llama.cpp's idle threads sleep at once instead of spinning; a lone stream
            decodes slower, but the cores are spared when several engines share a machine.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_path: str
    n_ctx: int = Field(default=4096, ge=64)
    n_threads: int | None = Field(default=None, ge=1)
    n_batch: int = Field(default=512, ge=1)
    chat_format: str | None = None
    max_sequences: int = Field(default=8, ge=1, le=256)
    record_top_k: int = Field(default=20, ge=0, le=1024)
    record_row_hash: bool = True
    record_hidden: bool = True
    audit_outputs: int = Field(default=32, ge=1, le=512)
    amx_guard: bool | None = None
    passive_threads: bool = False


class EngineReady(BaseModel):
    """The model is loaded and passed its self-test."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["engine_ready"] = "engine_ready"
    served_name: str
    architecture: str
    n_ctx: int
    chat_format: str
    pid: int
    max_sequences: int = 1
    build_id: str = ""
    weight_format: str | None = None


class EngineAccepted(BaseModel):
    """A request was tokenised and admitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["engine_accepted"] = "engine_accepted"
    request_id: str
    prompt_tokens: int


class EngineReceipt(BaseModel):
    """What the engine commits to for one request, sent just before its ``done`` (§9.1).

    ``body`` is a receipt body without ``node_id`` and ``signed_at``, which the daemon adds
    before it signs; ``records`` are the encoded per-token records (base64) the Merkle root
    covers, kept by the daemon for the audit window.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["engine_receipt"] = "engine_receipt"
    request_id: str
    body: dict[str, Any]
    records: list[str]


EngineMessage = Annotated[
    EngineReady | EngineAccepted | EngineReceipt | TokenFrame | PausedFrame | DoneFrame | ErrorFrame | AuditedFrame,
    Field(discriminator="type"),
]
ENGINE_MESSAGE: Final[TypeAdapter[EngineMessage]] = TypeAdapter(EngineMessage)
