"""What the router answers, as OpenAI-shaped pydantic models (``docs/protocol.md`` §6).

These models read a server's answer, so they are tolerant (``STYLE.md`` rule 7):
unknown fields are kept (``extra="allow"``), so a newer router never breaks an
older client, and fields the router may omit default to ``None``.  Each
completion and chunk carries :class:`MeshcoreMeta` under ``.meshcore``: which
request, which worker, which token position.  Completions render as a small
table in notebooks (``_repr_html_``).
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatChoice",
    "ChatChunkChoice",
    "ChoiceDelta",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionUsage",
    "MeshcoreMeta",
    "Model",
    "ModelList",
    "ModelMeta",
]


class _Received(BaseModel):
    """A model read from a server: unknown fields are kept, nothing is mutated."""

    model_config = ConfigDict(extra="allow", frozen=True)


class MeshcoreMeta(_Received):
    """Meshcore's own metadata on a completion or a chunk; OpenAI clients ignore it.

    Attributes:
        request_id: the router's id for the request (also the ``x-request-id`` header).
        worker_id: the worker that produced this answer or token.
        seq: the token's position in the output, from 0; ``None`` on chunks without a token.
        token_id: the token's id in the model's vocabulary; ``None`` on chunks without a token.
        attempt: which attempt of the request produced the token (0 unless failed over).
    """

    request_id: str | None = None
    worker_id: str | None = None
    seq: int | None = None
    token_id: int | None = None
    attempt: int | None = None


class CompletionUsage(_Received):
    """Token counts of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletionMessage(_Received):
    """The assistant's message in a non-streaming chat completion."""

    role: str = "assistant"
    content: str | None = None


class ChatChoice(_Received):
    """One answer of a chat completion."""

    index: int = 0
    message: ChatCompletionMessage = Field(default_factory=ChatCompletionMessage)
    finish_reason: str | None = None


class ChatCompletion(_Received):
    """A non-streaming chat completion, ``object: "chat.completion"``."""

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[ChatChoice] = Field(default_factory=list)
    usage: CompletionUsage | None = None
    meshcore: MeshcoreMeta = Field(default_factory=MeshcoreMeta)

    @property
    def text(self) -> str:
        """The first choice's message content, or ``""``."""
        return (self.choices[0].message.content or "") if self.choices else ""

    def _repr_html_(self) -> str:
        finish = self.choices[0].finish_reason if self.choices else None
        return _html_card(self.model, self.text, finish, self.usage, self.meshcore)


class ChoiceDelta(_Received):
    """The new part of a message in a streamed chat chunk."""

    role: str | None = None
    content: str | None = None


class ChatChunkChoice(_Received):
    """One choice of a streamed chat chunk."""

    index: int = 0
    delta: ChoiceDelta = Field(default_factory=ChoiceDelta)
    finish_reason: str | None = None


class ChatCompletionChunk(_Received):
    """One server-sent event of a streamed chat completion, ``object: "chat.completion.chunk"``.

    With ``stream_options={"include_usage": True}`` the last chunk has no choices and
    carries ``usage``.
    """

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChatChunkChoice] = Field(default_factory=list)
    usage: CompletionUsage | None = None
    meshcore: MeshcoreMeta = Field(default_factory=MeshcoreMeta)

    @property
    def text(self) -> str:
        """The first choice's new content, or ``""``."""
        return (self.choices[0].delta.content or "") if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason, set on the last content chunk."""
        return self.choices[0].finish_reason if self.choices else None


class CompletionChoice(_Received):
    """One answer of a text completion, whole or streamed."""

    index: int = 0
    text: str = ""
    finish_reason: str | None = None


class Completion(_Received):
    """A non-streaming text completion, ``object: "text_completion"``."""

    id: str = ""
    object: str = "text_completion"
    created: int = 0
    model: str = ""
    choices: list[CompletionChoice] = Field(default_factory=list)
    usage: CompletionUsage | None = None
    meshcore: MeshcoreMeta = Field(default_factory=MeshcoreMeta)

    @property
    def text(self) -> str:
        """The first choice's text, or ``""``."""
        return self.choices[0].text if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason."""
        return self.choices[0].finish_reason if self.choices else None

    def _repr_html_(self) -> str:
        return _html_card(self.model, self.text, self.finish_reason, self.usage, self.meshcore)


class CompletionChunk(Completion):
    """One server-sent event of a streamed text completion; the same shape as :class:`Completion`."""


class ModelMeta(_Received):
    """Meshcore's view of a model: its file hash and how many nodes serve it."""

    sha256: str | None = None
    nodes: int | None = None
    ready_nodes: int | None = None
    n_ctx: int | None = None


class Model(_Received):
    """A model that some node of the mesh serves."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "meshcore"
    meshcore: ModelMeta | None = None


class ModelList(_Received):
    """The answer of ``GET /v1/models``: iterate it, or read ``.data``."""

    object: str = "list"
    data: list[Model] = Field(default_factory=list)

    def __iter__(self) -> Iterator[Model]:  # type: ignore[override]  # iterate models, not fields
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Model:
        return self.data[index]

    def _repr_html_(self) -> str:
        rows = "".join(_model_row(model) for model in self.data)
        head = "<tr><th>id</th><th>sha256</th><th>ready / nodes</th><th>n_ctx</th></tr>"
        return f"<table>{head}{rows}</table>"


def _model_row(model: Model) -> str:
    meta = model.meshcore or ModelMeta()
    sha = (meta.sha256 or "")[:12]
    cells = (model.id, sha, f"{_or_dash(meta.ready_nodes)} / {_or_dash(meta.nodes)}", _or_dash(meta.n_ctx))
    return "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>"


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _html_card(
    model: str, text: str, finish_reason: str | None, usage: CompletionUsage | None, meta: MeshcoreMeta
) -> str:
    facts = [("model", model), ("finish", finish_reason), ("worker", meta.worker_id), ("request", meta.request_id)]
    if usage is not None:
        facts.append(("tokens", f"{usage.prompt_tokens} in, {usage.completion_tokens} out"))
    caption = " · ".join(f"{name}: {html.escape(str(value))}" for name, value in facts if value)
    body = html.escape(text)
    return f'<div><pre style="white-space: pre-wrap">{body}</pre><small>{caption}</small></div>'
