"""The node daemon: an engine child under supervision and a control link to the router.

:class:`Node` wires the two together.  Frames from the router go to the
engine (``generate``, ``pause``, ``resume``, ``cancel``); the engine's answers go back over the link,
with ``accepted`` naming this node.  The daemon also keeps the node's key: it signs the receipt the engine
prepares at the end of every request, sends it to the router, keeps the records
behind it for the audit window and reveals them on demand (``docs/protocol.md``
§9).  An ``audit`` from the router goes to the engine, whose ``audited`` answer
goes back.  The daemon never runs inference itself, so
a crash of llama.cpp costs the requests in flight (each gets a retryable
``engine_crashed``), never the daemon: it reports STARTING, restarts the engine
and returns to READY on its own.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from pydantic import ValidationError

from meshcore_node.commitments import CommitmentStore
from meshcore_node.config import NodeConfig
from meshcore_node.direct import DirectConfig, DirectServer
from meshcore_node.engine.ipc import EngineAccepted, EngineConfig, EngineMessage, EngineReceipt
from meshcore_node.engine.supervisor import EngineSupervisor
from meshcore_node.link import ControlLink
from meshcore_node.models import ModelFile
from meshcore_node.status import EngineState, accepts_hedges, default_hedge_reserve, node_status
from meshcore_node.telemetry import SwapWatch, ThroughputMeter, sample_memory
from meshcore_sdk.proof.receipt import NodeKey, ReceiptBody
from meshcore_sdk.protocol import (
    AcceptedFrame,
    AuditedFrame,
    AuditFrame,
    CancelFrame,
    ErrorFrame,
    Frame,
    GenerateFrame,
    HeartbeatFrame,
    ModelInfo,
    NodeStatus,
    PauseFrame,
    ReceiptFrame,
    RegisterFrame,
    ResumeFrame,
    RevealFrame,
    SignalFrame,
    Telemetry,
    TokenFrame,
)
from meshcore_sdk.protocol.errors import BadRequest, ConnectError, MeshError, ModelUnavailable

__all__ = ["Node"]

logger = logging.getLogger(__name__)


class Node:
    """One worker: serves one model to the mesh.

    Args:
        config: the node's configuration.
        model: the model file, already hashed.
        key: the node's signing key (None: a fresh one, for this run only).
        rng: randomness for backoff jitter.
        on_registered: told, in one line, each time the node registers with the router.
    """

    def __init__(
        self,
        config: NodeConfig,
        model: ModelFile,
        *,
        key: NodeKey | None = None,
        rng: random.Random | None = None,
        on_registered: Callable[[str], None] | None = None,
    ) -> None:
        rng = rng or random.Random()
        self._config = config
        self._model = model
        self._swap = SwapWatch()
        self._throughput = ThroughputMeter()
        self._draining = False
        self._swapping = False
        self._reported: tuple[NodeStatus, bool] | None = None
        self.key = key or NodeKey.generate()
        self.commitments = CommitmentStore(audit_window_s=config.audit_window_s, max_bytes=config.commitment_max_bytes)
        self.engine = EngineSupervisor(
            EngineConfig(
                model_path=str(model.path),
                n_ctx=config.n_ctx,
                n_threads=config.n_threads,
                max_sequences=config.max_in_flight,
                passive_threads=config.passive_threads,
            ),
            on_message=self._from_engine,
            on_state_change=lambda state: self._maybe_status_changed(),
            restart_backoff=config.engine_restart,
            rng=rng,
        )
        self.link = ControlLink(
            config,
            registration=self._registration,
            heartbeat=self._heartbeat,
            on_frame=self._from_router,
            on_registered=self._registered,
            on_disconnect=self.engine.cancel_all,
            rng=rng,
        )
        self.direct = DirectServer(
            DirectConfig(
                node_id=config.node_id,
                model_sha256=model.sha256,
                ticket_issuer=config.ticket_issuer,
                ticket_leeway_s=config.ticket_leeway_s,
                jwks_refetch_interval_s=config.jwks_refetch_interval_s,
                open_timeout_s=config.direct_open_timeout_s,
                ice_host_addresses=config.ice_host_addresses,
                stun_retry_rto_s=config.stun_retry_rto_s,
            ),
            submit=self._submit,
            cancel=self.engine.cancel,
            pause=self.engine.pause,
            resume=self.engine.resume,
            send_link=self.link.send,
            fetch_jwks=self._fetch_jwks,
            wall_clock=time.time,
            limits=config.limits,
        )
        self._on_registered = on_registered
        self._first_ready = asyncio.Event()
        self._keys_wanted = asyncio.Event()

    async def run(self) -> None:
        """Serve until cancelled: the engine first, then the link once the model is loaded."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.engine.run())
            group.create_task(self.direct.run())
            group.create_task(self._refresh_keys_on_registration())
            await self._first_ready.wait()
            group.create_task(self.link.run())

    @property
    def status(self) -> NodeStatus:
        """The status this node reports now."""
        return node_status(
            engine=self.engine.state,
            in_flight=self.engine.in_flight,
            capacity=self.capacity,
            swapping=self._swapping,
            draining=self._draining,
        )

    @property
    def accepts_hedges(self) -> bool:
        """Whether this node takes speculative copies now (its push-back, ``docs/protocol.md`` §4.2)."""
        capacity = self.capacity
        reserve = self._config.hedge_reserve_slots
        return accepts_hedges(
            status=self.status,
            in_flight=self.engine.in_flight,
            capacity=capacity,
            reserve_slots=default_hedge_reserve(capacity) if reserve is None else reserve,
        )

    @property
    def capacity(self) -> int:
        """Sequences the engine holds at once, as it reported when it became ready."""
        info = self.engine.ready_info
        return info.max_sequences if info is not None else self._config.max_in_flight

    def _registration(self) -> RegisterFrame:
        info = self.engine.ready_info
        assert info is not None, "registration happens after the engine's first start"
        model = ModelInfo(
            sha256=self._model.sha256,
            served_name=info.served_name,
            n_ctx=info.n_ctx,
            size_bytes=self._model.size_bytes,
            weight_format=info.weight_format,
        )
        return RegisterFrame(
            node_id=self._config.node_id,
            models=[model],
            ram_free_bytes=sample_memory().available_bytes,
            cpu_count=os.cpu_count() or 1,
            max_sequences=self.capacity,
            public_key=self.key.public_key_b64,
            build_id=info.build_id or None,
        )

    def _heartbeat(self) -> HeartbeatFrame:
        memory = sample_memory()
        self._swapping = self._swap.update(memory)
        telemetry = Telemetry(
            ram_free_bytes=memory.available_bytes,
            active_sequences=self.engine.in_flight,
            tokens_per_s=self._throughput.rate(time.monotonic()),
            engine_restarts=self.engine.restarts,
            swapping=self._swapping,
            accepts_hedges=self.accepts_hedges,
        )
        status = self.status
        self._reported = (status, telemetry.accepts_hedges)
        return HeartbeatFrame(status=status, telemetry=telemetry)

    async def _refresh_keys_on_registration(self) -> None:
        while True:
            await self._keys_wanted.wait()
            self._keys_wanted.clear()
            await self.direct.refresh_keys()

    async def _fetch_jwks(self) -> Mapping[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self._config.open_timeout_s) as http:
                response = await http.get(self._config.jwks_url)
                response.raise_for_status()
                data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ConnectError(f"cannot fetch {self._config.jwks_url}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConnectError(f"{self._config.jwks_url} is not a JSON object")
        return data

    def _registered(self) -> None:
        self._keys_wanted.set()
        info = self.engine.ready_info
        name = info.served_name if info else self._model.sha256
        logger.info("registered with %s", self._config.router_url)
        if self._on_registered is not None:
            self._on_registered(
                f"meshcore node {self._config.node_id} serving {name} "
                f"(sha256:{self._model.sha256[:12]}) via {self._config.router_url}"
            )

    def _maybe_status_changed(self) -> None:
        if self.engine.state is EngineState.READY:
            self._first_ready.set()
        self._notify_status()

    def _notify_status(self) -> None:
        """Heartbeat at once if the status or the push-back differs from the one last reported."""
        if (self.status, self.accepts_hedges) != self._reported:
            self.link.status_changed()

    async def _from_router(self, frame: Frame) -> None:
        match frame:
            case GenerateFrame():
                await self._admit(frame)
            case CancelFrame():
                await self.engine.cancel(frame.request_id)
            case PauseFrame():
                await self.engine.pause(frame.request_id)
            case ResumeFrame():
                await self.engine.resume(frame)
            case SignalFrame(kind="offer"):
                self.direct.offer(frame)
            case RevealFrame():
                self._reveal(frame)
            case AuditFrame():
                await self.engine.audit(frame)
            case ErrorFrame():
                logger.warning("router reported an error: %s: %s", frame.code, frame.message)
            case _:
                request_id = getattr(frame, "request_id", None)
                why = BadRequest(f"this node does not support {frame.type} frames (protocol version 1)")
                self.link.send(_error(request_id, why))

    async def _admit(self, frame: GenerateFrame) -> None:
        if frame.model != f"sha256:{self._model.sha256}":
            self.link.send(_error(frame.request_id, ModelUnavailable(f"this node does not serve {frame.model}")))
            return
        await self._submit(frame)

    async def _submit(self, frame: GenerateFrame) -> None:
        await self.engine.submit(frame)
        self._notify_status()

    def _reveal(self, frame: RevealFrame) -> None:
        try:
            self.link.send(self.commitments.reveal(frame.request_id, frame.positions, now=time.monotonic()))
        except MeshError as exc:
            self.link.send(_error(frame.request_id, exc))

    def _sign(self, message: EngineReceipt) -> None:
        """Sign the engine's receipt, keep its records for audits and send it to the router (§9.1)."""
        try:
            body = ReceiptBody.model_validate(
                {**message.body, "node_id": self._config.node_id, "signed_at": time.time()}
            )
            records = [base64.b64decode(item, validate=True) for item in message.records]
        except (ValidationError, ValueError) as exc:  # an engine bug: log it, never sign what does not parse
            logger.error("the engine prepared a receipt that does not parse: %s", exc)
            return
        self.commitments.keep(body.job_id, body.first_record, records, now=time.monotonic())
        signed = self.key.sign(body)
        self.link.send(ReceiptFrame(request_id=body.job_id, receipt=signed.model_dump(mode="json")))

    def _from_engine(self, message: EngineMessage) -> None:
        if isinstance(message, EngineReceipt):
            self._sign(message)
            return
        if isinstance(message, AuditedFrame):
            self.link.send(message)
            return
        if isinstance(message, EngineAccepted):
            info = self.engine.ready_info
            self._answer(
                AcceptedFrame(
                    request_id=message.request_id,
                    worker_id=self._config.node_id,
                    model=info.served_name if info else self._model.sha256,
                    prompt_tokens=message.prompt_tokens,
                )
            )
            return
        if isinstance(message, TokenFrame):
            self._throughput.record(time.monotonic())
        self._answer(message)
        if not isinstance(message, TokenFrame):
            self._notify_status()

    def _answer(self, frame: Any) -> None:
        """Send an engine answer where its request came from: a direct session, or the link."""
        if not self.direct.deliver(frame):
            self.link.send(frame)


def _error(request_id: str | None, error: MeshError) -> ErrorFrame:
    return ErrorFrame(request_id=request_id, code=error.code, message=str(error), retryable=error.retryable)
