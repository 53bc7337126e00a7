"""The one error tree of Meshcore, and the table that maps it to the wire.

Every exception that Meshcore raises derives from :class:`MeshError`.  Errors
that cross the wire travel as an ``error`` frame (``docs/protocol.md`` §5) or as
an OpenAI-shaped HTTP body; both carry an :class:`ErrorCode`, and
:data:`ERROR_TABLE` maps each code to exactly one class (a test checks that the
mapping is a bijection), so the node, the router and the SDK agree on what a
code means::

    MeshError                           root of everything Meshcore raises
    ├── ConfigError                     bad arguments or settings; raised before any I/O
    ├── ProtocolError                   the wire protocol was violated
    │   ├── LocalProtocolError          we tried something illegal (a caller bug)
    │   └── RemoteProtocolError         the peer sent malformed or out-of-state data
    │       ├── MalformedFrame
    │       ├── FrameTooLarge
    │       ├── FrameTooDeep
    │       ├── OutOfOrderFrame
    │       └── VersionMismatch
    ├── TransportError                  network-level, usually retryable
    │   ├── ConnectError
    │   ├── ConnectionLost
    │   └── MeshTimeout                 also a TimeoutError
    ├── RouterError                     the router refused or failed a request
    │   ├── BadRequest
    │   │   └── ContextLengthExceeded
    │   ├── AuthenticationError
    │   ├── PermissionDenied
    │   ├── ModelNotFound
    │   ├── NoCapacity                  no READY worker serves the model (.retry_after_s)
    │   ├── RateLimited
    │   └── InternalError
    ├── WorkerError                     a worker failed while serving (.worker_id)
    │   ├── EngineCrashed               the engine process died mid-request
    │   ├── WorkerLost                  the worker's link went away mid-request
    │   └── ModelUnavailable
    ├── TicketError                     a worker refused a direct-mode ticket; no inference started
    │   ├── TicketForged                the signature does not verify (forged or tampered)
    │   ├── TicketExpired               past its ``exp`` (or not yet valid)
    │   ├── TicketReplayed              its ``jti`` was already used
    │   ├── TicketWrongAudience         issued for another worker
    │   ├── TicketWrongAlgorithm        signed with an algorithm other than the pinned one
    │   └── TicketUnknownKey            its ``kid`` is in no key set the worker trusts
    ├── ProofError                      a proof of compute failed a check
    │   ├── ReceiptInvalid              bad signature, bad schema or unknown key
    │   ├── ReceiptLate                 arrived after its audit epoch was revealed
    │   └── RecordInvalid               a per-token record's encoding or Merkle proof is bad
    ├── StreamClosed                    a stream was used after it was closed
    └── SwarmExhausted                  every worker of a swarm failed (.failures)

This module is pure: it imports nothing but the standard library.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Final

__all__ = [
    "ERROR_TABLE",
    "AuthenticationError",
    "BadRequest",
    "ConfigError",
    "ConnectError",
    "ConnectionLost",
    "ContextLengthExceeded",
    "EngineCrashed",
    "ErrorCode",
    "FrameTooDeep",
    "FrameTooLarge",
    "InternalError",
    "LocalProtocolError",
    "MalformedFrame",
    "MeshError",
    "MeshTimeout",
    "ModelNotFound",
    "ModelUnavailable",
    "NoCapacity",
    "OutOfOrderFrame",
    "PermissionDenied",
    "ProofError",
    "ProtocolError",
    "RateLimited",
    "ReceiptInvalid",
    "ReceiptLate",
    "RecordInvalid",
    "RemoteProtocolError",
    "RouterError",
    "StreamClosed",
    "SwarmExhausted",
    "TicketError",
    "TicketExpired",
    "TicketForged",
    "TicketReplayed",
    "TicketUnknownKey",
    "TicketWrongAlgorithm",
    "TicketWrongAudience",
    "TransportError",
    "VersionMismatch",
    "WorkerError",
    "WorkerLost",
    "error_from_code",
]


class ErrorCode(enum.StrEnum):
    """Wire names of errors, shared by ``error`` frames and HTTP error bodies."""

    CONFIG = "config_error"
    LOCAL_PROTOCOL = "local_protocol_error"
    PROTOCOL = "protocol_error"
    REMOTE_PROTOCOL = "remote_protocol_error"
    MALFORMED_FRAME = "malformed_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    FRAME_TOO_DEEP = "frame_too_deep"
    OUT_OF_ORDER = "out_of_order_frame"
    VERSION_MISMATCH = "version_mismatch"
    TRANSPORT = "transport_error"
    CONNECT = "connect_error"
    CONNECTION_LOST = "connection_lost"
    TIMEOUT = "timeout"
    ROUTER = "router_error"
    BAD_REQUEST = "invalid_request"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    AUTHENTICATION = "authentication_failed"
    PERMISSION_DENIED = "permission_denied"
    MODEL_NOT_FOUND = "model_not_found"
    NO_CAPACITY = "no_capacity"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal_error"
    WORKER = "worker_error"
    ENGINE_CRASHED = "engine_crashed"
    WORKER_LOST = "worker_lost"
    MODEL_UNAVAILABLE = "model_unavailable"
    STREAM_CLOSED = "stream_closed"
    SWARM_EXHAUSTED = "swarm_exhausted"
    TICKET_INVALID = "ticket_invalid"
    TICKET_FORGED = "ticket_forged"
    TICKET_EXPIRED = "ticket_expired"
    TICKET_REPLAYED = "ticket_replayed"
    TICKET_WRONG_AUDIENCE = "ticket_wrong_audience"
    TICKET_WRONG_ALGORITHM = "ticket_wrong_algorithm"
    TICKET_UNKNOWN_KEY = "ticket_unknown_key"
    PROOF = "proof_error"
    RECEIPT_INVALID = "receipt_invalid"
    RECEIPT_LATE = "receipt_late"
    RECORD_INVALID = "record_invalid"
    MESH = "mesh_error"


class MeshError(Exception):
    """Root of every error Meshcore raises.

    Attributes:
        message: one human sentence.
        request_id: the request this error belongs to, when there is one.
        worker_id: the worker that reported or caused it, when known.
        retry_after_s: how long the server asked the caller to wait before retrying.
        retryable: whether repeating the same request may succeed.
    """

    code: ClassVar[ErrorCode] = ErrorCode.MESH
    http_status: ClassVar[int] = 500
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        worker_id: str | None = None,
        retry_after_s: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.worker_id = worker_id
        self.retry_after_s = retry_after_s
        self.retryable = self.default_retryable if retryable is None else retryable

    def __str__(self) -> str:
        return self.message


class ConfigError(MeshError, ValueError):
    """Bad arguments or settings, found before any I/O."""

    code = ErrorCode.CONFIG
    http_status = 400


class ProtocolError(MeshError):
    """The wire protocol was violated."""

    code = ErrorCode.PROTOCOL
    http_status = 400


class LocalProtocolError(ProtocolError):
    """This side tried something the protocol forbids in the current state."""

    code = ErrorCode.LOCAL_PROTOCOL
    http_status = 500


class RemoteProtocolError(ProtocolError):
    """The peer sent data that is malformed or illegal in the current state."""

    code = ErrorCode.REMOTE_PROTOCOL


class MalformedFrame(RemoteProtocolError):
    """A frame was not valid JSON or did not match any frame schema."""

    code = ErrorCode.MALFORMED_FRAME


class FrameTooLarge(RemoteProtocolError):
    """A frame exceeded the size cap; it was refused before parsing."""

    code = ErrorCode.FRAME_TOO_LARGE
    http_status = 413


class FrameTooDeep(RemoteProtocolError):
    """A frame nested deeper than the depth cap; it was refused before parsing."""

    code = ErrorCode.FRAME_TOO_DEEP


class OutOfOrderFrame(RemoteProtocolError):
    """A well-formed frame arrived where the protocol does not allow it."""

    code = ErrorCode.OUT_OF_ORDER


class VersionMismatch(RemoteProtocolError):
    """The two sides share no protocol version."""

    code = ErrorCode.VERSION_MISMATCH


class TransportError(MeshError):
    """A network-level failure; usually worth retrying."""

    code = ErrorCode.TRANSPORT
    http_status = 502
    default_retryable = True


class ConnectError(TransportError):
    """A connection could not be opened."""

    code = ErrorCode.CONNECT


class ConnectionLost(TransportError):
    """An open connection went away."""

    code = ErrorCode.CONNECTION_LOST


class MeshTimeout(TransportError, TimeoutError):
    """An operation ran past its deadline."""

    code = ErrorCode.TIMEOUT
    http_status = 504


class RouterError(MeshError):
    """The router refused or failed a request."""

    code = ErrorCode.ROUTER
    http_status = 500


class BadRequest(RouterError):
    """The request was invalid; repeating it unchanged cannot succeed."""

    code = ErrorCode.BAD_REQUEST
    http_status = 400


class ContextLengthExceeded(BadRequest):
    """The prompt plus the requested tokens do not fit the model's context."""

    code = ErrorCode.CONTEXT_LENGTH_EXCEEDED


class AuthenticationError(RouterError):
    """The caller's credentials were missing or wrong."""

    code = ErrorCode.AUTHENTICATION
    http_status = 401


class PermissionDenied(RouterError):
    """The caller is not allowed to do this."""

    code = ErrorCode.PERMISSION_DENIED
    http_status = 403


class ModelNotFound(RouterError):
    """No worker in the mesh has ever served the named model."""

    code = ErrorCode.MODEL_NOT_FOUND
    http_status = 404


class NoCapacity(RouterError):
    """The model is known but no worker for it is READY now; retry after ``retry_after_s``."""

    code = ErrorCode.NO_CAPACITY
    http_status = 503
    default_retryable = True


class RateLimited(RouterError):
    """The caller sent too many requests; retry after ``retry_after_s``."""

    code = ErrorCode.RATE_LIMITED
    http_status = 429
    default_retryable = True


class InternalError(RouterError):
    """The router failed in a way that is not the caller's fault."""

    code = ErrorCode.INTERNAL
    http_status = 500
    default_retryable = True


class WorkerError(MeshError):
    """A worker failed while serving a request."""

    code = ErrorCode.WORKER
    http_status = 502
    default_retryable = True


class EngineCrashed(WorkerError):
    """The worker's engine process died while serving the request."""

    code = ErrorCode.ENGINE_CRASHED


class WorkerLost(WorkerError):
    """The worker's link dropped while serving the request."""

    code = ErrorCode.WORKER_LOST


class ModelUnavailable(WorkerError):
    """The worker does not hold the requested model (any more)."""

    code = ErrorCode.MODEL_UNAVAILABLE
    http_status = 503


class TicketError(MeshError):
    """A worker refused a direct-mode ticket (malformed, wrong type, scope or lifetime); it started nothing."""

    code = ErrorCode.TICKET_INVALID
    http_status = 403


class TicketForged(TicketError):
    """The ticket's signature does not verify with the key its ``kid`` names."""

    code = ErrorCode.TICKET_FORGED


class TicketExpired(TicketError):
    """The ticket is past its ``exp`` (or before its ``nbf``); ask the router for a new one."""

    code = ErrorCode.TICKET_EXPIRED


class TicketReplayed(TicketError):
    """The ticket's ``jti`` was already used: a ticket admits one request."""

    code = ErrorCode.TICKET_REPLAYED


class TicketWrongAudience(TicketError):
    """The ticket was issued for another worker."""

    code = ErrorCode.TICKET_WRONG_AUDIENCE


class TicketWrongAlgorithm(TicketError):
    """The ticket names a signing algorithm other than the one Meshcore pins."""

    code = ErrorCode.TICKET_WRONG_ALGORITHM


class TicketUnknownKey(TicketError):
    """The ticket's ``kid`` names no key in the router's published key set."""

    code = ErrorCode.TICKET_UNKNOWN_KEY


class ProofError(MeshError):
    """A proof of compute (receipt, per-token record, Merkle proof) failed a check; never retryable as is."""

    code = ErrorCode.PROOF
    http_status = 400


class ReceiptInvalid(ProofError):
    """A receipt's schema or signature does not verify, or its key is not the one expected."""

    code = ErrorCode.RECEIPT_INVALID


class ReceiptLate(ProofError):
    """A receipt arrived after the audit lottery of its epoch was revealed."""

    code = ErrorCode.RECEIPT_LATE


class RecordInvalid(ProofError):
    """A per-token record is malformed (or cannot be encoded), or its Merkle proof does not verify."""

    code = ErrorCode.RECORD_INVALID


class StreamClosed(MeshError, RuntimeError):
    """A stream was read or written after it was closed."""

    code = ErrorCode.STREAM_CLOSED


class SwarmExhausted(MeshError):
    """Every worker of a swarm failed before the answer was complete.

    Attributes:
        failures: why each worker was given up, by worker id.
    """

    code = ErrorCode.SWARM_EXHAUSTED
    http_status = 502
    default_retryable = True

    def __init__(
        self,
        message: str,
        *,
        failures: dict[str, str] | None = None,
        request_id: str | None = None,
        worker_id: str | None = None,
        retry_after_s: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(
            message, request_id=request_id, worker_id=worker_id, retry_after_s=retry_after_s, retryable=retryable
        )
        self.failures = dict(failures or {})


def _collect(root: type[MeshError]) -> list[type[MeshError]]:
    found = [root]
    for sub in root.__subclasses__():
        found.extend(_collect(sub))
    return found


ERROR_TABLE: Final[dict[ErrorCode, type[MeshError]]] = {cls.code: cls for cls in _collect(MeshError)}
"""Each wire code to the one class that stands for it."""


def error_from_code(
    code: ErrorCode | str,
    message: str,
    *,
    request_id: str | None = None,
    worker_id: str | None = None,
    retry_after_s: float | None = None,
    retryable: bool | None = None,
) -> MeshError:
    """Build the exception that a wire error code stands for.

    An unknown code (from a newer peer) becomes a plain :class:`MeshError`, so an
    old client still raises something in the tree.
    """
    try:
        cls = ERROR_TABLE[ErrorCode(code)]
    except ValueError:
        cls = MeshError
    return cls(
        message,
        request_id=request_id,
        worker_id=worker_id,
        retry_after_s=retry_after_s,
        retryable=retryable,
    )
