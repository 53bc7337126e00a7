"""The batching engine on the real model, in-process: catch-up, overflow, eviction, logprobs, grammars."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshcore_node.engine.child import Engine, load_context
from meshcore_node.engine.ipc import ENGINE_MESSAGE, EngineAccepted, EngineConfig, EngineMessage
from meshcore_node.engine.templates import template_for
from meshcore_sdk.protocol import (
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    FinishReason,
    GenerateFrame,
    PausedFrame,
    PauseFrame,
    ResponseFormat,
    ResumeFrame,
    SamplingParams,
    TokenFrame,
)

pytestmark = [pytest.mark.model, pytest.mark.timeout(180)]

LOGPROB_TOLERANCE = 1.5
"""Max |delta log-probability| over the top 20 after catch-up: a prefill of the caught-up ids
against one decode per id, on Q4_K_M weights (docs/engine.md §catch-up)."""


class Outbox:
    """The engine's pipe: every message it writes, parsed."""

    def __init__(self) -> None:
        self.messages: list[EngineMessage] = []

    def write(self, line: str) -> int:
        self.messages.append(ENGINE_MESSAGE.validate_json(line))
        return len(line)

    def flush(self) -> None:
        pass

    def of(self, request_id: str) -> list[EngineMessage]:
        return [m for m in self.messages if getattr(m, "request_id", None) == request_id]

    def tokens(self, request_id: str) -> list[TokenFrame]:
        return [m for m in self.of(request_id) if isinstance(m, TokenFrame)]

    def ids(self, request_id: str) -> list[int]:
        return [t.token_id for t in self.tokens(request_id)]

    def done(self, request_id: str) -> DoneFrame:
        last = self.of(request_id)[-1]
        assert isinstance(last, DoneFrame), last
        return last


def make_engine(model_path: Path, **config: object) -> tuple[Engine, Outbox]:
    engine_config = EngineConfig(model_path=str(model_path), n_threads=2, **config)  # type: ignore[arg-type]
    llama = load_context(engine_config)
    template = template_for(llama.metadata, bos_token="<bos>", eos_token="<eos>")
    outbox = Outbox()
    return Engine(llama, template, outbox, engine_config), outbox  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pair(model_path: Path) -> Iterator[tuple[tuple[Engine, Outbox], tuple[Engine, Outbox]]]:
    first = make_engine(model_path, n_ctx=1024, max_sequences=8, n_batch=256)
    second = make_engine(model_path, n_ctx=1024, max_sequences=8, n_batch=256)
    yield first, second


def generate(request_id: str, prompt: str, **params: object) -> GenerateFrame:
    params.setdefault("temperature", 0)
    return GenerateFrame(
        request_id=request_id,
        model="sha256:" + "0" * 64,
        prompt=prompt,
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


def step_until_tokens(engine: Engine, outbox: Outbox, request_id: str, n: int) -> None:
    engine.pump(max_steps=0)
    while len(outbox.tokens(request_id)) < n:
        assert engine.pump(max_steps=1) == 1


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_catch_up_continues_exactly_as_the_other_engine(
    pair: tuple[tuple[Engine, Outbox], tuple[Engine, Outbox]], temperature: float
) -> None:
    (leader, led), (follower, fol) = pair
    prompt = "Count with me: one, two, three, four,"
    tag = f"t{temperature}"
    params = {"temperature": temperature, "seed": 11, "max_tokens": 14, "logprobs": True, "top_logprobs": 20}
    leader.submit(generate(f"lead-{tag}", prompt, **params))
    leader.pump()
    reference = led.tokens(f"lead-{tag}")
    assert len(reference) == 14

    follower.submit(generate(f"follow-{tag}", prompt, **params))
    step_until_tokens(follower, fol, f"follow-{tag}", 1)
    follower.submit(PauseFrame(request_id=f"follow-{tag}"))
    follower.pump()
    paused = fol.of(f"follow-{tag}")[-1]
    assert isinstance(paused, PausedFrame) and paused.next_seq == 1
    k = 6
    follower.submit(
        ResumeFrame(request_id=f"follow-{tag}", from_seq=1 + k, token_ids=[t.token_id for t in reference[1 : 1 + k]])
    )
    follower.pump()
    caught_up = fol.tokens(f"follow-{tag}")
    assert [t.seq for t in caught_up] == [0, *range(1 + k, 14)]
    assert [t.token_id for t in caught_up[1:]] == [t.token_id for t in reference[1 + k :]]
    first_after = caught_up[1]
    assert first_after.top_logprobs is not None and reference[1 + k].top_logprobs is not None
    theirs = {top.token_id: top.logprob for top in reference[1 + k].top_logprobs}
    for top in first_after.top_logprobs[:5]:
        assert abs(top.logprob - theirs.get(top.token_id, -100.0)) <= LOGPROB_TOLERANCE
    assert fol.done(f"follow-{tag}").finish_reason is FinishReason.LENGTH


PROMPTS = [
    "The days of the week are Monday, Tuesday,",
    "Count: 1, 2, 3, 4, 5,",
    "The alphabet goes a, b, c, d,",
    "Numbers: 10, 20, 30, 40,",
]
"""Prompts whose greedy continuations have wide margins: batch composition changes the numerics a
little (one sequence alone decodes through other kernels than several together), never these tokens."""


def test_32_sequences_on_a_small_context_all_finish_and_paused_ones_survive_eviction(model_path: Path) -> None:
    engine, outbox = make_engine(model_path, n_ctx=256, max_sequences=6, n_batch=64)
    # References, one at a time.
    for i, prompt in enumerate(PROMPTS):
        engine.submit(generate(f"ref{i}", prompt, max_tokens=8))
    engine.pump()
    reference = {i: outbox.ids(f"ref{i}") for i in range(len(PROMPTS))}

    # Four sequences run a little, then pause and keep their slots.
    for i in range(4):
        engine.submit(generate(f"p{i}", PROMPTS[i], max_tokens=8))
    engine.pump(max_steps=0)
    while min(len(outbox.tokens(f"p{i}")) for i in range(4)) < 3:
        engine.pump(max_steps=1)
    for i in range(4):
        engine.submit(PauseFrame(request_id=f"p{i}"))
    engine.pump()
    next_seq = {i: [m for m in outbox.of(f"p{i}") if isinstance(m, PausedFrame)][-1].next_seq for i in range(4)}

    # 32 more arrive at once: the context holds a few; the rest wait; paused ones get evicted.
    for n in range(32):
        engine.submit(generate(f"s{n}", PROMPTS[n % len(PROMPTS)], max_tokens=8))
    engine.pump()
    for n in range(32):
        assert outbox.done(f"s{n}").finish_reason is not FinishReason.CANCELLED
        assert outbox.ids(f"s{n}") == reference[n % len(PROMPTS)], n
    assert engine.saved_bytes > 0, "paused sequences were evicted"

    for i in range(4):
        engine.submit(ResumeFrame(request_id=f"p{i}", from_seq=next_seq[i]))
    engine.pump()
    assert engine.saved_bytes == 0
    for i in range(4):
        assert outbox.ids(f"p{i}") == reference[i], i


def test_cancel_frees_a_paused_sequence(pair: tuple[tuple[Engine, Outbox], tuple[Engine, Outbox]]) -> None:
    (engine, outbox), _ = pair
    engine.submit(generate("gone", PROMPTS[0], max_tokens=30))
    step_until_tokens(engine, outbox, "gone", 2)
    engine.submit(PauseFrame(request_id="gone"))
    engine.submit(CancelFrame(request_id="gone"))
    engine.pump()
    assert outbox.done("gone").finish_reason is FinishReason.CANCELLED
    assert isinstance(outbox.of("gone")[0], EngineAccepted)


def test_logprobs_are_consistent(pair: tuple[tuple[Engine, Outbox], tuple[Engine, Outbox]]) -> None:
    (engine, outbox), _ = pair
    engine.submit(generate("lp", "The capital of France is", max_tokens=4, logprobs=True, top_logprobs=3))
    engine.pump()
    for token in outbox.tokens("lp"):
        assert token.logprob is not None and token.top_logprobs is not None
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token_id == token.token_id  # greedy picks the most likely
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)
    proof = outbox.done("lp").proof
    assert proof is not None and proof["scheme"] == "meshcore/receipt/v1"  # tests/node/test_receipts.py


def test_response_format_json_schema_constrains_the_answer(
    pair: tuple[tuple[Engine, Outbox], tuple[Engine, Outbox]],
) -> None:
    (engine, outbox), _ = pair
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "big": {"type": "boolean"}},
        "required": ["city", "big"],
    }
    fmt = ResponseFormat(type="json_schema", json_schema=schema)
    engine.submit(generate("json", "Give me a city as JSON:", max_tokens=40, response_format=fmt))
    engine.pump()
    text = b"".join(t.text_bytes for t in outbox.tokens("json")).decode()
    assert outbox.done("json").finish_reason is FinishReason.STOP, text
    value = json.loads(text)
    assert set(value) == {"city", "big"} and isinstance(value["big"], bool)


def test_a_resume_for_an_unknown_request_is_an_error(
    pair: tuple[tuple[Engine, Outbox], tuple[Engine, Outbox]],
) -> None:
    (engine, outbox), _ = pair
    engine.submit(ResumeFrame(request_id="nobody", from_seq=3))
    engine.pump()
    assert isinstance(outbox.of("nobody")[-1], ErrorFrame)


def test_a_held_resume_fills_the_cache_and_stays_paused(
    pair: tuple[tuple[Engine, Outbox], tuple[Engine, Outbox]],
) -> None:
    (leader, led), (follower, fol) = pair
    prompt = "1, 2, 3, 4, 5,"
    leader.submit(generate("hold-ref", prompt, max_tokens=12))
    leader.pump()
    reference = led.ids("hold-ref")
    follower.submit(generate("held", prompt, max_tokens=12))
    step_until_tokens(follower, fol, "held", 1)
    follower.submit(PauseFrame(request_id="held"))
    follower.submit(ResumeFrame(request_id="held", from_seq=6, token_ids=reference[1:6], attempt=1, hold=True))
    follower.pump()
    last = fol.of("held")[-1]
    assert isinstance(last, PausedFrame) and (last.next_seq, last.attempt) == (6, 1)
    assert [t.attempt for t in fol.tokens("held")] == [0]  # the hold produced no token
    follower.submit(ResumeFrame(request_id="held", from_seq=6, attempt=2))
    follower.pump()
    assert [t.token_id for t in fol.tokens("held") if t.attempt == 2] == reference[6:]
