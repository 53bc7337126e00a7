"""The engine child process: one llama.cpp model serving requests in arrival order.

Run as ``python -m meshcore_node.engine.child '<EngineConfig JSON>'`` by the
node's supervisor.  Requests (``generate``, ``cancel`` frames) arrive as JSON
lines on stdin, read by a thread into a queue; answers go out as JSON lines on
a private copy of stdout (fd 1 itself is pointed at stderr, so nothing that
llama.cpp prints can corrupt the pipe).  Requests run one at a time; between
two tokens the loop takes in new frames, so a ``cancel`` stops a generation
within one token.  A native crash kills only this process: the supervisor
notices the closed pipe, fails the requests in flight and starts a new child.
"""

from __future__ import annotations

import os
import queue
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from meshcore_node.engine.guard import load_llama
from meshcore_node.engine.ipc import EngineAccepted, EngineConfig, EngineReady
from meshcore_node.engine.stops import Piece, StopMatcher
from meshcore_node.engine.templates import ChatTemplate, template_for
from meshcore_node.models import served_id
from meshcore_sdk.protocol import (
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    FinishReason,
    GenerateFrame,
    MeshError,
    TokenFrame,
    Usage,
    decode_frame,
)
from meshcore_sdk.protocol.errors import ContextLengthExceeded, ErrorCode

if TYPE_CHECKING:
    from llama_cpp import Llama

_STOP_READING = None


class Engine:
    """Runs generations on one loaded model, one request at a time."""

    def __init__(self, llm: Llama, template: ChatTemplate, out: IO[str]) -> None:
        self._llm = llm
        self._template = template
        self._out = out
        self._out_lock = threading.Lock()
        self._inbox: queue.Queue[GenerateFrame | CancelFrame | None] = queue.Queue()
        self._pending: deque[GenerateFrame] = deque()
        self._cancelled: set[str] = set()
        self._running = True

    def serve(self, stdin: IO[str]) -> None:
        """Serve requests from ``stdin`` until it closes."""
        threading.Thread(target=self._read, args=(stdin,), name="engine-stdin", daemon=True).start()
        while self._running:
            if not self._pending:
                self._take(self._inbox.get())
            self._drain_inbox()
            if self._pending:
                self._run(self._pending.popleft())

    def _read(self, stdin: IO[str]) -> None:
        for line in stdin:
            try:
                frame = decode_frame(line)
            except MeshError as exc:
                self.send(ErrorFrame(code=exc.code, message=str(exc)))
                continue
            if isinstance(frame, GenerateFrame | CancelFrame):
                self._inbox.put(frame)
        self._inbox.put(_STOP_READING)

    def _drain_inbox(self) -> None:
        while True:
            try:
                self._take(self._inbox.get_nowait())
            except queue.Empty:
                return

    def _take(self, frame: GenerateFrame | CancelFrame | None) -> None:
        match frame:
            case None:
                self._running = False
                self._pending.clear()
            case GenerateFrame():
                self._pending.append(frame)
            case CancelFrame():
                self._cancel(frame.request_id)

    def _cancel(self, request_id: str) -> None:
        for frame in self._pending:
            if frame.request_id == request_id:
                self._pending.remove(frame)
                self.send(_done(request_id, FinishReason.CANCELLED, prompt_tokens=0, completion_tokens=0))
                return
        self._cancelled.add(request_id)

    def _run(self, frame: GenerateFrame) -> None:
        try:
            self._generate(frame)
        except MeshError as exc:
            self.send(ErrorFrame(request_id=frame.request_id, code=exc.code, message=str(exc)))
        except Exception as exc:  # a bug in one request must not take down the others
            self.send(ErrorFrame(request_id=frame.request_id, code=ErrorCode.INTERNAL, message=repr(exc)))
        finally:
            self._cancelled.discard(frame.request_id)

    def _generate(self, frame: GenerateFrame) -> None:
        prompt = self._prompt_tokens(frame)
        room = self._llm.n_ctx() - len(prompt)
        if room < 1:
            raise ContextLengthExceeded(
                f"the prompt has {len(prompt)} tokens; the context holds {self._llm.n_ctx()}",
                request_id=frame.request_id,
            )
        self.send(EngineAccepted(request_id=frame.request_id, prompt_tokens=len(prompt)))
        params = frame.params
        self._llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        tokens = self._llm.generate(
            prompt,
            temp=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            repeat_penalty=params.repeat_penalty,
        )
        sent, finish = self._stream(frame, tokens, limit=min(params.max_tokens, room))
        self.send(_done(frame.request_id, finish, prompt_tokens=len(prompt), completion_tokens=sent))

    def _stream(self, frame: GenerateFrame, tokens: Iterator[int], *, limit: int) -> tuple[int, FinishReason]:
        stops = StopMatcher(frame.params.stop)
        sent = 0
        finish = FinishReason.LENGTH
        for produced, token in enumerate(tokens):
            if self._is_end_of_generation(token):
                finish = FinishReason.STOP
                break
            sent = self._emit(frame, stops.feed(token, self._llm.detokenize([token])), sent)
            if stops.stopped:
                finish = FinishReason.STOP
                break
            if produced + 1 >= limit:
                break
            self._drain_inbox()
            if frame.request_id in self._cancelled or not self._running:
                return self._emit(frame, stops.flush(), sent), FinishReason.CANCELLED
        return self._emit(frame, stops.flush(), sent), finish

    def _emit(self, frame: GenerateFrame, pieces: list[Piece], sent: int) -> int:
        for piece in pieces:
            self.send(
                TokenFrame(
                    request_id=frame.request_id,
                    attempt=frame.attempt,
                    seq=sent,
                    token_id=piece.token_id,
                    text_bytes=piece.data,
                    t_worker=time.monotonic(),
                )
            )
            sent += 1
        return sent

    def _prompt_tokens(self, frame: GenerateFrame) -> list[int]:
        text = self._template.render(frame.messages) if frame.messages is not None else frame.prompt or ""
        bos = self._template.bos_token
        starts_with_bos = bool(bos) and text.startswith(bos)
        return self._llm.tokenize(text.encode("utf-8"), add_bos=not starts_with_bos, special=True)

    def _is_end_of_generation(self, token: int) -> bool:
        from llama_cpp import llama_cpp as native

        return bool(native.llama_vocab_is_eog(self._llm._model.vocab, token))

    def send(self, message: BaseModel) -> None:
        """Write one message to the supervisor (from either thread)."""
        line = message.model_dump_json(exclude_none=True) + "\n"
        with self._out_lock:
            self._out.write(line)
            self._out.flush()


def _done(request_id: str, finish: FinishReason, *, prompt_tokens: int, completion_tokens: int) -> DoneFrame:
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    return DoneFrame(request_id=request_id, finish_reason=finish, usage=usage)


def _special_text(llm: Llama, token: int) -> str:
    return llm.detokenize([token], special=True).decode("utf-8", "replace")


def _self_test(llm: Llama) -> None:
    """Run one token of inference, so a broken build fails here, not on a user's request."""
    prompt = llm.tokenize(b"Hello", add_bos=True, special=False)
    next(iter(llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0)))
    llm.reset()  # type: ignore[no-untyped-call]


def main(argv: list[str]) -> int:
    """Load the model, report ready, then serve requests from stdin until it closes."""
    try:
        config = EngineConfig.model_validate_json(argv[1])
    except (IndexError, ValidationError) as exc:
        sys.stderr.write(f"usage: python -m meshcore_node.engine.child '<EngineConfig JSON>': {exc}\n")
        return 2
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    llm = load_llama(config.model_path, n_ctx=config.n_ctx, n_threads=config.n_threads, n_batch=config.n_batch)
    template = template_for(
        llm.metadata,
        bos_token=_special_text(llm, llm.token_bos()),
        eos_token=_special_text(llm, llm.token_eos()),
    )
    _self_test(llm)
    engine = Engine(llm, template, out)
    ready = EngineReady(
        served_name=served_id(llm.metadata.get("general.name") or Path(config.model_path).stem),
        architecture=llm.metadata.get("general.architecture", "unknown"),
        n_ctx=llm.n_ctx(),
        chat_format=template.name,
        pid=os.getpid(),
    )
    engine.send(ready)
    engine.serve(sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
