"""Turn what the router's HTTP API says and what httpx raises into the Meshcore error tree.

Errors reach the proxy client three ways (``docs/protocol.md`` §6):

1. an error status with an OpenAI-shaped body ``{"error": {"message", "type", "param", "code"}}``,
   mapped by :func:`error_from_response`;
2. one ``data: {"error": {...}}`` event after the stream started, mapped by :func:`error_from_payload`;
3. an httpx exception (no answer, or a broken one), mapped by :func:`map_httpx_errors`.

``error.code`` is an ``ErrorCode`` wire name and picks the class through the one
table in :mod:`meshcore_sdk.protocol.errors`.  A code this client does not know
(a newer router, or another OpenAI-compatible server) falls back on the status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import httpx
import httpx_sse
import pydantic

from meshcore_sdk._retry import retry_after_hint_s
from meshcore_sdk.protocol.errors import (
    AuthenticationError,
    BadRequest,
    ConfigError,
    ConnectError,
    ConnectionLost,
    ErrorCode,
    InternalError,
    MeshError,
    MeshTimeout,
    ModelNotFound,
    NoCapacity,
    PermissionDenied,
    RateLimited,
    RemoteProtocolError,
    RouterError,
    TransportError,
    WorkerError,
    error_from_code,
)

__all__ = ["STATUS_FALLBACK", "error_from_payload", "error_from_response", "map_httpx_errors"]

STATUS_FALLBACK: Final[Mapping[int, type[MeshError]]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: ModelNotFound,
    422: BadRequest,
    429: RateLimited,
    500: InternalError,
    502: WorkerError,
    503: NoCapacity,
    504: MeshTimeout,
}
"""The class for a status whose body carries no code this client knows."""

_KNOWN_CODES: Final = frozenset(code.value for code in ErrorCode)
_MAX_ERROR_BODY_BYTES: Final = 64 * 1024


def error_from_response(status: int, content: bytes, headers: Mapping[str, str], *, now_s: float = 0.0) -> MeshError:
    """Build the error that an HTTP error response stands for.

    Args:
        status: the response's status (400 or above).
        content: the response body, read in full (only the first 64 KiB are looked at).
        headers: the response headers, keys in lower case.
        now_s: the wall clock, to read an HTTP date in ``retry-after``.
    """
    body = _error_object(content[:_MAX_ERROR_BODY_BYTES])
    message = str(body.get("message") or _reason(status))
    code = body.get("code")
    request_id = headers.get("x-request-id")
    retry_after_s = retry_after_hint_s(headers, now_s=now_s)
    if isinstance(code, str) and code in _KNOWN_CODES:
        return error_from_code(code, message, request_id=request_id, retry_after_s=retry_after_s)
    cls = STATUS_FALLBACK.get(status) or (InternalError if status >= 500 else RouterError)
    return cls(f"{message} (HTTP {status})", request_id=request_id, retry_after_s=retry_after_s)


def error_from_payload(
    payload: Mapping[str, Any], *, request_id: str | None = None, worker_id: str | None = None
) -> MeshError:
    """Build the error that a mid-stream ``{"error": {...}}`` event stands for.

    A code this client does not know becomes a :class:`WorkerError`: the stream had
    started, so a worker was serving it.
    """
    error = payload.get("error")
    body: Mapping[str, Any] = error if isinstance(error, Mapping) else {"message": str(error)}
    message = str(body.get("message") or "the stream failed")
    code = body.get("code")
    if isinstance(code, str) and code in _KNOWN_CODES:
        return error_from_code(code, message, request_id=request_id, worker_id=worker_id)
    return WorkerError(message, request_id=request_id, worker_id=worker_id)


@contextmanager
def map_httpx_errors(*, request_id: str | None = None) -> Iterator[None]:
    """Translate the exceptions of httpx, httpx-sse, json and pydantic into the error tree.

    This is the proxy client's boundary: nothing foreign passes it (``STYLE.md`` rule 5).
    The most specific mapping wins; the original is chained as ``__cause__``.
    """
    try:
        yield
    except MeshError:
        raise
    except httpx.TimeoutException as exc:
        raise MeshTimeout(_describe_timeout(exc), request_id=request_id) from exc
    except httpx.ConnectError as exc:
        raise ConnectError(f"could not connect to the router: {exc}", request_id=request_id) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ConfigError(f"bad router address: {exc}", request_id=request_id) from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as exc:
        raise ConnectionLost(f"the connection to the router broke: {exc}", request_id=request_id) from exc
    except (httpx.DecodingError, httpx_sse.SSEError) as exc:
        raise RemoteProtocolError(f"the router's answer could not be read: {exc}", request_id=request_id) from exc
    except (json.JSONDecodeError, UnicodeDecodeError, pydantic.ValidationError) as exc:
        raise RemoteProtocolError(
            f"the router's answer is malformed: {_first_line(exc)}", request_id=request_id
        ) from exc
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise TransportError(f"HTTP transport failed: {exc!r}", request_id=request_id) from exc


def _error_object(content: bytes) -> Mapping[str, Any]:
    try:
        parsed = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        text = content.decode("utf-8", "replace").strip()
        return {"message": text[:500]} if text else {}
    if not isinstance(parsed, Mapping):
        return {}
    inner = parsed.get("error")
    if isinstance(inner, Mapping):
        return inner
    if isinstance(parsed.get("detail"), str):  # FastAPI's own 404 and 405 bodies
        return {"message": parsed["detail"]}
    return parsed


def _reason(status: int) -> str:
    try:
        return httpx.codes(status).name.replace("_", " ").lower()
    except ValueError:
        return "error"


def _describe_timeout(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting to the router"
    if isinstance(exc, httpx.PoolTimeout):
        return "timed out waiting for a free connection"
    if isinstance(exc, httpx.WriteTimeout):
        return "timed out sending the request"
    return "timed out waiting for the router's answer"


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
