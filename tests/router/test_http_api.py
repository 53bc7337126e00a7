"""The OpenAI-compatible HTTP API against a real router and scripted nodes on loopback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from meshcore_sdk.protocol import GenerateFrame

from .conftest import RunningRouter, StartNode
from .fake_node import MODEL, Plan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

CHAT = {"model": "tiny-model", "messages": [{"role": "user", "content": "Hi"}]}


def sse_events(text: str) -> list[Any]:
    """The data of each server-sent event, JSON-decoded except ``[DONE]``."""
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


async def test_models_lists_what_registered_nodes_serve(http: httpx.AsyncClient, start_node: StartNode) -> None:
    assert (await http.get("/v1/models")).json() == {"object": "list", "data": []}
    await start_node("node-a")
    await start_node("node-b", ready=False)
    models = (await http.get("/v1/models")).json()["data"]
    assert [m["id"] for m in models] == ["tiny-model"]
    assert models[0]["meshcore"] == {"sha256": MODEL.sha256, "nodes": 2, "ready_nodes": 1, "n_ctx": 4096}
    assert (await http.get("/v1/models/tiny-model")).json()["id"] == "tiny-model"
    assert (await http.get(f"/v1/models/sha256:{MODEL.sha256}")).json()["id"] == "tiny-model"
    assert_openai_error(await http.get("/v1/models/nope"), 404, "model_not_found")


async def test_chat_completion(http: httpx.AsyncClient, start_node: StartNode) -> None:
    node = await start_node("node-a")
    response = await http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    body = response.json()
    request_id = response.headers["x-request-id"]
    assert body["object"] == "chat.completion"
    assert body["model"] == "tiny-model"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello world"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert body["meshcore"] == {"request_id": request_id, "worker_id": "node-a"}
    (generate,) = node.generated
    assert generate.model == f"sha256:{MODEL.sha256}"
    assert generate.request_id == request_id


async def test_chat_stream_one_chunk_per_token_then_done(http: httpx.AsyncClient, start_node: StartNode) -> None:
    await start_node("node-a")
    response = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["Hel", "lo", " world", None]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert [c["meshcore"]["seq"] for c in chunks] == [0, 1, 2, None]
    assert {c["id"] for c in chunks} == {f"chatcmpl-{response.headers['x-request-id']}"}
    assert all("usage" not in c for c in chunks)


async def test_include_usage_and_max_completion_tokens(http: httpx.AsyncClient, start_node: StartNode) -> None:
    node = await start_node("node-a")
    body = {
        **CHAT,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 9,
        "max_completion_tokens": 2,
    }
    events = sse_events((await http.post("/v1/chat/completions", json=body)).text)
    assert node.generated[0].params.max_tokens == 2
    *chunks, usage, done = events
    assert done == "[DONE]"
    assert all(c["usage"] is None for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


async def test_completions_prompt_and_params(http: httpx.AsyncClient, start_node: StartNode) -> None:
    node = await start_node("node-a")
    body = {"model": f"sha256:{MODEL.sha256}", "prompt": "Once", "temperature": 0, "stop": ["\n"], "top_k": 3, "x": 1}
    response = await http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "text_completion"
    assert response.json()["choices"][0]["text"] == "Hello world"
    generate: GenerateFrame = node.generated[0]
    assert (generate.prompt, generate.messages) == ("Once", None)
    assert (generate.params.temperature, generate.params.stop, generate.params.top_k) == (0, ["\n"], 3)
    stream = sse_events((await http.post("/v1/completions", json={**body, "stream": True})).text)
    assert [e["choices"][0]["text"] for e in stream[:-1]] == ["Hel", "lo", " world", ""]


async def test_unknown_model_is_404(http: httpx.AsyncClient, start_node: StartNode) -> None:
    await start_node("node-a")
    error = assert_openai_error(
        await http.post("/v1/chat/completions", json={**CHAT, "model": "nope"}), 404, "model_not_found"
    )
    assert "nope" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT["messages"]}, "model"),
        ({**CHAT, "temperature": 9}, "temperature"),
        ({**CHAT, "max_completion_tokens": 0}, "max_completion_tokens"),
        ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ],
)
async def test_bad_bodies_are_400_with_param(
    http: httpx.AsyncClient, start_node: StartNode, body: dict[str, Any], param: str
) -> None:
    await start_node("node-a")
    error = assert_openai_error(await http.post("/v1/chat/completions", json=body), 400, "invalid_request")
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


async def test_bodies_that_are_not_json_are_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "invalid_request")


async def test_every_path_answers_in_the_openai_error_shape(http: httpx.AsyncClient) -> None:
    assert_openai_error(await http.get("/v2/nothing"), 404, "invalid_request")
    assert_openai_error(await http.get("/v1/chat/completions"), 405, "invalid_request")


async def test_no_ready_node_is_503_with_retry_after(http: httpx.AsyncClient, start_node: StartNode) -> None:
    await start_node("node-a", ready=False)  # registered, never READY: the model is known
    response = await http.post("/v1/chat/completions", json=CHAT)
    assert_openai_error(response, 503, "no_capacity")
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-should-retry"] == "true"


async def test_a_context_length_refusal_is_400_even_when_streaming(
    http: httpx.AsyncClient, start_node: StartNode
) -> None:
    await start_node("node-a", plan=Plan(fault="context_length", fault_at=0))
    for stream in (False, True):
        response = await http.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        error = assert_openai_error(response, 400, "context_length_exceeded")
        assert error["param"] == "messages"


async def test_a_worker_failure_mid_stream_is_one_error_event_without_done(
    http: httpx.AsyncClient, start_node: StartNode
) -> None:
    await start_node("node-a", plan=Plan(fault="engine_crashed", fault_at=2))
    events = sse_events((await http.post("/v1/chat/completions", json={**CHAT, "stream": True})).text)
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["Hel", "lo"]
    assert events[-1]["error"]["code"] == "engine_crashed"


async def test_a_worker_failure_after_tokens_is_502_that_should_not_be_retried(
    http: httpx.AsyncClient, start_node: StartNode
) -> None:
    await start_node("node-a", plan=Plan(fault="engine_crashed", fault_at=1))
    response = await http.post("/v1/chat/completions", json=CHAT)
    assert_openai_error(response, 502, "engine_crashed")
    assert response.headers["x-should-retry"] == "false"


async def test_health(http: httpx.AsyncClient, start_node: StartNode) -> None:
    response = await http.get("/health")
    assert (response.status_code, response.json()) == (503, {"status": "unavailable"})
    await start_node("node-a")
    response = await http.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_metrics(http: httpx.AsyncClient, start_node: StartNode) -> None:
    await start_node("node-a")
    await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await http.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    text = (await http.get("/metrics")).text
    assert 'meshcore_requests_total{code="200",endpoint="/v1/chat/completions"} 1.0' in text
    assert 'meshcore_requests_total{code="404",endpoint="/v1/chat/completions"} 1.0' in text
    assert 'meshcore_nodes{status="READY"} 1.0' in text
    assert "meshcore_tokens_streamed_total 3.0" in text
    assert "meshcore_time_to_first_token_seconds_count 1.0" in text
    assert 'meshcore_request_duration_seconds_count{endpoint="/v1/chat/completions"} 2.0' in text


async def test_status_lists_nodes(http: httpx.AsyncClient, start_node: StartNode) -> None:
    await start_node("node-a")
    (node,) = (await http.get("/mesh/v1/status")).json()["nodes"]
    assert (node["node_id"], node["status"], node["models"][0]["served_name"]) == ("node-a", "READY", "tiny-model")
    assert node["last_seen_age_s"] >= 0
    assert node["telemetry"]["ram_free_bytes"] == 1 << 30


async def test_the_node_never_learns_the_client(
    http: httpx.AsyncClient, start_node: StartNode, mesh: RunningRouter
) -> None:
    node = await start_node("node-a")
    await http.post("/v1/chat/completions", json=CHAT, headers={"x-forwarded-for": "203.0.113.9", "user-agent": "spy"})
    sent = node.generated[0].model_dump_json()
    assert "203.0.113.9" not in sent and "spy" not in sent and "127.0.0.1" not in sent
