"""One request in flight on one node, as the task that relays its answer sees it.

A :class:`Dispatch` is what :meth:`meshcore_router.router.Router.dispatch`
returns.  Its reader (the HTTP handler or the client stream) calls
:meth:`Dispatch.next_frame` until ``done``, or :meth:`Dispatch.cancel` to stop
early, and :meth:`Dispatch.pause` / :meth:`Dispatch.resume` to hold a swarm
follower's state on its node.  Deadlines are scopes around each wait: until the
first token, ``first_token_timeout_s`` from the dispatch; after it,
``stall_timeout_s`` between frames, except while paused, when a quiet node is
what was asked for.  A request that runs out of time is cancelled on its node
and fails with :class:`MeshTimeout`.  How each request ends feeds the router's
hedging budget (``meshcore_router.hedging``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from meshcore_router.config import RouterConfig
from meshcore_router.hedging import HedgeGate
from meshcore_router.links import NodeLink, RequestChannel, WorkerFrame
from meshcore_router.matchmaking import Route
from meshcore_router.metrics import RouterMetrics
from meshcore_sdk.protocol import AcceptedFrame, DoneFrame, FinishReason, PauseFrame, ResumeFrame, TokenFrame, Usage
from meshcore_sdk.protocol.errors import MeshError, MeshTimeout

__all__ = ["Dispatch"]


class Dispatch:
    """A request sent to a node, and the reading of its answer.

    Attributes:
        request_id: the router's id of the request (sent to the node, shown to clients).
        route: the model and the node serving it.
        prompt_tokens: the prompt's length, once the node has accepted the request.
        tokens: how many tokens have arrived so far.
        group: the client's group of copies of one prompt, if any (§5).
    """

    def __init__(
        self,
        route: Route,
        link: NodeLink,
        channel: RequestChannel,
        *,
        config: RouterConfig,
        metrics: RouterMetrics,
        clock: Callable[[], float],
        group: str | None = None,
        hedging: HedgeGate | None = None,
    ) -> None:
        self.request_id = channel.request_id
        self.route = route
        self.group = group
        self.prompt_tokens: int | None = None
        self.tokens = 0
        self._link = link
        self._channel = channel
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._hedging = hedging
        self._started = clock()
        self._first_token_deadline = asyncio.get_running_loop().time() + config.first_token_timeout_s
        self._finished = False
        self._paused = False

    @property
    def worker_id(self) -> str:
        """The node serving the request."""
        return self.route.node_id

    @property
    def finished(self) -> bool:
        """Whether the request has ended (done, failed or cancelled)."""
        return self._finished

    async def next_frame(self) -> WorkerFrame:
        """The next frame of the answer: ``accepted``, ``token``, ``paused`` or, last, ``done``.

        Raises:
            MeshError: the request failed; it is over.
            MeshTimeout: the node ran past a deadline; the request was cancelled.
        """
        deadline: float | None
        if self._paused:
            deadline, why = None, ""
        elif self.tokens == 0:
            deadline = self._first_token_deadline
            why = f"no first token within {self._config.first_token_timeout_s} s"
        else:
            deadline = asyncio.get_running_loop().time() + self._config.stall_timeout_s
            why = f"nothing for {self._config.stall_timeout_s} s"
        try:
            async with asyncio.timeout_at(deadline):
                frame = await self._channel.receive()
        except TimeoutError as exc:
            self.cancel()
            timeout = MeshTimeout(
                f"node {self.worker_id} sent {why}", request_id=self.request_id, worker_id=self.worker_id
            )
            self._failed(timeout)
            raise timeout from exc
        except MeshError as exc:
            self._finish()
            self._failed(exc)
            raise
        if frame is None:
            return self._cancelled()
        self._account(frame)
        return frame

    def pause(self) -> None:
        """Ask the node to stop computing the request and keep its state (§3.2)."""
        if not self._finished:
            self._paused = True
            self._link.send_nowait(PauseFrame(request_id=self.request_id))

    def resume(self, frame: ResumeFrame) -> None:
        """Send the node a client's ``resume`` (under the router's request id); older tokens become stale.

        Raises:
            OutOfOrderFrame: the resume's attempt is not newer than the request's.
        """
        if self._finished:
            return
        if frame.attempt is not None:
            self._channel.stream.resumed(attempt=frame.attempt, from_seq=frame.from_seq)
        self._paused = False
        self._link.send_nowait(frame.model_copy(update={"request_id": self.request_id}))

    def cancel(self) -> None:
        """Stop the request on its node, unless it has already ended.

        A reader that goes on reading gets the frames already received, then a
        ``done`` with ``finish_reason: "cancelled"``, as a worker would answer (§3.2).
        """
        if not self._finished:
            self._link.cancel_request(self.request_id)
            self._channel.cancel()
            self._finish()

    def _cancelled(self) -> DoneFrame:
        prompt_tokens = self.prompt_tokens or 0
        usage = Usage(
            prompt_tokens=prompt_tokens, completion_tokens=self.tokens, total_tokens=prompt_tokens + self.tokens
        )
        return DoneFrame(request_id=self.request_id, finish_reason=FinishReason.CANCELLED, usage=usage)

    def _account(self, frame: WorkerFrame) -> None:
        match frame:
            case AcceptedFrame():
                self.prompt_tokens = frame.prompt_tokens
            case TokenFrame():
                if self.tokens == 0:
                    self._metrics.time_to_first_token.observe(self._clock() - self._started)
                self.tokens += 1
                self._metrics.tokens.inc()
            case DoneFrame():
                self._finish()
                if self._hedging is not None:
                    self._hedging.finished(frame.finish_reason)

    def _failed(self, error: MeshError) -> None:
        if self._hedging is not None:
            self._hedging.failed(error)

    def _finish(self) -> None:
        self._finished = True
