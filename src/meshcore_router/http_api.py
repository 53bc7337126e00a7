"""The OpenAI-compatible HTTP API under ``/v1`` (``docs/protocol.md`` §6).

A completion request becomes a ``generate`` frame (see :mod:`meshcore_sdk.openai_format`),
goes to a node through :meth:`Router.dispatch`, and its frames come back as one
JSON completion or as server-sent events.

A streamed answer commits to HTTP 200 only once the node's first frame is in,
so that a request the node refuses at once (say, a prompt too long for the
model) still gets a real error status.  After that, a failure is one
``data: {"error": ...}`` event and the end of the stream, without ``[DONE]``.
A client that goes away (streaming or not) gets its request cancelled on the node.
A request that must call a tool (see :mod:`meshcore_sdk.openai_tools`) is constrained
by a grammar; its streamed tokens are buffered and sent as tool-call chunks at the end.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Literal, TypeVar, cast

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from meshcore_router.dispatch import Dispatch
from meshcore_router.links import WorkerFrame
from meshcore_router.registry import SHA256_PREFIX, ModelEntry
from meshcore_router.router import Router
from meshcore_sdk.openai_format import (
    SSE_DONE,
    ChatCompletionRequest,
    ChunkFormatter,
    CompletionRequest,
    ResponseMeta,
    completion_body,
    mesh_error_body,
    request_loc,
    sse_event,
)
from meshcore_sdk.protocol import DoneFrame, TokenFrame, Utf8Assembler
from meshcore_sdk.protocol.errors import ContextLengthExceeded, MeshError, ModelNotFound

__all__ = ["EventStreamResponse", "error_response", "openai_routes", "request_id_of", "router_of"]

T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)
Write = Callable[[str], Awaitable[None]]

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away first


class _ClientGone(Exception):
    """The HTTP client disconnected (private control flow, never leaves this module)."""


def router_of(request: Request) -> Router:
    """The :class:`Router` of the app serving ``request``."""
    return cast(Router, request.app.state.router)


def request_id_of(request: Request) -> str:
    """The id the router gave ``request`` (also its ``x-request-id``)."""
    return str(request.scope["state"]["request_id"])


def error_response(
    request: Request, exc: MeshError, *, param: str | None = None, work_done: bool = False
) -> JSONResponse:
    """OpenAI's error body for ``exc``, with its status and retry hints.

    Args:
        request: the request that failed.
        exc: why it failed.
        param: the request field at fault, if one is.
        work_done: a node already generated tokens, so a retry would redo that work.
    """
    headers = {
        "x-request-id": request_id_of(request),
        "x-should-retry": "true" if exc.retryable and not work_done else "false",
    }
    if exc.retry_after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after_s)))
        headers["retry-after-ms"] = str(round(exc.retry_after_s * 1000))
    if param is None and isinstance(exc, ContextLengthExceeded):
        param = "messages"
    return JSONResponse(mesh_error_body(exc, param=param), status_code=exc.http_status, headers=headers)


async def race_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` until it ends or the HTTP client disconnects, whichever comes first.

    Raises:
        _ClientGone: the client disconnected first; ``work`` was cancelled.
    """
    worker = asyncio.create_task(work)
    watcher = asyncio.create_task(_disconnected(receive))
    try:
        await asyncio.wait((worker, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        worker.cancel()
        watcher.cancel()
        await asyncio.gather(worker, watcher, return_exceptions=True)
    if worker.cancelled():
        raise _ClientGone
    return worker.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStreamResponse(Response):
    """Server-sent events written by ``pump``; ``on_close`` runs however the stream ends.

    The stream stops when ``pump`` returns, when writing fails, or as soon as the
    client disconnects, even while ``pump`` waits for its next event.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        pump: Callable[[Write], Coroutine[Any, Any, None]],
        *,
        on_close: Callable[[], None],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._pump = pump
        self._on_close = on_close
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def write(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await race_disconnect(receive, self._pump(write))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (_ClientGone, OSError):
            pass
        finally:
            self._on_close()


# --- routes -------------------------------------------------------------------------------


def openai_routes() -> APIRouter:
    """The ``/v1`` routes."""
    routes = APIRouter(prefix="/v1")
    routes.add_api_route("/models", list_models, methods=["GET"])
    routes.add_api_route("/models/{model_id:path}", get_model, methods=["GET"])
    routes.add_api_route("/chat/completions", chat_completions, methods=["POST"])
    routes.add_api_route("/completions", completions, methods=["POST"])
    return routes


async def list_models(request: Request) -> dict[str, Any]:
    """``GET /v1/models``: every model some registered node serves."""
    router = router_of(request)
    entries = router.registry.served_models(now=router.clock())
    return {"object": "list", "data": [_model_object(router, entry) for entry in entries]}


async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    """``GET /v1/models/{id}``: one model, by served id or ``sha256:<hex>``."""
    router = router_of(request)
    sha256 = router.registry.resolve_model(model_id)
    for entry in router.registry.served_models(now=router.clock()):
        if entry.info.sha256 == sha256:
            return _model_object(router, entry)
    raise ModelNotFound(f"no node in the mesh serves the model {model_id!r}")


def _model_object(router: Router, entry: ModelEntry) -> dict[str, Any]:
    info = entry.info
    served_here = router.registry.resolve_model(info.served_name) == info.sha256
    return {
        "id": info.served_name if served_here else SHA256_PREFIX + info.sha256,
        "object": "model",
        "created": router.started_unix,
        "owned_by": "meshcore",
        "meshcore": {
            "sha256": info.sha256,
            "nodes": entry.nodes,
            "ready_nodes": entry.ready_nodes,
            "n_ctx": info.n_ctx,
        },
    }


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``."""
    return await _generate(request, await _parse(request, ChatCompletionRequest), "chat")


async def completions(request: Request) -> Response:
    """``POST /v1/completions``."""
    return await _generate(request, await _parse(request, CompletionRequest), "text")


async def _parse(request: Request, model: type[B]) -> B:
    """The body as JSON, whatever its declared content type (curl's ``-d`` sends a form type)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(_errors(exc, lambda loc: ("body", *loc))) from exc


def _errors(exc: ValidationError, relocate: Callable[[tuple[int | str, ...]], tuple[int | str, ...]]) -> list[Any]:
    return [{**error, "loc": relocate(error["loc"])} for error in exc.errors(include_url=False)]


async def _generate(
    request: Request, body: ChatCompletionRequest | CompletionRequest, kind: Literal["chat", "text"]
) -> Response:
    router = router_of(request)
    request_id = request_id_of(request)
    try:
        frame = body.to_frame(request_id)
    except ValidationError as exc:
        max_tokens_param = body.max_tokens_param()
        raise RequestValidationError(
            _errors(exc, lambda loc: request_loc(loc, max_tokens_param=max_tokens_param))
        ) from exc
    dispatch = router.dispatch(frame)
    meta = ResponseMeta(
        kind=kind,
        completion_id=f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{request_id}",
        created=int(router.wall_clock()),
        model=dispatch.route.served_name,
        request_id=request_id,
        worker_id=dispatch.worker_id,
        include_usage=body.include_usage,
        tools=body.forced_functions if isinstance(body, ChatCompletionRequest) else (),
    )
    if body.stream:
        return await _stream(request, dispatch, meta)
    return await _complete(request, dispatch, meta)


async def _complete(request: Request, dispatch: Dispatch, meta: ResponseMeta) -> Response:
    try:
        text, done, tokens = await race_disconnect(request.receive, _collect(dispatch))
    except _ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    except MeshError as exc:
        return error_response(request, exc, work_done=dispatch.tokens > 0)
    finally:
        dispatch.cancel()
    return JSONResponse(completion_body(meta, text, done, tokens))


async def _collect(dispatch: Dispatch) -> tuple[str, DoneFrame, list[TokenFrame]]:
    assembler = Utf8Assembler()
    parts = []
    tokens: list[TokenFrame] = []
    while True:
        frame = await dispatch.next_frame()
        if isinstance(frame, TokenFrame):
            parts.append(assembler.feed(frame.text_bytes))
            tokens.append(frame)
        elif isinstance(frame, DoneFrame):
            parts.append(assembler.flush())
            return "".join(parts), frame, tokens


async def _stream(request: Request, dispatch: Dispatch, meta: ResponseMeta) -> Response:
    try:
        first = await race_disconnect(request.receive, dispatch.next_frame())
    except _ClientGone:
        dispatch.cancel()
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    except MeshError:
        dispatch.cancel()
        raise
    formatter = ChunkFormatter(meta)

    async def pump(write: Write) -> None:
        frame = first
        try:
            while True:
                for event in _events(formatter, frame):
                    await write(event)
                if isinstance(frame, DoneFrame):
                    await write(SSE_DONE)
                    return
                frame = await dispatch.next_frame()
        except MeshError as exc:
            await write(sse_event(mesh_error_body(exc)))

    return EventStreamResponse(pump, on_close=dispatch.cancel)


def _events(formatter: ChunkFormatter, frame: WorkerFrame) -> list[str]:
    if isinstance(frame, TokenFrame):
        return [sse_event(chunk) for chunk in formatter.feed(frame)]  # a tool call is buffered until done
    if isinstance(frame, DoneFrame):
        return [sse_event(chunk) for chunk in formatter.done(frame)]
    return []  # accepted and paused frames have no OpenAI chunk
