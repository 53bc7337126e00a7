"""``logprobs``, ``top_logprobs`` and ``response_format`` between OpenAI bodies and frames."""

from __future__ import annotations

from typing import Any

import pytest

from meshcore_sdk.openai_format import (
    ChatCompletionRequest,
    ChunkFormatter,
    CompletionRequest,
    ResponseMeta,
    completion_body,
)
from meshcore_sdk.protocol import DoneFrame, FinishReason, ResponseFormat, TokenFrame, TopLogprob, Usage

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


def token(seq: int, text: bytes, logprob: float | None = -0.25) -> TokenFrame:
    tops = None if logprob is None else [TopLogprob(token_id=7, text_bytes=text, logprob=logprob)]
    return TokenFrame(
        request_id="r", seq=seq, token_id=7, text_bytes=text, t_worker=0.0, logprob=logprob, top_logprobs=tops
    )


DONE = DoneFrame(
    request_id="r", finish_reason=FinishReason.STOP, usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
)


def meta(kind: str) -> ResponseMeta:
    return ResponseMeta(kind=kind, completion_id="c", created=0, model="m", request_id="r", worker_id="w")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, (None, None)),
        ({"logprobs": False, "top_logprobs": 3}, (None, None)),
        ({"logprobs": True}, (True, 0)),
        ({"logprobs": True, "top_logprobs": 5}, (True, 5)),
    ],
)
def test_chat_logprobs_reach_the_frame(body: dict[str, Any], expected: tuple[object, object]) -> None:
    params = ChatCompletionRequest.model_validate(CHAT | body).to_frame("r").params
    assert (params.logprobs, params.top_logprobs) == expected


def test_completions_logprobs_is_the_number_of_alternatives() -> None:
    params = CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 2}).to_frame("r").params
    assert (params.logprobs, params.top_logprobs) == (True, 2)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, ResponseFormat(type="text")),
        ({"type": "json_object"}, ResponseFormat(type="json_object")),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}},
            ResponseFormat(type="json_schema", json_schema={"type": "object"}),
        ),
    ],
)
def test_response_format_reaches_the_frame(response_format: dict[str, Any], expected: ResponseFormat) -> None:
    frame = ChatCompletionRequest.model_validate(CHAT | {"response_format": response_format}).to_frame("r")
    assert frame.params.response_format == expected


def test_stream_chunks_carry_chat_logprobs() -> None:
    chunk = ChunkFormatter(meta("chat")).token(token(0, b"Hi"))
    assert chunk["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.25,
                "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}],
            }
        ],
        "refusal": None,
    }
    assert ChunkFormatter(meta("chat")).token(token(0, b"Hi", None))["choices"][0]["logprobs"] is None


def test_a_text_completion_carries_legacy_logprobs() -> None:
    body = completion_body(meta("text"), "Hi!", DONE, [token(0, b"Hi"), token(1, b"!", -1.0)])
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["Hi", "!"],
        "token_logprobs": [-0.25, -1.0],
        "top_logprobs": [{"Hi": -0.25}, {"!": -1.0}],
        "text_offset": [0, 2],
    }
    assert completion_body(meta("text"), "Hi", DONE)["choices"][0]["logprobs"] is None
