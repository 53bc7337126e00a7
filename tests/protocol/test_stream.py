"""WorkerStream, the grammar of a worker's answer (docs/protocol.md §3.3), and Utf8Assembler."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meshcore_sdk.protocol import (
    AcceptedFrame,
    CancelFrame,
    DoneFrame,
    ErrorCode,
    ErrorFrame,
    FinishReason,
    Frame,
    GenerateFrame,
    HeartbeatFrame,
    NodeStatus,
    PausedFrame,
    PauseFrame,
    ResumeFrame,
    StreamPhase,
    Telemetry,
    TokenFrame,
    Usage,
    Utf8Assembler,
    WorkerStream,
)
from meshcore_sdk.protocol.errors import OutOfOrderFrame

from .strategies import PROPERTY

RID = "r-1"
OTHER = "r-2"
PROMPT_TOKENS = 27


def accepted(request_id: str = RID) -> AcceptedFrame:
    return AcceptedFrame(request_id=request_id, worker_id="node-a", model="gemma-3-270m", prompt_tokens=PROMPT_TOKENS)


def token(seq: int, *, attempt: int = 0, request_id: str = RID) -> TokenFrame:
    return TokenFrame(
        request_id=request_id, attempt=attempt, seq=seq, token_id=1000 + seq, text_bytes=b" tok", t_worker=0.5 * seq
    )


def paused(next_seq: int, request_id: str = RID, *, attempt: int = 0) -> PausedFrame:
    return PausedFrame(request_id=request_id, next_seq=next_seq, attempt=attempt)


def done(completion_tokens: int, request_id: str = RID) -> DoneFrame:
    usage = Usage(
        prompt_tokens=PROMPT_TOKENS,
        completion_tokens=completion_tokens,
        total_tokens=PROMPT_TOKENS + completion_tokens,
    )
    return DoneFrame(request_id=request_id, finish_reason=FinishReason.STOP, usage=usage)


def error(request_id: str | None = RID) -> ErrorFrame:
    return ErrorFrame(request_id=request_id, code=ErrorCode.ENGINE_CRASHED, message="engine exited", retryable=True)


NOT_ANSWERS: list[Frame] = [
    PauseFrame(request_id=RID),
    ResumeFrame(request_id=RID, from_seq=0),
    CancelFrame(request_id=RID),
    GenerateFrame(request_id=RID, model="gemma-3-270m", prompt="Hi"),
    HeartbeatFrame(status=NodeStatus.READY, telemetry=Telemetry(ram_free_bytes=1 << 30)),
]


def feed(stream: WorkerStream, frames: list[Frame]) -> WorkerStream:
    for frame in frames:
        stream.receive(frame)
    return stream


# --- legal answers: one row of the transition table each ----------------------------------


@pytest.mark.parametrize(
    ("frames", "phase", "next_seq"),
    [
        pytest.param([], StreamPhase.OPEN, 0, id="nothing-yet"),
        pytest.param([accepted()], StreamPhase.OPEN, 0, id="accepted"),
        pytest.param([accepted(), token(0), token(1), token(2)], StreamPhase.OPEN, 3, id="contiguous-tokens"),
        pytest.param([token(0), token(1)], StreamPhase.OPEN, 2, id="tokens-without-accepted"),
        pytest.param([token(0), paused(1)], StreamPhase.PAUSED, 1, id="paused"),
        pytest.param([paused(0)], StreamPhase.PAUSED, 0, id="paused-before-any-token"),
        pytest.param([token(0), paused(1), token(1), token(2)], StreamPhase.OPEN, 3, id="paused-then-resumed"),
        pytest.param([accepted(), token(0), token(1), done(2)], StreamPhase.DONE, 2, id="done"),
        pytest.param([accepted(), done(0)], StreamPhase.DONE, 0, id="done-without-tokens"),
        pytest.param([token(0), paused(1), done(1)], StreamPhase.DONE, 1, id="done-while-paused"),
        pytest.param([accepted(), token(0), error()], StreamPhase.FAILED, 1, id="error"),
        pytest.param([token(0), paused(1), error()], StreamPhase.FAILED, 1, id="error-while-paused"),
    ],
)
def test_a_legal_answer_advances_the_stream(frames: list[Frame], phase: StreamPhase, next_seq: int) -> None:
    """Frames in the order §3.3 allows are taken, and the stream stands where the last one left it."""
    stream = feed(WorkerStream(RID), frames)

    assert (stream.phase, stream.next_seq, stream.finished) == (
        phase,
        next_seq,
        phase in (StreamPhase.DONE, StreamPhase.FAILED),
    )


def test_a_resumed_stream_counts_from_its_start_seq_and_attempt() -> None:
    """After a failover, the new worker's answer starts at ``start_seq`` with the new attempt number."""
    stream = feed(
        WorkerStream(RID, attempt=1, start_seq=5),
        [accepted(), token(5, attempt=1), token(6, attempt=1), paused(7, attempt=1), token(7, attempt=1), done(8)],
    )

    assert (stream.phase, stream.next_seq) == (StreamPhase.DONE, 8)


# --- illegal frames: OutOfOrderFrame, and the stream is failed -----------------------------


@pytest.mark.parametrize(
    ("before", "offending", "why"),
    [
        pytest.param([accepted()], accepted(), "accepted frame after the stream started", id="accepted-twice"),
        pytest.param([token(0)], accepted(), "accepted frame after the stream started", id="accepted-after-token"),
        pytest.param([], token(1), "token seq 1, expected 0", id="first-token-not-at-start"),
        pytest.param([token(0)], token(2), "token seq 2, expected 1", id="token-skipped"),
        pytest.param([token(0), token(1)], token(1), "token seq 1, expected 2", id="token-repeated"),
        pytest.param([], token(0, attempt=1), "token of attempt 1, expected attempt 0", id="wrong-attempt"),
        pytest.param([token(0)], paused(0), "paused at seq 0, expected 1", id="paused-at-wrong-seq"),
        pytest.param([token(0), paused(1)], token(2), "token seq 2, expected 1", id="resumed-at-wrong-seq"),
        pytest.param([token(0), token(1)], done(1), "done reports 1 tokens, 2 were sent", id="done-undercounts"),
        pytest.param([token(0)], done(2), "done reports 2 tokens, 1 were sent", id="done-overcounts"),
        pytest.param([done(0)], token(0), "token frame after the stream ended", id="token-after-done"),
        pytest.param([done(0)], done(0), "done frame after the stream ended", id="done-after-done"),
        pytest.param([error()], done(0), "done frame after the stream ended", id="done-after-error"),
        pytest.param([error()], error(), "error frame after the stream ended", id="error-after-error"),
        pytest.param([], token(0, request_id=OTHER), "token frame names another request", id="other-request"),
        pytest.param([token(0)], done(1, request_id=OTHER), "done frame names another request", id="other-done"),
        pytest.param([], error(request_id=None), "error frame names another request", id="connection-error"),
        *[
            pytest.param([token(0)], frame, f"{frame.type} frame is not part of a worker's answer", id=frame.type)
            for frame in NOT_ANSWERS
        ],
    ],
)
def test_an_illegal_frame_fails_the_stream(before: list[Frame], offending: Frame, why: str) -> None:
    """A frame the grammar forbids raises OutOfOrderFrame for this request, and the stream is over."""
    stream = feed(WorkerStream(RID), before)

    with pytest.raises(OutOfOrderFrame) as info:
        stream.receive(offending)

    assert (str(info.value), info.value.request_id, info.value.code) == (
        f"request {RID}: {why}",
        RID,
        ErrorCode.OUT_OF_ORDER,
    )
    assert (stream.phase, stream.finished) == (StreamPhase.FAILED, True)


# --- the grammar under random traces ----------------------------------------------------


class WorkerStreamMachine(RuleBasedStateMachine):
    """Random legal and illegal frames against a model of §3.3's grammar.

    The model knows only the transition table; the invariants say what a reader relies on.
    """

    @initialize(attempt=st.integers(0, 3), start_seq=st.integers(0, 5))
    def open_stream(self, attempt: int, start_seq: int) -> None:
        self.stream = WorkerStream(RID, attempt=attempt, start_seq=start_seq)
        self.attempt = attempt
        self.start_seq = start_seq
        self.next_seq = start_seq
        self.phase = StreamPhase.OPEN
        self.was_accepted = False
        self.taken_seqs: list[int] = []
        self.taken_after_end = 0

    @property
    def ended(self) -> bool:
        return self.phase in (StreamPhase.DONE, StreamPhase.FAILED)

    def deliver(self, frame: Frame, *, legal: bool, phase: StreamPhase | None = None) -> None:
        """Feed ``frame``; a legal one moves the model to ``phase``, an illegal one must fail the stream."""
        ended_before = self.stream.finished
        if not legal or self.ended:
            with pytest.raises(OutOfOrderFrame):
                self.stream.receive(frame)
            self.phase = StreamPhase.FAILED
            return
        self.stream.receive(frame)
        self.taken_after_end += ended_before
        if isinstance(frame, TokenFrame):
            self.taken_seqs.append(frame.seq)
            self.next_seq += 1
        self.phase = phase or self.phase

    @rule()
    def send_accepted(self) -> None:
        legal = not self.was_accepted and not self.taken_seqs
        self.deliver(accepted(), legal=legal)
        self.was_accepted = True

    @rule(offset=st.sampled_from([0, 0, 0, 0, 1, -1, 2]), wrong_attempt=st.booleans())
    def send_token(self, offset: int, wrong_attempt: bool) -> None:
        seq = max(0, self.next_seq + offset)
        attempt = self.attempt + 1 if wrong_attempt else self.attempt
        legal = seq == self.next_seq and not wrong_attempt
        self.deliver(token(seq, attempt=attempt), legal=legal, phase=StreamPhase.OPEN)

    @rule(offset=st.sampled_from([0, 0, 1, -1]))
    def send_paused(self, offset: int) -> None:
        next_seq = max(0, self.next_seq + offset)
        self.deliver(paused(next_seq, attempt=self.attempt), legal=next_seq == self.next_seq, phase=StreamPhase.PAUSED)

    @rule(offset=st.sampled_from([0, 0, 1, -1]))
    def send_done(self, offset: int) -> None:
        completion = max(0, self.next_seq + offset)
        self.deliver(done(completion), legal=completion == self.next_seq, phase=StreamPhase.DONE)

    @rule()
    def send_error(self) -> None:
        self.deliver(error(), legal=True, phase=StreamPhase.FAILED)

    @rule(frame=st.sampled_from([token(0, request_id=OTHER), paused(0, request_id=OTHER), error(OTHER)]))
    def send_another_requests_frame(self, frame: Frame) -> None:
        self.deliver(frame, legal=False)

    @rule(frame=st.sampled_from(NOT_ANSWERS))
    def send_a_frame_that_is_no_answer(self, frame: Frame) -> None:
        self.deliver(frame, legal=False)

    @invariant()
    def taken_tokens_are_contiguous_from_the_start(self) -> None:
        assert self.taken_seqs == list(range(self.start_seq, self.start_seq + len(self.taken_seqs)))
        assert self.stream.next_seq == self.start_seq + len(self.taken_seqs)

    @invariant()
    def nothing_is_taken_after_the_end(self) -> None:
        assert self.taken_after_end == 0

    @invariant()
    def the_stream_stands_where_the_model_does(self) -> None:
        assert (self.stream.phase, self.stream.finished) == (self.phase, self.ended)


WorkerStreamMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=25, deadline=None, derandomize=True
)
TestWorkerStreamMachine = WorkerStreamMachine.TestCase


# --- Utf8Assembler ------------------------------------------------------------------------


def test_a_character_split_across_tokens_is_held_until_complete() -> None:
    """€ (three bytes) split over two tokens appears once, whole, with the second token."""
    assembler = Utf8Assembler()

    assert [assembler.feed(b"5 \xe2\x82"), assembler.feed(b"\xac!"), assembler.flush()] == ["5 ", "€!", ""]


def test_a_broken_tail_becomes_a_replacement_character() -> None:
    """A stream that ends inside a character shows U+FFFD for the stray bytes rather than dropping them."""
    assembler = Utf8Assembler()

    assert [assembler.feed(b"ok \xf0\x9f"), assembler.flush()] == ["ok ", "\ufffd"]


def test_invalid_bytes_in_the_middle_are_replaced_not_raised() -> None:
    """A worker's stray invalid byte never breaks the reader."""
    assembler = Utf8Assembler()

    assert [assembler.feed(b"a\xffb"), assembler.flush()] == ["a\ufffdb", ""]


@PROPERTY
@given(text=st.text(), data=st.data())
def test_any_split_of_utf8_reassembles_exactly(text: str, data: st.DataObject) -> None:
    """Cut a text's UTF-8 bytes anywhere: feeding the pieces in order and flushing gives the text back."""
    raw = text.encode("utf-8")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8), label="cuts"))
    pieces = [raw[start:end] for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assembler = Utf8Assembler()

    assert "".join(assembler.feed(piece) for piece in pieces) + assembler.flush() == text


def test_after_a_resume_frames_of_older_attempts_are_stale_and_newer_ones_restart_at_from_seq() -> None:
    stream = WorkerStream(RID)
    for frame in (accepted(), token(0), token(1)):
        assert stream.receive(frame)
    stream.resumed(attempt=1, from_seq=5)
    assert not stream.receive(token(2))  # sent before the worker saw the resume
    assert not stream.receive(paused(3))
    assert stream.receive(token(5, attempt=1))
    assert stream.receive(done(6))
    assert stream.phase is StreamPhase.DONE


def test_a_resume_must_raise_the_attempt() -> None:
    stream = WorkerStream(RID, attempt=2)
    with pytest.raises(OutOfOrderFrame, match="not newer"):
        stream.resumed(attempt=2, from_seq=0)
