"""Supervise the engine child: start it, route its answers, restart it when it dies.

The daemon never runs llama.cpp itself.  :class:`EngineSupervisor` starts
``python -m meshcore_node.engine.child`` and talks JSON lines over its pipes.
When the child exits for any reason (a native crash, SIGKILL, out of memory),
every request in flight gets an ``engine_crashed`` error (retryable: nothing
was lost but time), the supervisor reports the engine STARTING, waits a backoff
delay and starts a new child.  The daemon itself keeps running throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Callable

from pydantic import ValidationError

from meshcore_node.engine.ipc import ENGINE_MESSAGE, EngineConfig, EngineMessage, EngineReady
from meshcore_node.status import EngineState
from meshcore_sdk.protocol import (
    AuditedFrame,
    AuditFrame,
    Backoff,
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    GenerateFrame,
    PauseFrame,
    ResumeFrame,
    encode_frame,
)
from meshcore_sdk.protocol.errors import ErrorCode

__all__ = ["EngineSupervisor"]

logger = logging.getLogger(__name__)

_MAX_LINE_BYTES = 4 << 20


class EngineSupervisor:
    """Runs the engine child and hands its messages to ``on_message``.

    Args:
        config: what the child loads and how.
        on_message: called with each message of the child, in order, and with the
            ``engine_crashed`` errors the supervisor makes up for requests a dead child left.
        on_state_change: called whenever :attr:`state` changes.
        restart_backoff: delays between restarts after a crash.
        rng: randomness for the backoff jitter.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        on_message: Callable[[EngineMessage], None],
        on_state_change: Callable[[EngineState], None],
        restart_backoff: Backoff,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._on_message = on_message
        self._on_state_change = on_state_change
        self._backoff = restart_backoff
        self._rng = rng
        self._process: asyncio.subprocess.Process | None = None
        self._in_flight: set[str] = set()
        self.state = EngineState.STARTING
        self.restarts = 0
        self.pid: int | None = None
        self.ready_info: EngineReady | None = None
        """What the engine said when it last became ready (kept across restarts)."""

    @property
    def in_flight(self) -> int:
        """Requests sent to the engine and not yet finished."""
        return len(self._in_flight)

    async def run(self) -> None:
        """Keep an engine child running until cancelled."""
        crashes_in_a_row = 0
        while True:
            try:
                ready = await self._run_once()
            except OSError as exc:  # could not even start the child: retry like a crash
                logger.error("cannot start the engine: %s", exc)
                ready = False
            crashes_in_a_row = 0 if ready else crashes_in_a_row + 1
            self.restarts += 1
            delay = self._backoff.delay_s(crashes_in_a_row, self._rng)
            logger.warning("engine exited; restarting in %.2f s", delay)
            await asyncio.sleep(delay)

    async def submit(self, frame: GenerateFrame) -> None:
        """Send a request to the engine; its answers come through ``on_message``."""
        process = self._process
        if self.state is not EngineState.READY or process is None or process.stdin is None:
            self._on_message(_crashed(frame.request_id, "the engine is restarting"))
            return
        self._in_flight.add(frame.request_id)
        await self._write(process, encode_frame(frame))

    async def pause(self, request_id: str) -> None:
        """Ask the engine to stop computing a request and keep its state; it answers ``paused``."""
        if request_id in self._in_flight and self._process is not None:
            await self._write(self._process, encode_frame(PauseFrame(request_id=request_id)))

    async def resume(self, frame: ResumeFrame) -> None:
        """Continue a paused request (``docs/protocol.md`` §3.2); its tokens come through ``on_message``."""
        if frame.request_id in self._in_flight and self._process is not None:
            await self._write(self._process, encode_frame(frame))
        else:
            self._on_message(_crashed(frame.request_id, "the engine no longer holds this request"))

    async def cancel(self, request_id: str) -> None:
        """Ask the engine to stop a request; it answers with ``done`` (cancelled)."""
        if request_id in self._in_flight and self._process is not None:
            await self._write(self._process, encode_frame(CancelFrame(request_id=request_id)))

    async def audit(self, frame: AuditFrame) -> None:
        """Ask the engine to audit a job (§9.3); its ``audited`` frame (or error) comes through ``on_message``."""
        process = self._process
        if self.state is not EngineState.READY or process is None:
            self._on_message(_crashed(frame.audit_id, "the engine is restarting"))
            return
        self._in_flight.add(frame.audit_id)
        await self._write(process, encode_frame(frame))

    async def cancel_all(self) -> None:
        """Stop every request in flight (their client is gone)."""
        for request_id in list(self._in_flight):
            await self.cancel(request_id)

    async def _run_once(self) -> bool:
        """Run one child to its end; return whether it ever became ready."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meshcore_node.engine.child",
            self._config.model_dump_json(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_MAX_LINE_BYTES,
        )
        self._process = process
        ready = False
        try:
            assert process.stdout is not None
            async for line in process.stdout:
                message = self._parse(line)
                if isinstance(message, EngineReady):
                    ready = True
                    self.pid = message.pid
                    self.ready_info = message
                    self._set_state(EngineState.READY)
                elif message is not None:
                    self._forward(message)
        finally:
            await self._reap(process)
        return ready

    async def _reap(self, process: asyncio.subprocess.Process) -> None:
        self._process = None
        self.pid = None
        self._set_state(EngineState.STARTING)
        if process.returncode is None:
            process.kill()
        with contextlib.suppress(ProcessLookupError):
            code = await process.wait()
            logger.warning("engine process exited with code %s", code)
        for request_id in sorted(self._in_flight):
            self._on_message(_crashed(request_id, f"the engine process died (exit code {process.returncode})"))
        self._in_flight.clear()

    def _forward(self, message: EngineMessage) -> None:
        if isinstance(message, DoneFrame | ErrorFrame) and message.request_id is not None:
            self._in_flight.discard(message.request_id)
        elif isinstance(message, AuditedFrame):
            self._in_flight.discard(message.audit_id)
        self._on_message(message)

    def _parse(self, line: bytes) -> EngineMessage | None:
        try:
            return ENGINE_MESSAGE.validate_json(line)
        except ValidationError:
            logger.error("engine sent an unreadable line: %.200r", line)
            return None

    async def _write(self, process: asyncio.subprocess.Process, text: str) -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(text.encode("utf-8") + b"\n")
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child is dying; _reap fails the request

    def _set_state(self, state: EngineState) -> None:
        if state is not self.state:
            self.state = state
            self._on_state_change(state)


def _crashed(request_id: str, why: str) -> ErrorFrame:
    return ErrorFrame(request_id=request_id, code=ErrorCode.ENGINE_CRASHED, message=why, retryable=True)
