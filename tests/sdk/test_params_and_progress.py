"""Pure pieces: request bodies from create() arguments, and the events a stream derives from chunks."""

from __future__ import annotations

import pytest

from meshcore_sdk import ChatCompletionChunk, ConfigError, FirstToken, WorkerAssigned
from meshcore_sdk._params import SamplingArgs, chat_body, completion_body
from meshcore_sdk.streaming import ChunkProgress

from .canned import WORKER_ID, chat_chunks


def test_chat_body_sends_given_options_and_merges_extra_body_last() -> None:
    body = chat_body(
        model="m",
        messages=iter([{"role": "user", "content": "Hi"}]),
        stream=True,
        sampling=SamplingArgs(temperature=0.0, seed=7, stop="\n", repeat_penalty=1.1),
        extra_body={"temperature": 0.5, "grammar": "root ::= x"},
    )
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "temperature": 0.5,
        "seed": 7,
        "stop": "\n",
        "repeat_penalty": 1.1,
        "grammar": "root ::= x",
    }


@pytest.mark.parametrize(
    ("model", "messages"),
    [("", [{"role": "user", "content": "x"}]), ("m", []), ("m", "Hi"), ("m", {"role": "user"}), ("m", ["Hi"])],
)
def test_chat_body_refuses_bad_arguments_before_any_io(model: str, messages: object) -> None:
    with pytest.raises(ConfigError):
        chat_body(model=model, messages=messages, stream=False, sampling=SamplingArgs(), extra_body=None)  # type: ignore[arg-type]


def test_completion_body_needs_a_string_prompt() -> None:
    assert completion_body(model="m", prompt="p", stream=False, sampling=SamplingArgs(), extra_body=None) == {
        "model": "m",
        "prompt": "p",
        "stream": False,
    }
    with pytest.raises(ConfigError):
        completion_body(model="m", prompt=["p"], stream=False, sampling=SamplingArgs(), extra_body=None)  # type: ignore[arg-type]


def test_progress_emits_worker_then_first_token_once() -> None:
    """The role chunk names the worker; the first chunk with a token position is the first token."""
    chunks = [ChatCompletionChunk.model_validate(chunk) for chunk in chat_chunks(["a", "b"])]
    progress = ChunkProgress()

    per_chunk = [progress.observe(chunk, at_s=float(index)) for index, chunk in enumerate(chunks)]

    assert per_chunk == [
        [WorkerAssigned(at_s=0.0, worker_id=WORKER_ID)],
        [FirstToken(at_s=1.0, worker_id=WORKER_ID, seq=0)],
        [],
    ]
    assert (progress.chunks, progress.finish_reason, "".join(progress.parts)) == (3, "stop", "ab")
