"""The supervised engine on the real model: answers, cancels, and survives its own death."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshcore_node.engine.ipc import EngineAccepted, EngineConfig, EngineMessage
from meshcore_node.engine.supervisor import EngineSupervisor
from meshcore_node.status import EngineState
from meshcore_sdk.protocol import (
    Backoff,
    ChatMessage,
    DoneFrame,
    ErrorFrame,
    FinishReason,
    GenerateFrame,
    SamplingParams,
    TokenFrame,
)
from meshcore_sdk.protocol.errors import ErrorCode

pytestmark = [pytest.mark.model, pytest.mark.timeout(120)]


class Harness:
    """An engine supervisor whose messages and state changes land in queues."""

    def __init__(self, model_path: Path, *, n_ctx: int = 1024) -> None:
        self.messages: asyncio.Queue[EngineMessage] = asyncio.Queue()
        self.states: asyncio.Queue[EngineState] = asyncio.Queue()
        self.supervisor = EngineSupervisor(
            EngineConfig(model_path=str(model_path), n_ctx=n_ctx, n_threads=2),
            on_message=self.messages.put_nowait,
            on_state_change=self.states.put_nowait,
            restart_backoff=Backoff(initial_s=0.01, max_s=0.05),
            rng=random.Random(0),
        )

    async def wait_state(self, state: EngineState) -> None:
        while await self.states.get() is not state:
            pass

    async def answer(self, request_id: str) -> list[EngineMessage]:
        """Every message for ``request_id`` up to and including its done or error."""
        answer: list[EngineMessage] = []
        while True:
            message = await self.messages.get()
            if getattr(message, "request_id", None) == request_id:
                answer.append(message)
                if isinstance(message, DoneFrame | ErrorFrame):
                    return answer


@pytest.fixture
async def engine(model_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(model_path)
    # Not a TaskGroup: a fixture must not yield inside one (PEP 789); the task is cancelled and awaited below.
    task = asyncio.create_task(harness.supervisor.run())
    try:
        await harness.wait_state(EngineState.READY)
        yield harness
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def generate(request_id: str, *, max_tokens: int = 16, **params: object) -> GenerateFrame:
    return GenerateFrame(
        request_id=request_id,
        model="sha256:" + "0" * 64,
        prompt="The capital of France is",
        params=SamplingParams(max_tokens=max_tokens, temperature=0, **params),  # type: ignore[arg-type]
    )


def tokens_of(answer: list[EngineMessage]) -> list[TokenFrame]:
    return [message for message in answer if isinstance(message, TokenFrame)]


async def test_answers_with_contiguous_tokens_and_usage(engine: Harness) -> None:
    await engine.supervisor.submit(generate("r1", max_tokens=8))
    answer = await engine.answer("r1")
    assert isinstance(answer[0], EngineAccepted)
    tokens = tokens_of(answer)
    assert [token.seq for token in tokens] == list(range(8))
    done = answer[-1]
    assert isinstance(done, DoneFrame)
    assert done.finish_reason is FinishReason.LENGTH
    assert done.usage.completion_tokens == 8
    assert done.usage.prompt_tokens == answer[0].prompt_tokens
    assert b"".join(token.text_bytes for token in tokens).decode().strip()


async def test_greedy_generation_is_repeatable(engine: Harness) -> None:
    texts = []
    for request_id in ("a", "b"):
        await engine.supervisor.submit(generate(request_id, max_tokens=12))
        texts.append([token.token_id for token in tokens_of(await engine.answer(request_id))])
    assert texts[0] == texts[1]


async def test_chat_messages_use_the_template(engine: Harness) -> None:
    frame = GenerateFrame(
        request_id="chat",
        model="sha256:" + "0" * 64,
        messages=[ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hello")],
        params=SamplingParams(max_tokens=4, temperature=0),
    )
    await engine.supervisor.submit(frame)
    answer = await engine.answer("chat")
    assert isinstance(answer[0], EngineAccepted)
    assert answer[0].prompt_tokens > 10  # turn markers and the folded system prompt
    assert isinstance(answer[-1], DoneFrame)


async def test_stop_string_ends_the_answer_before_it(engine: Harness) -> None:
    await engine.supervisor.submit(generate("free", max_tokens=12))
    free_text = b"".join(t.text_bytes for t in tokens_of(await engine.answer("free"))).decode()
    stop = free_text.strip().split()[1]  # a word the model will produce
    await engine.supervisor.submit(generate("stopped", max_tokens=12, stop=[stop]))
    answer = await engine.answer("stopped")
    text = b"".join(t.text_bytes for t in tokens_of(answer)).decode()
    assert stop not in text
    assert free_text.startswith(text)
    assert isinstance(answer[-1], DoneFrame) and answer[-1].finish_reason is FinishReason.STOP


async def test_cancel_stops_within_a_token(engine: Harness) -> None:
    await engine.supervisor.submit(generate("long", max_tokens=400))
    while not isinstance(await engine.messages.get(), TokenFrame):
        pass
    await engine.supervisor.cancel("long")
    answer = await engine.answer("long")
    done = answer[-1]
    assert isinstance(done, DoneFrame)
    assert done.finish_reason is FinishReason.CANCELLED
    assert done.usage.completion_tokens < 400


async def test_context_overflow_is_a_typed_error(engine: Harness) -> None:
    frame = generate("huge").model_copy(update={"prompt": "word " * 2000})
    await engine.supervisor.submit(frame)
    (error,) = await engine.answer("huge")
    assert isinstance(error, ErrorFrame)
    assert error.code is ErrorCode.CONTEXT_LENGTH_EXCEEDED


async def test_a_killed_engine_fails_its_requests_and_comes_back(engine: Harness) -> None:
    await engine.supervisor.submit(generate("doomed", max_tokens=400))
    while not isinstance(await engine.messages.get(), TokenFrame):
        pass
    assert engine.supervisor.pid is not None
    os.kill(engine.supervisor.pid, signal.SIGKILL)
    answer = await engine.answer("doomed")
    assert isinstance(answer[-1], ErrorFrame)
    assert answer[-1].code is ErrorCode.ENGINE_CRASHED and answer[-1].retryable
    await engine.wait_state(EngineState.STARTING)
    await engine.wait_state(EngineState.READY)
    assert engine.supervisor.restarts == 1
    await engine.supervisor.submit(generate("after", max_tokens=4))
    assert isinstance((await engine.answer("after"))[-1], DoneFrame)
