"""Build request bodies for the router's HTTP API from ``create(...)`` arguments.

Pure: arguments in, a JSON-ready ``dict`` out.  An option left at ``None`` is
not sent, so the router's default applies; ``extra_body`` is merged last, so it
can add fields this client does not know (``docs/protocol.md`` §6 says the router
ignores unknown fields).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from meshcore_sdk.protocol.errors import ConfigError

__all__ = ["MessageParam", "SamplingArgs", "chat_body", "completion_body"]

MessageParam = Mapping[str, Any]
"""One chat message, OpenAI-shaped: ``{"role": "user", "content": "Hi"}``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingArgs:
    """The generation options of one call; ``None`` leaves an option to the router."""

    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | Sequence[str] | None = None
    seed: int | None = None
    stream_options: Mapping[str, Any] | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None

    def given(self) -> dict[str, Any]:
        """The options that were given, ready to send."""
        values = ((option.name, getattr(self, option.name)) for option in fields(self))
        given = {name: value for name, value in values if value is not None}
        if isinstance(self.stop, Sequence) and not isinstance(self.stop, str):
            given["stop"] = list(self.stop)
        if self.stream_options is not None:
            given["stream_options"] = dict(self.stream_options)
        return given


def chat_body(
    *,
    model: str,
    messages: Iterable[MessageParam],
    stream: bool,
    sampling: SamplingArgs,
    extra_body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The body of ``POST /v1/chat/completions``.

    Raises:
        ConfigError: ``model`` is empty, or ``messages`` is empty or holds something
            other than mappings.
    """
    listed = [dict(message) for message in _check_messages(messages)]
    return _body({"model": _check_model(model), "messages": listed}, stream, sampling, extra_body)


def completion_body(
    *,
    model: str,
    prompt: str,
    stream: bool,
    sampling: SamplingArgs,
    extra_body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The body of ``POST /v1/completions``.

    Raises:
        ConfigError: ``model`` is empty or ``prompt`` is not a string.
    """
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
    return _body({"model": _check_model(model), "prompt": prompt}, stream, sampling, extra_body)


def _body(
    head: dict[str, Any], stream: bool, sampling: SamplingArgs, extra_body: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {**head, "stream": stream, **sampling.given(), **(extra_body or {})}


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not model:
        raise ConfigError("model must be a served model id or 'sha256:<hex>', got an empty value")
    return model


def _check_messages(messages: Iterable[MessageParam]) -> list[MessageParam]:
    if isinstance(messages, (str, bytes, Mapping)):
        raise ConfigError("messages must be a list of {'role': ..., 'content': ...} mappings")
    listed = list(messages)
    if not listed:
        raise ConfigError("messages must hold at least one message")
    for message in listed:
        if not isinstance(message, Mapping):
            raise ConfigError(f"each message must be a mapping, got {type(message).__name__}")
    return listed
