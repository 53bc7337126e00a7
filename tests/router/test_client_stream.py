"""The client frame stream at /mesh/v1/stream (docs/protocol.md §5)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from meshcore_sdk.protocol import (
    AcceptedFrame,
    CancelFrame,
    ChatMessage,
    DoneFrame,
    ErrorFrame,
    Frame,
    GenerateFrame,
    HelloFrame,
    Role,
    TokenFrame,
    WelcomeFrame,
    decode_frame,
    encode_frame,
)

from .conftest import RunningRouter, StartNode
from .fake_node import MODEL, Plan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@contextlib.asynccontextmanager
async def client_stream(mesh: RunningRouter, *, hello: bool = True) -> AsyncIterator[ClientConnection]:
    url = mesh.url.replace("http://", "ws://") + "/mesh/v1/stream"
    async with connect(url, proxy=None, max_size=None) as ws:
        if hello:
            await ws.send(encode_frame(HelloFrame(versions=[1], role=Role.CLIENT)))
            assert isinstance(decode_frame(await ws.recv()), WelcomeFrame)
        yield ws


def generate(request_id: str, model: str = "tiny-model") -> str:
    frame = GenerateFrame(request_id=request_id, model=model, messages=[ChatMessage(role="user", content="Hi")])
    return encode_frame(frame)


async def answer(ws: ClientConnection, request_id: str) -> list[Frame]:
    """The frames of one request, up to its done or error (frames of other requests are skipped)."""
    frames: list[Frame] = []
    while True:
        frame = decode_frame(await ws.recv())
        if getattr(frame, "request_id", None) != request_id:
            continue
        frames.append(frame)
        if isinstance(frame, DoneFrame | ErrorFrame):
            return frames


async def refusal(ws: ClientConnection) -> tuple[ErrorFrame, int | None]:
    """The error frame before the router closes the connection, and the close code."""
    errors = []
    with pytest.raises(ConnectionClosed):
        while True:
            frame = decode_frame(await ws.recv())
            if isinstance(frame, ErrorFrame):
                errors.append(frame)
    assert len(errors) == 1, errors
    return errors[0], ws.close_code


async def test_requests_are_answered_as_a_worker_would(mesh: RunningRouter, start_node: StartNode) -> None:
    await start_node("node-a")
    async with client_stream(mesh) as ws:
        await ws.send(generate("c-1"))
        await ws.send(generate("c-2", model=f"sha256:{MODEL.sha256}"))
        answers: dict[str, list[Frame]] = {"c-1": [], "c-2": []}
        while not all(frames and isinstance(frames[-1], DoneFrame) for frames in answers.values()):
            frame = decode_frame(await ws.recv())
            assert isinstance(frame, AcceptedFrame | TokenFrame | DoneFrame)
            answers[frame.request_id].append(frame)
    for accepted, *tokens, done in answers.values():
        assert isinstance(accepted, AcceptedFrame)
        assert (accepted.worker_id, accepted.prompt_tokens) == ("node-a", 5)
        assert [t.text_bytes for t in tokens if isinstance(t, TokenFrame)] == [b"Hel", b"lo", b" world"]
        assert isinstance(done, DoneFrame)
        assert done.usage.completion_tokens == 3


async def test_an_unplaceable_request_gets_an_error_and_the_connection_stays(
    mesh: RunningRouter, start_node: StartNode
) -> None:
    await start_node("node-a")
    async with client_stream(mesh) as ws:
        await ws.send(generate("c-1", model="nope"))
        (error,) = await answer(ws, "c-1")
        assert isinstance(error, ErrorFrame)
        assert error.code == "model_not_found"
        await ws.send(generate("c-2"))
        assert isinstance((await answer(ws, "c-2"))[-1], DoneFrame)


async def test_cancel_ends_a_request_with_done_cancelled(mesh: RunningRouter, start_node: StartNode) -> None:
    node = await start_node("node-a", plan=Plan(fault="hold", fault_at=1))
    async with client_stream(mesh) as ws:
        await ws.send(generate("c-1"))
        frames = [decode_frame(await ws.recv()) for _ in range(2)]  # accepted, token 0
        assert isinstance(frames[1], TokenFrame)
        await ws.send(encode_frame(CancelFrame(request_id="c-1")))
        (done,) = await answer(ws, "c-1")
        assert isinstance(done, DoneFrame)
        assert (done.finish_reason, done.usage.completion_tokens) == ("cancelled", 1)
        await node.wait_for(lambda: node.cancelled(node.generated[0].request_id))
        await ws.send(encode_frame(CancelFrame(request_id="c-1")))  # a late cancel is harmless
        await ws.send(generate("c-2"))
        node.plan = Plan()
        assert isinstance((await answer(ws, "c-2"))[-1], DoneFrame)


@pytest.mark.parametrize(
    ("bad_frame", "code", "close_code"),
    [
        (TokenFrame(request_id="c-1", seq=0, token_id=1, text_bytes=b"x", t_worker=0.0), "out_of_order_frame", 1008),
        (None, "out_of_order_frame", 1008),  # a second generate with the id in flight
        (CancelFrame(request_id="c-9"), "out_of_order_frame", 1008),
        ('{"type": "generate", "request_id": ', "malformed_frame", 1008),
        ('{"type": "cancel", "request_id": "' + "x" * 70_000 + '"}', "frame_too_large", 1009),
    ],
    ids=["token", "duplicate", "unknown-cancel", "malformed", "oversized"],
)
async def test_a_misbehaving_client_is_closed_its_requests_cancelled_and_others_undisturbed(
    mesh: RunningRouter, start_node: StartNode, bad_frame: str | BaseModel | None, code: str, close_code: int
) -> None:
    node = await start_node("node-a", plan=Plan(fault="gate", fault_at=1))
    async with client_stream(mesh) as bystander, client_stream(mesh) as culprit:
        await bystander.send(generate("b-1"))
        await culprit.send(generate("c-1"))
        await node.wait_for(lambda: len(node.generated) == 2)
        if bad_frame is None:
            await culprit.send(generate("c-1"))
        else:
            await culprit.send(bad_frame if isinstance(bad_frame, str) else encode_frame(bad_frame))
        error, closed_with = await refusal(culprit)
        assert (error.code, closed_with) == (code, close_code)
        await node.wait_for(lambda: len(node.frames(CancelFrame)) == 1)  # the culprit's request, and only it
        node.gate.set()
        frames = await answer(bystander, "b-1")
        assert isinstance(frames[-1], DoneFrame)
        assert len([f for f in frames if isinstance(f, TokenFrame)]) == 3


async def test_a_frame_before_hello_is_refused(mesh: RunningRouter) -> None:
    async with client_stream(mesh, hello=False) as ws:
        await ws.send(generate("c-1"))
        error, closed_with = await refusal(ws)
        assert (error.code, closed_with) == ("out_of_order_frame", 1008)


async def test_a_client_that_disconnects_has_its_requests_cancelled(mesh: RunningRouter, start_node: StartNode) -> None:
    node = await start_node("node-a", plan=Plan(fault="hold", fault_at=1))
    async with client_stream(mesh) as ws:
        await ws.send(generate("c-1"))
        await node.wait_for(lambda: len(node.generated) == 1)
    await node.wait_for(lambda: node.cancelled(node.generated[0].request_id))
    assert mesh.router.in_flight("node-a") == 0  # the router lets go of a request before it sends cancel
