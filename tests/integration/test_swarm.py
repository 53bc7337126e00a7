"""Swarm mode under chaos: real node processes on the real model, leaders killed and stalled mid-stream.

These are the proxy legs' tests (every copy through the router's frame stream, asked for with
``SwarmOptions(legs="proxy")``); ``test_swarm_direct.py`` runs swarms over direct legs.

The prompt is one whose greedy continuation has a wide margin between its two likeliest tokens at
every position (checked by ``reference`` below): llama.cpp's logits after a catch-up prefill differ
from those of step-by-step decoding by a fraction of a nat, so at a near tie a follower could pick
the other token, however correct the swarm.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from meshcore_sdk import AsyncClient, ClientConfig, Mode
from meshcore_sdk.config import SwarmOptions
from meshcore_sdk.events import Failover, LeaderElected, WorkerPaused
from meshcore_sdk.mesh import LocalMesh

from .conftest import mesh_config

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration, pytest.mark.model]

MODEL = "gemma-3-270m"
PROMPT = "1, 2, 3, 4, 5,"
MAX_TOKENS = 40
MIN_MARGIN = 1.5  # nats between the two likeliest tokens, at every position of the reference
CHAOS_RUNS = 20


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    seqs: list[int]
    workers: list[str]
    events: list[object]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def swarm_mesh(model_path: Path) -> AsyncIterator[LocalMesh]:
    async with LocalMesh(mesh_config(model_path, nodes=3)) as mesh:
        yield mesh


async def restore(mesh: LocalMesh) -> None:
    """Bring every node of the mesh back to READY (restart the killed, wake the stopped)."""
    for node_id, process in list(mesh.nodes.items()):
        if process.returncode is not None:
            await mesh.start_node(node_id)
    async with asyncio.timeout(60):
        await mesh.wait_ready(3, node_ids=list(mesh.nodes))


async def reference(mesh: LocalMesh, **params: object) -> Answer:
    """The same request on one worker, through the router: what the swarm must reproduce."""
    async with httpx.AsyncClient(base_url=mesh.router_url, timeout=60) as http:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "logprobs": 2, **params}
        completion = (await http.post("/v1/completions", json=body)).json()["choices"][0]
    margins = [sorted(top.values(), reverse=True) for top in completion["logprobs"]["top_logprobs"]]
    assert min(first - second for first, second, *_ in margins) >= MIN_MARGIN, "the prompt has a near tie"
    async with AsyncClient(router_url=mesh.router_url) as client:
        stream = await client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=MAX_TOKENS,
            stream=True,
            **params,  # type: ignore[call-overload]
        )
        answer = await collect(stream)
    assert answer.text == completion["text"]
    return answer


async def collect(stream: object, *, on_chunk: object = None) -> Answer:
    answer = Answer("", [], [], [], [])
    async with stream:  # type: ignore[attr-defined]
        async for chunk in stream:  # type: ignore[attr-defined]
            meta = chunk.meshcore
            if meta.seq is not None:
                answer.seqs.append(meta.seq)
                answer.token_ids.append(meta.token_id)
                answer.workers.append(meta.worker_id)
                if on_chunk is not None:
                    on_chunk(len(answer.seqs), meta.worker_id)  # type: ignore[operator]
            answer.text += "".join(choice.text for choice in chunk.choices)
    answer.events = list(stream.events)  # type: ignore[attr-defined]
    return answer


def swarm_client(mesh: LocalMesh, swarm_size: int = 3) -> AsyncClient:
    """A swarm client whose legs go through the router's frame stream."""
    config = ClientConfig(
        router_url=mesh.router_url, mode=Mode.SWARM, swarm_size=swarm_size, swarm=SwarmOptions(legs="proxy")
    )
    return AsyncClient.from_config(config)


async def swarm(mesh: LocalMesh, *, on_chunk: object = None, **params: object) -> Answer:
    async with swarm_client(mesh) as client:
        stream = await client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=MAX_TOKENS,
            stream=True,
            **params,  # type: ignore[call-overload]
        )
        return await collect(stream, on_chunk=on_chunk)


def killer(mesh: LocalMesh, kill_at: int) -> tuple[Callable[[int, str], None], list[str]]:
    """An ``on_chunk`` that SIGKILLs the worker of the ``kill_at``-th token, and the list it names it in."""
    killed: list[str] = []

    def kill(count: int, worker: str) -> None:
        if count == kill_at and not killed:
            killed.append(worker)
            mesh.nodes[worker].send_signal(signal.SIGKILL)

    return kill, killed


def assert_exactly_once(answer: Answer, expected: Answer) -> None:
    assert answer.seqs == list(range(len(answer.seqs))), "a position lost, repeated or reordered"
    assert answer.token_ids == expected.token_ids
    assert answer.text == expected.text


async def test_the_first_worker_leads_and_the_others_pause(swarm_mesh: LocalMesh) -> None:
    expected = await reference(swarm_mesh, temperature=0)
    answer = await swarm(swarm_mesh, temperature=0)
    assert_exactly_once(answer, expected)
    kinds = [type(event) for event in answer.events]
    assert kinds.count(LeaderElected) == 1 and kinds.count(WorkerPaused) == 2 and Failover not in kinds
    assert len(set(answer.workers)) == 1


@pytest.mark.timeout(600)
async def test_killing_the_leader_at_a_random_token_loses_nothing(swarm_mesh: LocalMesh) -> None:
    expected = await reference(swarm_mesh, temperature=0)
    rng = random.Random(20261125)
    for run in range(CHAOS_RUNS):
        kill_at = rng.randint(1, MAX_TOKENS - 2)
        print(f"run {run}: SIGKILL the leader after {kill_at} tokens")
        kill, killed = killer(swarm_mesh, kill_at)
        answer = await swarm(swarm_mesh, on_chunk=kill, temperature=0)
        assert_exactly_once(answer, expected)
        assert killed and any(isinstance(e, Failover) for e in answer.events)
        assert killed[0] not in answer.workers[kill_at:]
        await restore(swarm_mesh)


async def test_a_stalled_leader_is_replaced_and_its_late_tokens_are_never_delivered(swarm_mesh: LocalMesh) -> None:
    expected = await reference(swarm_mesh, temperature=0)
    stopped: list[str] = []

    def stop(count: int, worker: str) -> None:
        if count == 12 and not stopped:
            stopped.append(worker)
            swarm_mesh.nodes[worker].send_signal(signal.SIGSTOP)

    try:
        answer = await swarm(swarm_mesh, on_chunk=stop, temperature=0)
    finally:
        for worker in stopped:
            swarm_mesh.nodes[worker].send_signal(signal.SIGCONT)
    assert_exactly_once(answer, expected)
    failover = next(e for e in answer.events if isinstance(e, Failover))
    assert failover.from_worker_id == stopped[0] and failover.reason.startswith("stalled")
    assert stopped[0] not in answer.workers[12:]
    await restore(swarm_mesh)


async def test_losing_the_leader_and_then_the_new_leader_still_completes(swarm_mesh: LocalMesh) -> None:
    expected = await reference(swarm_mesh, temperature=0)
    killed: list[str] = []

    def kill_twice(count: int, worker: str) -> None:
        if count in (8, 20) and worker not in killed:
            killed.append(worker)
            swarm_mesh.nodes[worker].send_signal(signal.SIGKILL)

    answer = await swarm(swarm_mesh, on_chunk=kill_twice, temperature=0)
    assert_exactly_once(answer, expected)
    assert len(killed) == 2 and sum(isinstance(e, Failover) for e in answer.events) >= 2
    await restore(swarm_mesh)


async def test_with_a_seed_the_text_after_a_failover_is_the_text_without_one(swarm_mesh: LocalMesh) -> None:
    expected = await reference(swarm_mesh, temperature=0.7, seed=7)
    killed: list[str] = []

    def kill(count: int, worker: str) -> None:
        if count == 10 and not killed:
            killed.append(worker)
            swarm_mesh.nodes[worker].send_signal(signal.SIGKILL)

    answer = await swarm(swarm_mesh, on_chunk=kill, temperature=0.7, seed=7)
    assert_exactly_once(answer, expected)
    await restore(swarm_mesh)


async def test_a_whole_completion_in_swarm_mode_is_the_leaders_answer(swarm_mesh: LocalMesh) -> None:
    expected = await reference(swarm_mesh, temperature=0)
    async with swarm_client(swarm_mesh) as client:
        completion = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
    assert completion.choices[0].text == expected.text
    assert completion.usage is not None and completion.usage.completion_tokens == len(expected.token_ids)


async def test_tool_calls_come_back_as_calls_in_swarm_mode(swarm_mesh: LocalMesh) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
    async with swarm_client(swarm_mesh, swarm_size=2) as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is 2 plus 3?"}],
            max_tokens=48,
            temperature=0,
            extra_body={"tools": [tool], "tool_choice": "required"},
        )
    choice = completion.model_dump()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "add" and set(json.loads(call["function"]["arguments"])) == {"a", "b"}
