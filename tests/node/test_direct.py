"""The node's direct-mode answerer refuses bad tickets before any engine work (docs/protocol.md §8),
and hands the client's ``pause``, ``resume`` and ``cancel`` to the engine as the control link does.

Driven through its seams with fakes: ``submit`` records what would reach the engine,
``send_link`` what would go to the router, ``fetch_jwks`` the router's key set, and
``pause``, ``resume`` and ``cancel`` what the engine was told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshcore_node.direct import DirectConfig, DirectServer
from meshcore_router.tickets import SigningKey, TicketKeys
from meshcore_sdk.direct.ice import host_addresses, rtc_configuration
from meshcore_sdk.protocol import (
    TICKET_TYPE,
    CancelFrame,
    ErrorFrame,
    FrameLimits,
    GenerateFrame,
    PausedFrame,
    PauseFrame,
    ResumeFrame,
    SamplingParams,
    SignalFrame,
    decode_frame,
    encode_frame,
)
from meshcore_sdk.protocol.errors import (
    ErrorCode,
    TicketExpired,
    TicketForged,
    TicketReplayed,
    TicketUnknownKey,
    TicketWrongAlgorithm,
    TicketWrongAudience,
)

NOW = 1_767_225_600.0
SHA = "cd" * 32
KEY = SigningKey("k-1", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))


class Fakes:
    def __init__(self, keys: TicketKeys) -> None:
        self.keys = keys
        self.submitted: list[GenerateFrame] = []
        self.sent: list[Any] = []
        self.controls: asyncio.Queue[CancelFrame | PauseFrame | ResumeFrame] = asyncio.Queue()
        self.fetches = 0

    async def submit(self, frame: GenerateFrame) -> None:
        self.submitted.append(frame)

    async def cancel(self, request_id: str) -> None:
        self.controls.put_nowait(CancelFrame(request_id=request_id))

    async def pause(self, request_id: str) -> None:
        self.controls.put_nowait(PauseFrame(request_id=request_id))

    async def resume(self, frame: ResumeFrame) -> None:
        self.controls.put_nowait(frame)

    async def fetch_jwks(self) -> Mapping[str, Any]:
        self.fetches += 1
        return self.keys.jwks()


def server(fakes: Fakes, config: DirectConfig | None = None, send_link: Any = None) -> DirectServer:
    return DirectServer(
        config or DirectConfig(node_id="node-a", model_sha256=SHA),
        submit=fakes.submit,
        cancel=fakes.cancel,
        pause=fakes.pause,
        resume=fakes.resume,
        send_link=send_link or fakes.sent.append,
        fetch_jwks=fakes.fetch_jwks,
        wall_clock=lambda: NOW,
        limits=FrameLimits(),
    )


def authority() -> TicketKeys:
    return TicketKeys(KEY, issuer="meshcore-router", lifetime_s=300, leeway_s=5)


def ticket(node_id: str = "node-a", *, now: float = NOW, jti: str = "jti-00000001") -> str:
    token, _ = authority().mint(node_id=node_id, client_id="c-1", model_sha256=SHA, max_tokens=16, jti=jti, now=now)
    return token


def claims() -> dict[str, Any]:
    return {
        "iss": "meshcore-router",
        "sub": "c",
        "aud": "node-a",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
        "jti": "jti-00000009",
        "model_sha256": SHA,
        "max_tokens": 16,
    }


def offer(token: str, request_id: str = "r-1", sdp: str = "v=0\r\n") -> SignalFrame:
    generate = GenerateFrame(request_id="direct", model=f"sha256:{SHA}", prompt="Hi", params={"max_tokens": 8})
    return SignalFrame(kind="offer", request_id=request_id, ticket=token, sdp=sdp, generate=generate)


async def refusal(fakes: Fakes, direct: DirectServer, frame: SignalFrame) -> ErrorFrame:
    await direct.serve_offer(frame)
    assert fakes.submitted == []
    (sent,) = fakes.sent
    assert isinstance(sent, ErrorFrame) and sent.request_id == frame.request_id
    return sent


BAD = [
    (
        "forged",
        lambda: jwt.encode(claims(), OTHER, algorithm="EdDSA", headers={"kid": "k-1", "typ": TICKET_TYPE}),
        TicketForged,
    ),
    ("expired", lambda: ticket(now=NOW - 400), TicketExpired),
    ("wrong audience", lambda: ticket("node-b"), TicketWrongAudience),
    (
        "wrong algorithm",
        lambda: jwt.encode(claims(), "s" * 32, algorithm="HS256", headers={"typ": TICKET_TYPE}),
        TicketWrongAlgorithm,
    ),
    (
        "unknown key",
        lambda: jwt.encode(claims(), OTHER, algorithm="EdDSA", headers={"kid": "k-9", "typ": TICKET_TYPE}),
        TicketUnknownKey,
    ),
]


@pytest.mark.parametrize(("case", "make", "error"), BAD, ids=[case[0] for case in BAD])
async def test_a_bad_ticket_gets_its_error_code_and_no_engine_work(case: str, make: Any, error: type) -> None:
    fakes = Fakes(authority())
    direct = server(fakes)
    await direct.refresh_keys()

    sent = await refusal(fakes, direct, offer(make()))

    assert sent.code is error.code


async def test_a_replayed_ticket_is_refused_without_engine_work() -> None:
    fakes = Fakes(authority())
    direct = server(fakes)
    await direct.refresh_keys()
    token = ticket()
    assert await direct.admit(offer(token)) is not None
    fakes.sent.clear()
    fakes.submitted.clear()

    sent = await refusal(fakes, direct, offer(token, "r-2"))

    assert sent.code is TicketReplayed.code


async def test_an_unknown_key_triggers_one_refetch_which_picks_up_a_rotated_key() -> None:
    keys = authority()
    fakes = Fakes(keys)
    direct = server(fakes)
    await direct.refresh_keys()
    keys.rotate(SigningKey("k-2", OTHER), now=NOW)
    token, _ = keys.mint(node_id="node-a", client_id="c", model_sha256=SHA, max_tokens=16, jti="jti-rotated-1", now=NOW)

    admitted = await direct.admit(offer(token))

    assert (fakes.fetches, admitted.request_id, [f.request_id for f in fakes.submitted]) == (2, "r-1", ["r-1"])


async def test_a_ticket_budget_below_the_request_is_refused() -> None:
    fakes = Fakes(authority())
    direct = server(fakes)
    await direct.refresh_keys()
    frame = offer(ticket())
    greedy = frame.model_copy(
        update={"generate": frame.generate.model_copy(update={"params": SamplingParams(max_tokens=99)})}
    )

    sent = await refusal(fakes, direct, greedy)

    assert sent.code is ErrorCode.TICKET_INVALID


@pytest.mark.timeout(30)
async def test_pause_resume_and_cancel_on_the_channel_reach_the_engine_in_order() -> None:
    """A real data channel on loopback: the swarm's follower controls travel as over the control link."""
    fakes = Fakes(authority())
    answers: asyncio.Queue[Any] = asyncio.Queue()
    config = DirectConfig(node_id="node-a", model_sha256=SHA, ice_host_addresses=("127.0.0.1",), linger_s=0.0)
    direct = server(fakes, config, send_link=answers.put_nowait)  # the answer comes back on the link
    await direct.refresh_keys()
    pc = RTCPeerConnection(rtc_configuration([]))
    channel = pc.createDataChannel("meshcore", negotiated=True, id=0)
    opened, received = asyncio.Event(), asyncio.Queue[Any]()
    channel.on("open", opened.set)
    channel.on("message", lambda message: received.put_nowait(decode_frame(message, FrameLimits())))
    with host_addresses(("127.0.0.1",)):
        await pc.setLocalDescription(await pc.createOffer())
    try:
        async with asyncio.timeout(20), asyncio.TaskGroup() as group:
            serving = group.create_task(direct.serve_offer(offer(ticket(), sdp=pc.localDescription.sdp)))
            answer = await answers.get()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
            await opened.wait()
            resume = ResumeFrame(request_id="r-1", from_seq=3, token_ids=[7, 8, 9], attempt=1, hold=True)
            for frame in (PauseFrame(request_id="r-1"), PauseFrame(request_id="r-other"), resume):
                channel.send(encode_frame(frame))
            assert await fakes.controls.get() == PauseFrame(request_id="r-1")
            assert await fakes.controls.get() == resume
            assert direct.deliver(PausedFrame(request_id="r-1", next_seq=3, attempt=1))
            assert await received.get() == PausedFrame(request_id="r-1", next_seq=3, attempt=1)
            channel.send(encode_frame(CancelFrame(request_id="r-1")))
            assert await fakes.controls.get() == CancelFrame(request_id="r-1")
            await serving
    finally:
        await pc.close()
    assert fakes.controls.empty()
