"""A scripted node for router tests: speaks the control link (``docs/protocol.md`` §4) over a real websocket.

It says hello, registers, heartbeats, and answers each ``generate`` with the
tokens of its :class:`Plan`.  A plan can also make it misbehave at a chosen
token: a seq out of order, a malformed, oversized or too deep frame, a dropped
connection, an engine crash, or a stall until the router cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from meshcore_sdk.protocol import (
    AcceptedFrame,
    CancelFrame,
    DoneFrame,
    ErrorCode,
    ErrorFrame,
    FinishReason,
    Frame,
    GenerateFrame,
    HeartbeatFrame,
    HelloFrame,
    ModelInfo,
    NodeStatus,
    RegisteredFrame,
    RegisterFrame,
    Role,
    SignalFrame,
    Telemetry,
    TokenFrame,
    Usage,
    WelcomeFrame,
    decode_frame,
    encode_frame,
)

MODEL = ModelInfo(sha256="ab" * 32, served_name="tiny-model", n_ctx=4096, size_bytes=1000)
OTHER_MODEL = ModelInfo(sha256="cd" * 32, served_name="other-model", n_ctx=2048, size_bytes=2000)

Fault = Literal[
    "out_of_order",
    "malformed",
    "oversized",
    "too_deep",
    "disconnect",
    "engine_crashed",
    "context_length",
    "hold",  # stop sending and wait for the router's cancel
    "gate",  # pause until the test sets ``FakeNode.gate``, then go on as planned
]


@dataclass
class Plan:
    """How the node answers a ``generate``.

    Attributes:
        tokens: the text of each token, in order (cut at ``max_tokens``).
        prompt_tokens: what ``accepted`` and ``usage`` report.
        fault: what goes wrong, if anything.
        fault_at: how many tokens are sent before the fault.
        oversized_bytes: size of the "oversized" frame.
    """

    tokens: list[bytes] = field(default_factory=lambda: [b"Hel", b"lo", b" world"])
    prompt_tokens: int = 5
    fault: Fault | None = None
    fault_at: int = 1
    oversized_bytes: int = 100_000


class FakeNode:
    """A node that follows its :class:`Plan`, recording every frame the router sends it.

    Args:
        router_url: the router's ``http://host:port``.
        node_id: the id it registers under.
        models: the models it claims to hold.
        max_sequences: what it registers as its capacity.
        plan: how it answers requests (may be replaced between requests).
        accepts_hedges: what its heartbeats' telemetry says (False: it pushes back hedges).
    """

    def __init__(
        self,
        router_url: str,
        node_id: str = "node-a",
        *,
        models: tuple[ModelInfo, ...] = (MODEL,),
        max_sequences: int = 4,
        plan: Plan | None = None,
        accepts_hedges: bool = True,
    ) -> None:
        self.url = router_url.replace("http://", "ws://") + "/mesh/v1/node"
        self.node_id = node_id
        self.models = models
        self.max_sequences = max_sequences
        self.plan = plan or Plan()
        self.accepts_hedges = accepts_hedges
        self.heartbeats_enabled = True
        self.refuse_offers_with: ErrorCode | None = None
        self.gate = asyncio.Event()
        self.status = NodeStatus.READY
        self.received: list[Frame] = []
        self.close_code: int | None = None
        self.registered = asyncio.Event()
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._cancels: dict[str, asyncio.Event] = {}
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    # --- test-facing ----------------------------------------------------------------------

    async def start(self) -> FakeNode:
        """Connect and register; returns once the router has answered ``registered``."""
        self._task = asyncio.create_task(self._run())
        registered = asyncio.create_task(self.registered.wait())
        await asyncio.wait((self._task, registered), return_when=asyncio.FIRST_COMPLETED)
        if not registered.done():
            registered.cancel()
            await self._task  # raises what went wrong
            raise AssertionError(f"{self.node_id} was closed before it registered (code {self.close_code})")
        return self

    async def stop(self) -> None:
        """Disconnect (if still connected) and wait for the connection task to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until ``predicate`` holds, re-checking each time the router sends a frame."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    def frames(self, kind: type[BaseModel]) -> list[Frame]:
        """The frames of one type received so far."""
        return [frame for frame in self.received if isinstance(frame, kind)]

    def cancelled(self, request_id: str) -> bool:
        """Whether the router sent ``cancel`` for this request."""
        return any(isinstance(f, CancelFrame) and f.request_id == request_id for f in self.received)

    async def send_raw(self, text: str) -> None:
        """Send any text on the link, as a misbehaving node would."""
        await self._send_text(text)

    @property
    def generated(self) -> list[GenerateFrame]:
        """The ``generate`` frames received so far."""
        return [frame for frame in self.received if isinstance(frame, GenerateFrame)]

    # --- the link -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with connect(self.url, proxy=None, max_size=None, compression=None) as ws:
                self._ws = ws
                interval_s = await self._handshake(ws)
                async with asyncio.TaskGroup() as tasks:
                    beat = tasks.create_task(self._heartbeats(interval_s))
                    try:
                        async for message in ws:
                            await self._on_message(message, tasks)
                    except ConnectionClosed:
                        pass  # closed by the router: the code is recorded below
                    finally:
                        beat.cancel()
                        for event in self._cancels.values():
                            event.set()
        except ConnectionClosed:
            pass
        finally:
            if self._ws is not None:
                self.close_code = self._ws.close_code
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _handshake(self, ws: ClientConnection) -> float:
        await ws.send(encode_frame(HelloFrame(versions=[1], role=Role.NODE, agent="fake-node/0")))
        welcome = decode_frame(await ws.recv())
        assert isinstance(welcome, WelcomeFrame), welcome
        register = RegisterFrame(
            node_id=self.node_id,
            models=list(self.models),
            ram_free_bytes=1 << 30,
            cpu_count=2,
            max_sequences=self.max_sequences,
        )
        await ws.send(encode_frame(register))
        registered = decode_frame(await ws.recv())
        assert isinstance(registered, RegisteredFrame), registered
        self.registered.set()
        return registered.heartbeat_interval_s

    async def _heartbeats(self, interval_s: float) -> None:
        while True:
            if self.heartbeats_enabled:
                telemetry = Telemetry(ram_free_bytes=1 << 30, accepts_hedges=self.accepts_hedges)
                await self._send(HeartbeatFrame(status=self.status, telemetry=telemetry))
            await asyncio.sleep(interval_s)

    async def _on_message(self, message: str | bytes, tasks: asyncio.TaskGroup) -> None:
        frame = decode_frame(message)
        async with self._changed:
            self.received.append(frame)
            self._changed.notify_all()
        if isinstance(frame, GenerateFrame):
            self._cancels[frame.request_id] = asyncio.Event()
            tasks.create_task(self._answer(frame))
        elif isinstance(frame, CancelFrame) and frame.request_id in self._cancels:
            self._cancels[frame.request_id].set()
        elif isinstance(frame, SignalFrame) and frame.kind == "offer":
            await self._answer_offer(frame)

    async def _send(self, frame: BaseModel) -> None:
        await self._send_text(encode_frame(frame))

    async def _send_text(self, text: str) -> None:
        assert self._ws is not None
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(text)

    # --- answering ------------------------------------------------------------------------

    async def _answer_offer(self, frame: SignalFrame) -> None:
        """Answer a relayed offer, or refuse it with ``refuse_offers_with`` (direct mode, §8)."""
        if self.refuse_offers_with is not None:
            error = ErrorFrame(request_id=frame.request_id, code=self.refuse_offers_with, message="refused")
            await self._send(error)
        else:
            await self._send(SignalFrame(kind="answer", request_id=frame.request_id, sdp="v=0\r\nanswer\r\n"))

    async def _answer(self, frame: GenerateFrame) -> None:
        plan, request_id = self.plan, frame.request_id
        if plan.fault in ("context_length", "engine_crashed") and plan.fault_at == 0:
            code = ErrorCode.CONTEXT_LENGTH_EXCEEDED if plan.fault == "context_length" else ErrorCode.ENGINE_CRASHED
            crashed = plan.fault == "engine_crashed"
            await self._send(ErrorFrame(request_id=request_id, code=code, message="refused", retryable=crashed))
            return
        await self._send(
            AcceptedFrame(
                request_id=request_id, worker_id=self.node_id, model=frame.model, prompt_tokens=plan.prompt_tokens
            )
        )
        tokens = plan.tokens[: frame.params.max_tokens]
        for seq, text in enumerate(tokens):
            if plan.fault == "gate" and seq == plan.fault_at:
                await self.gate.wait()
            elif plan.fault is not None and seq == plan.fault_at:
                await self._misbehave(frame, seq)
                return
            if self._cancels[request_id].is_set():
                await self._done(request_id, seq, FinishReason.CANCELLED)
                return
            await self._send(_token(request_id, seq, text))
            await asyncio.sleep(0)
        if plan.fault not in (None, "gate") and plan.fault_at >= len(tokens):
            await self._misbehave(frame, len(tokens))
            return
        finish = FinishReason.LENGTH if len(plan.tokens) > len(tokens) else FinishReason.STOP
        await self._done(request_id, len(tokens), finish)

    async def _done(self, request_id: str, completion_tokens: int, finish: FinishReason) -> None:
        prompt = self.plan.prompt_tokens
        usage = Usage(
            prompt_tokens=prompt, completion_tokens=completion_tokens, total_tokens=prompt + completion_tokens
        )
        await self._send(DoneFrame(request_id=request_id, finish_reason=finish, usage=usage))

    async def _misbehave(self, frame: GenerateFrame, seq: int) -> None:
        request_id = frame.request_id
        match self.plan.fault:
            case "out_of_order":
                await self._send(_token(request_id, seq + 1, b"?"))
            case "malformed":
                await self._send_text('{"type": "token", "request_id": ')
            case "oversized":
                await self._send_text('{"type": "error", "message": "' + "x" * self.plan.oversized_bytes + '"}')
            case "too_deep":
                await self._send_text('{"type": "heartbeat", "x": ' + "[" * 40 + "]" * 40 + "}")
            case "disconnect":
                assert self._ws is not None
                await self._ws.close()
            case "engine_crashed":
                error = ErrorFrame(
                    request_id=request_id, code=ErrorCode.ENGINE_CRASHED, message="engine died", retryable=True
                )
                await self._send(error)
            case "hold":
                await self._cancels[request_id].wait()
                await self._done(request_id, seq, FinishReason.CANCELLED)


def _token(request_id: str, seq: int, text: bytes) -> TokenFrame:
    return TokenFrame(
        request_id=request_id,
        seq=seq,
        token_id=100 + seq,
        text_bytes=text,
        t_worker=time.monotonic(),
    )
