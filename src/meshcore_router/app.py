"""The router as an ASGI app: :func:`create_app` wires the parts together.

Nothing lives in module globals: the :class:`Router` of an app is ``app.state.router``,
so tests and embedders can run several routers in one process.  Every HTTP
response, errors included, carries ``x-request-id`` and an OpenAI-shaped body
when it is an error (``docs/protocol.md`` §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshcore_router.audits.api import audit_routes
from meshcore_router.audits.calibration import CalibrationTable
from meshcore_router.audits.ledger import Ledger
from meshcore_router.audits.reputation import ReputationBook
from meshcore_router.audits.service import AuditService
from meshcore_router.config import RouterConfig
from meshcore_router.direct import DirectService, direct_routes
from meshcore_router.http_api import error_response, openai_routes, request_id_of
from meshcore_router.mesh_api import mesh_routes
from meshcore_router.metrics import RouterMetrics
from meshcore_router.router import Router, new_request_id
from meshcore_sdk.openai_format import error_body, mesh_error_body, param_of
from meshcore_sdk.protocol import ErrorCode
from meshcore_sdk.protocol.errors import BadRequest, FrameTooLarge, InternalError, MeshError

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    config: RouterConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    wall_clock: Callable[[], float] | None = None,
) -> FastAPI:
    """Build a router app.

    Args:
        config: the router's settings (defaults when omitted).
        clock: monotonic seconds for liveness and latencies (``time.monotonic`` by default).
        wall_clock: seconds since the Unix epoch for ``created`` fields (``time.time`` by default).
    """
    config = config or RouterConfig()
    router = Router(config, clock=clock or time.monotonic, wall_clock=wall_clock or time.time)
    if config.audits.enabled:
        router.audits = _audit_service(router)
    direct = DirectService(router, wall_clock=wall_clock or time.time)
    app = FastAPI(title="Meshcore router", docs_url=None, redoc_url=None, lifespan=_lifespan(router, direct))
    app.state.router = router
    app.state.direct = direct
    app.add_middleware(RequestContext, metrics=router.metrics, max_request_bytes=config.max_request_bytes)
    app.add_exception_handler(MeshError, _on_mesh_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
    app.include_router(openai_routes())
    app.include_router(mesh_routes())
    app.include_router(direct_routes())
    app.include_router(audit_routes())
    return app


def _audit_service(router: Router) -> AuditService:
    config = router.config
    return AuditService(
        config.audits,
        ledger=Ledger.open(config.audits.ledger_path),
        book=ReputationBook(config.reputation),
        calibration=CalibrationTable.load(config.audits.calibration_path),
        link_of=router.link_of,
        ready_nodes=router.ready_nodes,
        weight_format_of=router.registry.weight_format,
        wall_clock=router.wall_clock,
    )


def _lifespan(router: Router, direct: DirectService) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        background = [
            asyncio.create_task(router.run_expiry(), name="meshcore-router-expiry"),
            asyncio.create_task(direct.run_turn_health(), name="meshcore-router-turn-health"),
        ]
        audits = router.audits
        if audits is not None:
            await audits.restore()
            background.append(asyncio.create_task(audits.run(), name="meshcore-router-audits"))
            background.append(asyncio.create_task(audits.run_timers(), name="meshcore-router-audit-timers"))
            shadows = router.run_shadows(random.Random())
            background.append(asyncio.create_task(shadows, name="meshcore-router-shadows"))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if audits is not None:
                audits.ledger.close()

    return lifespan


class RequestContext:
    """ASGI middleware: a request id and ``x-request-id`` on every response, a body size cap, metrics.

    Args:
        app: the app to wrap.
        metrics: where to count requests.
        max_request_bytes: the largest request body accepted.
    """

    def __init__(self, app: ASGIApp, *, metrics: RouterMetrics, max_request_bytes: int) -> None:
        self._app = app
        self._metrics = metrics
        self._max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = 500

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("x-request-id", request_id)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self._metrics.observe_request(_endpoint(scope), status, loop.time() - started)
            await send(message)

        too_large = self._too_large(scope)
        if too_large is not None:
            await too_large(scope, receive, send_with_context)
            return
        await self._app(scope, self._capped(receive), send_with_context)

    def _too_large(self, scope: Scope) -> Response | None:
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) <= self._max_request_bytes:
            return None
        exc = FrameTooLarge(f"the request body exceeds {self._max_request_bytes} bytes")
        return JSONResponse(mesh_error_body(exc), status_code=exc.http_status, headers={"x-should-retry": "false"})

    def _capped(self, receive: Receive) -> Receive:
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self._max_request_bytes:
                raise FrameTooLarge(f"the request body exceeds {self._max_request_bytes} bytes")
            return message

        return capped_receive


def _endpoint(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


# --- errors as OpenAI bodies ----------------------------------------------------------------


async def _on_mesh_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MeshError)
    return error_response(request, exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = list(exc.errors())
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return error_response(request, BadRequest("the request body is not valid JSON"))
    param = param_of(first.get("loc", ()))
    message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    return error_response(request, BadRequest(message), param=param)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = ErrorCode.BAD_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL
    headers = {**(exc.headers or {}), "x-request-id": request_id_of(request)}
    body = error_body(str(exc.detail), code=code.value, status=exc.status_code)
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, InternalError("the router failed unexpectedly"))
