"""OpenAI request parsing and chunk formatting (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from meshcore_sdk.openai_format import (
    ChatCompletionRequest,
    ChunkFormatter,
    CompletionRequest,
    ResponseMeta,
    completion_body,
    param_of,
    request_loc,
)
from meshcore_sdk.protocol import DoneFrame, FinishReason, TokenFrame, Usage

pytestmark = pytest.mark.timeout(30)


def chat(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    frame = chat(max_tokens=50, max_completion_tokens=7).to_frame("r-1")
    assert frame.params.max_tokens == 7
    assert chat(max_tokens=50).to_frame("r-1").params.max_tokens == 50


def test_developer_is_system_and_text_parts_are_joined() -> None:
    request = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
        ]
    )
    messages = request.to_frame("r-1").messages
    assert messages is not None
    assert [(m.role, m.content) for m in messages] == [("system", "Be brief."), ("user", "a\nb"), ("assistant", "")]


def test_sampling_fields_and_extras_reach_the_frame_and_unknown_fields_are_ignored() -> None:
    request = chat(
        temperature=0, top_p=0.5, seed=7, stop="\n", top_k=40, min_p=0.1, repeat_penalty=1.1, logit_bias={}, store=True
    )
    params = request.to_frame("r-1").params
    assert (params.temperature, params.top_p, params.seed, params.stop) == (0, 0.5, 7, ["\n"])
    assert (params.top_k, params.min_p, params.repeat_penalty) == (40, 0.1, 1.1)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            ("messages", 0, "content"),
        ),
        ({"messages": [{"role": "wizard", "content": "x"}]}, ("messages", 0, "role")),
        ({"messages": []}, ("messages",)),
        ({"n": 2}, ("n",)),
    ],
)
def test_bad_chat_bodies_point_at_the_field(fields: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        chat(**fields)
    assert caught.value.errors()[0]["loc"][: len(loc)] == loc


def test_out_of_range_sampling_values_point_at_the_request_field() -> None:
    request = chat(max_completion_tokens=0)
    with pytest.raises(ValidationError) as caught:
        request.to_frame("r-1")
    loc = request_loc(caught.value.errors()[0]["loc"], max_tokens_param=request.max_tokens_param())
    assert param_of(("body", *loc)) == "max_completion_tokens"


def test_param_of_formats_locations() -> None:
    assert param_of(("body", "messages", 0, "content")) == "messages[0].content"
    assert param_of(("body",)) is None


def test_completion_requests_take_one_prompt_and_default_to_16_tokens() -> None:
    frame = CompletionRequest.model_validate({"model": "m", "prompt": ["Once"]}).to_frame("r-1")
    assert (frame.prompt, frame.params.max_tokens) == ("Once", 16)
    for prompt in (["a", "b"], [[1, 2]]):
        with pytest.raises(ValidationError):
            CompletionRequest.model_validate({"model": "m", "prompt": prompt})


META = ResponseMeta(kind="chat", completion_id="chatcmpl-1", created=1, model="m", request_id="r-1", worker_id="w")
DONE = DoneFrame(
    request_id="r-1",
    finish_reason=FinishReason.STOP,
    usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
)


def token(seq: int, data: bytes) -> TokenFrame:
    return TokenFrame(request_id="r-1", seq=seq, token_id=seq + 10, text_bytes=data, t_worker=0.0)


def test_chunks_carry_one_token_each_role_first_and_finish_last() -> None:
    formatter = ChunkFormatter(META)
    first, second = formatter.token(token(0, b"\xc3")), formatter.token(token(1, b"\xa9!"))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # half a character held back
    assert second["choices"][0]["delta"] == {"content": "é!"}
    assert second["meshcore"] == {"request_id": "r-1", "worker_id": "w", "seq": 1, "token_id": 11, "attempt": 0}
    (last,) = formatter.done(DONE)
    assert last["choices"][0] == {"index": 0, "logprobs": None, "finish_reason": "stop", "delta": {}}
    assert last["meshcore"]["seq"] is None
    assert "usage" not in last


def test_include_usage_adds_a_usage_chunk_and_null_usage_elsewhere() -> None:
    formatter = ChunkFormatter(dataclasses.replace(META, include_usage=True))
    assert formatter.token(token(0, b"a"))["usage"] is None
    last, usage = formatter.done(DONE)
    assert last["usage"] is None
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_completion_bodies() -> None:
    chat_body = completion_body(META, "Hi", DONE)
    assert chat_body["object"] == "chat.completion"
    assert chat_body["choices"][0]["message"] == {"role": "assistant", "content": "Hi"}
    assert chat_body["meshcore"] == {"request_id": "r-1", "worker_id": "w"}
    text_meta = ResponseMeta(kind="text", completion_id="cmpl-1", created=1, model="m", request_id="r-1", worker_id="w")
    text_body = completion_body(text_meta, "Hi", DONE)
    assert (text_body["object"], text_body["choices"][0]["text"]) == ("text_completion", "Hi")
