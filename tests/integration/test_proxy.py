"""Proxy mode end to end: real router and node processes, the real model, the clients users use."""

from __future__ import annotations

import asyncio
import json
import subprocess

import openai
import pytest

from meshcore_sdk import AsyncClient, Client, ContextLengthExceeded, EngineCrashed, ModelNotFound
from meshcore_sdk.errors import BadRequest
from meshcore_sdk.mesh import LocalMesh

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration, pytest.mark.model]

MODEL = "gemma-3-270m"
MESSAGES = [{"role": "user", "content": "Name three colours."}]


async def test_models_lists_the_bundled_model_with_its_nodes(shared_mesh: LocalMesh) -> None:
    async with AsyncClient(router_url=shared_mesh.router_url) as client:
        models = await client.models.list()
    (model,) = models.data
    assert model.id == MODEL
    assert model.meshcore is not None and model.meshcore.ready_nodes == 2


async def test_sdk_streams_tokens_with_their_worker_and_position(shared_mesh: LocalMesh) -> None:
    async with AsyncClient(router_url=shared_mesh.router_url) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
    seqs = [c.meshcore.seq for c in chunks if c.meshcore.seq is not None]
    assert seqs == list(range(len(seqs))) and 0 < len(seqs) <= 12
    assert {c.meshcore.worker_id for c in chunks} <= {"node-0", "node-1"}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == len(seqs)
    assert [type(event).__name__ for event in stream.events][:3] == ["ResponseStarted", "WorkerAssigned", "FirstToken"]


async def test_sync_client_works_inside_a_running_loop(shared_mesh: LocalMesh) -> None:
    with Client(router_url=shared_mesh.router_url) as client:  # called from this test's running event loop
        got = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
        stream = client.completions.create(model=MODEL, prompt="Once", max_tokens=4, temperature=0, stream=True)
        with stream:
            streamed = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert got.choices[0].text != "" and got.meshcore.worker_id in {"node-0", "node-1"}
    assert got.usage is not None and got.usage.completion_tokens == 8
    assert streamed != "" and stream.finish_reason == "length"


async def test_official_openai_client_works_unchanged(shared_mesh: LocalMesh) -> None:
    def run() -> tuple[str, str, int]:
        client = openai.OpenAI(base_url=shared_mesh.router_url + "/v1", api_key="unused", max_retries=0)
        whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, temperature=0)  # type: ignore[arg-type]
        pieces = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=10,
            temperature=0,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        chunks = list(pieces)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None
        return whole.choices[0].message.content or "", streamed, whole.usage.completion_tokens if whole.usage else 0

    # Two requests may run on two workers, whose greedy answers can differ in a near-tie of the logits
    # (llama.cpp is not bitwise reproducible across batch shapes), so each is checked on its own.
    whole, streamed, tokens = await asyncio.to_thread(run)
    assert whole != "" and streamed != ""
    assert 0 < tokens <= 10


async def test_official_openai_client_sees_real_error_statuses(shared_mesh: LocalMesh) -> None:
    def run() -> None:
        client = openai.OpenAI(base_url=shared_mesh.router_url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model=MODEL, prompt="x", max_tokens=-5)

    await asyncio.to_thread(run)


async def test_curl_streams_and_answers(shared_mesh: LocalMesh) -> None:
    body = json.dumps({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0})
    url = shared_mesh.router_url + "/v1/completions"
    plain = await _curl(url, body)
    assert json.loads(plain)["choices"][0]["text"]
    streamed = await _curl(url, body.replace("}", ', "stream": true}'))
    events = [line.removeprefix("data: ") for line in streamed.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(choice["text"] for chunk in chunks for choice in chunk["choices"]) != ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def _curl(url: str, body: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-N",
        url,
        "-H",
        "content-type: application/json",
        "-d",
        body,
        stdout=subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


async def test_typed_errors_reach_the_sdk(shared_mesh: LocalMesh) -> None:
    async with AsyncClient(router_url=shared_mesh.router_url, max_retries=0) as client:
        with pytest.raises(ModelNotFound):
            await client.completions.create(model="no-such-model", prompt="x")
        with pytest.raises(BadRequest):
            await client.completions.create(model=MODEL, prompt="x", max_tokens=0)
        with pytest.raises(ContextLengthExceeded):
            await client.completions.create(model=MODEL, prompt="word " * 3000, max_tokens=4)
        assert not issubclass(ContextLengthExceeded, EngineCrashed)
