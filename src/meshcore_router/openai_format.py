"""OpenAI's HTTP shapes, in and out: :mod:`meshcore_sdk.openai_format`, which direct mode shares."""

from meshcore_sdk.openai_format import (
    SSE_DONE,
    ChatCompletionRequest,
    ChatMessageIn,
    ChunkFormatter,
    CompletionRequest,
    ResponseMeta,
    StreamOptions,
    completion_body,
    error_body,
    error_type,
    mesh_error_body,
    param_of,
    request_loc,
    sse_event,
)

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
    "mesh_error_body",
    "param_of",
    "request_loc",
    "sse_event",
]
