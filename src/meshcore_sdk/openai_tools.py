"""OpenAI tool calling on a grammar-constrained model (``docs/protocol.md`` §6).

Pure.  A chat request with ``tools`` (and ``tool_choice`` other than ``"none"``)
becomes a ``generate`` frame whose ``response_format`` is a JSON schema that only
admits ``{"name": <a tool's name>, "arguments": <that tool's parameters>}``; the
node enforces it with a llama.cpp grammar, so even a small base model answers
with a well-formed call.  The tools are described in a system message put in
front of the conversation.  The answer is parsed back into OpenAI's
``message.tool_calls``.

Choices made here:

- ``tool_choice: "auto"`` (the default when tools are given) lets the model
  choose: the schema admits a call or ``{"content": <text>}``, and the latter
  comes back as the message's ``content`` (:func:`parse_reply`).  An agent loop
  needs that, to answer once the tools' results are in.  ``"required"`` (and
  LangChain's ``"any"``) admit only a call.  The text of an ``auto`` answer is
  read once it is whole: while it streams, it could still become a call.
- One call per answer, unless the request says ``parallel_tool_calls: true``:
  then the schema asks for a JSON array of 1 to :data:`MAX_PARALLEL_CALLS` calls
  (:func:`parse_tool_calls`).  OpenAI's default is ``true``; here it must be said,
  as a small model given the choice writes several calls where one would do.
- Chat templates of small models know only ``user`` and ``assistant`` turns, so
  history is rendered as text they can carry: an assistant turn with
  ``tool_calls`` says the JSON of its calls (the same shape the model answers
  with; a list when there were several); a ``tool`` message becomes a ``user``
  turn ``Result of <name>: <content>`` (consecutive results share one turn).  The
  tool instructions go first in the first ``system`` message (one is added if
  there is none), as templates often accept only one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_PARALLEL_CALLS",
    "FunctionCallIn",
    "FunctionSpec",
    "NamedToolChoice",
    "ParsedToolCall",
    "ToolCallIn",
    "ToolSpec",
    "call_id",
    "forced_tools",
    "instruction_text",
    "parse_reply",
    "parse_tool_call",
    "parse_tool_calls",
    "render_calls",
    "tool_call_body",
    "text_allowed",
    "tool_schema",
]

ToolChoiceMode = Literal["none", "auto", "required"]

MAX_PARALLEL_CALLS = 8
"""The most calls one answer makes with ``parallel_tool_calls: true``."""


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FunctionSpec(_Tolerant):
    """A tool's function: its name, what it does, and the JSON schema of its arguments."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Tolerant):
    """One entry of ``tools``."""

    type: Literal["function"]
    function: FunctionSpec


class _NamedFunction(_Tolerant):
    name: str


class NamedToolChoice(_Tolerant):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    type: Literal["function"]
    function: _NamedFunction


class FunctionCallIn(_Tolerant):
    """The function of a past call: ``arguments`` is a JSON string, as OpenAI sends it."""

    name: str
    arguments: str = "{}"


class ToolCallIn(_Tolerant):
    """One call of an assistant message in the history."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


def forced_tools(
    tools: Sequence[ToolSpec], choice: ToolChoiceMode | NamedToolChoice | None
) -> tuple[FunctionSpec, ...]:
    """The functions the answer may call; empty when the answer is free text.

    With ``tool_choice`` ``"auto"`` (or none) the answer may also be text
    (:func:`text_allowed`); otherwise it must be a call to one of them.

    Raises:
        ValueError: the tools or the choice do not make sense together.
    """
    names = [tool.function.name for tool in tools]
    if len(set(names)) != len(names):
        raise ValueError("tools: function names must be unique")
    if choice == "none" or (not tools and choice in (None, "auto")):
        return ()
    if not tools:
        raise ValueError("tool_choice needs tools")
    if isinstance(choice, NamedToolChoice):
        chosen = [tool.function for tool in tools if tool.function.name == choice.function.name]
        if not chosen:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not among the tools")
        return tuple(chosen)
    return tuple(tool.function for tool in tools)


def text_allowed(choice: ToolChoiceMode | NamedToolChoice | None) -> bool:
    """Whether an answer with tools may be text instead of a call (``tool_choice`` ``"auto"`` or unset)."""
    return choice is None or choice == "auto"


def _arguments_schema(function: FunctionSpec) -> dict[str, Any]:
    return function.parameters if function.parameters else {"type": "object", "properties": {}}


def tool_schema(
    functions: Sequence[FunctionSpec], *, allow_text: bool = False, parallel: bool = False
) -> dict[str, Any]:
    """The JSON schema of one call to one of ``functions`` (the arguments follow the chosen name).

    With ``parallel``, an array of 1 to :data:`MAX_PARALLEL_CALLS` such calls instead; with
    ``allow_text``, ``{"content": <text>}`` is an alternative to the call(s).
    """
    calls: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"name": {"const": function.name}, "arguments": _arguments_schema(function)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for function in functions
    ]
    call = calls[0] if len(calls) == 1 else {"anyOf": calls}
    array: dict[str, Any] = {"type": "array", "items": call, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
    alternatives = [array] if parallel else calls
    if allow_text:
        reply = {"content": {"type": "string"}}
        alternatives.append(
            {"type": "object", "properties": reply, "required": ["content"], "additionalProperties": False}
        )
    return alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}


def instruction_text(functions: Sequence[FunctionSpec], *, allow_text: bool = False, parallel: bool = False) -> str:
    """The system text that tells the model which tools it has and how to call them (or answer)."""
    call = '{"name": <tool name>, "arguments": <object matching the tool\'s parameters>}'
    if parallel:
        call = f"[{call}, ...] (one or more calls, run together)"
    shape = "JSON array" if parallel else "JSON object"
    if allow_text:
        how = (
            f"Answer with exactly one JSON value and nothing else: {call} to call tools, or "
            '{"content": <your answer>} to answer without one (say, once a tool\'s result is in).'
        )
    else:
        how = f"Answer with exactly one {shape} {call} and nothing else."
    lines = ["You can call the following tools. " + how, "", "Tools:"]
    for function in functions:
        lines.append(f"- {function.name}: {function.description or '(no description)'}")
        lines.append(f"  parameters: {json.dumps(_arguments_schema(function), separators=(',', ':'))}")
    return "\n".join(lines)


def _arguments_value(arguments: str) -> object:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def render_calls(calls: Sequence[ToolCallIn]) -> str:
    """An assistant turn's calls as the text the model would have written."""
    rendered = [{"name": call.function.name, "arguments": _arguments_value(call.function.arguments)} for call in calls]
    return json.dumps(rendered[0] if len(rendered) == 1 else rendered, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    """A call read from a constrained answer."""

    name: str
    arguments: str  # JSON text, as OpenAI gives it


def parse_tool_call(text: str, functions: Sequence[FunctionSpec]) -> ParsedToolCall | None:
    """The call ``text`` makes, or None if it is not one call (say, cut off by ``max_tokens``)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return _call_of(value, functions)


def parse_tool_calls(text: str, functions: Sequence[FunctionSpec]) -> list[ParsedToolCall] | None:
    """The calls ``text`` makes: one object, or an array of them; None if it is not calls."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call_of(item, functions) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


def _call_of(value: object, functions: Sequence[FunctionSpec]) -> ParsedToolCall | None:
    if not isinstance(value, Mapping):
        return None
    name, arguments = value.get("name"), value.get("arguments", {})
    if name not in {function.name for function in functions} or not isinstance(arguments, Mapping):
        return None
    return ParsedToolCall(name=name, arguments=json.dumps(arguments, ensure_ascii=False))


def parse_reply(text: str) -> str:
    """The text of an answer that is not a call: the ``content`` of ``{"content": ...}``, else ``text`` itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, Mapping) and set(value) == {"content"} and isinstance(value["content"], str):
        return value["content"]
    return text


def call_id(request_id: str, index: int = 0) -> str:
    """A call's id, ``call_<hex>``, derived from its request so that it needs no randomness."""
    digest = hashlib.sha256(f"{request_id}/{index}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def tool_call_body(call: ParsedToolCall, request_id: str, index: int = 0) -> dict[str, Any]:
    """Entry ``index`` of ``message.tool_calls``."""
    return {
        "id": call_id(request_id, index),
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
