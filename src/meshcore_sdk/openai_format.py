"""OpenAI's HTTP shapes, in and out (``docs/protocol.md`` §6); shared by the router and direct mode.

Pure: request bodies are parsed into :class:`ChatCompletionRequest` or
:class:`CompletionRequest` (tolerant: unknown fields are ignored, as the SDKs
add new ones all the time) and turned into a ``generate`` frame; a request's
frames are turned into chunks (:class:`ChunkFormatter`) or one completion
(:func:`completion_body`); errors into OpenAI's error body.

Normalisations: ``developer`` is read as ``system``; content given as a list of
text parts is joined with newlines (``tool_call`` parts, which repeat ``tool_calls``, are
dropped); ``max_completion_tokens`` wins over
``max_tokens``; ``stop`` may be one string or a list; llama.cpp's ``top_k``,
``min_p`` and ``repeat_penalty`` arrive as top-level fields (the SDKs'
``extra_body``).  Tools (``tools``, ``tool_choice``, assistant ``tool_calls``
and ``tool`` messages) are turned into a grammar and text by :mod:`openai_tools`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from meshcore_sdk.openai_tools import (
    FunctionSpec,
    NamedToolChoice,
    ToolCallIn,
    ToolChoiceMode,
    ToolSpec,
    forced_tools,
    instruction_text,
    parse_reply,
    parse_tool_calls,
    render_calls,
    text_allowed,
    tool_call_body,
    tool_schema,
)
from meshcore_sdk.protocol import (
    ChatMessage,
    DoneFrame,
    GenerateFrame,
    SamplingParams,
    TokenFrame,
    Utf8Assembler,
)
from meshcore_sdk.protocol.errors import BadRequest, MeshError

__all__ = [
    "SSE_DONE",
    "ChatCompletionRequest",
    "ChatMessageIn",
    "ChunkFormatter",
    "CompletionRequest",
    "ResponseMeta",
    "StreamOptions",
    "completion_body",
    "error_body",
    "error_type",
    "logprobs_body",
    "mesh_error_body",
    "param_of",
    "request_loc",
    "sse_event",
]

SSE_DONE = "data: [DONE]\n\n"
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StreamOptions(_Tolerant):
    """``stream_options``: only ``include_usage`` means something here."""

    include_usage: bool = False


class ChatMessageIn(_Tolerant):
    """One message of a chat request, content already joined into text."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = ""
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, value: object) -> object:
        if value is None:
            return ""
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if isinstance(part, Mapping) and part.get("type") == "tool_call":
                continue  # LangChain's v1 content repeats the message's tool_calls as blocks
            if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
            texts.append(part["text"])
        return "\n".join(texts)


class _GenerationRequest(_Tolerant):
    model: str = Field(min_length=1)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    n: Literal[1] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: object) -> object:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return self.stream and self.stream_options is not None and self.stream_options.include_usage

    def _sampling(self, max_tokens: int | None, default_max_tokens: int | None) -> dict[str, Any]:
        given = {name: getattr(self, name) for name in _SAMPLING_FIELDS if getattr(self, name) is not None}
        if self.stop:
            given["stop"] = self.stop
        limit = max_tokens if max_tokens is not None else default_max_tokens
        if limit is not None:
            given["max_tokens"] = limit
        given.update(self._logprob_params())
        if self.response_format is not None:
            given["response_format"] = _response_format(self.response_format)
        return given

    def _logprob_params(self) -> dict[str, Any]:
        return {}


def _response_format(body: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's ``response_format`` as the frame's: the schema sits under ``json_schema.schema``."""
    kind = body.get("type")
    if kind != "json_schema":
        return {"type": kind}
    spec = body.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return {"type": kind, "json_schema": schema if schema is not None else {}}


class ChatCompletionRequest(_GenerationRequest):
    """A ``POST /v1/chat/completions`` body."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: ToolChoiceMode | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # true: an answer may make several calls

    @field_validator("tools", mode="before")
    @classmethod
    def _no_tools(cls, value: object) -> object:
        return [] if value is None else value

    @model_validator(mode="after")
    def _tools_make_sense(self) -> ChatCompletionRequest:
        if forced_tools(self.tools, self.tool_choice) and self.response_format is not None:
            raise ValueError("response_format cannot be combined with a tool call")
        return self

    @property
    def forced_functions(self) -> tuple[FunctionSpec, ...]:
        """The functions the answer may call (empty: a free text answer); see :attr:`text_allowed`."""
        return forced_tools(self.tools, self.tool_choice)

    @property
    def text_allowed(self) -> bool:
        """Whether, with tools, the answer may be text instead of a call (``tool_choice`` ``"auto"``)."""
        return text_allowed(self.tool_choice)

    def _logprob_params(self) -> dict[str, Any]:
        if not self.logprobs:
            return {}
        return {"logprobs": True, "top_logprobs": self.top_logprobs or 0}

    def to_frame(self, request_id: str) -> GenerateFrame:
        """The ``generate`` frame for this request (raises pydantic's ValidationError)."""
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        functions = self.forced_functions
        sampling = self._sampling(limit, None)
        allow_text, parallel = self.text_allowed, self.parallel_tool_calls is True
        if functions:
            schema = tool_schema(functions, allow_text=allow_text, parallel=parallel)
            sampling["response_format"] = {"type": "json_schema", "json_schema": schema}
        params = SamplingParams.model_validate(sampling)
        instructions = instruction_text(functions, allow_text=allow_text, parallel=parallel) if functions else None
        messages = _chat_messages(self.messages, instructions)
        return GenerateFrame(request_id=request_id, model=self.model, messages=messages, params=params)

    def max_tokens_param(self) -> str:
        """The field that set the token limit, for error messages."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"


def _chat_messages(messages: Sequence[ChatMessageIn], instructions: str | None) -> list[ChatMessage]:
    """The frame's messages: tool history as text, ``instructions`` first in the first system message."""
    rendered: list[ChatMessage] = []
    names = {call.id: call.function.name for m in messages for call in m.tool_calls or ()}
    for m in messages:
        if m.role == "tool":
            name = names.get(m.tool_call_id or "", m.name or "the tool")
            text = f"Result of {name}: {m.content}"
            if rendered and rendered[-1].role == "user" and rendered[-1].content.startswith("Result of "):
                text = f"{rendered.pop().content}\n{text}"
            rendered.append(ChatMessage(role="user", content=text))
        elif m.role == "assistant" and m.tool_calls:
            rendered.append(ChatMessage(role="assistant", content=render_calls(m.tool_calls), name=m.name))
        else:
            role = "system" if m.role == "developer" else m.role
            rendered.append(ChatMessage(role=role, content=m.content, name=m.name))
    if instructions is None:
        return rendered
    if rendered and rendered[0].role == "system":
        first = rendered[0]
        return [first.model_copy(update={"content": f"{instructions}\n\n{first.content}"}), *rendered[1:]]
    return [ChatMessage(role="system", content=instructions), *rendered]


class CompletionRequest(_GenerationRequest):
    """A ``POST /v1/completions`` body (one prompt per request)."""

    prompt: str
    echo: Literal[False] = False
    suffix: None = None
    logprobs: int | None = None

    def _logprob_params(self) -> dict[str, Any]:
        if self.logprobs is None:
            return {}
        return {"logprobs": True, "top_logprobs": self.logprobs}

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: object) -> object:
        if isinstance(value, list):
            if len(value) != 1 or not isinstance(value[0], str):
                raise ValueError("exactly one prompt string per request is supported")
            return value[0]
        return value

    def to_frame(self, request_id: str) -> GenerateFrame:
        """The ``generate`` frame for this request (raises pydantic's ValidationError)."""
        params = SamplingParams.model_validate(self._sampling(self.max_tokens, 16))  # OpenAI's default: 16
        return GenerateFrame(request_id=request_id, model=self.model, prompt=self.prompt, params=params)

    def max_tokens_param(self) -> str:
        """The field that set the token limit, for error messages."""
        return "max_tokens"


# --- errors -------------------------------------------------------------------------------


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an error with this HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(message: str, *, code: str, status: int, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def mesh_error_body(exc: MeshError, *, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body for a Meshcore error."""
    return error_body(exc.message, code=exc.code.value, status=exc.http_status, param=param)


def request_loc(loc: Sequence[int | str], *, max_tokens_param: str = "max_tokens") -> tuple[int | str, ...]:
    """Where in the request body an error in its ``generate`` frame comes from.

    Sampling fields sit under ``params`` in the frame and at the top of the request;
    the frame's ``max_tokens`` may have come from ``max_completion_tokens``.
    """
    parts = list(loc)
    if parts[:1] == ["params"]:
        parts = parts[1:]
    if parts[:1] == ["max_tokens"]:
        parts[0] = max_tokens_param
    return tuple(parts)


def param_of(loc: Sequence[int | str]) -> str | None:
    """The request field an error location points at, as ``messages[0].content``.

    FastAPI's locations start with ``body``, which is dropped.
    """
    parts = list(loc)
    if parts[:1] == ["body"]:
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


# --- answers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """What every chunk or completion of one answer repeats."""

    kind: Literal["chat", "text"]
    completion_id: str
    created: int
    model: str
    request_id: str
    worker_id: str
    include_usage: bool = False
    tools: tuple[FunctionSpec, ...] = ()  # the answer is a call to one of these (constrained by a grammar)

    @property
    def object_name(self) -> str:
        """OpenAI's ``object`` for a completion of this kind."""
        return "chat.completion" if self.kind == "chat" else "text_completion"


def sse_event(data: Mapping[str, Any]) -> str:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def _usage(done: DoneFrame) -> dict[str, int]:
    return done.usage.model_dump()


class ChunkFormatter:
    """Turns one request's frames into OpenAI stream chunks, one chunk per token."""

    def __init__(self, meta: ResponseMeta) -> None:
        self._meta = meta
        self._assembler = Utf8Assembler()
        self._first = True
        self._buffered: list[str] = []

    @property
    def meta(self) -> ResponseMeta:
        """What every chunk of this answer repeats."""
        return self._meta

    def feed(self, frame: TokenFrame) -> list[dict[str, Any]]:
        """The chunks one token gives: none while a tool call is being buffered."""
        if self._meta.tools:
            self._buffered.append(self._assembler.feed(frame.text_bytes))
            return []
        return [self.token(frame)]

    def token(self, frame: TokenFrame) -> dict[str, Any]:
        """The chunk that carries one token."""
        text = self._assembler.feed(frame.text_bytes)
        chunk = self._chunk(text, finish_reason=None, seq=frame.seq, token_id=frame.token_id, attempt=frame.attempt)
        if frame.logprob is not None:
            chunk["choices"][0]["logprobs"] = logprobs_body(self._meta.kind, [frame])
        return chunk

    def done(self, frame: DoneFrame) -> list[dict[str, Any]]:
        """The last chunk (with ``finish_reason``) and, if asked for, the usage chunk."""
        tail = self._assembler.flush()
        if self._meta.tools:
            chunks = self._tool_chunks("".join(self._buffered) + tail, frame)
        else:
            chunks = [self._chunk(tail, finish_reason=frame.finish_reason.value, seq=None, token_id=None, attempt=0)]
        if self._meta.include_usage:
            usage_chunk = self._envelope(seq=None, token_id=None, attempt=0)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = _usage(frame)
            chunks.append(usage_chunk)
        return chunks

    def _tool_chunks(self, text: str, done: DoneFrame) -> list[dict[str, Any]]:
        """OpenAI's chunks of the tool calls: per call its id and name, then its arguments; then the finish."""
        calls = parse_tool_calls(text, self._meta.tools)
        if calls is None:
            reply = parse_reply(text)
            return [self._chunk(reply, finish_reason=done.finish_reason.value, seq=None, token_id=None, attempt=0)]
        deltas: list[tuple[dict[str, Any], str | None]] = []
        for index, call in enumerate(calls):
            body = tool_call_body(call, self._meta.request_id, index)
            head: dict[str, Any] = {
                "tool_calls": [{**body, "index": index, "function": {"name": call.name, "arguments": ""}}]
            }
            if index == 0:
                head = {"role": "assistant", "content": None, **head}
            deltas.append((head, None))
            deltas.append(({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}, None))
        deltas.append(({}, "tool_calls"))
        chunks = []
        for delta, finish_reason in deltas:
            chunk = self._envelope(seq=None, token_id=None, attempt=0)
            chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            chunks.append(chunk)
        return chunks

    def _chunk(
        self, text: str, *, finish_reason: str | None, seq: int | None, token_id: int | None, attempt: int
    ) -> dict[str, Any]:
        chunk = self._envelope(seq=seq, token_id=token_id, attempt=attempt)
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
        if self._meta.kind == "text":
            choice["text"] = text
        else:
            delta: dict[str, str] = {"role": "assistant"} if self._first else {}
            if text or self._first:
                delta["content"] = text
            choice["delta"] = delta
        self._first = False
        chunk["choices"] = [choice]
        return chunk

    def _envelope(self, *, seq: int | None, token_id: int | None, attempt: int) -> dict[str, Any]:
        meta = self._meta
        chunk: dict[str, Any] = {
            "id": meta.completion_id,
            "object": f"{meta.object_name}.chunk" if meta.kind == "chat" else meta.object_name,
            "created": meta.created,
            "model": meta.model,
            "choices": [],
            "meshcore": {
                "request_id": meta.request_id,
                "worker_id": meta.worker_id,
                "seq": seq,
                "token_id": token_id,
                "attempt": attempt,
            },
        }
        if meta.include_usage:
            chunk["usage"] = None
        return chunk


def _token_logprob(frame: TokenFrame) -> dict[str, Any]:
    tops = [
        {"token": top.text_bytes.decode("utf-8", "replace"), "logprob": top.logprob, "bytes": list(top.text_bytes)}
        for top in frame.top_logprobs or ()
    ]
    text = frame.text_bytes.decode("utf-8", "replace")
    return {"token": text, "logprob": frame.logprob, "bytes": list(frame.text_bytes), "top_logprobs": tops}


def logprobs_body(kind: Literal["chat", "text"], tokens: Sequence[TokenFrame]) -> dict[str, Any] | None:
    """A choice's ``logprobs`` for these tokens, in the chat or the legacy completions shape (None: not asked)."""
    if not tokens or tokens[0].logprob is None:
        return None
    entries = [_token_logprob(frame) for frame in tokens]
    if kind == "chat":
        return {"content": entries, "refusal": None}
    offsets, offset = [], 0
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {
        "tokens": [entry["token"] for entry in entries],
        "token_logprobs": [entry["logprob"] for entry in entries],
        "top_logprobs": [{top["token"]: top["logprob"] for top in entry["top_logprobs"]} for entry in entries],
        "text_offset": offsets,
    }


def completion_body(
    meta: ResponseMeta, text: str, done: DoneFrame, tokens: Sequence[TokenFrame] = ()
) -> dict[str, Any]:
    """A whole (non-streamed) completion; ``tokens`` give its ``logprobs`` when the request asked for them."""
    choice: dict[str, Any] = {
        "index": 0,
        "logprobs": logprobs_body(meta.kind, tokens),
        "finish_reason": done.finish_reason.value,
    }
    calls = parse_tool_calls(text, meta.tools) if meta.tools else None
    if calls is not None:
        choice["message"] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [tool_call_body(call, meta.request_id, index) for index, call in enumerate(calls)],
        }
        choice["finish_reason"] = "tool_calls"
        choice["logprobs"] = None
    elif meta.kind == "chat":
        choice["message"] = {"role": "assistant", "content": parse_reply(text) if meta.tools else text}
    else:
        choice["text"] = text
    return {
        "id": meta.completion_id,
        "object": meta.object_name,
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
        "usage": _usage(done),
        "meshcore": {"request_id": meta.request_id, "worker_id": meta.worker_id},
    }


# --- streaming modes that speak frames (direct, swarm) ----------------------------------------

CHAT_PATH = "/v1/chat/completions"
TEXT_PATH = "/v1/completions"


def parse_stream_request(
    path: str, body: Mapping[str, Any], *, request_id: str, mode: str
) -> tuple[Literal["chat", "text"], ChatCompletionRequest | CompletionRequest, GenerateFrame]:
    """The request's kind, its OpenAI shape and its ``generate`` frame, as the router builds them.

    Raises:
        BadRequest: the body is not a valid request, or ``mode`` does not stream ``path``.
    """
    try:
        if path == CHAT_PATH:
            chat = ChatCompletionRequest.model_validate(body)
            return "chat", chat, chat.to_frame(request_id)
        if path == TEXT_PATH:
            text = CompletionRequest.model_validate(body)
            return "text", text, text.to_frame(request_id)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        raise BadRequest(f"{where}: {problem['msg']}") from exc
    raise BadRequest(f"{mode} mode does not stream {path}")


def chunk_texts(chunk: Mapping[str, Any]) -> list[str]:
    """The text pieces a chat or text chunk carries."""
    texts = []
    for choice in chunk.get("choices", []):
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, Mapping) else choice.get("text")
        if isinstance(text, str):
            texts.append(text)
    return texts
