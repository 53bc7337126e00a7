"""Wire frames: every message of the Meshcore protocol as a frozen pydantic model.

One protocol travels on every transport (``docs/protocol.md`` §1): the node's
control websocket, the router's client stream, and (later) WebRTC data channels.
Each frame is a JSON object whose ``type`` field picks its model.  Frames are
strict (``extra="forbid"``): a receiver refuses what it does not understand, and
protocol versions (§2) are how the protocol grows.  :data:`TOLERANT_FRAME` is the
same union read with ``extra="ignore"`` (``decode_frame(..., tolerant=True)``), for the SDK
reading a newer peer.
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_serializer,
    field_validator,
    model_validator,
)

from meshcore_sdk.protocol.errors import ErrorCode

__all__ = [
    "FRAME",
    "AcceptedFrame",
    "AuditFrame",
    "AuditedFrame",
    "CancelFrame",
    "ChatMessage",
    "CommandFrame",
    "CommandKind",
    "DoneFrame",
    "ErrorFrame",
    "FinishReason",
    "Frame",
    "GenerateFrame",
    "HeartbeatFrame",
    "HelloFrame",
    "IceServer",
    "ModelInfo",
    "NodeStatus",
    "PauseFrame",
    "PausedFrame",
    "ReceiptFrame",
    "RegisterFrame",
    "RegisteredFrame",
    "ResponseFormat",
    "ResumeFrame",
    "RevealFrame",
    "RevealedFrame",
    "Role",
    "SamplingParams",
    "SignalFrame",
    "Telemetry",
    "TokenFrame",
    "TopLogprob",
    "Usage",
    "WelcomeFrame",
]

RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
NodeId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ModelName = Annotated[str, Field(min_length=1, max_length=256)]
Count = Annotated[int, Field(ge=0)]
MAX_STOP_STRINGS: Final = 16
MAX_RESUME_TOKENS: Final = 131_072
MAX_TOP_LOGPROBS: Final = 20


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Role(enum.StrEnum):
    """Who speaks on a connection (§2)."""

    CLIENT = "client"
    NODE = "node"
    ROUTER = "router"


class NodeStatus(enum.StrEnum):
    """A node's readiness, carried by each heartbeat (§4.2)."""

    STARTING = "STARTING"  # engine loading or restarting: takes no requests
    READY = "READY"
    BUSY = "BUSY"  # alive, but at capacity: takes no new requests
    DRAINING = "DRAINING"  # finishing what it has, then leaving


class FinishReason(enum.StrEnum):
    """Why a generation ended (§3.4)."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


class CommandKind(enum.StrEnum):
    """Router-to-node commands (§4.4)."""

    LOAD = "load"
    PREWARM = "prewarm"
    UNLOAD = "unload"
    AUDIT = "audit"
    SHADOW = "shadow"


# --- session (§2) -----------------------------------------------------------------------


class HelloFrame(_Model):
    """First frame on every connection: the versions this side speaks."""

    type: Literal["hello"] = "hello"
    versions: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=16)
    role: Role
    agent: str = Field(default="", max_length=256)


class WelcomeFrame(_Model):
    """Answer to ``hello``: the version both sides will speak."""

    type: Literal["welcome"] = "welcome"
    version: int = Field(ge=1)
    session_id: str = Field(max_length=128)


class ErrorFrame(_Model):
    """An error for one request (``request_id`` set) or for the whole connection."""

    type: Literal["error"] = "error"
    request_id: RequestId | None = None
    code: ErrorCode
    message: str = Field(max_length=4096)
    retryable: bool = False
    retry_after_s: float | None = Field(default=None, ge=0)


# --- data plane: client <-> worker (§3) --------------------------------------------------


class ChatMessage(_Model):
    """One chat turn; ``developer`` is OpenAI's newer name for ``system``."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = Field(max_length=1_000_000)
    name: str | None = Field(default=None, max_length=256)


class ResponseFormat(_Model):
    """Constrain the answer (§3.1): free ``text``, any JSON object, or JSON matching ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given exactly when type is 'json_schema'")
        return self


class SamplingParams(_Model):
    """How to pick tokens (§3.1). Defaults follow the OpenAI API.

    ``logprobs`` asks for each token's log-probability, ``top_logprobs`` for that many
    alternatives as well; ``response_format`` constrains the answer with a grammar.
    """

    max_tokens: int = Field(default=256, ge=1, le=131_072)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=MAX_STOP_STRINGS
    )
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None


class GenerateFrame(_Model):
    """Start a generation: exactly one of ``prompt`` or ``messages`` (§3.1).

    ``model`` is a served id or ``sha256:<hex>``; on a node's link it is always the latter.
    """

    type: Literal["generate"] = "generate"
    request_id: RequestId
    model: ModelName
    prompt: str | None = Field(default=None, max_length=1_000_000)
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=1024)
    params: SamplingParams = Field(default_factory=SamplingParams)
    lora: Sha256 | None = None
    attempt: Count = 0
    group: RequestId | None = None
    """Requests of one group on one client connection go to distinct workers while there are enough (§5)."""

    @model_validator(mode="after")
    def _one_input(self) -> GenerateFrame:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("exactly one of prompt and messages must be given")
        return self


class AcceptedFrame(_Model):
    """The request was admitted by ``worker_id`` (sent before its first token)."""

    type: Literal["accepted"] = "accepted"
    request_id: RequestId
    worker_id: NodeId
    model: str = Field(max_length=256)
    prompt_tokens: Count


class PauseFrame(_Model):
    """Stop computing this request but keep its state (§3.2)."""

    type: Literal["pause"] = "pause"
    request_id: RequestId


class ResumeFrame(_Model):
    """Continue at ``from_seq``; ``token_ids`` are the ids of positions ``from_seq - len(token_ids)`` on (§3.2).

    With ``attempt`` set, the tokens the worker sends from now on carry it, so a reader can tell them
    from tokens sent before the worker saw this frame.  With ``hold``, the worker only takes the ids
    into its cache and stays paused (answering ``paused``): a warm follower kept caught up.
    """

    type: Literal["resume"] = "resume"
    request_id: RequestId
    from_seq: Count
    token_ids: list[Count] = Field(default_factory=list, max_length=MAX_RESUME_TOKENS)
    attempt: Count | None = None
    hold: bool = False


class CancelFrame(_Model):
    """Stop this request and free its state."""

    type: Literal["cancel"] = "cancel"
    request_id: RequestId


class _Base64Text(_Model):
    """``text_bytes`` holds raw bytes in Python and travels as standard base64 (RFC 4648 §4) in JSON."""

    @field_validator("text_bytes", mode="before", check_fields=False)
    @classmethod
    def _from_base64(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"text_bytes is not standard base64: {exc}") from exc
        return value

    @field_serializer("text_bytes", when_used="json", check_fields=False)
    def _to_base64(self, value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")


class TopLogprob(_Base64Text):
    """One of the most likely tokens at a position, with its log-probability (§3.3)."""

    token_id: Count
    text_bytes: bytes = Field(max_length=1024)
    logprob: float = Field(le=0)


class TokenFrame(_Base64Text):
    """One generated token at position ``seq`` (0-based among generated tokens).

    ``text_bytes`` holds raw bytes in Python and travels as standard base64 (RFC 4648 §4) in JSON.
    ``logprob`` and ``top_logprobs`` come when the request asked for them (§3.3).
    """

    type: Literal["token"] = "token"
    request_id: RequestId
    attempt: Count = 0
    seq: Count
    token_id: Count
    text_bytes: bytes = Field(max_length=1024)
    t_worker: float = Field(ge=0)
    logprob: float | None = Field(default=None, le=0)
    top_logprobs: list[TopLogprob] | None = Field(default=None, max_length=MAX_TOP_LOGPROBS)


class PausedFrame(_Model):
    """The request is paused; ``next_seq`` is the position it will produce next."""

    type: Literal["paused"] = "paused"
    request_id: RequestId
    next_seq: Count
    attempt: Count = 0


class Usage(_Model):
    """Token counts of one request."""

    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count

    @model_validator(mode="after")
    def _total(self) -> Usage:
        if self.total_tokens != self.prompt_tokens + self.completion_tokens:
            raise ValueError("total_tokens must equal prompt_tokens + completion_tokens")
        return self


class DoneFrame(_Model):
    """The last frame of a successful request."""

    type: Literal["done"] = "done"
    request_id: RequestId
    finish_reason: FinishReason
    usage: Usage
    proof: dict[str, Any] | None = None


# --- control plane: node <-> router (§4) -------------------------------------------------


class ModelInfo(_Model):
    """A model a node holds in RAM, named by its file hash and its served id."""

    sha256: Sha256
    served_name: str = Field(min_length=1, max_length=256)
    n_ctx: int = Field(ge=1)
    size_bytes: Count
    weight_format: str | None = Field(default=None, min_length=1, max_length=32)


class RegisterFrame(_Model):
    """A node announces itself and what it serves."""

    type: Literal["register"] = "register"
    node_id: NodeId
    models: list[ModelInfo] = Field(max_length=64)
    lora: list[Sha256] = Field(default_factory=list, max_length=1024)
    ram_free_bytes: Count
    vram_free_bytes: Count = 0
    cpu_count: int = Field(ge=1)
    addr: str | None = Field(default=None, max_length=256)
    max_sequences: int = Field(default=1, ge=1)
    public_key: str | None = Field(default=None, min_length=1, max_length=64)
    build_id: str | None = Field(default=None, min_length=1, max_length=512)


class RegisteredFrame(_Model):
    """The router accepted a registration and says how often to heartbeat."""

    type: Literal["registered"] = "registered"
    node_id: NodeId
    heartbeat_interval_s: float = Field(gt=0)


class Telemetry(_Model):
    """What a node measures about itself, sent with each heartbeat.

    ``accepts_hedges`` false is a worker's push-back (§4.2): "busy, don't hedge to me".  The
    router still sends the node requests while it is READY, but no speculative copies.
    """

    ram_free_bytes: Count
    active_sequences: Count = 0
    queued_requests: Count = 0
    tokens_per_s: float = Field(default=0.0, ge=0)
    engine_restarts: Count = 0
    swapping: bool = False
    accepts_hedges: bool = True


class HeartbeatFrame(_Model):
    """A node is alive, in ``status``."""

    type: Literal["heartbeat"] = "heartbeat"
    status: NodeStatus
    telemetry: Telemetry


class IceServer(_Model):
    """One STUN or TURN server, as WebRTC's ``RTCIceServer``; TURN ones carry REST credentials."""

    urls: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(min_length=1, max_length=8)
    username: str | None = Field(default=None, max_length=512)
    credential: str | None = Field(default=None, max_length=512)


class SignalFrame(_Model):
    """WebRTC signaling relayed through the router (direct mode, ``docs/protocol.md`` §8).

    An offer carries the client's ticket, its complete SDP and the ``generate`` frame the
    worker starts on at once; on the node's link the router adds ``ice_servers`` (the TURN
    credentials minted for the worker).  The answer carries the worker's complete SDP.
    """

    type: Literal["signal"] = "signal"
    kind: Literal["offer", "answer"]
    request_id: RequestId
    ticket: str | None = Field(default=None, max_length=8192)
    sdp: str = Field(max_length=65_536)
    generate: GenerateFrame | None = None
    ice_servers: list[IceServer] | None = Field(default=None, max_length=8)


class CommandFrame(_Model):
    """A router-to-node command (§4.4)."""

    type: Literal["command"] = "command"
    command: CommandKind
    model_sha256: Sha256 | None = None
    args: dict[str, Any] = Field(default_factory=dict)


# --- proof of compute: node <-> router (§9) ----------------------------------------------

MAX_REVEALED: Final = 131_072
MerkleProof = Annotated[list[Sha256], Field(max_length=64)]
Base64Record = Annotated[str, Field(min_length=4, max_length=1024)]


class ReceiptFrame(_Model):
    """A worker's signed receipt for one request it served (§9.1).

    ``receipt`` is a ``SignedReceipt`` (``meshcore_sdk.proof.receipt``): the proof layer, not the
    frame layer, checks its schema and its signature, because a bad receipt is evidence to keep.
    """

    type: Literal["receipt"] = "receipt"
    request_id: RequestId
    receipt: dict[str, Any]


class RevealFrame(_Model):
    """The router asks a worker for the records of some positions of a request, with Merkle proofs (§9.2)."""

    type: Literal["reveal"] = "reveal"
    request_id: RequestId
    positions: list[Count] = Field(max_length=MAX_REVEALED)


class RevealedFrame(_Model):
    """A worker's records of the asked positions, each with its Merkle inclusion proof (§9.2)."""

    type: Literal["revealed"] = "revealed"
    request_id: RequestId
    positions: list[Count] = Field(max_length=MAX_REVEALED)
    records: list[Base64Record] = Field(max_length=MAX_REVEALED)
    proofs: list[MerkleProof] = Field(max_length=MAX_REVEALED)

    @model_validator(mode="after")
    def _aligned(self) -> RevealedFrame:
        if not len(self.positions) == len(self.records) == len(self.proofs):
            raise ValueError("positions, records and proofs must have one entry each per position")
        return self


class AuditFrame(_Model):
    """The router asks a trusted node to audit a job, blind: nothing names the worker (§9.3).

    ``job`` is the worker's receipt body without ``node_id``; ``records`` are its revealed
    records (base64, positions ``first_record`` on); ``generate`` is the request as the worker got it.
    """

    type: Literal["audit"] = "audit"
    audit_id: RequestId
    tier: Literal["A", "B"]
    generate: GenerateFrame
    job: dict[str, Any]
    records: list[Base64Record] = Field(max_length=MAX_REVEALED)


class AuditedFrame(_Model):
    """An auditor's measurements of one job (§9.3): ``scores`` is an ``AuditScores``."""

    type: Literal["audited"] = "audited"
    audit_id: RequestId
    prompt_sha256: Sha256
    scores: dict[str, Any]


Frame = Annotated[
    HelloFrame
    | WelcomeFrame
    | ErrorFrame
    | GenerateFrame
    | AcceptedFrame
    | PauseFrame
    | ResumeFrame
    | CancelFrame
    | TokenFrame
    | PausedFrame
    | DoneFrame
    | RegisterFrame
    | RegisteredFrame
    | HeartbeatFrame
    | SignalFrame
    | CommandFrame
    | ReceiptFrame
    | RevealFrame
    | RevealedFrame
    | AuditFrame
    | AuditedFrame,
    Field(discriminator="type"),
]
"""Any frame, picked by its ``type``."""

FRAME: Final[TypeAdapter[Frame]] = TypeAdapter(Frame)
